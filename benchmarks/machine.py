"""What the benchmarks ran on, for the header of their tables, and what their ``--smoke`` runs share (imported
by the scripts beside it)."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str | torch.device) -> str:
    """The GPU's name for a CUDA device, else the CPU model."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


#: A table cell for a provider whose speed only a GPU measures (a smoke run checks that it runs).
NOT_MEASURED = "not measured (GPU only)"


def rerun_under_the_interpreter() -> None:
    """Restart this script with ``TRITON_INTERPRET=1``, which must be set before triton is imported, so that
    a ``--smoke`` run can launch the Triton kernels on the CPU (nothing returns from here)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "TRITON_INTERPRET": "1"})


def milliseconds_once(step) -> float:
    """The wall time of one call of ``step``, in milliseconds: a smoke run's single repetition."""
    start = time.perf_counter()
    step()
    return (time.perf_counter() - start) * 1e3


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """A Markdown table, the first column left-aligned and the others right-aligned."""
    print("| " + " | ".join(header) + " |")
    print("| --- | " + " | ".join("---:" for _ in header[1:]) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |", flush=True)


#: Dense tensor-core peak TFLOP/s by GPU family and precision, from the vendors' data sheets (SXM parts).
PEAK_TFLOPS = {
    "H200": {"bf16": 989.0, "fp16": 989.0},
    "H100": {"bf16": 989.0, "fp16": 989.0},
    "A100": {"bf16": 312.0, "fp16": 312.0},
    "V100": {"fp16": 125.0},
}


def peak_tflops(gpu_name: str, precision: str) -> float | None:
    """The dense peak of ``gpu_name`` (e.g. "NVIDIA H100 80GB HBM3") in ``precision``, None when unknown."""
    for family, peaks in PEAK_TFLOPS.items():
        if family in gpu_name:
            return peaks.get(precision)
    return None
