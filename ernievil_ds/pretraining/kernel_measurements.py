"""The GPU measurements that decide ``--attn-implementation auto`` and ``--masked-token-loss auto``.

One row per (kernel, compute capability, dtype) measured on a GPU by ``benchmarks/gpu_check.sh``: the
Triton kernel's time and its PyTorch alternative's at the shapes of one pretraining step, forward and
backward. ``auto`` runs Triton only where a row says it was faster; with no row it runs PyTorch's
(``sdpa``, ``torch``). The script writes the rows it measured into its ``summary.json``
(``table_rows``) in this form; a run on a new card adds them here, with the card and the commit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KernelMeasurement:
    """One measured row. ``kernel``: ``attention`` or ``masked-token-loss``; ``capability``: (major,
    minor); ``dtype``: ``bfloat16`` or ``float16``; times in ms per step's worth of calls (forward and
    backward); ``source``: the card, date and commit of the ``gpu_check.sh`` run."""

    kernel: str
    capability: tuple[int, int]
    dtype: str
    triton_ms: float
    pytorch_ms: float
    source: str

    @property
    def triton_wins(self) -> bool:
        return self.triton_ms < self.pytorch_ms

    def describe(self) -> str:
        major, minor = self.capability
        return (
            f"{self.kernel} sm_{major}{minor} {self.dtype}: triton {self.triton_ms:.3f} ms vs pytorch "
            f"{self.pytorch_ms:.3f} ms ({self.source})"
        )


#: Every measured row. Empty until a GPU has run ``benchmarks/gpu_check.sh``: ``auto`` is PyTorch's
#: attention and loss everywhere.
MEASUREMENTS: tuple[KernelMeasurement, ...] = ()


def find_measurement(
    kernel: str,
    capability: tuple[int, int],
    dtype: str,
    table: tuple[KernelMeasurement, ...] = MEASUREMENTS,
) -> KernelMeasurement | None:
    """The row of ``table`` for (kernel, capability, dtype), or None."""
    for row in table:
        if (row.kernel, tuple(row.capability), row.dtype) == (kernel, tuple(capability), dtype):
            return row
    return None


__all__ = ["MEASUREMENTS", "KernelMeasurement", "find_measurement"]
