"""Fused masked-token loss: the cross-entropy of ``hidden @ weight.T + bias`` against labels, per position,
without the (N, V) float32 logits tensor.

Shape legend: N positions (the masked tokens of a batch), C hidden width, V vocabulary, Vc the
vocabulary entries of one chunk.

Liger-Kernel's ``fused_linear_cross_entropy`` is the model: matmuls in PyTorch on chunks, a Triton kernel
for the softmax part, the logits gradient written over the logits in place. Here the chunks run over
the vocabulary (each (N, Vc) chunk of logits holds at most ``LOGITS_CHUNK_ELEMENTS``), so that in the
backward each chunk of ``grad_weight`` (Vc, C) is one matmul written once, in the weight's dtype, instead
of a (V, C) float32 sum over position chunks; only grad_hidden (N, C), small, accumulates in float32.

- Forward, per chunk: ``logits = hidden @ weight[c].T + bias[c]`` (the inputs' dtype), then
  ``_masked_token_loss_fwd_kernel`` folds the chunk into each row's running max and sum of exponentials
  (float32) and picks the label's logit when it falls in the chunk. The logsumexp is saved.
- Backward, per chunk: the logits again, ``_masked_token_loss_bwd_kernel`` turns them in place into
  ``(softmax - onehot) * grad_loss[row]`` from the saved logsumexp, then ``grad_weight[c] = dlogits.T @
  hidden``, ``grad_bias[c] = dlogits.sum(0)``, ``grad_hidden += dlogits @ weight[c]``.

Recomputing the logits in the backward, as Liger does for ``reduction="none"``, lets each position carry
its own upstream gradient (the model averages each task separately); it costs a fourth N x V x C matmul.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.nn import functional as F

from ernievil_ds_kernels._device import check_device

#: Largest chunk of logits, in elements (8 MiB in bf16): 1,398 vocabulary entries for 3,000 positions.
LOGITS_CHUNK_ELEMENTS = 1 << 22

#: Smallest vocabulary chunk, and the multiple chunks are rounded to: matmuls stay wide enough to be
#: efficient when there are very many positions (the chunk then exceeds LOGITS_CHUNK_ELEMENTS).
MIN_VOCAB_CHUNK = 128

#: Vocabulary block of one kernel iteration.
MAX_BLOCK_V = 4096

REDUCTIONS = ("none", "sum", "mean")


@triton.jit
def _masked_token_loss_fwd_kernel(
    LOGITS,
    LABELS,
    ROW_MAX,
    ROW_SUM,
    TARGET,
    stride_ln,
    stride_lv,
    CHUNK_START,
    CHUNK_V,
    BLOCK_V: tl.constexpr,
):
    """One program per row of a chunk LOGITS (N, Vc) of vocabulary entries CHUNK_START...: folds the row
    into its running max ROW_MAX and sum of exp(logit - max) ROW_SUM (float32, online softmax), and
    stores the label's logit in TARGET when the label lies in the chunk."""
    row = tl.program_id(0).to(tl.int64)
    row_ptr = LOGITS + row * stride_ln
    m = tl.load(ROW_MAX + row)
    d = tl.load(ROW_SUM + row)
    for start in range(0, CHUNK_V, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        x = tl.load(row_ptr + offs * stride_lv, mask=offs < CHUNK_V, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, 0))
        d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
        m = m_new
    tl.store(ROW_MAX + row, m)
    tl.store(ROW_SUM + row, d)
    local = tl.load(LABELS + row) - CHUNK_START
    in_chunk = (local >= 0) & (local < CHUNK_V)
    target = tl.load(row_ptr + local * stride_lv, mask=in_chunk, other=0.0).to(tl.float32)
    tl.store(TARGET + row, target, mask=in_chunk)


@triton.jit
def _masked_token_loss_bwd_kernel(
    LOGITS,
    LABELS,
    LSE,
    GRAD_LOSS,
    stride_ln,
    stride_lv,
    CHUNK_START,
    CHUNK_V,
    IGNORE_INDEX: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    """One program per row of a chunk, in place: LOGITS[row] <- (exp(LOGITS[row] - LSE[row]) -
    onehot(label)) * GRAD_LOSS[row], the gradient of the row's loss w.r.t. the chunk's logits; zeros
    for IGNORE_INDEX."""
    row = tl.program_id(0).to(tl.int64)
    row_ptr = LOGITS + row * stride_ln
    label = tl.load(LABELS + row)
    lse = tl.load(LSE + row)
    grad = tl.load(GRAD_LOSS + row).to(tl.float32)
    grad = tl.where(label == IGNORE_INDEX, 0.0, grad)
    local = label - CHUNK_START
    for start in range(0, CHUNK_V, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        mask = offs < CHUNK_V
        x = tl.load(row_ptr + offs * stride_lv, mask=mask, other=0.0).to(tl.float32)
        dx = (tl.exp(x - lse) - tl.where(offs == local, 1.0, 0.0)) * grad
        tl.store(row_ptr + offs * stride_lv, dx.to(LOGITS.dtype.element_ty), mask=mask)


def _vocab_chunk(num_positions: int, vocab: int, chunk_size: int | None) -> int:
    """Vocabulary entries per chunk: ``chunk_size``, else the most that keep a chunk of logits within
    LOGITS_CHUNK_ELEMENTS, in multiples of MIN_VOCAB_CHUNK."""
    if chunk_size is None:
        fitting = LOGITS_CHUNK_ELEMENTS // max(1, num_positions)
        chunk_size = max(MIN_VOCAB_CHUNK, fitting // MIN_VOCAB_CHUNK * MIN_VOCAB_CHUNK)
    return max(1, min(chunk_size, vocab))


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(N, C) x (Vc, C) -> (N, Vc) contiguous, in the inputs' dtype (the kernels reduce in float32)."""
    if bias is None:
        return hidden @ weight.t()  # (N, Vc)
    return torch.addmm(bias, hidden, weight.t())  # (N, Vc)


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
    """hidden (N, C), weight (V, C), bias (V,) or None, labels (N,) -> loss (N,) and lse (N,), float32.

    The loss is 0 where the label is ``ignore_index`` and NaN where it lies outside [0, V) (no host-side
    check, which would synchronise with the device). ``chunk_size``: vocabulary entries per chunk."""
    _validate(hidden, weight, bias, labels)
    num_positions, vocab = hidden.shape[0], weight.shape[0]
    row_max = torch.full((num_positions,), float("-inf"), dtype=torch.float32, device=hidden.device)
    row_sum = torch.zeros(num_positions, dtype=torch.float32, device=hidden.device)
    # A label no chunk holds (ignored or out of range) leaves its target NaN.
    target = torch.full((num_positions,), float("nan"), dtype=torch.float32, device=hidden.device)
    chunk = _vocab_chunk(num_positions, vocab, chunk_size)
    block_v = min(MAX_BLOCK_V, triton.next_power_of_2(chunk))
    for start in range(0, vocab if num_positions else 0, chunk):
        end = min(start + chunk, vocab)
        logits = _chunk_logits(
            hidden, weight[start:end], None if bias is None else bias[start:end]
        )  # (N, Vc)
        _masked_token_loss_fwd_kernel[(num_positions,)](
            logits, labels, row_max, row_sum, target, *logits.stride(), start, end - start, BLOCK_V=block_v
        )
    lse = row_max + torch.log(row_sum)  # (N,)
    loss = torch.where(labels == ignore_index, 0.0, lse - target)
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
    hidden_grad: bool = True,
    weight_grad: bool = True,
    bias_grad: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """grad_loss (N,) or a scalar, the forward's inputs and lse -> the gradients asked for: grad_hidden
    (N, C) (accumulated over chunks in float32), grad_weight (V, C) and grad_bias (V,) (each chunk
    written once), each in its input's dtype."""
    num_positions, vocab = hidden.shape[0], weight.shape[0]
    grad_loss = grad_loss.float().expand(num_positions).contiguous()  # (N,), also from a scalar
    grad_hidden = (
        torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device) if hidden_grad else None
    )
    grad_weight = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device) if weight_grad else None
    grad_bias = torch.empty(vocab, dtype=weight.dtype, device=weight.device) if bias_grad else None
    if num_positions == 0:
        for grad in (grad_weight, grad_bias):
            if grad is not None:
                grad.zero_()
    chunk = _vocab_chunk(num_positions, vocab, chunk_size)
    block_v = min(MAX_BLOCK_V, triton.next_power_of_2(chunk))
    for start in range(0, vocab if num_positions else 0, chunk):
        end = min(start + chunk, vocab)
        weight_chunk = weight[start:end]  # (Vc, C)
        dlogits = _chunk_logits(hidden, weight_chunk, None if bias is None else bias[start:end])  # (N, Vc)
        _masked_token_loss_bwd_kernel[(num_positions,)](
            dlogits, labels, lse, grad_loss, *dlogits.stride(), start, end - start,
            IGNORE_INDEX=ignore_index, BLOCK_V=block_v,
        )  # fmt: skip
        if grad_hidden is not None:
            if dlogits.dtype == torch.float32:
                grad_hidden.addmm_(dlogits, weight_chunk)  # (N, C)
            else:
                grad_hidden += (dlogits @ weight_chunk).float()  # (N, C)
        if grad_weight is not None:
            torch.mm(dlogits.t(), hidden, out=grad_weight[start:end])  # (Vc, C)
        if grad_bias is not None:
            grad_bias[start:end] = dlogits.sum(0, dtype=torch.float32)
    grad_hidden = None if grad_hidden is None else grad_hidden.to(hidden.dtype)
    return grad_hidden, grad_weight, grad_bias


@torch.library.custom_op("ernievil_ds_kernels::masked_token_loss_fwd", mutates_args=())
def _masked_token_loss_fwd_op(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    ignore_index: int,
    chunk_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``masked_token_loss_forward`` as an operator that ``torch.compile`` keeps whole."""
    return masked_token_loss_forward(hidden, weight, bias, labels, ignore_index, chunk_size)


@_masked_token_loss_fwd_op.register_fake
def _(hidden, weight, bias, labels, ignore_index, chunk_size):
    loss = hidden.new_empty(hidden.shape[0], dtype=torch.float32)  # (N,)
    return loss, torch.empty_like(loss)


@torch.library.custom_op("ernievil_ds_kernels::masked_token_loss_bwd", mutates_args=())
def _masked_token_loss_bwd_op(
    grad_loss: torch.Tensor,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    lse: torch.Tensor,
    ignore_index: int,
    chunk_size: int | None,
    hidden_grad: bool,
    weight_grad: bool,
    bias_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``masked_token_loss_backward`` as an operator; a gradient not asked for is an empty (0,) tensor."""
    grads = masked_token_loss_backward(
        grad_loss,
        hidden,
        weight,
        bias,
        labels,
        lse,
        ignore_index,
        chunk_size,
        hidden_grad,
        weight_grad,
        bias_grad,
    )
    return tuple(hidden.new_empty(0) if grad is None else grad for grad in grads)


@_masked_token_loss_bwd_op.register_fake
def _(
    grad_loss,
    hidden,
    weight,
    bias,
    labels,
    lse,
    ignore_index,
    chunk_size,
    hidden_grad,
    weight_grad,
    bias_grad,
):
    asked = ((hidden, hidden_grad), (weight, weight_grad), (bias, bias_grad))
    return tuple(torch.empty_like(x) if wanted else hidden.new_empty(0) for x, wanted in asked)


class MaskedTokenLossFunction(torch.autograd.Function):
    """``masked_token_loss(hidden, weight, bias, labels, reduction="none", ignore_index=-100,
    chunk_size=None)``: the float32 cross-entropy of each position (``reduction="none"``, 0 at ignored
    positions), their sum, or their mean over the non-ignored positions; differentiable in hidden, weight
    and bias. Forward and backward run as custom operators, so that ``torch.compile`` traces through it
    without a graph break."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, reduction="none", ignore_index=-100, chunk_size=None):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
        # Checked here too: the op's own checks do not run on the fake tensors torch.compile traces with.
        _validate(hidden, weight, bias, labels)
        loss, lse = _masked_token_loss_fwd_op(hidden, weight, bias, labels, ignore_index, chunk_size)
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
        asked = (
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
            bias is not None and ctx.needs_input_grad[2],
        )
        grads = _masked_token_loss_bwd_op(
            grad_loss, hidden, weight, bias, labels, lse, ctx.ignore_index, ctx.chunk_size, *asked
        )
        grad_hidden, grad_weight, grad_bias = (grad if wanted else None for grad, wanted in zip(grads, asked))
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
