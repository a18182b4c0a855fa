"""Subcommand ``convert-paddle``: an official ERNIE-ViL release (Paddle 1.8) to a Hugging Face model folder."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Convert an official ERNIE-ViL checkpoint (PaddlePaddle/ERNIE, ernie-vil: a params/ folder with one Paddle
LoDTensor file per variable, the model config JSON and vocab.txt) into a folder that
transformers.AutoModel.from_pretrained loads as ErnieVilModel once ernievil_ds is imported: config.json,
model.safetensors and a lower-casing BERT WordPiece tokenizer. Paddle is not needed.

The text and image streams, the co-attention layers and the two poolers are converted. Pretraining and
fine-tuning heads (VQA, VCR, RefCOCO+, retrieval) are not: the project has no fine-tuning heads yet, so there
is no --task option. A params/ folder with variables beyond the encoder is an error that lists them, unless
--allow-unused is given. Adam moments and learning-rate counters are always skipped.
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
        help="convert the encoder even when params/ holds other variables (heads), listing what is left out",
    )
    convert.set_defaults(func=run_convert_paddle)


def run_convert_paddle(args: argparse.Namespace) -> int:
    from ernievil_ds.convert.paddle_checkpoint import convert_paddle_checkpoint
    from ernievil_ds.errors import require_output_dir

    require_output_dir(args.output)
    print(convert_paddle_checkpoint(args.params, args.config, args.vocab, args.output, args.allow_unused))
    return 0
