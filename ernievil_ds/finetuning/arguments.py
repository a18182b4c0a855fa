"""The fine-tuning command line: ``FinetuneSettings`` (every default, declared once), the recipes (named
sets of settings) and the parser.

``launchers/finetune.py`` (run by ``accelerate launch``) parses with ``parse_finetune_arguments``; the
parser takes its defaults from the dataclass, so that a flag left out and a ``FinetuneSettings`` built
in code train the same run. ``--recipe NAME`` replaces those defaults with ``FINETUNE_RECIPES[NAME]``
(flags given still win), as ``FinetuneSettings(**FINETUNE_RECIPES[NAME], ...)`` does in code.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ernievil_ds.errors import UserError, require_output_dir
from ernievil_ds.finetuning.synth_qa import QUESTION_TYPES
from ernievil_ds.finetuning.tasks import TASKS, VQA_LOSS_PROBLEM_TYPES
from ernievil_ds.pretraining.arguments import weights_argument

DEFAULT_BATCH_SIZE = 32  # the micro-batch per process without --batch-size or --global-batch-size

#: The synth_qa demo fine-tune, as ``FinetuneSettings`` fields: ``--recipe synth_qa`` on the command line
#: (docs/finetuning.md) and every arm of ``experiments/sgp_transfer.py`` read it from here. A softmax over
#: the answers, not the paper's sigmoids: with the sigmoids colour stayed at its prior in 3 of 5 runs of
#: SGP models (``docs/design-notes.md``, "Why a softmax loss for synth_qa?"). 900 steps: colour is learned
#: late, relation still rises after it, and 900 are what fits in about 5 minutes on 2 cores ("How many
#: steps?" there).
SYNTH_QA_RECIPE: dict[str, object] = {
    "steps": 900,
    "batch_size": 32,
    "learning_rate": 1e-4,
    "warmup_steps": 20,
    "head_lr_scale": 30.0,
    "vqa_loss": "softmax",
}
#: ``--recipe NAME`` -> the settings it stands for.
FINETUNE_RECIPES: dict[str, dict[str, object]] = {"synth_qa": SYNTH_QA_RECIPE}


@dataclass
class FinetuneSettings:
    """Everything one fine-tuning run reads; the command line's flags, one to one."""

    task: str
    output_dir: Path
    model: Path | None = None  # a saved model directory (a pretraining run's hf_model/)
    preset: str | None = None  # or a fresh model of this preset (no ERNIE-ViL pretraining)
    data_dir: Path | None = None  # the official tasks' training split (synth_qa generates its own)
    eval_data_dir: Path | None = None  # and their evaluation split
    steps: int = 300
    batch_size: int | None = None  # micro-batch per process; None: DEFAULT_BATCH_SIZE, or the whole share
    global_batch_size: int | None = None  # examples per optimiser step over all processes (the confs' batch)
    learning_rate: float = 1e-4
    warmup_steps: int = 30
    decay_steps: tuple[int, ...] = ()
    decay_ratio: float = 0.1
    layer_decay: float | None = None
    layer_decay_table: tuple[int, int] | None = (
        None  # the official (text_init_layers, n_layers); None: the model's
    )
    weight_decay: float = 0.01
    head_lr_scale: float = 1.0
    max_grad_norm: float = 1.0
    vqa_loss: str | None = None  # "sigmoid" or "softmax" (VQA tasks); None: the model's, else sigmoid
    gradient_accumulation_steps: int = 1
    mixed_precision: str | None = None  # None: what ``accelerate launch`` or its config says
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0  # 0: only at the end
    save_every: int = 0  # 0: only at the end
    resume: bool = False
    train_images: int = 2000
    eval_images: int = 200
    train_question_types: tuple[str, ...] | None = None  # synth_qa: train on these types only; None: all
    question_loss_weights: dict[str, float] | None = None  # synth_qa: a type's loss times this; others 1
    zero_image_features: bool = False  # the question-only baseline
    tokenizer: str | None = None  # None: the offline BERT uncased WordPiece vocabulary
    push_to_hub: str | None = None  # publish hf_model/ as this Hub repository at the end
    hub_private: bool = False
    hub_revision: str | None = None


def resolve_batch_sizes(settings: FinetuneSettings, world_size: int) -> FinetuneSettings:
    """The settings with the micro-batch and the accumulation each run trains with.

    Without ``global_batch_size``: ``batch_size`` (``DEFAULT_BATCH_SIZE`` when None) per process and the
    given accumulation. With it: each process takes ``global_batch_size / world_size`` examples a step,
    in micro-batches of ``batch_size`` (the whole share when None), accumulated over the quotient. The
    result is a fixed point: resolving it again returns it.

    Raises:
        UserError: a size below 1, a global batch that the processes or the micro-batch do not divide,
            or an accumulation given that differs from the derived one.
    """
    total = settings.global_batch_size
    for flag, value in (("--batch-size", settings.batch_size), ("--global-batch-size", total)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    if total is None:
        return dataclasses.replace(settings, batch_size=settings.batch_size or DEFAULT_BATCH_SIZE)
    if total % world_size:
        raise UserError(f"--global-batch-size {total} does not divide among {world_size} processes")
    share = total // world_size
    micro = settings.batch_size or share
    if share % micro:
        raise UserError(
            f"--global-batch-size {total} gives {share} examples per process, which micro-batches of "
            f"--batch-size {micro} do not divide"
        )
    accumulation = share // micro
    if settings.gradient_accumulation_steps not in (1, accumulation):
        raise UserError(
            f"--gradient-accumulation-steps {settings.gradient_accumulation_steps} contradicts "
            f"--global-batch-size {total} (micro-batch {micro} x {world_size} processes x {accumulation} steps)"
        )
    return dataclasses.replace(settings, batch_size=micro, gradient_accumulation_steps=accumulation)


def decay_steps_argument(text: str) -> tuple[int, ...]:
    """``--decay-steps``: comma-separated optimiser steps (the conf's "15100;22590" as 15100,22590)."""
    try:
        return tuple(int(step) for step in text.replace(";", ",").split(",") if step.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated step numbers, got {text!r}") from error


def question_types_argument(text: str) -> tuple[str, ...]:
    """``--train-question-types``: comma-separated synth_qa question types (e.g. colour,count); the task
    checks the names (``build_task``)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def layer_decay_table_argument(text: str) -> tuple[int, int]:
    """``--layer-decay-table``: the official script's ``text_init_layers,n_layers`` (e.g. 18,30)."""
    try:
        text_init_layers, n_layers = (int(part) for part in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected TEXT_INIT_LAYERS,N_LAYERS such as 18,30, got {text!r}"
        ) from error
    if not 0 <= text_init_layers < n_layers:
        raise argparse.ArgumentTypeError(f"expected 0 <= TEXT_INIT_LAYERS < N_LAYERS, got {text!r}")
    return text_init_layers, n_layers


def _add_model_and_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--model", type=Path, help="saved model directory (e.g. a run's hf_model/)")
    parser.add_argument("--preset", help="or a fresh model of this preset (no pretraining)")
    parser.add_argument(
        "--data-dir", type=Path, help="training split (ernievil-ds import-finetune); not synth_qa"
    )
    parser.add_argument("--eval-data-dir", type=Path, help="evaluation split; not synth_qa")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--train-images", type=int, help="synth_qa scenes to train on")
    parser.add_argument("--eval-images", type=int, help="synth_qa scenes to evaluate on")
    parser.add_argument(
        "--train-question-types",
        type=question_types_argument,
        metavar="TYPE,...",
        help=f"synth_qa: train on these question types only (of {','.join(QUESTION_TYPES)}); the "
        "evaluation still asks every type",
    )
    parser.add_argument(
        "--question-loss-weights",
        type=weights_argument,
        metavar="JSON",
        help="synth_qa: each named question type's loss times its weight (the others 1), "
        "e.g. '{\"count\": 4}'",
    )
    parser.add_argument("--zero-image-features", action="store_true", help="question-only baseline")
    parser.add_argument("--tokenizer", help="tokenizer path (default: offline BERT uncased)")


def _add_optimisation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, help="optimiser steps")
    parser.add_argument(
        "--batch-size", type=int, help=f"micro-batch per process (default {DEFAULT_BATCH_SIZE})"
    )
    parser.add_argument(
        "--global-batch-size",
        type=int,
        help="examples per optimiser step over all processes; sets the accumulation (and the micro-batch "
        "when --batch-size is not given)",
    )
    parser.add_argument("--gradient-accumulation-steps", type=int)
    parser.add_argument("--learning-rate", type=float, help="peak learning rate")
    parser.add_argument("--warmup-steps", type=int)
    parser.add_argument("--decay-steps", type=decay_steps_argument, help="e.g. 15100,22590")
    parser.add_argument("--decay-ratio", type=float)
    parser.add_argument("--layer-decay", type=float, help="layer-wise lr decay, e.g. 0.9")
    parser.add_argument(
        "--layer-decay-table",
        type=layer_decay_table_argument,
        metavar="TEXT_INIT_LAYERS,N_LAYERS",
        help="depths as the official script numbers them from these two arguments (its defaults 18,30, "
        "which the RefCOCO+ conf leaves in place, are large's table); default: the model's own depths "
        "(6,18 for base)",
    )
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--head-lr-scale", type=float, help="the head's lr multiple (VQA: 2.5)")
    parser.add_argument("--max-grad-norm", type=float)
    parser.add_argument(
        "--vqa-loss",
        choices=tuple(VQA_LOSS_PROBLEM_TYPES),
        help="vqa and synth_qa: a sigmoid per answer (the paper's) or one softmax over the answers "
        "(default: what the model was fine-tuned with, else sigmoid)",
    )
    parser.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"))
    parser.add_argument("--seed", type=int)


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recipe",
        choices=tuple(FINETUNE_RECIPES),
        help="a named set of settings (ernievil_ds.finetuning.arguments.FINETUNE_RECIPES); flags given on "
        "the command line override its values",
    )
    parser.add_argument("--log-every", type=int)
    parser.add_argument("--eval-every", type=int, help="0: only at the end")
    parser.add_argument("--save-every", type=int, help="0: only at the end")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    hub = parser.add_argument_group("Hugging Face Hub")
    hub.add_argument(
        "--push-to-hub", metavar="NAME", help="publish hf_model/ as the Hub repository NAME at the end"
    )
    hub.add_argument("--hub-private", action="store_true", help="create that repository private")
    hub.add_argument("--hub-revision", metavar="BRANCH", help="commit to BRANCH (default: main)")


def build_finetune_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The fine-tuning flags, one per ``FinetuneSettings`` field with the dataclass's defaults, and ``--recipe``."""
    parser = argparse.ArgumentParser(description=description)
    _add_model_and_data_arguments(parser)
    _add_optimisation_arguments(parser)
    _add_run_arguments(parser)
    parser.set_defaults(
        **{
            field.name: field.default
            for field in dataclasses.fields(FinetuneSettings)
            if field.default is not dataclasses.MISSING
        }
    )
    return parser


def parse_finetune_arguments(argv: list[str] | None, description: str | None = None) -> FinetuneSettings:
    """The settings of a command line (``sys.argv[1:]`` when ``argv`` is None): ``--recipe``'s values
    in place of the dataclass defaults, the flags given over both.

    Raises:
        UserError: ``--output-dir`` names a file, or a folder that cannot be created.
    """
    parser = build_finetune_parser(description)
    recipe_only = argparse.ArgumentParser(add_help=False)
    recipe_only.add_argument("--recipe")
    recipe = recipe_only.parse_known_args(argv)[0].recipe
    if recipe in FINETUNE_RECIPES:  # another name is refused by the full parser's choices
        parser.set_defaults(**FINETUNE_RECIPES[recipe])
    args = vars(parser.parse_args(argv))
    del args["recipe"]  # its values are in the settings; run.json's command keeps the name
    return FinetuneSettings(**{**args, "output_dir": require_output_dir(args["output_dir"])})
