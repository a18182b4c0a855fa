"""The command line of ``launchers/prepare_data.py``: import captions and region features into a data
directory, or generate SynthScenes. Every subcommand is resumable: rerun the same command after an
interruption.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ernievil_ds.data.captions import CAPTION_FORMATS
from ernievil_ds.data.region_features import FEATURE_READERS
from ernievil_ds.distributed import setup_logging
from ernievil_ds.errors import require_output_dir

DESCRIPTION = "Prepare pretraining data: import captions and region features, or generate SynthScenes."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prepare_data.py", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = commands.add_parser("synth", help="generate SynthScenes (no download) with train and eval splits")
    synth.add_argument("--output", required=True, help="data directory to write")
    synth.add_argument("--train-images", type=int, default=4000)
    synth.add_argument("--eval-images", type=int, default=400)
    synth.add_argument("--captions-per-image", type=int, default=3)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--tokenizer", default=None, help="tokenizer path (default: offline BERT uncased)")
    synth.set_defaults(func=run_synth)

    captions = commands.add_parser("captions", help="import captions: parse scene graphs and tokenise")
    captions.add_argument("--format", required=True, choices=CAPTION_FORMATS)
    captions.add_argument("--input", required=True, nargs="+", help="caption file(s)")
    captions.add_argument("--urls", default=None, help="SBU's URL file (sbu format)")
    captions.add_argument("--output", required=True, help="data directory")
    captions.add_argument("--split", required=True, help="split to write, e.g. train or eval")
    captions.add_argument(
        "--karpathy-splits",
        default="train,restval",
        help="comma-separated Karpathy splits (default: train,restval)",
    )
    captions.add_argument("--image-id", choices=("line", "url"), default="line", help="CC/SBU image key")
    captions.add_argument("--tokenizer", default=None, help="tokenizer path (default: offline BERT uncased)")
    captions.add_argument("--spacy-model", default=None, help="spaCy pipeline of the scene-graph parser")
    captions.add_argument("--num-proc", type=int, default=1, help="processes for parsing and tokenisation")
    captions.add_argument("--shard-size", type=int, default=10_000, help="records per resumable shard")
    captions.set_defaults(func=run_captions)

    features = commands.add_parser(
        "features",
        help="import region features (TSV, LMDB, .npy/.npz; pickled rows may hold only numpy arrays and builtins)",
    )
    features.add_argument("--format", required=True, choices=tuple(FEATURE_READERS))
    features.add_argument(
        "--input", required=True, nargs="+", help="feature files, LMDBs or .npy directories"
    )
    features.add_argument("--output", required=True, help="data directory")
    features.add_argument("--shard-size", type=int, default=1000, help="images per resumable shard")
    features.add_argument(
        "--detector-classes",
        default=None,
        help="the detector's class names, one per line (bottom-up attention's objects_vocab.txt): they name "
        "the regions for the grounding loss of the small preset",
    )
    features.set_defaults(func=run_features)
    return parser


def run_synth(args: argparse.Namespace) -> int:
    from ernievil_ds.data import build_synth_scenes, load_tokenizer

    build_synth_scenes(
        require_output_dir(Path(args.output)),
        num_train_images=args.train_images,
        num_eval_images=args.eval_images,
        seed=args.seed,
        tokenizer=load_tokenizer(args.tokenizer),
        captions_per_image=args.captions_per_image,
    )
    return 0


def run_captions(args: argparse.Namespace) -> int:
    from ernievil_ds.data.prepare import import_captions

    report = import_captions(
        args.format,
        args.input,
        args.output,
        split=args.split,
        urls=args.urls,
        karpathy_splits=tuple(args.karpathy_splits.split(",")),
        image_id=args.image_id,
        tokenizer=args.tokenizer,
        spacy_model=args.spacy_model,
        num_proc=args.num_proc,
        shard_size=args.shard_size,
    )
    print(report.summary())
    return 0


def run_features(args: argparse.Namespace) -> int:
    from ernievil_ds.data.prepare import import_region_features

    report = import_region_features(
        args.format,
        args.input,
        args.output,
        shard_size=args.shard_size,
        detector_classes=args.detector_classes,
    )
    print(report.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``prepare_data.py`` command: parse ``argv`` and run its subcommand."""
    args = build_parser().parse_args(argv)
    setup_logging()
    return args.func(args)
