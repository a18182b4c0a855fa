"""Helpers for running the real `deepspeed` launcher on the CPU (gloo) in tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ernievil_ds.distributed import free_port

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "pretrain_worker.py"


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory) -> Path:
    """One SynthScenes cache shared by every DeepSpeed test of the session."""
    return tmp_path_factory.mktemp("synth_cache")


def pretrain_command(
    output_dir: Path,
    *extra: str,
    launcher_args: tuple[str, ...] = ("--num_gpus", "2"),
    config: str = "cpu_fp32.json",
    preset: str = "tiny",
    master_port: int | None = None,
) -> list[str]:
    """`deepspeed LAUNCHER_ARGS pretrain_worker.py ...` on the tiny preset and a small SynthScenes, with
    the rendezvous on ``master_port`` (default: a free port; the launchers of one world share theirs)."""
    return [
        sys.executable,
        "-m",
        "deepspeed.launcher.runner",
        *launcher_args,
        "--master_port",
        str(master_port or free_port()),
        str(WORKER),
        "--deepspeed",
        str(REPO / "ds_configs" / config),
        "--preset",
        preset,
        "--synth-train-images",
        "120",
        "--synth-eval-images",
        "20",
        "--output-dir",
        str(output_dir),
        "--no-cloze",
        *extra,
    ]


def pretrain_env(cache: Path, env: dict | None = None) -> dict:
    """The environment of a test run: the shared SynthScenes cache, one thread per process."""
    return {**os.environ, "ERNIEVIL_DS_CACHE": str(cache), "OMP_NUM_THREADS": "1", **(env or {})}


def check_launch(result: subprocess.CompletedProcess) -> None:
    if result.returncode != 0:
        raise AssertionError(
            f"deepspeed exited with {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        )


def _run_pretrain(
    output_dir: Path,
    cache: Path,
    *extra: str,
    num_procs: int = 2,
    config: str = "cpu_fp32.json",
    preset: str = "tiny",
    env: dict | None = None,
    check: bool = True,
    master_port: int | None = None,
) -> subprocess.CompletedProcess:
    """`deepspeed --num_gpus N pretrain_worker.py ...` on the tiny preset and a small SynthScenes."""
    command = pretrain_command(
        output_dir,
        *extra,
        launcher_args=("--num_gpus", str(num_procs)),
        config=config,
        preset=preset,
        master_port=master_port,
    )
    result = subprocess.run(
        command, capture_output=True, text=True, env=pretrain_env(cache, env), cwd=REPO, timeout=600
    )
    if check:
        check_launch(result)
    return result


def _train_records(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def run_pretrain():
    """``run_pretrain(output_dir, cache, *flags, num_procs=2, config=..., preset="tiny", env=None, check=True,
    master_port=None)``: the real ``deepspeed`` launcher on a small SynthScenes."""
    return _run_pretrain


@pytest.fixture
def train_records():
    """``train_records(output_dir)``: the records of a run's ``metrics.jsonl``."""
    return _train_records


@pytest.fixture
def marked_data_dir(tmp_path) -> Path:
    """A data directory whose pairs/train, pairs/eval and images tables are marked complete (a manifest
    each) but hold no rows, and which names no detector classes: enough for the checks that run before
    any data is read."""
    from ernievil_ds.pretraining.pretrain import REQUIRED_TABLES

    data = tmp_path / "data"
    for table in REQUIRED_TABLES:
        (data / table).mkdir(parents=True)
        (data / table / "manifest.json").write_text("{}")
    return data


@pytest.fixture(scope="session")
def small_data_dir(tmp_path_factory) -> Path:
    """A prepared SynthScenes directory of 20 training and 10 evaluation images (three pairs each)."""
    from ernievil_ds.data import build_synth_scenes, load_tokenizer

    return build_synth_scenes(
        tmp_path_factory.mktemp("small_synth"),
        num_train_images=20,
        num_eval_images=10,
        seed=0,
        tokenizer=load_tokenizer(),
    )
