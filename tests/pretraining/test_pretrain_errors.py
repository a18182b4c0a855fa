"""Pretraining under the real ``deepspeed`` launcher ends a user error with one line and exit status 2 on
every rank, and stops at a non-finite loss with its step and pairs, keeping the last complete checkpoint.
The non-finite-loss guard is also checked alone, without DeepSpeed."""

from __future__ import annotations

import argparse
import itertools
import json
import re
from pathlib import Path

import pytest
import torch

from ernievil_ds.data import SGPCollator
from ernievil_ds.pretraining.arguments import add_pretrain_arguments
from ernievil_ds.pretraining.pretrain import (
    NonFiniteLossError,
    NonFiniteLossGuard,
    PretrainingRun,
)
from ernievil_ds.runs import SamplePosition, complete_checkpoints

REPO = Path(__file__).resolve().parents[2]


def test_the_guard_names_the_first_non_finite_micro_batch():
    guard = NonFiniteLossGuard(
        True, pair_ids_at=lambda epoch, first: [f"e{epoch}:{first + k}" for k in range(2)]
    )
    guard.watch(torch.tensor(2.5), step=7, epoch=0, first_index=0)
    guard.check()  # finite: nothing happens
    guard.watch(torch.tensor(2.4), step=8, epoch=0, first_index=2)
    guard.watch(torch.tensor(float("nan")), step=8, epoch=1, first_index=4)
    guard.watch(torch.tensor(float("inf")), step=8, epoch=1, first_index=6)
    with pytest.raises(
        NonFiniteLossError, match=r"not finite at step 8 \(batch of pairs rank 0: e1:4, e1:5\)"
    ):
        guard.check()


def test_the_guard_leaves_fp16_runs_to_the_loss_scaler():
    guard = NonFiniteLossGuard(False, pair_ids_at=lambda epoch, first: [])
    guard.watch(torch.tensor(float("nan")), step=1, epoch=0, first_index=0)
    guard.check()


def test_the_pair_ids_named_are_those_of_the_batch_across_epochs(tmp_path, synth_cache, monkeypatch):
    """``pair_ids_at(epoch, first sample)`` against the examples the collator was given for each batch."""
    monkeypatch.setenv("ERNIEVIL_DS_CACHE", str(synth_cache))
    argv = ["--deepspeed", str(REPO / "ds_configs" / "cpu_fp32.json"), "--output-dir", str(tmp_path)]
    argv += [
        "--max-steps",
        "2",
        "--preset",
        "tiny",
        "--synth-train-images",
        "40",
        "--synth-eval-images",
        "10",
    ]
    run = PretrainingRun.prepare(add_pretrain_arguments(argparse.ArgumentParser()).parse_args(argv))
    collated, collate = [], SGPCollator.__call__

    def recording_call(collator, examples):
        collated.append([example["pair_id"] for example in examples])
        return collate(collator, examples)

    monkeypatch.setattr(SGPCollator, "__call__", recording_call)
    position = SamplePosition()
    per_epoch = len(run.train_loader[0])
    for _ in itertools.islice(run.batches(position), per_epoch + 2):  # into the second epoch
        assert run.pair_ids_at(position.epoch, position.index - run.micro_batch_size) == collated[-1]
    assert position.epoch == 1 and collated[per_epoch] != collated[0]


@pytest.mark.slow
def test_a_missing_data_directory_stops_every_rank_with_one_line(tmp_path, synth_cache, run_pretrain):
    result = run_pretrain(
        tmp_path / "run", synth_cache, "--max-steps", "2", "--data-dir", str(tmp_path / "nodata"), check=False
    )
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "pretrain.py: error:" in line]
    assert len(lines) == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert lines[0].endswith(
        f"--data-dir {tmp_path / 'nodata'} does not exist; prepare one with "
        "launchers/prepare_data.py, or leave --data-dir out to train on the built-in SynthScenes"
    )
    assert "Traceback" not in result.stderr and result.returncode == 2


@pytest.mark.slow
def test_a_diverging_fp32_run_stops_at_the_non_finite_loss(tmp_path, synth_cache, run_pretrain):
    config = json.loads((REPO / "ds_configs" / "cpu_fp32.json").read_text())
    config["scheduler"]["params"].update(warmup_min_lr=1e35, warmup_max_lr=1e35, warmup_num_steps=1)
    (tmp_path / "diverge.json").write_text(json.dumps(config))
    out = tmp_path / "run"
    result = run_pretrain(
        out,
        synth_cache,
        "--max-steps",
        "6",
        "--save-every",
        "1",
        "--no-export",
        config=str(tmp_path / "diverge.json"),
        check=False,
    )
    output = result.stdout + result.stderr
    found = re.search(
        r"the training loss is not finite at step (\d+) \(batch of pairs (rank \d: [^)]+)\)", output
    )
    assert found, output[-4000:]
    step = int(found.group(1))
    assert step >= 2  # step 1 runs on the initial weights; its checkpoint must survive
    micro_batch = config["train_micro_batch_size_per_gpu"]
    for pair_ids in re.findall(r"rank \d: ([^;]+)", found.group(2)):  # SynthScenes pairs: <image id>-<k>
        assert len(pair_ids.split(", ")) == micro_batch and all(
            re.fullmatch(r"\S+-\d", p) for p in pair_ids.split(", ")
        )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [saved for saved, _ in complete_checkpoints(out / "checkpoints")] == list(range(1, step))
