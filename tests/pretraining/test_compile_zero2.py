"""Under --compile, DeepSpeed's ZeRO-2 gradient hooks still fire: one optimizer step of the compiled
engine moves every parameter exactly as the uncompiled engine's step does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ernievil_ds.distributed import free_port
from tests.pretraining.conftest import REPO


@pytest.mark.slow
def test_a_zero2_step_of_the_compiled_engine_equals_the_uncompiled_one():
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "MASTER_PORT": str(free_port()),
        "OMP_NUM_THREADS": "1",
    }
    worker = REPO / "tests" / "pretraining" / "compile_step_worker.py"
    result = subprocess.run(
        [sys.executable, str(worker)], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["largest_update"] > 1e-4  # the step did move the weights (lr 3e-4, AdamW)
    assert figures["largest_difference"] < 1e-6, figures
