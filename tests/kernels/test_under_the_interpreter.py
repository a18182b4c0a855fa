"""Without a GPU, the kernel tests run in a child pytest with ``TRITON_INTERPRET=1`` from its start (see
``conftest.py``); this is the test that starts it and reports its failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kernels.conftest import DELEGATED

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@pytest.mark.skipif(
    not DELEGATED, reason="the kernel tests run in this process (GPU, or TRITON_INTERPRET set)"
)
@pytest.mark.slow
def test_the_kernel_tests_pass_under_the_triton_interpreter():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE)],
        cwd=REPO,
        env={**os.environ, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"{result.stdout[-12000:]}\n{result.stderr[-4000:]}"
