"""Each kernel, pretraining and fine-tuning benchmark runs with ``--smoke`` on the CPU and prints its device
line and its side-by-side table, every provider present, those only a GPU measures marked as such; the
step's operator count finds no host sync and no graph break."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run_smoke(script: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, script, "--smoke"],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def table(stdout: str) -> list[list[str]]:
    """The Markdown table's rows (header first), each a list of its cells."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "providers"),
    [
        ("bench_co_attention.py", ["triton", "torch-sdpa", "torch-eager"]),
        ("bench_masked_token_loss.py", ["triton", "torch"]),
    ],
)
def test_a_kernel_benchmark_smoke_runs_every_provider_on_the_cpu(script, providers):
    stdout = run_smoke(script)
    assert stdout.startswith("device: ") and "smoke" in stdout.splitlines()[0]
    header, *rows = table(stdout)
    assert header[1 : 1 + len(providers)] == providers and len(rows) == 2
    for row in rows:
        cells = dict(zip(header, row))
        assert cells["triton"] == "not measured (GPU only)"
        assert cells[providers[1]].endswith("ms (CPU)") and float(cells[providers[1]].split()[0]) > 0
    assert "ran under its interpreter and matched" in stdout


@pytest.mark.slow
def test_the_pretraining_benchmark_smoke_measures_the_cpu_rows_and_marks_the_rest():
    stdout = run_smoke("bench_pretrain.py")
    assert "tiny preset" in stdout.splitlines()[0]
    header, *rows = table(stdout)
    cells = [dict(zip(header, row)) for row in rows]
    assert [(c["attention"], c["compile"]) for c in cells] == [
        (attn, compiled) for attn in ("eager", "sdpa", "triton") for compiled in ("off", "on")
    ]
    for c in cells:
        if c["compile"] == "off" and c["attention"] != "triton":
            assert float(c["samples/s"]) > 0 and c["skipped steps"] == "0"
        else:
            assert c["samples/s"] == "not measured (GPU only)"


@pytest.mark.slow
def test_the_step_operator_count_smoke_finds_no_host_sync_and_no_graph_break():
    stdout = run_smoke("count_step_ops.py")
    assert stdout.startswith("device: ") and "smoke" in stdout.splitlines()[0]
    header, *rows = table(stdout)
    assert len(rows) == 1
    cells = dict(zip(header, rows[0]))
    assert cells["preset"] == "tiny" and int(cells["operators: forward + losses"]) > 100
    assert int(cells["per step"]) == int(cells["operators: forward + losses"]) + int(cells["backward"])
    assert (cells["host syncs"], cells["graphs"], cells["breaks"]) == ("0", "1", "0")


@pytest.mark.slow
def test_the_finetuning_step_benchmark_smoke_times_every_adamw_against_the_for_loop():
    stdout = run_smoke("bench_finetune_step.py")
    assert stdout.startswith("device: ") and "(smoke)" in stdout.splitlines()[0]
    header, *rows = table(stdout)
    cells = [dict(zip(header, row)) for row in rows]
    assert [c["AdamW"] for c in cells] == ["for-loop", "foreach", "fused"]
    assert cells[0]["speed-up over for-loop"] == "1.00x"
    for c in cells:
        assert float(c["ms/step (median)"]) > 0 and c["speed-up over for-loop"].endswith("x")
