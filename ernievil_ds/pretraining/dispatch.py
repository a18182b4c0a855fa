"""Which attention and masked-token loss a pretraining run uses, and compiling its engine.

``--attn-implementation auto`` and ``--masked-token-loss auto`` pick the fused Triton kernels only where
they were measured to win: for a (compute capability, dtype) pair with a row in
``kernel_measurements.MEASUREMENTS`` whose Triton time beats PyTorch's, on a CUDA GPU with the kernel
package importable. Everywhere else, float32 always (``tl.dot`` would run in IEEE fp32 there), they pick
PyTorch's (``sdpa``, ``torch``); with the table still empty that is everywhere. Asking for ``triton``
where it cannot run is a ``UserError``; on the CPU it runs only under Triton's interpreter
(``TRITON_INTERPRET=1``, for tests and smoke benchmarks). The policy is ``choose_implementation``, a
pure function of the device's description, the training dtype and the table.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ernievil_ds.distributed import get_logger
from ernievil_ds.errors import UserError
from ernievil_ds.masked_token_loss import registered_masked_token_losses
from ernievil_ds.pretraining.kernel_measurements import MEASUREMENTS, KernelMeasurement, find_measurement

logger = get_logger(__name__)

#: For each kernel flag: its Triton choice's PyTorch alternative.
PYTORCH_ALTERNATIVE = {"attn-implementation": "sdpa", "masked-token-loss": "torch"}

#: For each kernel flag: its name in the measured table.
MEASURED_KERNEL = {"attn-implementation": "attention", "masked-token-loss": "masked-token-loss"}


@dataclass(frozen=True)
class DeviceInfo:
    """What the choice depends on: the device type (``cuda`` also for ROCm), its compute capability
    (None off CUDA), its name, whether Triton's interpreter is on, and why the Triton kernels are not
    available (None when they are)."""

    type: str
    capability: tuple[int, int] | None
    name: str
    interpreted: bool = False
    kernels_error: str | None = None

    def triton_problem(self, *, auto: bool) -> str | None:
        """Why the Triton kernels cannot run here (None when they can): on any CUDA GPU, and on the CPU
        under the interpreter unless ``auto`` (the interpreter is for tests)."""
        if self.kernels_error is not None:
            return self.kernels_error
        if self.type == "cpu" and self.interpreted and not auto:
            return None
        if self.type != "cuda":
            return f"{self.name} is not a CUDA GPU (Triton runs there only under TRITON_INTERPRET=1)"
        return None


def kernels_problem() -> str | None:
    """None when the Triton attention and loss are registered (importing the kernel package does that;
    the launcher tries), else what is missing."""
    missing = [
        what
        for what, registry in (
            ("attention", ALL_ATTENTION_FUNCTIONS),
            ("masked-token loss", registered_masked_token_losses()),
        )
        if "triton" not in registry
    ]
    if missing:
        return f"no Triton {' and '.join(missing)} is registered: the kernel package did not import"
    return None


def current_device() -> DeviceInfo:
    """This process's device: the current CUDA GPU when there is one, else the CPU."""
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        capability, name = torch.cuda.get_device_capability(index), torch.cuda.get_device_name(index)
        return DeviceInfo("cuda", capability, name, interpreted, kernels_problem())
    return DeviceInfo("cpu", None, "the CPU", interpreted, kernels_problem())


def training_dtype(ds_config: dict) -> torch.dtype:
    """The dtype a DeepSpeed config trains in: bfloat16 or float16 when that block is enabled, else
    float32."""
    for block, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        if ds_config.get(block, {}).get("enabled", False):
            return dtype
    return torch.float32


def _measured_choice(
    flag: str, device: DeviceInfo, dtype: torch.dtype, table: tuple[KernelMeasurement, ...]
) -> tuple[str, str]:
    """``auto`` on a device the kernels can run on: Triton where ``table``'s row for (capability, dtype)
    says it won, and the row (or its absence) as the reason."""
    alternative = PYTORCH_ALTERNATIVE[flag]
    if dtype == torch.float32:
        return alternative, "auto: float32 never runs the Triton kernels (their tl.dot would be IEEE fp32)"
    major, minor = device.capability
    dtype_name = str(dtype).removeprefix("torch.")
    row = find_measurement(MEASURED_KERNEL[flag], device.capability, dtype_name, table)
    if row is None:
        return alternative, (
            f"auto: no measured row for {MEASURED_KERNEL[flag]} sm_{major}{minor} {dtype_name} in "
            f"ernievil_ds.pretraining.kernel_measurements"
        )
    return ("triton" if row.triton_wins else alternative), f"auto: measured {row.describe()}"


def choose_implementation(
    flag: str,
    requested: str,
    device: DeviceInfo,
    dtype: torch.dtype,
    table: tuple[KernelMeasurement, ...] = MEASUREMENTS,
) -> tuple[str, str]:
    """The implementation ``--flag requested`` gives on ``device`` when training in ``dtype``, and why
    (for ``auto``: the table row that decided, or its absence).

    Raises:
        UserError: ``triton`` asked for where it cannot run, naming the device and the alternative.
    """
    alternative = PYTORCH_ALTERNATIVE[flag]
    if requested == "auto":
        problem = device.triton_problem(auto=True)
        if problem is not None:
            return alternative, f"auto: {problem}"
        return _measured_choice(flag, device, dtype, table)
    if requested == "triton":
        problem = device.triton_problem(auto=False)
        if problem is not None:
            raise UserError(
                f"--{flag} triton cannot run here: {problem}; use --{flag} {alternative} (or auto)"
            )
    return requested, "asked for"


def resolve_kernel_arguments(
    args: argparse.Namespace, device: DeviceInfo, dtype: torch.dtype, log: bool
) -> None:
    """Replace ``auto`` in ``args.attn_implementation`` and ``args.masked_token_loss`` by the choice for
    ``device`` and the training ``dtype``, logging each choice and its reason when ``log`` (rank 0)."""
    for flag in PYTORCH_ALTERNATIVE:
        attribute = flag.replace("-", "_")
        choice, reason = choose_implementation(flag, getattr(args, attribute), device, dtype)
        setattr(args, attribute, choice)
        if log:
            logger.info("--%s: %s (%s)", flag, choice, reason)


def compile_engine(engine, backend: str) -> None:
    """``torch.compile`` the engine's model with ``backend`` (DeepSpeed's ``engine.compile``: the state dict
    keeps its keys, and ZeRO's gradient hooks stay on the parameters).

    The step traces as one graph (``fullgraph=True``): no operator in it has a shape that depends on tensor
    values (the heads gather the collator's padded positions), so nothing is left to run eagerly.
    """
    engine.compile(backend=backend, compile_kwargs={"fullgraph": True})


__all__ = [
    "DeviceInfo",
    "choose_implementation",
    "compile_engine",
    "current_device",
    "resolve_kernel_arguments",
    "training_dtype",
]
