"""``ernievil-ds import-finetune``: import a split of a fine-tuning task's data into an output directory."""

from __future__ import annotations

import argparse

from ernievil_ds.errors import UserError

_TASK_INPUTS = {
    "vqa": "--input (official TSV files) and --answers (trainval_label2ans.pkl or another answer list)",
    "vqa-v2": "--questions, optionally --annotations, --answers and --images (COCO feature files)",
    "refcoco": "--input (official TSV files)",
    "retrieval": "--input (caption files) and --images (image TSV files)",
    "vcr": "--input (JSON lines), --images (detected LMDB [ground-truth LMDB]) and --names",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-finetune",
        help="import a split of VQA, RefCOCO+, Flickr30K or VCR data into an examples and an images table",
        description="Each task reads: "
        + "; ".join(f"{task}: {inputs}" for task, inputs in _TASK_INPUTS.items())
        + ". Rerun the same command to resume an interrupted import.",
    )
    parser.add_argument("--task", required=True, choices=tuple(_TASK_INPUTS))
    parser.add_argument("--output-dir", required=True, help="directory of the split's tables")
    parser.add_argument("--input", nargs="+", default=[], help="the task's text or TSV files (see above)")
    parser.add_argument("--images", nargs="+", default=[], help="feature files or LMDBs (see above)")
    parser.add_argument(
        "--image-format", default="tsv", choices=("tsv", "lmdb", "npy"), help="vqa-v2: format of --images"
    )
    parser.add_argument("--questions", default=None, help="vqa-v2: the questions JSON")
    parser.add_argument("--annotations", default=None, help="vqa-v2: the annotations JSON (not for test)")
    parser.add_argument("--answers", default=None, help="answer list (.json, .pkl or one per line)")
    parser.add_argument(
        "--min-answer-count",
        type=int,
        default=9,
        help="vqa-v2: questions an answer needs to be in the vocabulary",
    )
    parser.add_argument("--names", default=None, help="vcr: unisex_names_table.csv, names for person tags")
    parser.add_argument("--max-regions", type=int, default=None, help="vcr: regions per image with [IMG]")
    parser.add_argument("--seed", type=int, default=0, help="vcr: seed of the names drawn for person tags")
    parser.add_argument("--tokenizer", default=None, help="tokenizer path (default: offline BERT uncased)")
    parser.add_argument("--shard-size", type=int, default=10_000, help="records per resumable shard")
    parser.set_defaults(func=run_import)


def _require(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{name.replace('_', '-')}" for name in names if not getattr(args, name)]
    if missing:
        raise UserError(f"--task {args.task} needs {' and '.join(missing)}: {_TASK_INPUTS[args.task]}")


def run_import(args: argparse.Namespace) -> int:
    from ernievil_ds.finetuning import data

    common = {"tokenizer": args.tokenizer, "shard_size": args.shard_size}
    if args.task == "vqa":
        _require(args, "input", "answers")
        report = data.import_official_vqa(args.input, args.output_dir, answers=args.answers, **common)
    elif args.task == "vqa-v2":
        _require(args, "questions")
        report = data.import_vqa_v2(
            args.questions,
            args.output_dir,
            annotations=args.annotations,
            answers=args.answers,
            min_answer_count=args.min_answer_count,
            images=args.images,
            image_format=args.image_format,
            **common,
        )
    elif args.task == "refcoco":
        _require(args, "input")
        report = data.import_refcoco(args.input, args.output_dir, **common)
    elif args.task == "retrieval":
        _require(args, "input", "images")
        report = data.import_retrieval(args.input, args.images, args.output_dir, **common)
    else:
        _require(args, "input", "images", "names")
        report = data.import_vcr(
            args.input,
            args.images,
            args.output_dir,
            names=args.names,
            max_regions=args.max_regions,
            seed=args.seed,
            **common,
        )
    print(report.summary())
    return 0
