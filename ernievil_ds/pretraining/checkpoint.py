"""Checkpoints that survive faults: DeepSpeed's engine state plus the data position and RNG states.

Layout under ``DIR/checkpoints/``: one DeepSpeed tag directory per save, ``step_00000100/``, holding
DeepSpeed's files, one ``rng_rank{r}.pt`` per rank, and, written last and atomically by rank 0 once
every rank has finished, ``COMPLETE`` (JSON: step, world size). A save killed half-way leaves no
``COMPLETE``, so ``--resume`` falls back to the newest complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from ernievil_ds.distributed import barrier, dist_info, get_logger
from ernievil_ds.errors import UserError

logger = get_logger(__name__)

COMPLETE_MARKER = "COMPLETE"
_TAG_PREFIX = "step_"


class CheckpointWorldSizeError(UserError):
    """A ZeRO checkpoint's optimizer partitions were written by a different number of processes."""


def checkpoint_tag(step: int) -> str:
    return f"{_TAG_PREFIX}{step:08d}"


def complete_checkpoints(checkpoint_root: Path) -> list[tuple[int, Path]]:
    """(step, tag dir) of every checkpoint whose save finished, oldest first."""
    found = []
    for marker in Path(checkpoint_root).glob(f"{_TAG_PREFIX}*/{COMPLETE_MARKER}"):
        found.append((json.loads(marker.read_text())["step"], marker.parent))
    return sorted(found)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(
    engine, checkpoint_root: Path, step: int, client_state: dict, tokenizer=None, keep: int | None = None
) -> Path:
    """Save engine, optimizer, scheduler, loss scaler (DeepSpeed), ``client_state`` and this rank's RNG;
    rank 0 adds the model's ``config.json`` and the tokenizer files so that the tag directory alone can
    be exported. ``keep`` limits how many complete checkpoints are kept.

    Collective: every rank calls it. Returns the tag directory.
    """
    checkpoint_root = Path(checkpoint_root)
    tag = checkpoint_tag(step)
    info = dist_info()
    engine.save_checkpoint(str(checkpoint_root), tag=tag, client_state={**client_state, "step": step})
    tag_dir = checkpoint_root / tag
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, tag_dir / f"rng_rank{info.rank}.pt")
    barrier()
    if info.is_main:
        engine.module.config.save_pretrained(tag_dir)
        if tokenizer is not None:
            tokenizer.save_pretrained(tag_dir)
        _write_atomically(
            tag_dir / COMPLETE_MARKER, json.dumps({"step": step, "world_size": info.world_size})
        )
        if keep:
            for _, old in complete_checkpoints(checkpoint_root)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        logger.info("Saved checkpoint %s", tag_dir)
    barrier()
    return tag_dir


def load_latest_checkpoint(engine, checkpoint_root: Path) -> dict | None:
    """Restore the newest complete checkpoint into ``engine`` and this rank's RNG; return its client state.

    Returns None when there is no complete checkpoint (a fresh start).

    Raises:
        CheckpointWorldSizeError: the checkpoint was written by another number of processes; the message
            says how to convert it to a DeepSpeed universal checkpoint.
    """
    checkpoints = complete_checkpoints(checkpoint_root)
    if not checkpoints:
        return None
    step, tag_dir = checkpoints[-1]
    saved_world = json.loads((tag_dir / COMPLETE_MARKER).read_text())["world_size"]
    info = dist_info()
    if saved_world != info.world_size:
        raise CheckpointWorldSizeError(
            f"{tag_dir} was written by {saved_world} processes but this run has {info.world_size}; ZeRO-2 "
            f"optimizer state is partitioned per process. Resume with {saved_world} processes, or convert it "
            f"to a DeepSpeed universal checkpoint:\n"
            f"  python -m deepspeed.checkpoint.ds_to_universal --input_folder {tag_dir} "
            f"--output_folder {tag_dir}_universal\n"
            f'and resume from it with "checkpoint": {{"load_universal": true}} in the DeepSpeed config.'
        )
    _, client_state = engine.load_checkpoint(str(checkpoint_root), tag=tag_dir.name)
    if client_state is None:
        raise RuntimeError(f"DeepSpeed could not load the checkpoint in {tag_dir}")
    rng = torch.load(tag_dir / f"rng_rank{info.rank}.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    logger.info("Resumed from %s (step %d)", tag_dir, step)
    return client_state
