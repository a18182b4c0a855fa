"""The pretraining job's argument errors, checked before any DeepSpeed engine is built."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from ernievil_ds.training.pretrain import PretrainingRun, add_pretrain_arguments

CONFIGS = Path(__file__).resolve().parents[2] / "ds_configs"


def parse(*argv: str) -> argparse.Namespace:
    return add_pretrain_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def cpu_run(output_dir: Path, *extra: str) -> argparse.Namespace:
    """Arguments of a 2-step run with the CPU config, plus ``extra``."""
    return parse(
        "--deepspeed",
        str(CONFIGS / "cpu_fp32.json"),
        "--output-dir",
        str(output_dir),
        "--max-steps",
        "2",
        *extra,
    )


def test_batch_sizes_that_do_not_fit_the_world_size(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    args = parse(
        "--deepspeed", str(CONFIGS / "v100_8.json"), "--output-dir", str(tmp_path), "--max-steps", "2"
    )
    with pytest.raises(
        ValueError, match=r"do not fit this world of 3 processes.*= 192, but train_batch_size=512"
    ):
        PretrainingRun.prepare(args)


def test_unknown_preset(tmp_path):
    args = cpu_run(tmp_path, "--preset", "xl")
    with pytest.raises(ValueError, match=r"Unknown ERNIE-ViL preset 'xl'"):
        PretrainingRun.prepare(args)


def test_missing_data_directory(tmp_path):
    missing = tmp_path / "no_such_data"
    args = cpu_run(tmp_path, "--preset", "tiny", "--data-dir", str(missing))
    with pytest.raises(FileNotFoundError, match=r"--data-dir .*no_such_data does not exist"):
        PretrainingRun.prepare(args)


def test_missing_model_config_and_bad_max_steps(tmp_path):
    common = ("--deepspeed", str(CONFIGS / "cpu_fp32.json"), "--output-dir", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="--model-config"):
        PretrainingRun.prepare(parse(*common, "--max-steps", "2", "--model-config", str(tmp_path / "c.json")))
    with pytest.raises(ValueError, match="--max-steps must be at least 1"):
        PretrainingRun.prepare(parse(*common, "--max-steps", "0"))


def test_itm_negative_prob_outside_zero_one(tmp_path):
    args = cpu_run(tmp_path, "--itm-negative-prob", "1.5")
    with pytest.raises(ValueError, match=r"itm_negative_prob must be a probability in \[0, 1\], got 1.5"):
        PretrainingRun.prepare(args)


def test_node_mask_prob_by_type(tmp_path, capsys):
    assert cpu_run(tmp_path, "--node-mask-prob", '{"relation": 0.6}').node_mask_prob == {"relation": 0.6}
    assert cpu_run(tmp_path, "--node-mask-prob", "0.4").node_mask_prob == 0.4
    for bad, message in (
        ('{"relations": 0.6}', r"unknown node types \['relations'\]"),
        ("[0.3]", "expected a number or a JSON object"),
        ('{"relation": 2}', r"must be a probability in \[0, 1\], got 2"),
    ):
        with pytest.raises(SystemExit):
            cpu_run(tmp_path, "--node-mask-prob", bad)
        assert re.search(message, capsys.readouterr().err), bad


def test_grounding_needs_the_detectors_class_names(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    args = cpu_run(tmp_path, "--preset", "tiny", "--data-dir", str(data))
    with pytest.raises(
        ValueError, match=r"grounding loss .* needs the detector's class names, and .*data has none"
    ):
        PretrainingRun.prepare(args)
