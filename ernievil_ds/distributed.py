"""Rank and world discovery in one place, a logger that speaks on rank 0 only, and a free port for a
launcher's rendezvous.

Launchers (``deepspeed``, ``torchrun``, ``accelerate launch``) all export RANK / LOCAL_RANK /
WORLD_SIZE; a plain ``python`` run has none of them and is rank 0 of a world of 1.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

import torch.distributed as dist


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
