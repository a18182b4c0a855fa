"""``--global-batch-size``: the micro-batch and the accumulation derived from it and the process count,
and the refusals when it does not divide."""

from __future__ import annotations

import pytest

from ernievil_ds.errors import UserError
from ernievil_ds.finetuning.arguments import (
    DEFAULT_BATCH_SIZE,
    FinetuneSettings,
    parse_finetune_arguments,
    resolve_batch_sizes,
)


def settings(tmp_path, *flags: str) -> FinetuneSettings:
    return parse_finetune_arguments(["--task", "synth_qa", "--output-dir", str(tmp_path), *flags])


@pytest.mark.parametrize(
    ("flags", "world_size", "micro", "accumulation"),
    [
        ((), 1, DEFAULT_BATCH_SIZE, 1),  # neither flag: the default micro-batch, no accumulation
        (("--batch-size", "4", "--gradient-accumulation-steps", "3"), 2, 4, 3),  # as given
        (("--global-batch-size", "32"), 1, 32, 1),  # the whole share in one micro-batch
        (("--global-batch-size", "32"), 8, 4, 1),  # RefCOCO+'s 32 on 8 processes: 4 each
        (("--global-batch-size", "64", "--batch-size", "4"), 2, 4, 8),  # 32 a process in 8 micro-batches
        (("--global-batch-size", "16", "--batch-size", "2", "--gradient-accumulation-steps", "4"), 2, 2, 4),
    ],
)
def test_the_micro_batch_and_accumulation_follow_the_global_batch(
    tmp_path, flags, world_size, micro, accumulation
):
    resolved = resolve_batch_sizes(settings(tmp_path, *flags), world_size)
    assert (resolved.batch_size, resolved.gradient_accumulation_steps) == (micro, accumulation)
    if resolved.global_batch_size is not None:
        assert micro * accumulation * world_size == resolved.global_batch_size
    assert resolve_batch_sizes(resolved, world_size) == resolved  # a fixed point: the loop resolves again


@pytest.mark.parametrize(
    ("flags", "world_size", "message"),
    [
        (("--global-batch-size", "30"), 8, "--global-batch-size 30 does not divide among 8 processes"),
        (("--global-batch-size", "32", "--batch-size", "3"), 2, "16 examples per process.*--batch-size 3"),
        (("--global-batch-size", "32", "--gradient-accumulation-steps", "4"), 2, "contradicts"),
        (("--global-batch-size", "0"), 1, "--global-batch-size must be at least 1, got 0"),
        (("--batch-size", "0"), 1, "--batch-size must be at least 1, got 0"),
    ],
)
def test_a_global_batch_that_does_not_divide_is_refused(tmp_path, flags, world_size, message):
    with pytest.raises(UserError, match=message):
        resolve_batch_sizes(settings(tmp_path, *flags), world_size)
