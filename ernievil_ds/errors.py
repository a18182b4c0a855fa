"""One error path for every command: errors a user can cause become one line on stderr and exit status 2.

Library code raises ``UserError`` (a ``ValueError``), or ``ValueError`` / ``OSError`` as the standard
library and ``huggingface_hub`` do for bad values and missing files; ``run_command`` runs a command's ``main`` and
turns those into ``<program>: error: <message>``, printed once per job (by rank 0), with exit status 2,
the status argparse gives a bad flag. Any other exception is a bug and keeps its traceback.
``--debug`` on the command line or ``ERNIEVIL_DS_DEBUG=1`` in the environment shows the traceback of user
errors too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from ernievil_ds.distributed import dist_info

#: Exit status of a command stopped by a user error (argparse uses 2 for a bad command line).
USER_ERROR_STATUS = 2
DEBUG_ENV = "ERNIEVIL_DS_DEBUG"
DEBUG_FLAG = "--debug"


class UserError(ValueError):
    """An input the user gave cannot be used; the message names the file or value and the problem.

    A ``ValueError``, as the standard library's errors for bad values are: callers of the library that
    catch those catch these too.
    """


def require_dir(path: Path, what: str) -> Path:
    """``path`` when it is an existing folder; else a ``UserError`` saying that ``what`` is missing."""
    if not path.exists():
        raise UserError(f"{what} {path} does not exist")
    if not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a folder")
    return path


def require_output_dir(path: Path, what: str = "output") -> Path:
    """``path`` when it is a folder or can become one; a ``UserError`` when it is an existing file."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a folder: choose another path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{what} {path} cannot be created: {parent} is a file")
            break
    return path


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types that a user's input, not a bug, raises at a command's boundary.

    ``ValueError`` covers bad values, invalid JSON (``JSONDecodeError``) and undecodable text
    (``UnicodeDecodeError``); ``OSError`` covers missing, unreadable or misplaced files and folders;
    ``huggingface_hub`` rejects an invalid model config with an exception of its own, and ``lmdb`` a
    file that is not an LMDB.
    """
    types: list[type[BaseException]] = [UserError, ValueError, OSError]
    try:
        from huggingface_hub.errors import StrictDataclassClassValidationError

        types.append(StrictDataclassClassValidationError)
    except ImportError:  # older huggingface_hub: configs are not strict dataclasses there
        pass
    try:
        import lmdb

        types.append(lmdb.Error)
    except ImportError:
        pass
    return tuple(types)


def debug_requested(argv: list[str]) -> bool:
    """Whether the user asked for tracebacks: ``--debug`` among the arguments or ``ERNIEVIL_DS_DEBUG`` set."""
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def one_line(error: BaseException) -> str:
    """The error's message on one line (a multi-line message's lines joined)."""
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    if isinstance(error, OSError) and error.filename is not None and str(error.filename) not in message:
        message = f"{error.filename}: {message}"
    return message or type(error).__name__


def run_command(
    main: Callable[[list[str]], int | None], argv: list[str] | None = None, *, prog: str | None = None
) -> int:
    """Run ``main(argv)`` and return its exit status; a user error becomes one line on stderr and status 2.

    ``argv`` defaults to the command line; ``--debug`` is removed from it before ``main`` sees it. ``prog``
    (default: the program's file name) starts the line. Every rank of a distributed job stops with
    status 2; only rank 0 prints the line, so that a job prints it once.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    try:
        return int(main(argv) or 0)
    except user_error_types() as error:
        if debug:
            raise
        if dist_info().is_main:
            print(f"{prog or Path(sys.argv[0]).name}: error: {one_line(error)}", file=sys.stderr, flush=True)
        return USER_ERROR_STATUS
