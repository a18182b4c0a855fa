"""Fine-tune ERNIE-ViL on a downstream task with ``accelerate``.

    accelerate launch [--config_file accelerate_configs/cpu_2proc.yaml] launchers/finetune.py \
        --task synth_qa --model runs/demo/hf_model --output-dir runs/synth_qa

Writes DIR/metrics.jsonl (loss and learning rate per logged step), DIR/eval.jsonl (accuracies),
TensorBoard logs, accelerate checkpoints under DIR/checkpoints/ (``--resume`` continues from the last)
and the fine-tuned model under DIR/hf_model/; --push-to-hub NAME then publishes it (with its tokenizer and
a model card) on the Hugging Face Hub. An error in the input ends with one line on stderr and exit
status 2; --debug (or ERNIEVIL_DS_DEBUG=1) shows its traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ernievil_ds.distributed import dist_info, setup_logging
from ernievil_ds.errors import require_output_dir, run_command
from ernievil_ds.finetuning.loop import TASKS, FinetuneSettings, finetune
from ernievil_ds.hub.push import check_push_ready, push_after_training

HUB_FLAGS = ("push_to_hub", "hub_private", "hub_revision")


def decay_steps_argument(text: str) -> tuple[int, ...]:
    """``--decay-steps``: comma-separated optimiser steps (the conf's "15100;22590" as 15100,22590)."""
    try:
        return tuple(int(step) for step in text.replace(";", ",").split(",") if step.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated step numbers, got {text!r}") from error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument(
        "--model", type=Path, default=None, help="saved model directory (e.g. a run's hf_model/)"
    )
    parser.add_argument("--preset", default=None, help="or a fresh model of this preset (no pretraining)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="training split (ernievil-ds import-finetune); not synth_qa",
    )
    parser.add_argument("--eval-data-dir", type=Path, default=None, help="evaluation split; not synth_qa")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=32, help="micro-batch per process")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="peak learning rate")
    parser.add_argument("--warmup-steps", type=int, default=30)
    parser.add_argument("--decay-steps", type=decay_steps_argument, default=(), help="e.g. 15100,22590")
    parser.add_argument("--decay-ratio", type=float, default=0.1)
    parser.add_argument("--layer-decay", type=float, default=None, help="layer-wise lr decay, e.g. 0.9")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--head-lr-scale", type=float, default=1.0, help="the head's lr multiple (VQA: 2.5)")
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=0, help="0: only at the end")
    parser.add_argument("--save-every", type=int, default=0, help="0: only at the end")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--train-images", type=int, default=2000, help="synth_qa scenes to train on")
    parser.add_argument("--eval-images", type=int, default=200, help="synth_qa scenes to evaluate on")
    parser.add_argument("--zero-image-features", action="store_true", help="question-only baseline")
    parser.add_argument("--tokenizer", default=None, help="tokenizer path (default: offline BERT uncased)")
    hub = parser.add_argument_group("Hugging Face Hub")
    hub.add_argument(
        "--push-to-hub", metavar="NAME", help="publish hf_model/ as the Hub repository NAME at the end"
    )
    hub.add_argument("--hub-private", action="store_true", help="create that repository private")
    hub.add_argument("--hub-revision", metavar="BRANCH", help="commit to BRANCH (default: main)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    hub = {name: vars(args).pop(name) for name in HUB_FLAGS}
    if hub["push_to_hub"]:  # on every process, so that all stop together before training
        check_push_ready(hub["push_to_hub"])
    settings = FinetuneSettings(**{**vars(args), "output_dir": require_output_dir(args.output_dir)})
    result = finetune(settings)
    if dist_info().is_main:
        print(" ".join(f"{name}={value:.4f}" for name, value in result.items()))
        if hub["push_to_hub"]:
            push_after_training(
                settings.output_dir,
                hub["push_to_hub"],
                private=hub["hub_private"],
                revision=hub["hub_revision"],
            )
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main, prog="finetune.py"))
