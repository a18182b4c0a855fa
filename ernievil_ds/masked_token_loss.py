"""The masked-token cross-entropy of the pretraining model, by the name in
``config.masked_token_loss_implementation``.

The registry mirrors transformers' attention registry: ``"torch"`` (the token head's decoder and
``F.cross_entropy``) is built in, and a kernel package adds its own function with
``register_masked_token_loss`` when it is imported (the Triton kernel package of ``kernels/`` registers
``"triton"``), so that the model never imports a kernel package.

A function takes hidden (N, Ct), the decoder's weight (V, Ct) (tied to the word embeddings) and bias
(V,), labels (N,) (-100 for a row that is not scored) and a weight per row (N,), and returns
``sum(row_weight * loss)`` () in float32 (at least), differentiable; the loss of each row (N,) (0 where
the label is -100), for reporting only; and the logits (N, V), or None for a fused function that never
forms them. The model knows each row's weight before the call (its task's weight over the task's count),
so a fused function can form the gradient in the forward and never recompute the logits.

Shape legend: N selected positions, Ct text hidden width, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

MaskedTokenLoss = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor],
    tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
]

#: The implementation built into the model.
DEFAULT_MASKED_TOKEN_LOSS = "torch"


def torch_masked_token_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    row_weight: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The decoder's logits (N, V) and their cross-entropy, in float32 (float64 for a float64 model):
    ``sum(row_weight * loss)`` (), the loss of each row (N,) detached, and the logits."""
    logits = F.linear(hidden, weight, bias)  # (N, V)
    per_row = F.cross_entropy(
        logits.to(torch.promote_types(logits.dtype, torch.float32)), labels, reduction="none"
    )  # (N,)
    return (row_weight.to(per_row.dtype) * per_row).sum(), per_row.detach(), logits


_FUNCTIONS: dict[str, MaskedTokenLoss] = {DEFAULT_MASKED_TOKEN_LOSS: torch_masked_token_loss}


def register_masked_token_loss(name: str, function: MaskedTokenLoss) -> None:
    """Make ``function`` available as ``config.masked_token_loss_implementation = name`` (idempotent)."""
    _FUNCTIONS[name] = function


def registered_masked_token_losses() -> list[str]:
    """The names ``config.masked_token_loss_implementation`` may take now."""
    return sorted(_FUNCTIONS)


def masked_token_loss_function(name: str) -> MaskedTokenLoss:
    """The function registered under ``name``.

    Raises:
        ValueError: naming the registered implementations, when ``name`` is not one of them.
    """
    if name not in _FUNCTIONS:
        raise ValueError(
            f"masked_token_loss_implementation={name!r} is not registered; registered: {sorted(_FUNCTIONS)} "
            f"('triton' is registered by importing the Triton kernel package of kernels/)"
        )
    return _FUNCTIONS[name]


__all__ = [
    "DEFAULT_MASKED_TOKEN_LOSS",
    "masked_token_loss_function",
    "register_masked_token_loss",
    "registered_masked_token_losses",
    "torch_masked_token_loss",
]
