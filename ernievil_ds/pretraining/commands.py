"""Subcommands for trained runs: ``export``, ``eval-cloze`` and ``plot``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ernievil_ds.errors import UserError, require_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser("export", help="consolidate a ZeRO checkpoint into a Hugging Face model")
    export.add_argument(
        "--checkpoint", type=Path, required=True, help="a run dir, its checkpoints/ or a step_*"
    )
    export.add_argument("--output", type=Path, help="default: hf_model/ beside checkpoints/")
    export.set_defaults(func=run_export)

    cloze = subparsers.add_parser("eval-cloze", help="mask each scene-graph node in turn; accuracy per type")
    what = cloze.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", type=Path, help="an exported model directory")
    what.add_argument(
        "--every-checkpoint",
        type=Path,
        metavar="RUN_DIR",
        help="score every complete checkpoint of a pretraining run (its --output-dir), one row per step",
    )
    cloze.add_argument(
        "--data", type=Path, help="a prepared data directory (default: the built-in SynthScenes)"
    )
    cloze.add_argument("--split", default="eval")
    cloze.add_argument("--max-examples", type=int)
    cloze.add_argument("--device", help="e.g. cpu, cuda, cuda:1 (default: the GPU when there is one)")
    cloze.add_argument("--json", action="store_true", help="print JSON instead of a table")
    cloze.set_defaults(func=run_eval_cloze)

    plot = subparsers.add_parser("plot", help="draw a run's loss curves, loss scale and throughput to a PNG")
    plot.add_argument("run_dir", type=Path)
    plot.add_argument("--output", type=Path)
    plot.set_defaults(func=run_plot)


def run_export(args: argparse.Namespace) -> int:
    from ernievil_ds.pretraining.export import export_checkpoint, resolve_checkpoint
    from ernievil_ds.runs import RunFolder

    tag_dir = resolve_checkpoint(args.checkpoint)
    output = args.output or RunFolder(tag_dir.parent.parent).model_dir
    print(export_checkpoint(tag_dir, output))
    return 0


def run_eval_cloze(args: argparse.Namespace) -> int:
    from ernievil_ds.data import default_synth_dir
    from ernievil_ds.pretraining import cloze

    # What the user named is checked first: the default data folder only exists once a run prepared it.
    if args.max_examples is not None and args.max_examples < 1:
        raise UserError(f"--max-examples must be at least 1, got {args.max_examples}")
    if args.every_checkpoint is not None:
        require_dir(args.every_checkpoint, "run directory")
    elif not (require_dir(args.model, "model folder") / "config.json").is_file():
        raise UserError(f"model folder {args.model} has no config.json: export a checkpoint into it first")
    data = args.data or default_synth_dir()
    if not data.is_dir():
        raise UserError(f"no data at {data}: pass --data DIR (a prepared data directory)")
    options = {"split": args.split, "max_examples": args.max_examples, "device": args.device}
    if args.every_checkpoint is not None:
        curve = cloze.run_cloze_per_checkpoint(args.every_checkpoint, data, **options)
        print(json.dumps(curve, indent=2) if args.json else cloze.format_cloze_curve(curve))
    else:
        results = cloze.run_cloze(args.model, data, **options)
        print(json.dumps(results, indent=2) if args.json else cloze.format_cloze_table(results))
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from ernievil_ds.pretraining.plot import plot_metrics
    from ernievil_ds.runs import METRICS_FILE

    if not (require_dir(args.run_dir, "run directory") / METRICS_FILE).is_file():
        raise UserError(f"run directory {args.run_dir} has no {METRICS_FILE}: is it a pretraining run?")
    print(plot_metrics(args.run_dir, args.output))
    return 0
