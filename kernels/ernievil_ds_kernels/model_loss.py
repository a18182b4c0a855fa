"""The fused masked-token loss as the model's ``masked_token_loss_implementation="triton"``.

``register_masked_token_loss()`` adds it to ``ernievil_ds.masked_token_loss``'s registry, as
``register_attention()`` adds the co-attention to transformers'; ``ErnieVilForPreTraining`` then runs it
with ``config.masked_token_loss_implementation = "triton"``. The model code never imports this package.

Shape legend: N selected positions, C hidden width, V vocabulary.
"""

from __future__ import annotations

import torch

from ernievil_ds.masked_token_loss import register_masked_token_loss as register_in_model
from ernievil_ds_kernels.masked_token_loss import masked_token_loss

#: The name under which ``register_masked_token_loss`` registers ``triton_masked_token_loss``.
LOSS_NAME = "triton"


def triton_masked_token_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    row_weight: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, None]:
    """hidden (N, C), the tied decoder's weight (V, C) and bias (V,), labels (N,), row_weight (N,) ->
    ``sum(row_weight * loss)`` () float32, the loss of each position (N,) (not differentiable), and no
    logits: the fused kernel never forms the (N, V) matrix, and with the weights known it forms the
    gradient in the forward, so the backward only scales it."""
    total, per_row = masked_token_loss(hidden, weight, bias, labels, row_weight)
    return total, per_row, None


def register_masked_token_loss() -> None:
    """Register ``triton_masked_token_loss`` as ``masked_token_loss_implementation="triton"`` (idempotent)."""
    register_in_model(LOSS_NAME, triton_masked_token_loss)


__all__ = ["LOSS_NAME", "register_masked_token_loss", "triton_masked_token_loss"]
