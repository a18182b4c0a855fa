"""Which attention and masked-token loss a pretraining run uses, and compiling its engine.

``--attn-implementation auto`` and ``--masked-token-loss auto`` pick the fused Triton kernels where they
pay off, a CUDA GPU of compute capability 8.0 or more (A100, H100, ...) with the kernel package
importable, and PyTorch's (``sdpa``, ``torch``) elsewhere: on a V100 (sm_70, where Triton's matmuls have
no tensor cores) and on the CPU. Asking for ``triton`` where it cannot run is a ``UserError``; on the
CPU it runs only under Triton's interpreter (``TRITON_INTERPRET=1``, for tests and smoke benchmarks).
The policy is ``choose_implementation``, a pure function of the device's description.
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

logger = get_logger(__name__)

#: The first compute capability on which ``auto`` picks the Triton kernels (Ampere: bf16 tensor cores).
TRITON_MIN_CAPABILITY = (8, 0)

#: For each kernel flag: its Triton choice's PyTorch alternative.
PYTORCH_ALTERNATIVE = {"attn-implementation": "sdpa", "masked-token-loss": "torch"}


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
        """Why the Triton kernels should not run here (None when they should). With ``auto``, the
        interpreter does not count and a GPU below ``TRITON_MIN_CAPABILITY`` is refused; asked for
        explicitly, they run on any CUDA GPU and on the CPU under the interpreter."""
        if self.kernels_error is not None:
            return self.kernels_error
        if self.type == "cpu" and self.interpreted and not auto:
            return None
        if self.type != "cuda":
            return f"{self.name} is not a CUDA GPU (Triton runs there only under TRITON_INTERPRET=1)"
        if auto and self.capability < TRITON_MIN_CAPABILITY:
            major, minor = self.capability
            return f"{self.name} is sm_{major}{minor}, below sm_80 where Triton's matmuls use tensor cores"
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


def choose_implementation(flag: str, requested: str, device: DeviceInfo) -> tuple[str, str]:
    """The implementation ``--flag requested`` gives on ``device``, and why.

    Raises:
        UserError: ``triton`` asked for where it cannot run, naming the device and the alternative.
    """
    alternative = PYTORCH_ALTERNATIVE[flag]
    if requested == "auto":
        problem = device.triton_problem(auto=True)
        if problem is None:
            return "triton", f"auto: {device.name} runs the Triton kernels"
        return alternative, f"auto: {problem}"
    if requested == "triton":
        problem = device.triton_problem(auto=False)
        if problem is not None:
            raise UserError(
                f"--{flag} triton cannot run here: {problem}; use --{flag} {alternative} (or auto)"
            )
    return requested, "asked for"


def resolve_kernel_arguments(args: argparse.Namespace, device: DeviceInfo, log: bool) -> None:
    """Replace ``auto`` in ``args.attn_implementation`` and ``args.masked_token_loss`` by the choice for
    ``device``, logging each choice and its reason when ``log`` (rank 0)."""
    for flag in PYTORCH_ALTERNATIVE:
        attribute = flag.replace("-", "_")
        choice, reason = choose_implementation(flag, getattr(args, attribute), device)
        setattr(args, attribute, choice)
        if log:
            logger.info("--%s: %s (%s)", flag, choice, reason)


def compile_engine(engine, backend: str) -> None:
    """``torch.compile`` the engine's model with ``backend`` (DeepSpeed's ``engine.compile``: the state dict
    keeps its keys, and ZeRO's gradient hooks stay on the parameters).

    The masked-token and masked-region heads run on the positions a batch selects, whose number the
    compiler must then trace as a value known only at run time (``capture_dynamic_output_shape_ops``).
    """
    torch._dynamo.config.capture_dynamic_output_shape_ops = True
    engine.compile(backend=backend)


__all__ = [
    "DeviceInfo",
    "choose_implementation",
    "compile_engine",
    "current_device",
    "resolve_kernel_arguments",
]
