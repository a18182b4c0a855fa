"""Reading a DeepSpeed JSON config and checking it against the job before DeepSpeed sees it.

The settings themselves live only in ``ds_configs/*.json``; this module reads them, checks that the
batch sizes fit the world size (DeepSpeed's own assertion is hard to read), and lets ``--max-steps``
set the schedule's length so that warmup/decay end where the run ends.
"""

from __future__ import annotations

import json
from pathlib import Path


def load_ds_config(path: str | Path) -> dict:
    """Read a DeepSpeed JSON config; ``FileNotFoundError``/``ValueError`` name the file when it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"DeepSpeed config {path} does not exist (see ds_configs/ for the shipped ones)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"DeepSpeed config {path} is not valid JSON: {error}") from error


def resolve_batch_sizes(ds_config: dict, world_size: int) -> tuple[int, int, int]:
    """Return (global batch, micro batch per rank, accumulation steps), checking that they fit ``world_size``.

    Like DeepSpeed, any two of the three determine the third; all three given must satisfy
    ``train_batch_size == micro_batch * accumulation_steps * world_size``.

    Raises:
        ValueError: in plain words, with the numbers, when they do not fit.
    """
    total = ds_config.get("train_batch_size")
    micro = ds_config.get("train_micro_batch_size_per_gpu")
    accumulation = ds_config.get("gradient_accumulation_steps")
    if micro is None and accumulation is None:
        accumulation = 1
    if total is None:
        if micro is None:
            raise ValueError(
                "The DeepSpeed config must set train_micro_batch_size_per_gpu or train_batch_size"
            )
        accumulation = accumulation or 1
        return micro * accumulation * world_size, micro, accumulation
    if micro is None:
        if total % (accumulation * world_size):
            raise ValueError(
                f"train_batch_size={total} cannot be split over {world_size} processes with "
                f"gradient_accumulation_steps={accumulation}: {total} is not a multiple of {accumulation * world_size}"
            )
        return total, total // (accumulation * world_size), accumulation
    if accumulation is None:
        if total % (micro * world_size):
            raise ValueError(
                f"train_batch_size={total} is not a multiple of train_micro_batch_size_per_gpu={micro} x "
                f"{world_size} processes = {micro * world_size}"
            )
        return total, micro, total // (micro * world_size)
    if micro * accumulation * world_size != total:
        raise ValueError(
            f"The batch sizes do not fit this world of {world_size} processes: train_micro_batch_size_per_gpu="
            f"{micro} x gradient_accumulation_steps={accumulation} x {world_size} processes = "
            f"{micro * accumulation * world_size}, but train_batch_size={total}. Change one of them, e.g. "
            f"gradient_accumulation_steps={total / (micro * world_size):g} for this world size."
        )
    return total, micro, accumulation


def fit_schedule_to_steps(ds_config: dict, max_steps: int) -> dict:
    """Return a copy of ``ds_config`` whose LR schedule ends at ``max_steps`` (warmup kept, capped at 10%
    of the run when the run is shorter than the configured warmup)."""
    config = json.loads(json.dumps(ds_config))
    params = config.get("scheduler", {}).get("params")
    if params is not None and "total_num_steps" in params:
        params["total_num_steps"] = max_steps
        if params.get("warmup_num_steps", 0) >= max_steps:
            params["warmup_num_steps"] = max(1, max_steps // 10)
    return config
