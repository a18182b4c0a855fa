"""Pretraining checkpoints that survive faults: DeepSpeed's engine state plus each rank's RNG state.

One folder per save under the run's ``checkpoints/`` (``ernievil_ds.runs``): DeepSpeed's files, one
``rng_rank{r}.pt`` per rank, the model's ``config.json`` and the tokenizer files (so that the folder alone
can be exported), and ``COMPLETE``, written by ``runs.complete_checkpoint`` once every rank has saved.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ernievil_ds.distributed import dist_info, get_logger
from ernievil_ds.errors import UserError
from ernievil_ds.runs import (
    SamplePosition,
    checkpoint_name,
    checkpoint_record,
    complete_checkpoint,
    latest_checkpoint,
)

logger = get_logger(__name__)


class CheckpointWorldSizeError(UserError):
    """A ZeRO checkpoint's optimizer partitions were written by a different number of processes."""


def save_checkpoint(
    engine,
    checkpoints_dir: Path,
    step: int,
    position: SamplePosition,
    tokenizer=None,
    keep: int | None = None,
) -> Path:
    """Save engine, optimizer, scheduler, loss scaler (DeepSpeed) and this rank's RNG, then complete the
    checkpoint with the sample position; the main process adds the model's ``config.json`` and the
    tokenizer files. ``keep`` limits how many complete checkpoints are kept.

    Collective: every rank calls it. Returns the checkpoint folder.
    """
    checkpoints_dir = Path(checkpoints_dir)
    tag = checkpoint_name(step)
    engine.save_checkpoint(str(checkpoints_dir), tag=tag, client_state={"step": step})
    tag_dir = checkpoints_dir / tag
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, tag_dir / f"rng_rank{dist_info().rank}.pt")

    def add_files(folder: Path) -> None:
        engine.module.config.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)

    complete_checkpoint(tag_dir, step, position.state_dict(), keep=keep, add_files=add_files)
    return tag_dir


def load_latest_checkpoint(engine, checkpoints_dir: Path) -> SamplePosition | None:
    """Restore the newest complete checkpoint into ``engine`` and this rank's RNG; return its sample position.

    Returns None when there is no complete checkpoint (a fresh start).

    Raises:
        CheckpointWorldSizeError: the checkpoint was written by another number of processes; the message
            says how to convert it to a DeepSpeed universal checkpoint.
    """
    latest = latest_checkpoint(checkpoints_dir)
    if latest is None:
        return None
    step, tag_dir = latest
    record = checkpoint_record(tag_dir)
    info = dist_info()
    if record["world_size"] != info.world_size:
        raise CheckpointWorldSizeError(
            f"{tag_dir} was written by {record['world_size']} processes but this run has {info.world_size}; "
            "ZeRO-2 optimizer state is partitioned per process. Resume with "
            f"{record['world_size']} processes, or convert it to a DeepSpeed universal checkpoint:\n"
            f"  python -m deepspeed.checkpoint.ds_to_universal --input_folder {tag_dir} "
            f"--output_folder {tag_dir}_universal\n"
            f'and resume from it with "checkpoint": {{"load_universal": true}} in the DeepSpeed config.'
        )
    _, client_state = engine.load_checkpoint(str(checkpoints_dir), tag=tag_dir.name)
    if client_state is None:
        raise RuntimeError(f"DeepSpeed could not load the checkpoint in {tag_dir}")
    rng = torch.load(tag_dir / f"rng_rank{info.rank}.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    logger.info("Resumed from %s (step %d)", tag_dir, step)
    return SamplePosition.from_state_dict(record["sampler"])
