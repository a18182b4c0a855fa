"""Training metrics: per-task loss averages reduced over ranks, written to ``metrics.jsonl`` and TensorBoard."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.distributed as dist

from ernievil_ds.tasks import TASK_LOSS_NAMES

METRICS_FILE, EVAL_FILE = "metrics.jsonl", "eval.jsonl"
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


class LossAverager:
    """Sums each task's loss over micro-batches (a task may be absent from a batch) and averages over
    micro-batches and ranks on ``compute()``.

    Args:
        device: the engine's device. The sums stay there (no host sync per step) and are reduced there
            (NCCL reduces GPU tensors only).
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(len(LOSS_NAMES), dtype=torch.float64, device=self.device)
        self.counts = torch.zeros(len(LOSS_NAMES), dtype=torch.float64, device=self.device)

    def update(self, outputs) -> None:
        """Add the losses of one micro-batch; a task absent from it (loss None, or NaN: targets passed but
        none in this batch) is not counted, while a NaN total ``loss`` is (it shows a divergence).
        On-device, without a host sync."""
        for i, name in enumerate(LOSS_NAMES):
            value = outputs.get(name)
            if value is not None:
                value = value.detach().to(self.device, torch.float64)
                present = (
                    ~torch.isnan(value)
                    if name != "loss"
                    else torch.ones((), dtype=torch.bool, device=self.device)
                )
                self.sums[i] += torch.where(present, value, 0.0)
                self.counts[i] += present

    def compute(self) -> dict[str, float]:
        """Per-task mean over everything seen since ``reset`` on every rank (collective when distributed)."""
        totals = torch.stack([self.sums, self.counts])  # (2, tasks)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals)
        return {name: float(s / c) for name, s, c in zip(LOSS_NAMES, *totals.cpu()) if c > 0}


class MetricsWriter:
    """Appends one JSON object per logged training step to ``metrics.jsonl`` (every record has ``step``,
    ``loss`` and each task's loss) and each evaluation to ``eval.jsonl`` (``eval_*`` losses), and mirrors
    both to TensorBoard. Only the main process writes; the others hold a disabled writer.
    """

    def __init__(self, output_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.output_dir = Path(output_dir)
        self._tensorboard = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(log_dir=str(self.output_dir / "tensorboard"))

    def write(self, record: dict) -> None:
        self._append(METRICS_FILE, record)

    def write_eval(self, record: dict) -> None:
        self._append(EVAL_FILE, record)

    def _append(self, name: str, record: dict) -> None:
        if not self.enabled:
            return
        with (self.output_dir / name).open("a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self._tensorboard.add_scalar(key, value, record["step"])
        self._tensorboard.flush()

    def drop_after(self, step: int) -> None:
        """On resume, forget records logged after the checkpoint so that the resumed run does not repeat them."""
        for name in (METRICS_FILE, EVAL_FILE):
            path = self.output_dir / name
            if self.enabled and path.is_file():
                kept = [
                    line
                    for line in path.read_text().splitlines()
                    if line and json.loads(line)["step"] <= step
                ]
                path.write_text("".join(line + "\n" for line in kept))

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def read_metrics(path: Path) -> list[dict]:
    """All records of a ``metrics.jsonl`` or ``eval.jsonl``; ``FileNotFoundError`` names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No metrics file at {path}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
