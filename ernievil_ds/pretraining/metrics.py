"""What pretraining reports beside its losses: the loss fields in order, and throughput."""

from __future__ import annotations

import time

from ernievil_ds.objectives import TASK_LOSS_NAMES

#: Loss fields of the pretraining outputs, in the order they are reported: the weighted sum, then each task's.
LOSS_NAMES = ("loss", *TASK_LOSS_NAMES)


class ThroughputMeter:
    """Pairs and model FLOPs since the last ``rates()``, and their rates over the wall time between."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.start, self.samples, self.flops = time.perf_counter(), 0, 0.0

    def add(self, samples: int, flops: float) -> None:
        self.samples += samples
        self.flops += flops

    def rates(self) -> dict[str, float]:
        """``samples_per_sec`` and ``model_tflops_per_sec`` since the last call (or construction); resets."""
        elapsed = time.perf_counter() - self.start
        rates = {
            "samples_per_sec": self.samples / elapsed,
            "model_tflops_per_sec": self.flops / elapsed / 1e12,
        }
        self._reset()
        return rates
