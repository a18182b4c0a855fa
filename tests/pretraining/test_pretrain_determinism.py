"""``--deterministic``: two runs of the same command give bitwise-equal weights (CPU, gloo, ZeRO-2)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


def test_two_deterministic_runs_export_bitwise_equal_weights(tmp_path, synth_cache, run_pretrain):
    flags = ("--max-steps", "4", "--log-every", "2", "--eval-batches", "1", "--num-workers", "1")
    runs = [tmp_path / "first", tmp_path / "second"]
    for out in runs:
        run_pretrain(out, synth_cache, *flags, "--deterministic", env={"OMP_NUM_THREADS": "2"})

    first, second = (load_file(out / "hf_model" / "model.safetensors") for out in runs)
    assert first.keys() == second.keys() and first
    unequal = [name for name in first if not torch.equal(first[name], second[name])]
    assert not unequal, f"tensors that differ between the two runs: {unequal}"
    records = [json.loads(line) for line in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]

    arguments = json.loads((runs[0] / "run.json").read_text())["arguments"]
    # The flag, and the thread count it fixed (1, whatever OMP_NUM_THREADS says), are in the record.
    assert arguments["deterministic"] is True and arguments["torch_threads"] == 1
