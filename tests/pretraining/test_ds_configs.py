"""The shipped DeepSpeed configs: valid ZeRO blocks (DeepSpeed's own pydantic models), no deprecated keys,
and the batch arithmetic the issue asks for."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

from ernievil_ds.pretraining.ds_config import fit_schedule_to_steps, load_ds_config, resolve_batch_sizes
from ernievil_ds.pretraining.schedules import noam_schedule

CONFIG_DIR = Path(__file__).resolve().parents[2] / "ds_configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.json"))


def test_the_shipped_configs_are_found():
    assert {p.name for p in CONFIGS} >= {"v100_8.json", "h100_8.json", "cpu_fp32.json", "cpu_fp16.json"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_zero_block_validates_and_uses_no_deprecated_key(path):
    zero = json.loads(path.read_text())["zero_optimization"]
    DeepSpeedZeroConfig(**zero)  # extra="forbid": an unknown key raises
    for key in zero:
        extra = DeepSpeedZeroConfig.model_fields[key].json_schema_extra or {}
        assert not extra.get("deprecated"), f"{path.name}: zero_optimization.{key} is deprecated"
    assert zero["stage"] == 2


def test_v100_config_is_the_paper_recipe_in_fp16():
    config = load_ds_config(CONFIG_DIR / "v100_8.json")
    assert resolve_batch_sizes(config, world_size=8) == (512, 64, 1)
    assert config["fp16"]["enabled"] and config["fp16"]["loss_scale"] == 0  # dynamic loss scaling
    assert config["optimizer"]["params"]["lr"] == 1e-4
    assert config["optimizer"]["params"]["weight_decay"] == 0.01
    assert config["gradient_clipping"] == 1.0
    assert "scheduler" not in config  # the run uses the paper's Noam schedule
    zero = config["zero_optimization"]
    assert zero["overlap_comm"] and zero["contiguous_gradients"] and zero["reduce_scatter"]


def test_h100_config_uses_bf16():
    config = load_ds_config(CONFIG_DIR / "h100_8.json")
    assert config["bf16"]["enabled"] and "fp16" not in config
    assert "scheduler" not in config
    assert resolve_batch_sizes(config, world_size=8) == (512, 64, 1)


def test_batch_sizes_that_do_not_fit_the_world_size_are_explained():
    config = load_ds_config(CONFIG_DIR / "v100_8.json")
    with pytest.raises(
        ValueError, match=r"64 x gradient_accumulation_steps=1 x 4 processes = 256, but train_batch_size=512"
    ):
        resolve_batch_sizes(config, world_size=4)
    with pytest.raises(ValueError, match="is not a multiple of"):
        resolve_batch_sizes({"train_batch_size": 100, "train_micro_batch_size_per_gpu": 32}, world_size=2)
    assert resolve_batch_sizes({"train_batch_size": 128, "gradient_accumulation_steps": 2}, world_size=2) == (
        128,
        32,
        2,
    )
    assert resolve_batch_sizes({"train_micro_batch_size_per_gpu": 16}, world_size=2) == (32, 16, 1)


def test_schedule_follows_max_steps_without_touching_the_file():
    config = load_ds_config(CONFIG_DIR / "cpu_fp32.json")
    fitted = fit_schedule_to_steps(config, 20)
    assert fitted["scheduler"]["params"]["total_num_steps"] == 20
    assert (
        fitted["scheduler"]["params"]["warmup_num_steps"] == 2
    )  # the configured warmup is longer than the run
    assert config["scheduler"]["params"]["total_num_steps"] == 1000


def test_missing_or_malformed_config_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_ds_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_ds_config(bad)


def test_noam_schedule_warms_up_linearly_then_decays_as_the_inverse_square_root():
    """Hand-computed points of min(step / warmup, sqrt(warmup / step)) at warmup 4 (1-based steps)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    schedule = noam_schedule(optimizer, warmup_steps=4)
    lrs = []
    for _ in range(16):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    expected = [1e-4 * f for f in (0.25, 0.5, 0.75, 1.0, math.sqrt(4 / 5), math.sqrt(4 / 6))]
    assert lrs[:6] == pytest.approx(expected)
    assert lrs[15] == pytest.approx(1e-4 * 0.5)  # step 16: sqrt(4 / 16)
    with pytest.raises(ValueError, match="--warmup-steps must be at least 1, got 0"):
        noam_schedule(optimizer, warmup_steps=0)
