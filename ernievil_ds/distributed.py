"""Rank and world discovery in one place, a logger that speaks on rank 0 only, a free port for a
launcher's rendezvous, and the release of DeepSpeed's shared-memory all-reduce buffers.

Launchers (``deepspeed``, ``torchrun``, ``accelerate launch``) all export RANK / LOCAL_RANK /
WORLD_SIZE; a plain ``python`` run has none of them and is rank 0 of a world of 1.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch.distributed as dist

#: Each rank's buffer of DeepSpeed's shared-memory all-reduce (``ops/csrc/cpu/comm/shm.cpp``), which the CPU
#: accelerator uses when every rank is on one machine: the ``shm_open`` name, a file of 69 MB of RAM.
SHM_ALLREDUCE_BUFFER = "/dev/shm/deepspeed_allreduce_buffer_{uid}_{addr}_{port}_{rank}"


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    """A TCP port the operating system has just reported free on localhost: for a launcher started by a
    script or a test, so that it does not collide with another job on the default port (29500)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def dist_info() -> DistInfo:
    """Read this process's place in the job from the launcher's environment variables."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
    )


class _RankZeroFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return dist_info().is_main or record.levelno >= logging.WARNING


def get_logger(name: str) -> logging.Logger:
    """A logger whose INFO and DEBUG records are printed by rank 0 only (warnings from every rank)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, _RankZeroFilter) for f in logger.filters):
        logger.addFilter(_RankZeroFilter())
    return logger


def setup_logging(level: int = logging.INFO) -> None:
    """Readable timestamped logs for command-line entry points; the rank is shown in multi-process runs."""
    info = dist_info()
    where = f"[rank {info.rank}] " if info.world_size > 1 else ""
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {where}%(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def barrier() -> None:
    """Wait for every process of the job; nothing to wait for outside a distributed run."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def release_shm_allreduce_buffer() -> None:
    """Collective, after ``deepspeed.init_distributed``: remove the name of this rank's shared-memory
    all-reduce buffer, which DeepSpeed never removes (every CPU run would leave world_size x 69 MB of RAM in
    /dev/shm, killed or not).

    ``init_distributed`` maps every rank's buffer before it returns, so after a barrier no rank opens one by
    name again; the mappings, and the memory, last until the processes exit. Outside the CPU accelerator
    there is no such buffer and nothing to wait for.
    """
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        return
    barrier()
    buffer = SHM_ALLREDUCE_BUFFER.format(
        uid=os.getuid(),
        addr=os.environ.get("MASTER_ADDR", ""),
        port=os.environ.get("MASTER_PORT", ""),
        rank=dist_info().rank,
    )
    Path(buffer).unlink(missing_ok=True)
