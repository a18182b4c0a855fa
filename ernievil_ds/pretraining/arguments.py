"""The pretraining command line, and recipes: named sets of its flags.

A recipe is a JSON object of flag -> value (``{"preset": "small", "freeze-word-embeddings": true,
"node-mask-prob": {"relation": 1.0}}``) and an optional ``"description"``. ``--recipe NAME|PATH``
turns it into command-line arguments placed before the ones given, so that any flag on the command line
overrides the recipe's, and both pass through the same parsing and checks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ernievil_ds.data.collator import node_mask_rates
from ernievil_ds.data.synth import DEFAULT_SYNTH_EVAL_IMAGES, DEFAULT_SYNTH_TRAIN_IMAGES
from ernievil_ds.errors import UserError


class PretrainArgumentParser(argparse.ArgumentParser):
    """A parser whose errors raise ``UserError``: under the ``deepspeed`` launcher every rank parses the
    same command line, and the command's error path (``run_command``) reports it once, from rank 0."""

    def error(self, message: str):
        raise UserError(f"{message} (see --help)")


def node_mask_prob_argument(text: str) -> float | dict[str, float]:
    """``--node-mask-prob``: a number, or a JSON object of rates by node type, checked here."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, bool) or not isinstance(value, (int, float, dict)):
        raise argparse.ArgumentTypeError(
            f"expected a number or a JSON object of rates by node type, got {text!r}"
        )
    try:
        node_mask_rates(value)
    except (TypeError, ValueError) as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return value


def weights_argument(text: str) -> dict[str, float]:
    """A JSON object of weights by name: pretraining's ``--loss-weights`` (by task) and fine-tuning's
    ``--question-loss-weights`` (by synth_qa question type). Names and values are checked where they are
    used (against the model's tasks, the question types)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(
            f"expected a JSON object of weights by name, got {text!r}"
        ) from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object of weights by name, got {text!r}")
    return value


def positive_int_argument(text: str) -> int:
    """An integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def add_static_shape_arguments(data: argparse._ArgumentGroup) -> None:
    """``--pad-to-multiple-of``: fixed batch shapes, for CUDA graphs and ``torch.compile``."""
    data.add_argument(
        "--pad-to-multiple-of",
        type=positive_int_argument,
        default=1,
        metavar="N",
        help="pad every batch's text and regions to a multiple of N (the model's [IMG] not counted), so "
        "that batches take few distinct shapes; padding is masked out of every loss (default 1: off)",
    )


def add_kernel_arguments(group: argparse._ArgumentGroup) -> None:
    """``--attn-implementation``, ``--masked-token-loss`` and ``--compile`` (``training.dispatch``)."""
    group.add_argument(
        "--attn-implementation",
        default="auto",
        choices=["auto", "eager", "sdpa", "triton"],
        help="auto (default): the fused Triton co-attention where the measured table "
        "(ernievil_ds.pretraining.kernel_measurements) says it beat sdpa for this GPU and dtype, sdpa elsewhere",
    )
    group.add_argument(
        "--masked-token-loss",
        default="auto",
        choices=["auto", "torch", "triton"],
        help="auto (default): the fused Triton masked-token loss where the measured table says it beat "
        "torch for this GPU and dtype, torch elsewhere",
    )
    group.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="torch.compile the model (with ZeRO, through DeepSpeed's engine.compile)",
    )
    group.add_argument(
        "--compile-backend",
        default="inductor",
        help="the torch.compile backend with --compile (default inductor; aot_eager traces without "
        "generating code)",
    )


def add_pretrain_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The pretraining command line (DeepSpeed's own ``--deepspeed CONFIG`` and ``--local_rank`` included)."""
    ds = parser.add_argument_group("DeepSpeed")
    # `--deepspeed PATH`, as in the documented command and in HF Trainer; DeepSpeed's add_config_arguments
    # declares --deepspeed as a flag, so it cannot take the path.
    ds.add_argument(
        "--deepspeed", "--deepspeed_config", dest="deepspeed_config", required=True, metavar="JSON"
    )
    ds.add_argument(
        "--local_rank", "--local-rank", type=int, default=-1, help="set by the deepspeed launcher"
    )
    ds.add_argument(
        "--warmup-steps",
        type=int,
        default=10000,
        help="warmup of the paper's Noam schedule (linear warmup, then inverse square root), used when the "
        "DeepSpeed JSON has no scheduler (default 10000)",
    )

    parser.add_argument(
        "--recipe",
        help="a recipe: the name of a file in launchers/recipes/ or a JSON file's path; flags given on the "
        "command line override its values",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--preset", default="small", help="tiny, tiny-grounded, small, base or large (default: small)"
    )
    model.add_argument("--model-config", type=Path, help="a config.json of the model (overrides --preset)")
    model.add_argument(
        "--init-text-from",
        default="none",
        help="initialise the text stream from a BERT checkpoint directory, or 'minilm' for the packaged "
        "all-MiniLM-L6-v2 (small preset), or 'none' (default)",
    )
    model.add_argument(
        "--freeze-word-embeddings",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="keep the word embeddings (and the token head tied to them) fixed: with a pretrained text "
        "stream they are already good, and ZeRO then neither reduces nor updates the vocabulary matrix",
    )
    add_kernel_arguments(model)
    model.add_argument("--loss-weights", type=weights_argument, help="JSON, e.g. '{\"itm\": 0.5}'")

    data = parser.add_argument_group("data")
    data.add_argument(
        "--data-dir", type=Path, help="a prepared data directory (default: built-in SynthScenes)"
    )
    data.add_argument("--synth-train-images", type=int, default=DEFAULT_SYNTH_TRAIN_IMAGES)
    data.add_argument("--synth-eval-images", type=int, default=DEFAULT_SYNTH_EVAL_IMAGES)
    data.add_argument(
        "--tokenizer", help="a Hugging Face tokenizer directory (default: packaged BERT uncased)"
    )
    data.add_argument(
        "--sgp",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Scene Graph Prediction masking (default); --no-sgp is the ablation: random token masking only",
    )
    data.add_argument(
        "--node-mask-prob",
        type=node_mask_prob_argument,
        default=0.3,
        help="share of each caption's objects, attributes and relations masked for SGP: one rate, or rates by "
        "type as JSON, e.g. '{\"relation\": 0.6}' (a type left out keeps 0.3; default 0.3, as in ERNIE-ViL)",
    )
    data.add_argument(
        "--itm-negative-prob",
        type=float,
        default=0.5,
        help="share of training pairs shown another image for image-text matching; token targets come from "
        "the matched rest (default 0.5, as in ViLBERT and ERNIE-ViL)",
    )
    data.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes per rank")
    add_static_shape_arguments(data)
    data.add_argument(
        "--group-by-length",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="batch captions of similar length together (within groups of 50 global batches) to cut padding",
    )

    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", type=Path, required=True)
    run.add_argument("--max-steps", type=int, required=True, help="optimizer steps to train for")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="bitwise-equal weights from the same command, seed and thread count on one machine: "
        "deterministic algorithms only (CUBLAS_WORKSPACE_CONFIG=:4096:8 on CUDA unless set) and "
        "--torch-threads 1 unless given",
    )
    run.add_argument(
        "--torch-threads",
        type=positive_int_argument,
        metavar="N",
        help="PyTorch's intra-op threads per rank (default: PyTorch's own choice, or 1 with --deterministic)",
    )
    run.add_argument("--log-every", type=int, default=10)
    run.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (0: only at the end)")
    run.add_argument("--eval-batches", type=int, default=4)
    run.add_argument(
        "--save-every", type=int, default=0, help="checkpoint every N steps (0: only at the end)"
    )
    run.add_argument("--keep-checkpoints", type=int, default=2)
    run.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    run.add_argument(
        "--stop-after-steps",
        type=int,
        help="leave after this many steps in this invocation, with a checkpoint (for time-sliced or "
        "preemptible jobs: rerun with --resume); the schedule still spans --max-steps",
    )
    run.add_argument(
        "--export",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the Hugging Face export at the end",
    )
    run.add_argument(
        "--cloze", action=argparse.BooleanOptionalAction, default=True, help="the cloze evaluation at the end"
    )
    hub = parser.add_argument_group("Hugging Face Hub")
    hub.add_argument(
        "--push-to-hub",
        metavar="NAME",
        help="publish the export (hf_model/, with a model card) as the Hub repository NAME at the end; "
        "the token comes from HF_TOKEN or `hf auth login`",
    )
    hub.add_argument("--hub-private", action="store_true", help="create that repository private")
    hub.add_argument("--hub-revision", metavar="BRANCH", help="commit to BRANCH (default: main)")
    return parser


def find_recipe(name_or_path: str, recipes_dir: Path | None) -> Path:
    """A recipe file: ``name_or_path`` itself when it is a file, else ``recipes_dir/<name>.json``.

    Raises:
        UserError: naming what was looked for and the recipes there are.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    if recipes_dir is not None and (recipes_dir / f"{name_or_path}.json").is_file():
        return recipes_dir / f"{name_or_path}.json"
    known = sorted(p.stem for p in recipes_dir.glob("*.json")) if recipes_dir is not None else []
    raise UserError(f"No recipe {name_or_path!r}: not a file, and not one of {known} in {recipes_dir}")


def recipe_arguments(path: Path, parser: argparse.ArgumentParser) -> list[str]:
    """The command-line arguments that a recipe file stands for.

    Raises:
        UserError: the file is not a JSON object, names a flag the parser does not have, or gives a value
            of the wrong kind (``false`` for a flag that has no ``--no-`` form).
    """
    try:
        recipe = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"Recipe {path} is not valid JSON: {error}") from error
    if not isinstance(recipe, dict):
        raise UserError(f"Recipe {path} must be a JSON object of flag -> value")
    recipe.pop("description", None)
    flags = {option for action in parser._actions for option in action.option_strings}
    argv = []
    for key, value in recipe.items():
        flag = f"--{key}"
        if flag not in flags or flag == "--recipe":
            raise UserError(f"Recipe {path} names {key!r}, which is not a pretraining flag")
        if value is True:
            argv.append(flag)
        elif value is False:
            if f"--no-{key}" not in flags:
                raise UserError(f"Recipe {path}: {key!r} is a flag that cannot be turned off; leave it out")
            argv.append(f"--no-{key}")
        else:
            argv += [flag, json.dumps(value) if isinstance(value, (dict, list)) else str(value)]
    return argv


def parse_pretrain_arguments(
    argv: list[str] | None = None, recipes_dir: Path | None = None
) -> argparse.Namespace:
    """Parse the pretraining command line (``sys.argv[1:]`` by default), with ``--recipe``'s flags placed
    before the given ones."""
    argv = sys.argv[1:] if argv is None else argv
    parser = add_pretrain_arguments(PretrainArgumentParser(description="Pretrain ERNIE-ViL under DeepSpeed."))
    recipe_only = argparse.ArgumentParser(add_help=False)
    recipe_only.add_argument("--recipe")
    recipe = recipe_only.parse_known_args(argv)[0].recipe
    if recipe is None:
        return parser.parse_args(argv)
    prefix = recipe_arguments(find_recipe(recipe, recipes_dir), parser)
    return parser.parse_args([*prefix, *argv])
