"""The fused co-attention as a transformers attention function, registered under ``"triton"``.

``register_attention()`` adds it to ``transformers.AttentionInterface``; after that any model that looks
its attention up in ``ALL_ATTENTION_FUNCTIONS`` runs it with ``model.set_attn_implementation("triton")``
(or ``config._attn_implementation = "triton"``). The model code never imports this package.

Shape legend: B batch, H heads, Lq query length, Lk key length, D head dim.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface

from ernievil_ds_kernels.co_attention import co_attention

#: The name under which ``register_attention`` registers ``triton_attention_forward``.
ATTENTION_NAME = "triton"


def _is_key_mask(attention_mask: torch.Tensor) -> bool:
    """A (B or 1, 1, 1, Lk) mask is a per-key bias: the kernel reads it as a vector, once per key block.
    One that needs a gradient stays a full bias, whose gradient the kernel writes out."""
    return (
        attention_mask.dim() == 4 and attention_mask.shape[1:3] == (1, 1) and not attention_mask.requires_grad
    )


def triton_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The transformers attention interface on the fused kernel.

    Args:
        query: (B, H, Lq, D); key, value: (B, H, Lk, D).
        attention_mask: additive, broadcastable to (B, H, Lq, Lk): a key padding mask (B, 1, 1, Lk) or a
            full bias such as mask + position bias (B, H, Lq, Lk).
        scaling: the softmax scale (D ** -0.5 when None).
        dropout: the attention dropout probability (the caller passes 0 outside training).
        kwargs: what other attention functions take and this one does not need.

    Returns:
        attn_output (B, Lq, H, D) and no weights (the fused kernel never forms them).
    """
    if getattr(module, "is_causal", False):
        raise ValueError(f"the triton attention is non-causal; {type(module).__name__} is causal")
    bias = key_bias = None
    if attention_mask is not None and _is_key_mask(attention_mask):
        key_bias = attention_mask[:, 0, 0, :]  # (B, Lk)
    else:
        bias = attention_mask
    # (B, H, Lq, D)
    attn_output = co_attention(query, key, value, bias, key_bias, scale=scaling, dropout_p=dropout)
    # The kernel writes a (B, Lq, H, D) buffer: this transpose makes it contiguous again, no copy.
    return attn_output.transpose(1, 2).contiguous(), None  # (B, Lq, H, D)


def register_attention() -> None:
    """Register ``triton_attention_forward`` as ``attn_implementation="triton"`` (idempotent)."""
    AttentionInterface.register(ATTENTION_NAME, triton_attention_forward)


__all__ = ["ATTENTION_NAME", "register_attention", "triton_attention_forward"]
