"""The ``push-to-hub`` subcommand: publish a saved model or a run's ``hf_model/`` on the Hugging Face Hub."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    push = subparsers.add_parser(
        "push-to-hub",
        help="publish a model (safetensors, config, its code, tokenizer and a generated model card) on the Hub",
    )
    push.add_argument(
        "path", type=Path, metavar="DIR", help="a saved model folder, or a run folder with hf_model/"
    )
    push.add_argument(
        "--repo-id", required=True, metavar="NAME", help="the Hub repository, e.g. user/ernievil-small"
    )
    push.add_argument(
        "--private",
        action="store_true",
        help="create the repository private (an existing public one is refused)",
    )
    push.add_argument(
        "--revision", metavar="R", help="the branch to commit to (created if missing; default: main)"
    )
    push.add_argument("--commit-message", metavar="M")
    push.add_argument(
        "--dry-run",
        action="store_true",
        help="print the files, their sizes and the model card; upload nothing",
    )
    push.set_defaults(func=run_push_to_hub)


def run_push_to_hub(args: argparse.Namespace) -> int:
    from ernievil_ds.hub.push import prepare_upload, push_upload

    upload = prepare_upload(args.path, args.repo_id)
    print(upload.listing())
    if args.dry_run:
        print(f"\n{'-' * 30} README.md {'-' * 30}\n{upload.card}")
        print("Dry run: nothing uploaded.")
        return 0
    url = push_upload(
        upload, private=args.private, revision=args.revision, commit_message=args.commit_message
    )
    print(f"Pushed to {url}")
    return 0
