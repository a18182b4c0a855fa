"""The shipped accelerate configs parse with accelerate's own reader and say what their names promise."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig

CONFIGS = Path(__file__).resolve().parents[2] / "accelerate_configs"


@pytest.mark.parametrize(
    ("name", "distributed_type", "mixed_precision", "num_processes"),
    [
        ("cpu_2proc.yaml", "MULTI_GPU", "no", 2),
        ("v100_8_zero2_fp16.yaml", "DEEPSPEED", "fp16", 8),
        ("h100_8_zero2_bf16.yaml", "DEEPSPEED", "bf16", 8),
    ],
)
def test_accelerate_config(name, distributed_type, mixed_precision, num_processes):
    config = ClusterConfig.from_yaml_file(CONFIGS / name)
    assert config.distributed_type.value == distributed_type
    assert str(config.mixed_precision) == mixed_precision
    assert config.num_processes == num_processes
    assert not config.use_cpu  # use_cpu would collapse the two CPU processes into one
    if distributed_type == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == 2
        assert config.deepspeed_config["gradient_clipping"] == 1.0


def test_accelerate_config_reader_refuses_unknown_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "cpu_2proc.yaml").read_text() + "num_proceses: 2\n")
    with pytest.raises(ValueError, match="num_proceses"):
        ClusterConfig.from_yaml_file(bad)
