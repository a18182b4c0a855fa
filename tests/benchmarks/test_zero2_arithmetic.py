"""benchmarks/zero2_arithmetic.py: its split of the FLOPs adds up to the model's count, its step-time model
by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from ernievil_ds import ErnieVilConfig
from ernievil_ds.modeling_ernievil import training_flops_per_sample
from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "zero2_arithmetic.py"


@pytest.fixture(scope="module")
def arithmetic():
    return load_script(SCRIPT, "zero2_arithmetic")


def test_the_encoder_parts_add_up_to_the_models_flop_count(arithmetic):
    config = ErnieVilConfig.from_preset("base")
    parts = arithmetic.flops_by_part(config, 40, 37)
    encoder = parts["text layers"] + parts["image layers"] + parts["co-layers"]
    assert encoder == pytest.approx(training_flops_per_sample(config, 40, 37), rel=1e-12)
    # The token head alone: 10 of 40 positions, a 768 x 768 transform and the 768 x 30522 decoder, x 6.
    assert parts["heads"] > 6 * 10 * (768 * 768 + 768 * 30522)


def test_step_time_overlaps_the_reduce_scatter_only(arithmetic):
    # 10 pairs of 3 ms: 10 ms forward, 20 ms backward; a 15 ms reduce-scatter hides behind it, a 50 ms one
    # not, and the all-gather adds its time once per step.
    assert arithmetic.step_time(10, 1, 3e-3, 15e-3) == pytest.approx(10e-3 + 20e-3 + 15e-3)
    assert arithmetic.step_time(10, 2, 3e-3, 50e-3) == pytest.approx(2 * (10e-3 + 50e-3) + 50e-3)
    micro, accumulation = arithmetic.hiding_batch(1e-3, 10e-3)  # 90 %: >= 90 ms of compute per step
    assert micro * accumulation * 1e-3 >= 9 * 10e-3 and micro * 1e-3 * 2 / 3 >= 10e-3
