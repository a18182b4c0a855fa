"""Where the kernel tests run: on a CUDA GPU when there is one, else on the CPU under Triton's interpreter.

``TRITON_INTERPRET=1`` only takes effect if it is set before triton is imported (triton's own
``tl.zeros``, ``tl.sum``, ... are ``@triton.jit`` functions decorated at that import), and the project's
imports reach triton through ``torch._dynamo`` before this file is read. So without a GPU and without
the variable from the start, the kernel test modules are not collected here:
``test_under_the_interpreter.py`` runs them in a child pytest that has the variable from its start.
``TRITON_INTERPRET=1 python -m pytest tests/kernels`` runs them in-process, one report per test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

#: The device the kernels run on in this test run.
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

#: Whether the kernels run under the interpreter (which has no bf16 arithmetic and is slow).
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

#: Whether this test run hands the kernel tests to a child pytest under the interpreter.
DELEGATED = not torch.cuda.is_available() and not INTERPRETED

if DELEGATED:
    collect_ignore = [
        path.name
        for path in Path(__file__).parent.glob("test_*.py")
        if path.name != "test_under_the_interpreter.py"
    ]

gpu_only = pytest.mark.skipif(
    INTERPRETED, reason="needs a CUDA GPU: too slow or unsupported in the interpreter"
)


def dtype_case(dtype: torch.dtype, atol: float, rtol: float):
    """A ``(dtype, atol, rtol)`` parameter; bf16 is skipped under the interpreter, which has no bf16."""
    marks = [gpu_only] if dtype == torch.bfloat16 else []
    return pytest.param(dtype, atol, rtol, id=str(dtype).removeprefix("torch."), marks=marks)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float, name: str) -> float:
    """``|actual - expected| <= atol + rtol * |expected|`` elementwise, compared in float64; on failure the
    message names the tensor, the largest error, its index and both values. Returns the largest error."""
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    error = (actual - expected).abs()
    error = torch.where(torch.isnan(actual) != torch.isnan(expected), torch.inf, error.nan_to_num(0.0))
    excess = error - (atol + rtol * expected.abs())
    if actual.numel() and excess.max() > 0:
        index = tuple(int(i) for i in torch.unravel_index(excess.argmax(), excess.shape))
        raise AssertionError(
            f"{name}: largest error {error[index].item():.3e} at {index} (atol {atol}, rtol {rtol}): "
            f"{actual[index].item()!r} vs expected {expected[index].item()!r}; max error over all "
            f"{error.max().item():.3e}"
        )
    return error.max().item() if actual.numel() else 0.0


@pytest.fixture
def poisoned_allocations():
    """Every floating-point tensor that ``torch.empty``/``empty_like`` allocates starts as NaN (torch's own
    ``fill_uninitialized_memory``, active under deterministic algorithms), so an element a kernel forgot
    to write fails the comparison instead of passing by chance."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    was_filling = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.utils.deterministic.fill_uninitialized_memory = was_filling
    torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)
