"""Subcommand ``convert-paddle``: an official ERNIE-ViL release (Paddle 1.8) to a Hugging Face model folder."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Convert an official ERNIE-ViL checkpoint (PaddlePaddle/ERNIE, ernie-vil: a params/ folder with one Paddle
LoDTensor file per variable, the model config JSON and vocab.txt) into a folder that
transformers.AutoModel.from_pretrained loads as ErnieVilModel once ernievil_ds is imported: config.json,
model.safetensors and a lower-casing BERT WordPiece tokenizer. Paddle is not needed.

The text and image streams, the co-attention layers and the two poolers are converted. With --task, a
checkpoint fine-tuned by the official finetune.py converts with its head, into the project's model of that
task (its class's from_pretrained loads the folder):

  vqa        vqa_fc_w_0/b_0, vqa_fc_w_1/b_1 -> ErnieVilForVisualQuestionAnswering classifier.0, classifier.3;
             the answers (config.id2label) come from --answers, the official data/vqa/trainval_label2ans.pkl
             (by default that file beside the --params folder), read without running any code it could hold
  vcr        vcr_qa_fc, vcr_qar_fc -> ErnieVilForMultipleChoice choice_scorers.q2a, choice_scorers.qa2r
  refcoco    cls_seq_label_vl_out_w/b -> ErnieVilForReferringExpressions region_scorer
  retrieval  match_fc -> ErnieVilForImageTextRetrieval match_scorer

The pretraining heads are not converted. A params/ folder with variables the converted model does not use is
an error that lists them, unless --allow-unused is given. Training state (Adam moments, the learning rate and
its counters, saved loss and accuracy outputs) is skipped and listed in one log line, as are files in params/
that are not Paddle tensor files (a README, a .pdparams pickle: never unpickled).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser(
        "convert-paddle",
        help="convert an official Paddle ERNIE-ViL checkpoint to a Hugging Face model folder",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("--params", type=Path, required=True, help="the release's params/ directory")
    convert.add_argument("--config", type=Path, required=True, help="the release's model config JSON")
    convert.add_argument("--vocab", type=Path, required=True, help="the release's vocab.txt")
    convert.add_argument("--output", type=Path, required=True, help="the folder to write (created if needed)")
    convert.add_argument(
        "--allow-unused",
        action="store_true",
        help="convert even when params/ holds variables the converted model does not use, listing them",
    )
    convert.add_argument(
        "--task",
        choices=("vqa", "vcr", "refcoco", "retrieval"),
        help="convert the official fine-tuned head of this task too, into the task's fine-tuning model",
    )
    convert.add_argument(
        "--answers",
        type=Path,
        help="--task vqa: the official answer list, data/vqa/trainval_label2ans.pkl of the official repository "
        "(default: trainval_label2ans.pkl beside the --params folder)",
    )
    convert.set_defaults(func=run_convert_paddle)


def run_convert_paddle(args: argparse.Namespace) -> int:
    from ernievil_ds.convert.paddle_checkpoint import convert_paddle_checkpoint
    from ernievil_ds.errors import require_output_dir

    require_output_dir(args.output)
    print(
        convert_paddle_checkpoint(
            args.params,
            args.config,
            args.vocab,
            args.output,
            args.allow_unused,
            task=args.task,
            answers_path=args.answers,
        )
    )
    return 0
