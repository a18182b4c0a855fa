"""benchmarks/gpu_check.sh: its budget and hygiene read from the script, and its --cpu-smoke run end to end
(every step at tiny shapes on the CPU, the Triton kernels interpreted)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"


def test_the_step_limits_add_up_to_at_most_420_seconds_and_python3_is_the_only_python():
    text = SCRIPT.read_text()
    limits = [int(limit) for limit in re.findall(r"^\s*step \S+ (\d+) ", text, flags=re.MULTILINE)]
    assert len(limits) == 7 and max(limits[:2]) + sum(limits[2:]) <= 420  # one of the two test lines runs
    commands = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in commands if re.search(r"\bpython\b(?!3)", line)]
    assert "PYTHONPATH" not in "\n".join(commands) and "pip install" not in "\n".join(commands)


@pytest.mark.slow
def test_the_cpu_smoke_runs_every_step_and_writes_at_most_8_plain_named_files(tmp_path):
    out = tmp_path / "gpu check"
    result = subprocess.run(
        [str(SCRIPT), str(out), "--cpu-smoke"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    files = sorted(path.name for path in out.iterdir())
    assert len(files) <= 8 and all(re.fullmatch(r"[a-z0-9_]+\.(md|json|log)", name) for name in files), files
    summary = json.loads((out / "summary.json").read_text())
    assert all(text.startswith("exit 0 ") for text in summary["status"].values()), summary["status"]
    assert list(summary["status"]) == [
        "tests",
        "attention_b64",
        "attention_b512",
        "loss",
        "cuda_graph",
        "base_step",
    ]
    assert summary["cuda-graph"]["passed"], summary["cuda-graph"]
    cells = [row[p] for row in summary["attention"]["rows"] for p in ("triton", "sdpa")]
    cells += [row[p] for row in summary["loss"]["rows"] for p in ("triton", "torch")]
    assert all(cell["ms"] > 0 for cell in cells)
    assert len(summary["attention"]["rows"]) == 8 and len(summary["loss"]["rows"]) == 2  # B 2 once
    assert [row["name"] for row in summary["base-step"]["rows"] if row.get("ms_per_step", 0) > 0] == [
        "sdpa + torch loss",
        "triton attention + torch loss",
        "sdpa + triton loss",
        "sdpa + torch loss, compiled (reduce-overhead; aot_eager in a smoke run)",
    ]
    markdown = (out / "summary.md").read_text()
    assert "## Attention" in markdown and "## CUDA-graph check" in markdown and "## tiny, B 2" in markdown
