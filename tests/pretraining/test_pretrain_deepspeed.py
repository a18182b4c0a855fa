"""Multi-process ZeRO-2 pretraining on the CPU (gloo), through the real `deepspeed` launcher."""

from __future__ import annotations

import glob
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForPreTraining

from ernievil_ds import ErnieVilConfig
from ernievil_ds.distributed import SHM_ALLREDUCE_BUFFER, free_port
from ernievil_ds.objectives import GROUNDING_TASK, PRETRAINING_TASKS, loss_name

#: What every record of the paper's model reports; the grounded variant adds the grounding loss.
PAPER_LOSSES = ("loss", *(loss_name(task) for task in PRETRAINING_TASKS))

pytestmark = pytest.mark.slow


def assert_trains(records: list[dict], losses: tuple[str, ...] = PAPER_LOSSES) -> None:
    assert records, "no metrics were logged"
    for record in records:
        assert not set(record) & {loss_name(GROUNDING_TASK)} - set(losses), record
        for name in losses:
            assert name in record and math.isfinite(record[name]), (name, record)
        assert record["samples_per_sec"] > 0 and record["model_tflops_per_sec"] > 0
    first, last = records[0]["loss"], sum(r["loss"] for r in records[-3:]) / 3
    assert last < first, f"loss did not decrease: {first} -> {last}"


def test_fp32_zero2_two_processes_train_export_and_load(tmp_path, synth_cache, run_pretrain, train_records):
    out = tmp_path / "run"
    run_pretrain(
        out,
        synth_cache,
        "--max-steps",
        "16",
        "--log-every",
        "2",
        "--eval-every",
        "8",
    )
    records = train_records(out)
    assert [r["step"] for r in records] == list(range(2, 17, 2))
    assert_trains(records)
    assert all(r["loss_scale"] == 1.0 and r["skipped_steps"] == 0 for r in records)
    evals = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals] == [8, 16]
    assert all(math.isfinite(r[f"eval_{name}"]) for r in evals for name in PAPER_LOSSES)

    # The export equals what DeepSpeed's own zero_to_fp32.py (written beside the shards) recovers.
    hf_dir = out / "hf_model"
    assert (hf_dir / "config.json").is_file() and (hf_dir / "tokenizer.json").is_file()
    exported = load_file(hf_dir / "model.safetensors")
    consolidated = tmp_path / "zero_to_fp32"
    subprocess.run(
        [
            sys.executable,
            str(out / "checkpoints" / "zero_to_fp32.py"),
            str(out / "checkpoints"),
            str(consolidated),
            "--tag",
            "step_00000016",
        ],
        check=True,
        capture_output=True,
    )
    from transformers.modeling_utils import load_state_dict

    reference = {}
    for shard in consolidated.glob("*.safetensors"):
        reference.update(load_state_dict(str(shard)))
    if not reference:
        reference = torch.load(next(consolidated.glob("*.bin")), weights_only=True)
    assert set(exported) <= set(reference)
    for name, tensor in exported.items():
        assert torch.equal(tensor, reference[name]), name

    # A fresh process loads the export through AutoModel, offline.
    script = textwrap.dedent(
        f"""
        import ernievil_ds
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(hf_dir)!r})
        print(type(model).__name__)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0 and "ErnieVilModel" in result.stdout, result.stderr[-2000:]


def test_a_run_leaves_no_shared_memory_behind(tmp_path, synth_cache, run_pretrain):
    """DeepSpeed's CPU all-reduce maps a 69 MB /dev/shm buffer per rank and never removes them; the run
    removes their names once every rank holds them (``PretrainingRun.prepare``)."""
    port = free_port()
    run_pretrain(tmp_path / "run", synth_cache, "--max-steps", "1", "--no-export", master_port=port)
    pattern = SHM_ALLREDUCE_BUFFER.format(uid=os.getuid(), addr="*", port=port, rank="*")
    assert not glob.glob(pattern)


def test_fp16_zero2_two_processes_on_the_grounded_variant(tmp_path, synth_cache, run_pretrain, train_records):
    out = tmp_path / "run"
    run_pretrain(
        out,
        synth_cache,
        "--max-steps",
        "12",
        "--log-every",
        "2",
        "--no-export",
        config="cpu_fp16.json",
        preset="tiny-grounded",
        env={"ERNIEVIL_TEST_FORCE_FP16": "1"},
    )
    records = train_records(out)
    assert_trains(records, (*PAPER_LOSSES, loss_name(GROUNDING_TASK)))
    assert all(r["loss_scale"] > 1.0 for r in records), "fp16 runs with a dynamic loss scale"


def test_resume_continues_the_same_sample_stream(tmp_path, synth_cache, run_pretrain, train_records):
    """With frozen word embeddings too: ZeRO leaves them out of its partitions, the checkpoint keeps them."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    common = ("--max-steps", "8", "--log-every", "1", "--freeze-word-embeddings")
    run_pretrain(straight, synth_cache, *common, "--no-export")
    run_pretrain(resumed, synth_cache, *common, "--no-export", "--stop-after-steps", "4")
    assert [r["step"] for r in train_records(resumed)] == [1, 2, 3, 4]
    run_pretrain(resumed, synth_cache, *common, "--resume")
    a, b = train_records(straight), train_records(resumed)
    assert [r["step"] for r in b] == list(range(1, 9))
    for x, y in zip(a, b):
        for name in PAPER_LOSSES:
            assert abs(x[name] - y[name]) <= 1e-6, (x["step"], name, x[name], y[name])

    torch.manual_seed(0)  # the run's --seed, set before the model is built
    initial = (
        AutoModelForPreTraining.from_config(ErnieVilConfig.from_preset("tiny")).get_input_embeddings().weight
    )
    exported = load_file(resumed / "hf_model" / "model.safetensors")
    assert torch.equal(exported["ernievil.text_embeddings.word_embeddings.weight"], initial.detach())


def test_a_run_killed_during_a_save_resumes_from_the_last_complete_checkpoint(
    tmp_path, synth_cache, run_pretrain, train_records
):
    out = tmp_path / "run"
    common = ("--max-steps", "6", "--log-every", "1", "--save-every", "2", "--no-export")
    killed = run_pretrain(out, synth_cache, *common, env={"ERNIEVIL_TEST_KILL_DURING_SAVE": "4"}, check=False)
    assert killed.returncode != 0
    checkpoints = out / "checkpoints"
    assert (checkpoints / "step_00000004").is_dir() and not (
        checkpoints / "step_00000004" / "COMPLETE"
    ).exists()
    assert (checkpoints / "step_00000002" / "COMPLETE").is_file()
    resumed = run_pretrain(out, synth_cache, *common, "--resume")
    assert "step_00000002 (step 2)" in resumed.stdout + resumed.stderr
    assert [r["step"] for r in train_records(out)] == [1, 2, 3, 4, 5, 6]
    assert (checkpoints / "step_00000006" / "COMPLETE").is_file()


def test_resume_with_another_world_size_says_how_to_convert(
    tmp_path, synth_cache, run_pretrain, train_records
):
    out = tmp_path / "run"
    run_pretrain(out, synth_cache, "--max-steps", "2", "--no-export")
    result = run_pretrain(
        out, synth_cache, "--max-steps", "4", "--resume", "--no-export", num_procs=1, check=False
    )
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "was written by 2 processes but this run has 1" in message
    assert "deepspeed.checkpoint.ds_to_universal" in message
