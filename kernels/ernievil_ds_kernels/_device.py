"""Where the kernels run: a GPU that Triton drives, or the CPU under Triton's interpreter (the tests)."""

from __future__ import annotations

import torch
from triton.runtime.jit import JITFunction


def check_device(device: torch.device, kernel) -> None:
    """Raise a ValueError naming ``device`` when ``kernel`` cannot run on it: Triton compiles for CUDA and
    ROCm GPUs (both ``cuda`` in torch); on the CPU only the interpreter runs it, and only when
    ``TRITON_INTERPRET=1`` was set before triton was imported (the kernel is then not a JITFunction)."""
    if device.type == "cuda" or (device.type == "cpu" and not isinstance(kernel, JITFunction)):
        return
    raise ValueError(
        f"the Triton kernels need a CUDA or ROCm GPU (or, for tests, the CPU with TRITON_INTERPRET=1 set "
        f"before triton is imported); got tensors on {device}. Use attn_implementation 'sdpa' or 'eager' "
        f"and the PyTorch loss there."
    )
