"""Fused masked-token loss: the cross-entropy of ``hidden @ weight.T + bias`` against labels, per position,
without the (N, V) float32 logits tensor.

Shape legend: N positions (the masked tokens of a batch), C hidden width, V vocabulary.

The design is Liger-Kernel's ``fused_linear_cross_entropy``: positions are processed in chunks; each
chunk's logits (chunk, V) come from one matmul in the inputs' dtype, and a Triton kernel reduces each row
over the vocabulary in blocks (online logsumexp in float32). The backward recomputes a chunk's logits,
turns them in place into ``(softmax - onehot) * grad_loss`` with the saved logsumexp (one pass, no second
reduction), and multiplies back: ``grad_hidden = dlogits @ weight``, ``grad_weight += dlogits.T @ hidden``
(accumulated in float32), ``grad_bias += dlogits.sum(0)``. Recomputing in the backward, as Liger does for
``reduction="none"``, lets each position's loss carry its own upstream gradient (the model averages each
task separately); it costs a fourth (N, V, C) matmul. At most one chunk of logits exists at a time.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from ernievil_ds_kernels._device import check_device
from torch.nn import functional as F

#: Largest logits chunk, in elements (8 MiB in bf16): 137 positions of a 30,522-word vocabulary.
LOGITS_CHUNK_ELEMENTS = 1 << 22

#: Vocabulary block of one kernel iteration.
MAX_BLOCK_V = 4096

REDUCTIONS = ("none", "sum", "mean")


@triton.jit
def _masked_token_loss_fwd_kernel(
    LOGITS,
    LABELS,
    LOSS,
    LSE,
    stride_ln,
    stride_lv,
    VOCAB,
    IGNORE_INDEX: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    """One program per row: LSE[row] = logsumexp(LOGITS[row]) in float32 over BLOCK_V blocks, and
    LOSS[row] = LSE[row] - LOGITS[row, label]; 0 for IGNORE_INDEX, NaN for a label outside [0, VOCAB)
    (no host-side check, which would synchronise with the device)."""
    row = tl.program_id(0).to(tl.int64)
    row_ptr = LOGITS + row * stride_ln
    label = tl.load(LABELS + row)
    m = float("-inf")
    d = 0.0
    for start in range(0, VOCAB, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        x = tl.load(row_ptr + offs * stride_lv, mask=offs < VOCAB, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, 0))
        d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
        m = m_new
    lse = m + tl.log(d)
    in_range = (label >= 0) & (label < VOCAB)
    target = tl.load(row_ptr + label * stride_lv, mask=in_range, other=0.0).to(tl.float32)
    loss = tl.where(in_range, lse - target, float("nan"))
    loss = tl.where(label == IGNORE_INDEX, 0.0, loss)
    tl.store(LOSS + row, loss)
    tl.store(LSE + row, lse)


@triton.jit
def _masked_token_loss_bwd_kernel(
    LOGITS,
    LABELS,
    LSE,
    GRAD_LOSS,
    stride_ln,
    stride_lv,
    VOCAB,
    IGNORE_INDEX: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    """One program per row, in place: LOGITS[row] <- (exp(LOGITS[row] - LSE[row]) - onehot(label)) *
    GRAD_LOSS[row], the gradient of the row's loss w.r.t. its logits; zeros for IGNORE_INDEX."""
    row = tl.program_id(0).to(tl.int64)
    row_ptr = LOGITS + row * stride_ln
    label = tl.load(LABELS + row)
    lse = tl.load(LSE + row)
    grad = tl.load(GRAD_LOSS + row).to(tl.float32)
    grad = tl.where(label == IGNORE_INDEX, 0.0, grad)
    for start in range(0, VOCAB, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        mask = offs < VOCAB
        x = tl.load(row_ptr + offs * stride_lv, mask=mask, other=0.0).to(tl.float32)
        dx = (tl.exp(x - lse) - tl.where(offs == label, 1.0, 0.0)) * grad
        tl.store(row_ptr + offs * stride_lv, dx.to(LOGITS.dtype.element_ty), mask=mask)


def _chunk_size(num_positions: int, vocab: int, chunk_size: int | None) -> int:
    if chunk_size is None:
        chunk_size = max(1, LOGITS_CHUNK_ELEMENTS // vocab)
    return max(1, min(chunk_size, num_positions))


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(n, C) x (V, C) -> (n, V) contiguous, in the inputs' dtype (the kernels reduce in float32)."""
    if bias is None:
        return hidden @ weight.t()  # (n, V)
    return torch.addmm(bias, hidden, weight.t())  # (n, V)


def _validate(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor
) -> None:
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"hidden must be (N, C) and weight (V, C); got {tuple(hidden.shape)} and {tuple(weight.shape)}"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must be (V,) = ({weight.shape[0]},); got {tuple(bias.shape)}")
    if labels.shape != (hidden.shape[0],) or labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"labels must be integer (N,) = ({hidden.shape[0]},); got {labels.dtype} {tuple(labels.shape)}"
        )
    if weight.dtype != hidden.dtype or (bias is not None and bias.dtype != hidden.dtype):
        raise ValueError(
            f"hidden, weight and bias must share a dtype; got {hidden.dtype}, {weight.dtype}, "
            f"{None if bias is None else bias.dtype}"
        )
    check_device(hidden.device, _masked_token_loss_fwd_kernel)


def masked_token_loss_forward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    ignore_index: int = -100,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden (N, C), weight (V, C), bias (V,) or None, labels (N,) -> loss (N,) and lse (N,), float32."""
    _validate(hidden, weight, bias, labels)
    num_positions, vocab = hidden.shape[0], weight.shape[0]
    loss = torch.empty(num_positions, dtype=torch.float32, device=hidden.device)
    lse = torch.empty(num_positions, dtype=torch.float32, device=hidden.device)
    chunk = _chunk_size(num_positions, vocab, chunk_size)
    block_v = min(MAX_BLOCK_V, triton.next_power_of_2(vocab))
    for start in range(0, num_positions, chunk):
        end = min(start + chunk, num_positions)
        logits = _chunk_logits(hidden[start:end], weight, bias)  # (n, V)
        _masked_token_loss_fwd_kernel[(end - start,)](
            logits, labels[start:end], loss[start:end], lse[start:end], *logits.stride(), vocab,
            IGNORE_INDEX=ignore_index, BLOCK_V=block_v,
        )  # fmt: skip
    return loss, lse


def masked_token_loss_backward(
    grad_loss: torch.Tensor,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    lse: torch.Tensor,
    ignore_index: int = -100,
    chunk_size: int | None = None,
    weight_grad: bool = True,
    bias_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """grad_loss (N,), the forward's inputs and lse -> grad_hidden (N, C) and, when asked for, grad_weight
    (V, C) and grad_bias (V,), each in its input's dtype (weight and bias accumulated in float32)."""
    num_positions, vocab = hidden.shape[0], weight.shape[0]
    grad_loss = grad_loss.float().expand(num_positions).contiguous()  # (N,), also from a scalar
    grad_hidden = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device)
    grad_weight = (
        torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if weight_grad else None
    )
    grad_bias = torch.zeros(vocab, dtype=torch.float32, device=weight.device) if bias_grad else None
    chunk = _chunk_size(num_positions, vocab, chunk_size)
    block_v = min(MAX_BLOCK_V, triton.next_power_of_2(vocab))
    for start in range(0, num_positions, chunk):
        end = min(start + chunk, num_positions)
        hidden_chunk = hidden[start:end]  # (n, C)
        dlogits = _chunk_logits(hidden_chunk, weight, bias)  # (n, V), overwritten by its gradient
        _masked_token_loss_bwd_kernel[(end - start,)](
            dlogits, labels[start:end], lse[start:end], grad_loss[start:end], *dlogits.stride(), vocab,
            IGNORE_INDEX=ignore_index, BLOCK_V=block_v,
        )  # fmt: skip
        torch.mm(dlogits, weight, out=grad_hidden[start:end])
        if grad_weight is not None:
            if dlogits.dtype == torch.float32:
                grad_weight.addmm_(dlogits.t(), hidden_chunk)  # (V, C)
            else:
                grad_weight += (dlogits.t() @ hidden_chunk).float()  # (V, C)
        if grad_bias is not None:
            grad_bias += dlogits.sum(0, dtype=torch.float32)
    grad_weight = None if grad_weight is None else grad_weight.to(weight.dtype)
    grad_bias = None if grad_bias is None else grad_bias.to(weight.dtype)
    return grad_hidden, grad_weight, grad_bias


class MaskedTokenLossFunction(torch.autograd.Function):
    """``masked_token_loss(hidden, weight, bias, labels, reduction="none", ignore_index=-100,
    chunk_size=None)``: the float32 cross-entropy of each position (``reduction="none"``, 0 at ignored
    positions), their sum, or their mean over the non-ignored positions; differentiable in hidden, weight
    and bias."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, reduction="none", ignore_index=-100, chunk_size=None):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
        loss, lse = masked_token_loss_forward(hidden, weight, bias, labels, ignore_index, chunk_size)
        count = (labels != ignore_index).sum()  # a tensor: no synchronisation
        ctx.save_for_backward(hidden, weight, bias, labels, lse, count)
        ctx.reduction, ctx.ignore_index, ctx.chunk_size = reduction, ignore_index, chunk_size
        if reduction == "sum":
            return loss.sum()
        if reduction == "mean":
            return loss.sum() / count
        return loss  # (N,)

    @staticmethod
    def backward(ctx, grad_output):
        hidden, weight, bias, labels, lse, count = ctx.saved_tensors
        grad_loss = grad_output / count if ctx.reduction == "mean" else grad_output  # (N,) or ()
        grad_hidden, grad_weight, grad_bias = masked_token_loss_backward(
            grad_loss, hidden, weight, bias, labels, lse, ctx.ignore_index, ctx.chunk_size,
            weight_grad=ctx.needs_input_grad[1],
            bias_grad=bias is not None and ctx.needs_input_grad[2],
        )  # fmt: skip
        return grad_hidden, grad_weight, grad_bias, None, None, None, None


def masked_token_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    reduction: str = "none",
    ignore_index: int = -100,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """``MaskedTokenLossFunction.apply`` with keywords (``apply`` takes positional arguments only):
    hidden (N, C), weight (V, C), bias (V,) or None, labels (N,) -> float32 losses (N,), or a scalar."""
    return MaskedTokenLossFunction.apply(hidden, weight, bias, labels, reduction, ignore_index, chunk_size)


def masked_token_loss_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    reduction: str = "none",
    ignore_index: int = -100,
) -> torch.Tensor:
    """Plain PyTorch: the full (N, V) logits, cross-entropy in at least float32."""
    logits = F.linear(hidden, weight, bias)  # (N, V)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits, labels, reduction=reduction, ignore_index=ignore_index)


__all__ = [
    "MaskedTokenLossFunction",
    "masked_token_loss",
    "masked_token_loss_backward",
    "masked_token_loss_forward",
    "masked_token_loss_reference",
]
