"""Fused masked-token loss: the cross-entropy of ``hidden @ weight.T + bias`` against labels, without the
(N, V) float32 logits tensor, and with its gradient formed in the forward.

Shape legend: N positions (the masked tokens of a batch), C hidden width, V vocabulary, Nc the positions
of one chunk.

Liger-Kernel's ``fused_linear_cross_entropy`` is the model: the positions are processed in chunks of a
fixed number of rows (``_rows_per_chunk``: as many as keep a (Nc, V) chunk of logits within
``LOGITS_CHUNK_ELEMENTS``, whatever N is, so that the matmuls keep their width and the launches grow
linearly with N). Per chunk: ``logits = hidden[c] @ weight.T + bias`` (one matmul, the inputs' dtype);
``_cross_entropy_kernel`` reduces each row to its loss in float32 and overwrites the row with its
gradient ``(softmax - onehot) * row_weight`` in place; then ``grad_hidden[c] = dlogits @ weight`` (each
row formed in one matmul over the whole vocabulary, accumulated in float32 there and rounded once),
``grad_weight += dlogits.T @ hidden[c]`` and ``grad_bias += dlogits.sum(0)`` into float32 buffers.

``masked_token_loss`` takes each row's weight in the loss (the model knows it before the call: a task's
weight over its number of positions) and returns ``sum(row_weight * loss)``; its gradients are formed in
the forward, and the backward only scales them: three matmuls per chunk, none recomputed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.nn import functional as F

from ernievil_ds_kernels._device import check_device

#: Largest chunk of logits, in elements (16 MiB in bf16): 256 positions at BERT's 30,522 words.
LOGITS_CHUNK_ELEMENTS = 1 << 23

#: Fewest positions per chunk (a vocabulary so large that fewer would fit still gets matmuls this tall).
MIN_CHUNK_ROWS = 16

#: Vocabulary block of one kernel iteration.
MAX_BLOCK_V = 4096


@triton.jit
def _cross_entropy_kernel(
    LOGITS,
    LABELS,
    ROW_WEIGHT,
    LOSS,
    stride_ln,
    stride_lv,
    V,
    IGNORE_INDEX: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    """One program per row of LOGITS (Nc, V): LOSS[row] = logsumexp - logit[label] in float32 (0 for
    IGNORE_INDEX, NaN for a label outside [0, V)); with WRITE_GRAD the row is overwritten with
    ``(softmax - onehot(label)) * ROW_WEIGHT[row]`` (zeros for IGNORE_INDEX)."""
    row = tl.program_id(0).to(tl.int64)
    row_ptr = LOGITS + row * stride_ln
    label = tl.load(LABELS + row)
    m = float("-inf")
    d = 0.0
    for start in range(0, V, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        x = tl.load(row_ptr + offs * stride_lv, mask=offs < V, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, 0))
        d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
        m = m_new
    lse = m + tl.log(d)
    in_vocab = (label >= 0) & (label < V)
    target = tl.load(row_ptr + label * stride_lv, mask=in_vocab, other=float("nan")).to(tl.float32)
    tl.store(LOSS + row, tl.where(label == IGNORE_INDEX, 0.0, lse - target))
    if WRITE_GRAD:
        weight = tl.where(label == IGNORE_INDEX, 0.0, tl.load(ROW_WEIGHT + row).to(tl.float32))
        for start in range(0, V, BLOCK_V):
            offs = start + tl.arange(0, BLOCK_V)
            mask = offs < V
            x = tl.load(row_ptr + offs * stride_lv, mask=mask, other=0.0).to(tl.float32)
            dx = (tl.exp(x - lse) - tl.where(offs == label, 1.0, 0.0)) * weight
            tl.store(row_ptr + offs * stride_lv, dx.to(LOGITS.dtype.element_ty), mask=mask)


def _rows_per_chunk(vocab: int, chunk_rows: int | None) -> int:
    """Positions per chunk: ``chunk_rows``, else the largest power of two whose (rows, V) logits fit in
    LOGITS_CHUNK_ELEMENTS (at least MIN_CHUNK_ROWS). It depends on the vocabulary only, never on N."""
    if chunk_rows is not None:
        return max(1, chunk_rows)
    fitting = max(1, LOGITS_CHUNK_ELEMENTS // max(1, vocab))
    return max(MIN_CHUNK_ROWS, 1 << (fitting.bit_length() - 1))


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(Nc, C) x (V, C) -> (Nc, V) contiguous, in the inputs' dtype (the kernel reduces in float32)."""
    if bias is None:
        return hidden @ weight.t()  # (Nc, V)
    return torch.addmm(bias, hidden, weight.t())  # (Nc, V)


def _validate(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    row_weight: torch.Tensor | None = None,
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
    if row_weight is not None and (row_weight.shape != labels.shape or not row_weight.is_floating_point()):
        raise ValueError(
            f"row_weight must be float (N,) = ({hidden.shape[0]},); got {row_weight.dtype} "
            f"{tuple(row_weight.shape)}"
        )
    if weight.dtype != hidden.dtype or (bias is not None and bias.dtype != hidden.dtype):
        raise ValueError(
            f"hidden, weight and bias must share a dtype; got {hidden.dtype}, {weight.dtype}, "
            f"{None if bias is None else bias.dtype}"
        )
    check_device(hidden.device, _cross_entropy_kernel)


def chunked_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    row_weight: torch.Tensor | None,
    ignore_index: int = -100,
    chunk_rows: int | None = None,
    grads: tuple[bool, bool, bool] = (True, True, True),
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """hidden (N, C), weight (V, C), bias (V,) or None, labels (N,), row_weight (N,) -> the float32 loss
    of each position (N,) and the gradients of ``sum(row_weight * loss)`` that ``grads`` asks for (hidden,
    weight, bias; each in its input's dtype, None when not asked for or without ``row_weight``).

    One pass over the positions in chunks of ``_rows_per_chunk`` rows; nothing is read on the host."""
    _validate(hidden, weight, bias, labels, row_weight)
    num_positions, vocab = hidden.shape[0], weight.shape[0]
    want_hidden, want_weight, want_bias = (wanted and row_weight is not None for wanted in grads)
    loss = torch.empty(num_positions, dtype=torch.float32, device=hidden.device)
    grad_hidden = torch.empty_like(hidden) if want_hidden else None
    grad_weight = (
        torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_weight else None
    )
    grad_bias = torch.zeros(vocab, dtype=torch.float32, device=weight.device) if want_bias else None
    rows = _rows_per_chunk(vocab, chunk_rows)
    block_v = min(MAX_BLOCK_V, triton.next_power_of_2(vocab))
    for start in range(0, num_positions, rows):
        end = min(start + rows, num_positions)
        hidden_chunk = hidden[start:end]  # (Nc, C)
        logits = _chunk_logits(hidden_chunk, weight, bias)  # (Nc, V), then its gradient in place
        _cross_entropy_kernel[(end - start,)](
            logits, labels[start:end], loss if row_weight is None else row_weight[start:end], loss[start:end],
            *logits.stride(), vocab,
            IGNORE_INDEX=ignore_index, WRITE_GRAD=row_weight is not None and any(grads), BLOCK_V=block_v,
        )  # fmt: skip
        if grad_hidden is not None:
            torch.mm(logits, weight, out=grad_hidden[start:end])  # (Nc, C)
        if grad_weight is not None:
            grad_weight += (logits.t() @ hidden_chunk).float()  # (V, C)
        if grad_bias is not None:
            grad_bias += logits.sum(0, dtype=torch.float32)  # (V,)
    grad_weight = None if grad_weight is None else grad_weight.to(weight.dtype)
    grad_bias = None if grad_bias is None else grad_bias.to(weight.dtype)
    return loss, grad_hidden, grad_weight, grad_bias


def _asked_or_empty(grads, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Custom ops return tensors: a gradient nobody asked for is an empty (0,) tensor."""
    return tuple(like.new_empty(0) if grad is None else grad for grad in grads)


@torch.library.custom_op("ernievil_ds_kernels::masked_token_loss_grads", mutates_args=())
def _loss_and_grads_op(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    row_weight: torch.Tensor,
    ignore_index: int,
    chunk_rows: int | None,
    hidden_grad: bool,
    weight_grad: bool,
    bias_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``chunked_cross_entropy`` as an operator that ``torch.compile`` keeps whole: the loss of each
    position and the gradients of ``sum(row_weight * loss)`` asked for, (0,) for the others."""
    loss, *grads = chunked_cross_entropy(
        hidden,
        weight,
        bias,
        labels,
        row_weight,
        ignore_index,
        chunk_rows,
        (hidden_grad, weight_grad, bias_grad),
    )
    return (loss, *_asked_or_empty(grads, hidden))


@_loss_and_grads_op.register_fake
def _(
    hidden, weight, bias, labels, row_weight, ignore_index, chunk_rows, hidden_grad, weight_grad, bias_grad
):
    asked = ((hidden, hidden_grad), (weight, weight_grad), (bias, bias_grad))
    grads = tuple(torch.empty_like(x) if wanted else hidden.new_empty(0) for x, wanted in asked)
    return (hidden.new_empty(hidden.shape[0], dtype=torch.float32), *grads)


def _asked(ctx, bias: torch.Tensor | None) -> tuple[bool, bool, bool]:
    return ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2]


class MaskedTokenLossFunction(torch.autograd.Function):
    """``sum(row_weight * loss)`` and the loss of each position (not differentiable), with the gradients
    formed in the forward; the backward scales them by the upstream gradient."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, row_weight, ignore_index=-100, chunk_rows=None):
        # Checked here too: the op's own checks do not run on the fake tensors torch.compile traces with.
        _validate(hidden, weight, bias, labels, row_weight)
        loss, *grads = _loss_and_grads_op(
            hidden, weight, bias, labels, row_weight, ignore_index, chunk_rows, *_asked(ctx, bias)
        )
        ctx.save_for_backward(*grads)
        ctx.asked = _asked(ctx, bias)
        ctx.mark_non_differentiable(loss)
        return (row_weight * loss).sum(), loss  # (), (N,)

    @staticmethod
    def backward(ctx, grad_total, _grad_loss):
        grads = (
            grad * grad_total.to(grad.dtype) if wanted else None
            for grad, wanted in zip(ctx.saved_tensors, ctx.asked)
        )
        return (*grads, None, None, None, None)


def masked_token_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    row_weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    chunk_rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden (N, C), weight (V, C), bias (V,) or None, labels (N,), row_weight (N,) float -> the weighted
    loss ``sum(row_weight * loss)`` () float32, differentiable in hidden, weight and bias, and the float32
    loss of each position (N,) (0 at ``ignore_index``, NaN for a label outside [0, V); not
    differentiable). ``row_weight`` None: the mean over the positions not ignored."""
    if row_weight is None:
        counted = (labels != ignore_index).sum().clamp(min=1)  # a tensor: no synchronisation
        row_weight = torch.ones(labels.shape, dtype=torch.float32, device=labels.device) / counted
    return MaskedTokenLossFunction.apply(hidden, weight, bias, labels, row_weight, ignore_index, chunk_rows)


def masked_token_loss_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    row_weight: torch.Tensor | None = None,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Plain PyTorch: the full (N, V) logits, cross-entropy in at least float32; the loss of each position
    (N,), or ``sum(row_weight * loss)`` with ``row_weight``."""
    logits = F.linear(hidden, weight, bias)  # (N, V)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    loss = F.cross_entropy(logits, labels, reduction="none", ignore_index=ignore_index)
    return loss if row_weight is None else (row_weight.to(loss.dtype) * loss).sum()


__all__ = [
    "MaskedTokenLossFunction",
    "chunked_cross_entropy",
    "masked_token_loss",
    "masked_token_loss_reference",
]
