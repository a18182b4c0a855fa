"""The run folder both loops share (``ernievil_ds.runs``): the settings record, checkpoint completion and
the newest complete checkpoint, the resumable batch stream, the loss averager and the metrics files."""

import itertools
import json
import math
import sys

import pytest
import torch
from torch.utils.data import DataLoader

from ernievil_ds.data.sampler import ResumableDistributedSampler
from ernievil_ds.errors import UserError
from ernievil_ds.runs import (
    FINETUNING,
    LossAverager,
    MetricsWriter,
    RunFolder,
    SamplePosition,
    checkpoint_record,
    complete_checkpoint,
    finish_run,
    latest_checkpoint,
    read_metrics,
    read_settings,
    require_latest_checkpoint,
    resumed_batches,
    write_settings,
)


def test_the_settings_record_round_trips_with_the_command_and_versions(tmp_path):
    folder = RunFolder(tmp_path / "run")
    arguments = {"output_dir": folder.root, "decay_steps": (10, 20), "seed": 3, "tokenizer": None}
    written = write_settings(folder, FINETUNING, arguments, {"model_type": "ernievil"})
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["arguments"] == {
        "output_dir": str(folder.root),
        "decay_steps": [10, 20],
        "seed": 3,
        "tokenizer": None,
    }
    assert (
        record["kind"] == "fine-tuning" and record["command"] == sys.orig_argv and record["world_size"] == 1
    )
    assert record["versions"]["torch"] == torch.__version__ and "ernievil-ds" in record["versions"]
    assert read_settings(folder.root) == written
    with pytest.raises(ValueError, match="kind must be one of"):
        write_settings(folder, "training", arguments, None)


def test_a_folder_without_a_record_is_no_run(tmp_path):
    with pytest.raises(UserError, match=r"holds no run\.json"):
        read_settings(tmp_path)
    (tmp_path / "run.json").write_text('{"kind": "pretraining"}')
    with pytest.raises(UserError, match="is not a settings record"):
        read_settings(tmp_path)


def test_only_checkpoints_marked_complete_count_and_keep_prunes_the_oldest(tmp_path):
    folder = RunFolder(tmp_path)
    assert latest_checkpoint(folder.checkpoints_dir) is None
    with pytest.raises(UserError, match=r"--resume: .* holds no complete checkpoint"):
        require_latest_checkpoint(folder.checkpoints_dir)
    added = []
    for step in (2, 4, 6):
        folder.checkpoint_dir(step).mkdir(parents=True)
        complete_checkpoint(
            folder.checkpoint_dir(step), step, {"epoch": 0, "position": step}, keep=2, add_files=added.append
        )
    folder.checkpoint_dir(8).mkdir()  # a save killed before it was marked complete
    assert added == [folder.checkpoint_dir(step) for step in (2, 4, 6)]
    assert sorted(p.name for p in folder.checkpoints_dir.iterdir()) == [
        "step_00000004",
        "step_00000006",
        "step_00000008",
    ]
    assert latest_checkpoint(folder.checkpoints_dir) == (6, folder.checkpoint_dir(6))
    assert checkpoint_record(folder.checkpoint_dir(6)) == {
        "step": 6,
        "world_size": 1,
        "sampler": {"epoch": 0, "position": 6},
    }
    assert not list(folder.checkpoints_dir.rglob("*.tmp"))  # COMPLETE went through a rename


def loader(num_examples: int, batch_size: int, seed: int = 0) -> DataLoader:
    sampler = ResumableDistributedSampler(num_examples, num_replicas=1, rank=0, seed=seed)
    return DataLoader(list(range(num_examples)), batch_size=batch_size, sampler=sampler, drop_last=True)


@pytest.mark.parametrize("stop_after", [1, 3, 4, 7])
def test_resumed_batches_continue_the_uninterrupted_stream(stop_after):
    """10 examples in batches of 3: 3 batches an epoch; stopping inside an epoch or at its end, a stream
    restarted from the saved position gives the batches the uninterrupted stream gave."""
    epochs = []
    straight = [
        b.tolist()
        for b in itertools.islice(resumed_batches(loader(10, 3), SamplePosition(), epochs.append), 9)
    ]
    drawn = [i for batch in straight[:3] for i in batch]
    assert epochs == [0, 1, 2] and len(set(drawn)) == 9 and drawn != sorted(drawn)  # 9 of 10, shuffled
    assert straight[:3] != straight[3:6]  # a fresh permutation each epoch
    position = SamplePosition()
    first = [b.tolist() for b in itertools.islice(resumed_batches(loader(10, 3), position), stop_after)]
    saved = SamplePosition.from_state_dict(json.loads(json.dumps(position.state_dict())))
    rest = [b.tolist() for b in itertools.islice(resumed_batches(loader(10, 3), saved), 9 - stop_after)]
    assert first + rest == straight


def test_loss_averager_means_each_task_over_the_batches_that_have_it():
    names = ("loss", "mlm_loss", "itm_loss", "sgp_relation_loss")
    averager = LossAverager(names, torch.device("cpu"))
    nan = torch.tensor(math.nan)  # a task whose targets were passed but mark nothing in this batch
    averager.update(
        {"loss": torch.tensor(4.0), "mlm_loss": torch.tensor(1.0), "itm_loss": None, "sgp_relation_loss": nan}
    )
    averager.update({"loss": torch.tensor(2.0, dtype=torch.float16), "itm_loss": torch.tensor(0.5)})
    averager.update(
        {"loss": torch.tensor(3.0), "mlm_loss": torch.tensor(2.0), "not_averaged": torch.tensor(9.0)}
    )

    means = averager.compute()

    assert means == {"loss": 3.0, "mlm_loss": 1.5, "itm_loss": 0.5}  # no entry for the absent tasks
    assert averager.sums.dtype == torch.float64  # fp16 losses are summed in double
    averager.reset()
    averager.update({"loss": torch.tensor(math.pi, dtype=torch.float64)})
    assert averager.compute() == {"loss": math.pi}  # the reset dropped the earlier sums; no float32 rounding
    nan_total = LossAverager()
    nan_total.update({"loss": nan})
    assert math.isnan(nan_total.compute()["loss"])  # a diverged total is counted, and shows


def test_metrics_writer_forgets_records_after_the_resumed_step(tmp_path):
    folder = RunFolder(tmp_path)
    writer = MetricsWriter(folder, enabled=True)
    for step in (2, 4, 6):
        writer.write({"step": step, "loss": float(step)})
        writer.write_eval({"step": step, "eval_loss": float(step)})
    writer.drop_after(4)
    writer.close()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [2, 4]
    assert [r["step"] for r in read_metrics(tmp_path / "eval.jsonl")] == [2, 4]
    assert any(folder.tensorboard_dir.iterdir())
    MetricsWriter(RunFolder(tmp_path / "other"), enabled=False).write({"step": 1})
    assert not (tmp_path / "other").exists()  # a process other than the main one writes nothing


class RecordingPublisher:
    def __init__(self, repo_id):
        self.repo_id, self.calls = repo_id, []

    def write_card(self, run_dir):
        self.calls.append(("card", run_dir))

    def push(self, run_dir):
        self.calls.append(("push", run_dir))


@pytest.mark.parametrize("repo_id", [None, "someone/model"])
def test_finish_run_exports_then_writes_the_card_then_pushes_when_asked(tmp_path, repo_id):
    folder, publisher = RunFolder(tmp_path), RecordingPublisher(repo_id)
    finish_run(folder, lambda f: (f.model_dir.mkdir(), publisher.calls.append(("export", f.root))), publisher)
    expected = [("export", tmp_path), ("card", tmp_path)] + ([("push", tmp_path)] if repo_id else [])
    assert publisher.calls == expected
