"""The ``ernievil-ds`` command line: one subcommand per job, each defined beside the code it runs.

Every module named in ``_COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its
subcommands with ``set_defaults(func=...)``. Heavy imports (torch, spaCy) stay inside the
functions so that ``ernievil-ds --help`` is instant. Errors the user can cause end as one line and exit
status 2 (``ernievil_ds.errors``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ernievil_ds.distributed import setup_logging
from ernievil_ds.errors import DEBUG_ENV, DEBUG_FLAG, run_command

_COMMAND_MODULES = (
    "ernievil_ds.commands",
    "ernievil_ds.convert.commands",
    "ernievil_ds.finetuning.data.commands",
    "ernievil_ds.hub.commands",
    "ernievil_ds.scene_graph.commands",
    "ernievil_ds.pretraining.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ernievil-ds",
        description=__doc__.splitlines()[0],
        epilog=f"An error in the input ends with one line; {DEBUG_FLAG} (or {DEBUG_ENV}=1) shows its traceback.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    return int(args.func(args) or 0)


def main(argv: list[str] | None = None) -> int:
    """The ``ernievil-ds`` entry point: ``run`` under the one error path of every command."""
    return run_command(run, argv, prog="ernievil-ds")


if __name__ == "__main__":
    sys.exit(main())
