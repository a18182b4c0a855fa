"""The launchers are thin: each parses and calls the library in at most 40 lines of code, its docstring
aside, and each answers --help."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCHERS = sorted((REPO / "launchers").glob("*.py"))


def lines_of_code(path: Path) -> int:
    """Lines that are neither blank, nor comments, nor the module docstring."""
    source = path.read_text()
    tree = ast.parse(source)
    docstring = set()
    first = tree.body[0] if tree.body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        docstring = set(range(first.lineno, first.end_lineno + 1))
    return sum(
        1
        for number, line in enumerate(source.splitlines(), start=1)
        if number not in docstring and line.strip() and not line.strip().startswith("#")
    )


def test_lines_of_code_leave_out_the_docstring_blanks_and_comments(tmp_path):
    script = tmp_path / "script.py"
    script.write_text('"""One.\n\nTwo.\n"""\n\n# a comment\nimport sys\n\nprint(sys.argv)  # trailing\n')
    assert lines_of_code(script) == 2


@pytest.mark.parametrize("launcher", LAUNCHERS, ids=lambda path: path.name)
def test_each_launcher_is_at_most_40_lines_of_code(launcher):
    assert lines_of_code(launcher) <= 40


@pytest.mark.parametrize("launcher", ["finetune.py", "prepare_data.py"])
def test_a_launcher_answers_help(launcher):
    result = subprocess.run(
        [sys.executable, str(REPO / "launchers" / launcher), "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: {launcher}")
