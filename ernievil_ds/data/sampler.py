"""A distributed sampler that can resume in the middle of an epoch."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch


class ResumableDistributedSampler(torch.utils.data.Sampler[int]):
    """Shard a dataset over ranks like ``DistributedSampler``, and resume from (epoch, position).

    The order of epoch ``e`` is a permutation seeded by ``seed + e`` (identical on every rank), padded
    by wrapping around or cut (``drop_last``) to a multiple of ``num_replicas``; rank ``r`` takes every
    ``num_replicas``-th index from ``r``. ``position`` is the number of this rank's samples already
    consumed in the epoch: the training loop knows it from its step count, saves it with
    ``state_dict()`` and hands it back with ``load_state_dict``; iteration then continues from exactly that
    sample. ``set_epoch`` starts a new epoch at position 0.

    With ``lengths`` (each sample's token count) and ``group_size``, the shuffled order is cut into groups
    of ``group_size`` samples, each sorted by length (longest first), so that consecutive batches hold
    captions of similar length and padding stops costing compute (``group_by_length`` in HF's Trainer).
    Make ``group_size`` a multiple of micro-batch x ``num_replicas``, e.g. 50 of them.
    """

    def __init__(
        self,
        dataset_len: int,
        *,
        num_replicas: int,
        rank: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        lengths: np.ndarray | None = None,
        group_size: int | None = None,
    ) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"rank must be in [0, num_replicas), got rank={rank}, num_replicas={num_replicas}"
            )
        if dataset_len < num_replicas and drop_last:
            raise ValueError(f"dataset of {dataset_len} samples is smaller than num_replicas={num_replicas}")
        if lengths is not None and (len(lengths) != dataset_len or not group_size or group_size < 1):
            raise ValueError(
                f"lengths must give one length per sample ({dataset_len}) and group_size a positive size; "
                f"got {len(lengths)} lengths and group_size={group_size}"
            )
        self.lengths, self.group_size = lengths, group_size
        self.dataset_len, self.num_replicas, self.rank = dataset_len, num_replicas, rank
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.num_samples = (
            dataset_len // num_replicas if drop_last else math.ceil(dataset_len / num_replicas)
        )  # this rank's samples per epoch
        self.epoch, self.position = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position = epoch, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        position = int(state["position"])
        if not 0 <= position <= self.num_samples:
            raise ValueError(
                f"position must be in [0, {self.num_samples}] samples of this rank, got {position}"
            )
        self.epoch, self.position = int(state["epoch"]), position

    def _rank_indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.dataset_len, generator=generator).tolist()
        else:
            order = list(range(self.dataset_len))
        if self.lengths is not None:
            order = [
                i
                for start in range(0, len(order), self.group_size)
                for i in sorted(order[start : start + self.group_size], key=lambda i: -self.lengths[i])
            ]
        total = self.num_samples * self.num_replicas
        order = order[:total] if self.drop_last else (order * math.ceil(total / len(order)))[:total]
        return order[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self._rank_indices()[self.position :])

    def __len__(self) -> int:
        return self.num_samples - self.position
