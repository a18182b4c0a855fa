"""benchmarks/bench_loader.py --smoke runs, and its table counts the region bytes each precision moves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_loader_smoke(tmp_path):
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "bench_loader.py"),
        "--smoke",
        "--cache-dir",
        str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cpu: " in result.stdout
    rows = [line.strip("|").split("|") for line in result.stdout.splitlines() if line.startswith("| ")]
    table = {
        (data.strip(), int(workers), precision.strip()): (
            float(rate.replace(",", "")),
            int(size.replace(",", "")),
        )
        for data, workers, precision, rate, size, _ in rows[2:]  # after the header and the rule
    }
    assert len(table) == 2 * 2 * 2  # two data sets, 0 and 1 workers, two precisions
    for (data, workers, precision), (rate, size) in table.items():
        assert rate > 0
        if precision == "float16":
            assert table[data, workers, "float32 (widened)"][1] == 2 * size
    detector = next(data for data, _, _ in table if data.startswith("detector-sized"))
    assert table[detector, 0, "float16"][1] == 36 * (2048 + 1601) * 2  # every image has 36 regions
