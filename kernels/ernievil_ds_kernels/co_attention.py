"""Fused co-attention: non-causal softmax attention between two streams of different lengths.

``softmax(Q K^T * scale + key_bias + bias) V`` with attention dropout, forward and backward, in the
structure of Triton's fused-attention tutorial (``06-fused-attention.py``): the forward keeps each query
row's logsumexp, the backward recomputes the probabilities from it block by block.

Shape legend: B batch, H heads, M query length (Lq), N key length (Lk), D head dim.

- ``key_bias`` (B, N): an additive key padding mask (``0`` to attend, a large negative number or ``-inf``
  to ignore), loaded once per key block and broadcast over heads and queries.
- ``bias`` (B, H, M, N), or any shape that broadcasts to it: an additive bias, e.g. a key padding mask
  plus a relative-position bias. Its gradient is the gradient of the scores.
- Dropout is applied to the normalised probabilities, as ``F.dropout(softmax(...))`` does. Its
  (seed, offset) is a (2,) int64 tensor on the device (``dropout_rng``: drawn there with
  ``torch.randint`` per call) that the kernels load: nothing is read on the host, so a compiled step is
  capturable as a CUDA graph and each replay draws a new mask. Element ``(b, h, m, n)``'s keep decision
  is output ``n % 4`` of one 32-bit Philox4x32-10 call on counter ``(n // 4, (b * H + h) * M + m,
  offset, 0)`` (``_keep``): a pure function of (seed, offset) and the element's index, regenerated in
  the backward and by ``co_attention_dropout_mask``, so the unfused reference can be run with exactly
  the kernel's mask.

Sequences here are short (text 8-128, regions 10-101): the key block is sized to cover up to 128 keys, so
that in the common case one key block holds every key and the online softmax runs a single iteration,
and when both lengths are at most 128 the backward is one program per (batch, head) on a single tile.
Head dims that are not a power of two (or below 16, the smallest ``tl.dot`` size) are padded in
registers by masked loads; nothing is copied.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ernievil_ds_kernels._device import check_device

#: Input dtypes the kernels take; accumulation is always float32.
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@triton.jit
def _scores(
    q,
    k,
    b,
    h,
    offs_m,
    offs_n,
    LQ,
    LK,
    scale,
    KEY_BIAS,
    stride_kbb,
    stride_kbn,
    BIAS,
    stride_bb,
    stride_bh,
    stride_bm,
    stride_bn,
    HAS_KEY_BIAS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """q (BLOCK_M, BLOCK_D), k (BLOCK_N, BLOCK_D) -> float32 scores (BLOCK_M, BLOCK_N) with both biases
    added and keys past LK at -inf (rows past LQ are left finite; their stores are masked)."""
    mask_n = offs_n < LK
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # (BLOCK_M, BLOCK_N)
    if HAS_KEY_BIAS:
        key_bias = tl.load(KEY_BIAS + b * stride_kbb + offs_n * stride_kbn, mask=mask_n, other=0.0)
        s += key_bias.to(tl.float32)[None, :]
    if HAS_BIAS:
        bias_ptrs = (
            BIAS + b * stride_bb + h * stride_bh + offs_m[:, None] * stride_bm + offs_n[None, :] * stride_bn
        )
        bias = tl.load(bias_ptrs, mask=(offs_m[:, None] < LQ) & mask_n[None, :], other=0.0)
        s += bias.to(tl.float32)
    return tl.where(mask_n[None, :], s, float("-inf"))


@triton.jit
def _keep(seed, offset, bh, offs_m, start_n, LQ, dropout_p, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The dropout keep decisions (BLOCK_M, BLOCK_N) of head ``bh = b * H + h``, keys ``start_n...``.

    One 32-bit Philox call per group of four keys gives all four of their numbers: counter (key group
    ``n // 4``, row ``bh * LQ + m``, ``offset``, 0) under the 64-bit key ``seed``, value ``n % 4`` for key
    ``n``. A pure function of (seed, offset) and the element's index, whatever the block sizes, so every
    kernel that asks gets the same mask. ``start_n`` is a multiple of 4 (blocks are at least 16 wide)."""
    shape: tl.constexpr = (BLOCK_M, BLOCK_N // 4)
    groups = tl.broadcast_to((start_n // 4 + tl.arange(0, BLOCK_N // 4))[None, :], shape)
    rows = tl.broadcast_to((bh * LQ + offs_m)[:, None], shape)
    counter = tl.full(shape, 0, tl.int32) + offset
    r0, r1, r2, r3 = tl.philox(seed, groups, rows, counter, tl.full(shape, 0, tl.int32))
    # (BLOCK_M, BLOCK_N / 4, 2, 2) -> (BLOCK_M, BLOCK_N): key n takes value n % 4 of group n // 4.
    bits = tl.reshape(tl.join(tl.join(r0, r2), tl.join(r1, r3)), (BLOCK_M, BLOCK_N))
    return tl.uint_to_uniform_float(bits) > dropout_p


@triton.jit
def _load_rng(RNG, HAS_DROPOUT: tl.constexpr):
    """(seed, offset) from the (2,) int64 device tensor RNG: loaded by the kernel, never read on the host,
    so that a CUDA graph replays the draw that refills RNG instead of a frozen number."""
    if HAS_DROPOUT:
        return tl.load(RNG), tl.load(RNG + 1).to(tl.int32)
    return 0, 0


@triton.jit
def _softmax_grads(
    q, k, v, do, lse, delta, b, h, bh, offs_m, start_n, LQ, LK, scale, dropout_p, seed, offset,
    KEY_BIAS, stride_kbb, stride_kbn, BIAS, stride_bb, stride_bh, stride_bm, stride_bn,
    HAS_KEY_BIAS: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One (BLOCK_M, BLOCK_N) tile of the backward: the probabilities as dropped and rescaled (Z, what
    multiplied V) and dS, the gradient of the biased scores, both float32, from the saved logsumexp ``lse``
    and ``delta = rowsum(dO * O)`` (BLOCK_M,) each, for keys ``start_n...``. Rows past LQ must come with
    lse = +inf (p = 0)."""
    offs_n = start_n + tl.arange(0, BLOCK_N)
    s = _scores(
        q, k, b, h, offs_m, offs_n, LQ, LK, scale,
        KEY_BIAS, stride_kbb, stride_kbn, BIAS, stride_bb, stride_bh, stride_bm, stride_bn,
        HAS_KEY_BIAS, HAS_BIAS, PRECISION,
    )  # fmt: skip
    p = tl.exp(s - lse[:, None])  # (BLOCK_M, BLOCK_N)
    dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # dZ
    z = p
    if HAS_DROPOUT:
        keep_scale = 1.0 / (1.0 - dropout_p)
        keep = _keep(seed, offset, bh, offs_m, start_n, LQ, dropout_p, BLOCK_M, BLOCK_N)
        z = tl.where(keep, p * keep_scale, 0.0)
        dp = tl.where(keep, dp * keep_scale, 0.0)
    return z, p * (dp - delta[:, None])


@triton.jit
def _co_attention_fwd_kernel(
    Q,
    K,
    V,
    KEY_BIAS,
    BIAS,
    OUT,
    LSE,
    RNG,
    stride_qb,
    stride_qh,
    stride_qm,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_kbb,
    stride_kbn,
    stride_bb,
    stride_bh,
    stride_bm,
    stride_bn,
    stride_ob,
    stride_oh,
    stride_om,
    stride_od,
    H,
    LQ,
    LK,
    HEAD_DIM,
    scale,
    dropout_p,
    HAS_KEY_BIAS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_DROPOUT: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """One program: BLOCK_M queries of one (batch, head) against every key, online softmax over key blocks.
    Grid (B * H, query blocks): the large count on axis 0, whose limit is 2**31 - 1 (axis 1's is 65,535).

    Writes OUT (B, H, M, D) through its strides and LSE (B * H, M), the natural-log logsumexp of each
    query row's scores (``+inf`` for a row whose every score is ``-inf``, so that the backward's
    ``exp(s - lse)`` is 0 there)."""
    bh = tl.program_id(0)
    pid_m = tl.program_id(1)
    b = bh // H
    h = bh % H
    seed, offset = _load_rng(RNG, HAS_DROPOUT)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < LQ
    mask_d = offs_d < HEAD_DIM

    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=mask_m[:, None] & mask_d[None, :], other=0.0)  # (BLOCK_M, BLOCK_D)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for start_n in range(0, LK, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_kv = (offs_n[:, None] < LK) & mask_d[None, :]
        k_ptrs = K + b * stride_kb + h * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
        v_ptrs = V + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
        k = tl.load(k_ptrs, mask=mask_kv, other=0.0)  # (BLOCK_N, BLOCK_D)
        v = tl.load(v_ptrs, mask=mask_kv, other=0.0)
        s = _scores(
            q, k, b, h, offs_m, offs_n, LQ, LK, scale,
            KEY_BIAS, stride_kbb, stride_kbn, BIAS, stride_bb, stride_bh, stride_bm, stride_bn,
            HAS_KEY_BIAS, HAS_BIAS, PRECISION,
        )  # fmt: skip
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A row with only -inf so far keeps a finite reference point: exp(-inf) = 0 instead of NaN.
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        # Natural units throughout: folding log2(e) into the scores (the tutorial's exp2) would overflow a
        # finfo.min mask to -inf; the scale is applied in `_scores` either way.
        p = tl.exp(s - m_ref[:, None])  # (BLOCK_M, BLOCK_N)
        alpha = tl.exp(m_i - m_ref)
        l_i = l_i * alpha + tl.sum(p, 1)
        if HAS_DROPOUT:
            keep = _keep(seed, offset, bh, offs_m, start_n, LQ, dropout_p, BLOCK_M, BLOCK_N)
            p = tl.where(keep, p, 0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    if HAS_DROPOUT:
        out = out / (1.0 - dropout_p)
    o_ptrs = OUT + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(OUT.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])
    lse = tl.where(l_i == 0.0, float("inf"), m_i + tl.log(l_safe))
    tl.store(LSE + bh * LQ + offs_m, lse, mask=mask_m)


@triton.jit
def _row_delta(OUT, DOUT, b, h, offs_m, offs_d, LQ, HEAD_DIM, stride_o, stride_do):
    """rowsum(dO * O) (BLOCK_M,) float32: the ``sum_n dP * P`` term of the softmax backward (with dropout
    too, since O already carries the dropped, rescaled probabilities). ``stride_o``, ``stride_do``: the
    (b, h, m, d) strides of OUT and DOUT as 4-tuples."""
    mask = (offs_m[:, None] < LQ) & (offs_d[None, :] < HEAD_DIM)
    o = tl.load(
        OUT
        + b * stride_o[0]
        + h * stride_o[1]
        + offs_m[:, None] * stride_o[2]
        + offs_d[None, :] * stride_o[3],
        mask=mask,
        other=0.0,
    )
    do = tl.load(
        DOUT
        + b * stride_do[0]
        + h * stride_do[1]
        + offs_m[:, None] * stride_do[2]
        + offs_d[None, :] * stride_do[3],
        mask=mask,
        other=0.0,
    )
    return tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)


@triton.jit
def _co_attention_bwd_preprocess_kernel(
    OUT,
    DOUT,
    DELTA,
    stride_ob,
    stride_oh,
    stride_om,
    stride_od,
    stride_dob,
    stride_doh,
    stride_dom,
    stride_dod,
    H,
    LQ,
    HEAD_DIM,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """DELTA (B * H, M) = rowsum(dO * O), for the multi-block backward. Grid (B * H, query blocks)."""
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    delta = _row_delta(
        OUT, DOUT, b, h, offs_m, tl.arange(0, BLOCK_D), LQ, HEAD_DIM,
        (stride_ob, stride_oh, stride_om, stride_od), (stride_dob, stride_doh, stride_dom, stride_dod),
    )  # fmt: skip
    tl.store(DELTA + bh * LQ + offs_m, delta, mask=offs_m < LQ)


@triton.jit
def _co_attention_bwd_kernel(
    Q,
    K,
    V,
    KEY_BIAS,
    BIAS,
    OUT,
    DOUT,
    LSE,
    DELTA,
    RNG,
    DQ,
    DK,
    DV,
    DBIAS,
    stride_qb,
    stride_qh,
    stride_qm,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_kbb,
    stride_kbn,
    stride_bb,
    stride_bh,
    stride_bm,
    stride_bn,
    stride_ob,
    stride_oh,
    stride_om,
    stride_od,
    stride_dob,
    stride_doh,
    stride_dom,
    stride_dod,
    stride_dqb,
    stride_dqh,
    stride_dqm,
    stride_dqd,
    stride_dkb,
    stride_dkh,
    stride_dkn,
    stride_dkd,
    stride_dvb,
    stride_dvh,
    stride_dvn,
    stride_dvd,
    H,
    LQ,
    LK,
    HEAD_DIM,
    scale,
    dropout_p,
    HAS_KEY_BIAS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_DROPOUT: tl.constexpr,
    WRITE_DBIAS: tl.constexpr,
    SINGLE_TILE: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M1: tl.constexpr,
    BLOCK_N1: tl.constexpr,
    BLOCK_M2: tl.constexpr,
    BLOCK_N2: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Grid (B * H, blocks). Program ``i`` of (batch, head) computes dK, dV of key block ``i`` (BLOCK_N1
    keys, looping over BLOCK_M1 queries at a time) and dQ of query block ``i`` (BLOCK_M2 queries, looping
    over BLOCK_N2 keys at a time), as the tutorial's ``_attn_bwd`` does; with different lengths one of
    the two parts is idle in the last programs. DELTA comes from ``_co_attention_bwd_preprocess_kernel``
    (OUT is not read).

    With SINGLE_TILE (every query in BLOCK_M1, every key in BLOCK_N1) the one program of a (batch, head)
    forms delta itself from OUT and DOUT (DELTA is not read) and computes S, dP and dS once for dQ, dK and dV together.

    DQ, DK, DV are written through their own strides; DBIAS (B, H, M, N) is contiguous float32 and
    receives dS, the gradient of the biased scores, when WRITE_DBIAS."""
    bh = tl.program_id(0)
    pid = tl.program_id(1)
    b = bh // H
    h = bh % H
    seed, offset = _load_rng(RNG, HAS_DROPOUT)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    do_base = DOUT + b * stride_dob + h * stride_doh

    # dK, dV of key block `pid`: dV = Z^T dO, dK = scale * dS^T Q, over all query blocks.
    if pid * BLOCK_N1 < LK:
        offs_n = pid * BLOCK_N1 + tl.arange(0, BLOCK_N1)
        mask_kv = (offs_n[:, None] < LK) & mask_d[None, :]
        k = tl.load(
            k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=mask_kv, other=0.0
        )
        v = tl.load(
            v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=mask_kv, other=0.0
        )
        dk = tl.zeros((BLOCK_N1, BLOCK_D), dtype=tl.float32)
        dv = tl.zeros((BLOCK_N1, BLOCK_D), dtype=tl.float32)
        for start_m in range(0, LQ, BLOCK_M1):
            offs_m = start_m + tl.arange(0, BLOCK_M1)
            mask_q = (offs_m[:, None] < LQ) & mask_d[None, :]
            q = tl.load(
                q_base + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd, mask=mask_q, other=0.0
            )
            do = tl.load(
                do_base + offs_m[:, None] * stride_dom + offs_d[None, :] * stride_dod, mask=mask_q, other=0.0
            )
            # Rows past LQ get lse = +inf: p = 0 there, whatever their (finite) scores.
            lse = tl.load(LSE + bh * LQ + offs_m, mask=offs_m < LQ, other=float("inf"))
            if SINGLE_TILE:
                delta = _row_delta(
                    OUT, DOUT, b, h, offs_m, offs_d, LQ, HEAD_DIM,
                    (stride_ob, stride_oh, stride_om, stride_od), (stride_dob, stride_doh, stride_dom, stride_dod),
                )  # fmt: skip
            else:
                delta = tl.load(DELTA + bh * LQ + offs_m, mask=offs_m < LQ, other=0.0)
            z, ds = _softmax_grads(
                q, k, v, do, lse, delta, b, h, bh, offs_m, pid * BLOCK_N1, LQ, LK, scale, dropout_p, seed, offset,
                KEY_BIAS, stride_kbb, stride_kbn, BIAS, stride_bb, stride_bh, stride_bm, stride_bn,
                HAS_KEY_BIAS, HAS_BIAS, HAS_DROPOUT, PRECISION, BLOCK_M1, BLOCK_N1,
            )  # fmt: skip
            dv += tl.dot(tl.trans(z.to(do.dtype)), do, input_precision=PRECISION)
            dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)
            if SINGLE_TILE:  # the whole (M, N) tile is here: dQ and dS from it too
                dq = tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
                tl.store(
                    DQ
                    + b * stride_dqb
                    + h * stride_dqh
                    + offs_m[:, None] * stride_dqm
                    + offs_d[None, :] * stride_dqd,
                    (dq * scale).to(DQ.dtype.element_ty),
                    mask=mask_q,
                )
                if WRITE_DBIAS:
                    dbias_ptrs = DBIAS + (bh.to(tl.int64) * LQ + offs_m[:, None]) * LK + offs_n[None, :]
                    tl.store(dbias_ptrs, ds, mask=(offs_m[:, None] < LQ) & (offs_n[None, :] < LK))
        tl.store(
            DK
            + b * stride_dkb
            + h * stride_dkh
            + offs_n[:, None] * stride_dkn
            + offs_d[None, :] * stride_dkd,
            (dk * scale).to(DK.dtype.element_ty),
            mask=mask_kv,
        )
        tl.store(
            DV
            + b * stride_dvb
            + h * stride_dvh
            + offs_n[:, None] * stride_dvn
            + offs_d[None, :] * stride_dvd,
            dv.to(DV.dtype.element_ty),
            mask=mask_kv,
        )

    # dQ of query block `pid`: dQ = scale * dS K, over all key blocks; dS written out for the bias.
    if not SINGLE_TILE and pid * BLOCK_M2 < LQ:
        offs_m = pid * BLOCK_M2 + tl.arange(0, BLOCK_M2)
        mask_q = (offs_m[:, None] < LQ) & mask_d[None, :]
        q = tl.load(
            q_base + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd, mask=mask_q, other=0.0
        )
        do = tl.load(
            do_base + offs_m[:, None] * stride_dom + offs_d[None, :] * stride_dod, mask=mask_q, other=0.0
        )
        lse = tl.load(LSE + bh * LQ + offs_m, mask=offs_m < LQ, other=float("inf"))
        delta = tl.load(DELTA + bh * LQ + offs_m, mask=offs_m < LQ, other=0.0)
        dq = tl.zeros((BLOCK_M2, BLOCK_D), dtype=tl.float32)
        for start_n in range(0, LK, BLOCK_N2):
            offs_n = start_n + tl.arange(0, BLOCK_N2)
            mask_kv = (offs_n[:, None] < LK) & mask_d[None, :]
            k = tl.load(
                k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=mask_kv, other=0.0
            )
            v = tl.load(
                v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=mask_kv, other=0.0
            )
            _, ds = _softmax_grads(
                q, k, v, do, lse, delta, b, h, bh, offs_m, start_n, LQ, LK, scale, dropout_p, seed, offset,
                KEY_BIAS, stride_kbb, stride_kbn, BIAS, stride_bb, stride_bh, stride_bm, stride_bn,
                HAS_KEY_BIAS, HAS_BIAS, HAS_DROPOUT, PRECISION, BLOCK_M2, BLOCK_N2,
            )  # fmt: skip
            dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
            if WRITE_DBIAS:
                dbias_ptrs = DBIAS + (bh.to(tl.int64) * LQ + offs_m[:, None]) * LK + offs_n[None, :]
                tl.store(dbias_ptrs, ds, mask=(offs_m[:, None] < LQ) & (offs_n[None, :] < LK))
        tl.store(
            DQ
            + b * stride_dqb
            + h * stride_dqh
            + offs_m[:, None] * stride_dqm
            + offs_d[None, :] * stride_dqd,
            (dq * scale).to(DQ.dtype.element_ty),
            mask=mask_q,
        )


@triton.jit
def _co_attention_dropout_mask_kernel(
    MASK, RNG, H, LQ, LK, dropout_p, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr
):
    """MASK (B, H, M, N) bool: the keep decisions the attention kernels draw for RNG's (seed, offset)."""
    bh = tl.program_id(0)
    seed, offset = _load_rng(RNG, True)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    for start_n in range(0, LK, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        keep = _keep(seed, offset, bh, offs_m, start_n, LQ, dropout_p, BLOCK_M, BLOCK_N)
        ptrs = MASK + (bh.to(tl.int64) * LQ + offs_m[:, None]) * LK + offs_n[None, :]
        tl.store(ptrs, keep, mask=(offs_m[:, None] < LQ) & (offs_n[None, :] < LK))


def _block(length: int, largest: int) -> int:
    """The power of two covering ``length``, between 16 (tl.dot's smallest operand) and ``largest``."""
    return min(largest, max(16, triton.next_power_of_2(length)))


def _head_block(head_dim: int) -> int:
    """BLOCK_D: the head dim padded to a power of two of at least 16 (masked loads fill the rest with 0)."""
    return max(16, triton.next_power_of_2(head_dim))


def _fwd_block_sizes(lq: int, lk: int, head_dim: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps): one key block covers up to 128 keys, so that at ERNIE-ViL's lengths
    the online softmax runs once. Untuned defaults, to be measured on a GPU."""
    block_d = _head_block(head_dim)
    return _block(lq, 64 if block_d <= 64 else 32), _block(lk, 128), 4 if block_d <= 64 else 8


#: Both lengths at most this: the backward runs one program per (batch, head) on one tile.
SINGLE_TILE_MAX_LENGTH = 128


def _bwd_block_sizes(lq: int, lk: int, head_dim: int) -> tuple[int, int, int, int, int]:
    """(BLOCK_M1, BLOCK_N1, BLOCK_M2, BLOCK_N2, num_warps). Both lengths within SINGLE_TILE_MAX_LENGTH:
    one tile covering every query and key (BLOCK_M1 >= Lq, BLOCK_N1 >= Lk). Otherwise the tutorial's
    shape of blocks (a wide outer block whose gradient accumulates in registers, a narrow inner one),
    narrower for head dim 128 where two (BLOCK_N1, 128) float32 accumulators would spill. Untuned."""
    if max(lq, lk) <= SINGLE_TILE_MAX_LENGTH:
        block_m, block_n = _block(lq, SINGLE_TILE_MAX_LENGTH), _block(lk, SINGLE_TILE_MAX_LENGTH)
        return block_m, block_n, block_m, block_n, 4 if block_m * block_n <= 64 * 64 else 8
    wide = 128 if _head_block(head_dim) <= 64 else 64
    return _block(lq, 32), _block(lk, wide), _block(lq, wide), _block(lk, 32), 4 if wide == 128 else 8


def _precision(dtype: torch.dtype, allow_tf32: bool) -> str:
    """float32 inputs multiply in full precision unless TF32 is allowed; half inputs ignore the setting."""
    return "tf32" if allow_tf32 or dtype != torch.float32 else "ieee"


def _broadcasts_to(shape: torch.Size, target: tuple[int, ...]) -> bool:
    return len(shape) <= len(target) and all(s in (1, t) for s, t in zip(reversed(shape), reversed(target)))


def _validate(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None,
    key_bias: torch.Tensor | None,
    dropout_p: float,
    rng: torch.Tensor | None = None,
) -> None:
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise ValueError(
            f"query, key and value must be (B, H, L, D); got {tuple(query.shape)}, {tuple(key.shape)}, "
            f"{tuple(value.shape)}"
        )
    batch, heads, _, head_dim = query.shape
    if key.shape != value.shape or key.shape[:2] != (batch, heads) or key.shape[3] != head_dim:
        raise ValueError(
            f"key and value must be (B, H, Lk, D) = ({batch}, {heads}, Lk, {head_dim}) like the query "
            f"{tuple(query.shape)}; got {tuple(key.shape)} and {tuple(value.shape)}"
        )
    if key.shape[2] == 0:
        raise ValueError("co-attention needs at least one key; got Lk = 0")
    if query.dtype not in SUPPORTED_DTYPES or key.dtype != query.dtype or value.dtype != query.dtype:
        raise ValueError(
            f"query, key and value must share one of {SUPPORTED_DTYPES}; got {query.dtype}, {key.dtype}, "
            f"{value.dtype}"
        )
    if key.device != query.device or value.device != query.device:
        raise ValueError(
            f"query, key and value must be on one device; got {query.device}, {key.device}, {value.device}"
        )
    check_device(query.device, _co_attention_fwd_kernel)
    if max(query.numel(), key.numel(), 0 if bias is None else bias.numel()) >= 2**31:
        raise ValueError("the kernels index query, key, value and bias with 32-bit offsets: split the batch")
    full = (batch, heads, query.shape[2], key.shape[2])
    if bias is not None and not _broadcasts_to(bias.shape, full):
        raise ValueError(f"bias of shape {tuple(bias.shape)} does not broadcast to (B, H, Lq, Lk) = {full}")
    if key_bias is not None and not _broadcasts_to(key_bias.shape, (batch, full[3])):
        raise ValueError(
            f"key_bias of shape {tuple(key_bias.shape)} does not broadcast to (B, Lk) = {(batch, full[3])}"
        )
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must lie in [0, 1); got {dropout_p}")
    if dropout_p > 0.0 and (
        rng is None or rng.shape != (2,) or rng.dtype != torch.int64 or rng.device != query.device
    ):
        described = None if rng is None else f"{rng.dtype} {tuple(rng.shape)} on {rng.device}"
        raise ValueError(
            f"dropout needs its (seed, offset) as a (2,) int64 tensor on {query.device} (dropout_rng); "
            f"got {described}"
        )


def _bias_args(
    bias: torch.Tensor | None,
    key_bias: torch.Tensor | None,
    full: tuple[int, int, int, int],
    reference: torch.Tensor,
) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor, tuple[int, int, int, int]]:
    """The biases expanded to (B, N) and (B, H, M, N) (broadcast dimensions get stride 0, nothing is
    copied), or ``reference`` as an unread placeholder pointer with zero strides."""
    batch, _, _, lk = full
    key_bias = reference if key_bias is None else key_bias.expand(batch, lk)  # (B, N)
    bias = reference if bias is None else bias.expand(full)  # (B, H, M, N)
    key_strides = (0, 0) if key_bias is reference else key_bias.stride()
    bias_strides = (0, 0, 0, 0) if bias is reference else bias.stride()
    return key_bias, key_strides, bias, bias_strides


def _forward_outputs(query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Uninitialised out (B, H, M, D), a view of a contiguous (B, M, H, D) buffer, and lse (B, H, M)."""
    batch, heads, lq, head_dim = query.shape
    out = query.new_empty(batch, lq, heads, head_dim)  # (B, M, H, D)
    return out.transpose(1, 2), query.new_empty(batch, heads, lq, dtype=torch.float32)  # (B, H, M, D)


def co_attention_forward(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None = None,
    key_bias: torch.Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    rng: torch.Tensor | None = None,
    allow_tf32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """query (B, H, M, D), key/value (B, H, N, D) -> out (B, H, M, D) and lse (B, H, M) float32.

    ``rng``: the dropout's (seed, offset), a (2,) int64 tensor on the query's device (``dropout_rng``),
    needed when ``dropout_p > 0``; the kernel loads it. ``out`` is a (B, H, M, D) view of a contiguous
    (B, M, H, D) buffer: ``out.transpose(1, 2)`` is the layout the output projection reads, without a copy.
    """
    _validate(query, key, value, bias, key_bias, dropout_p, rng)
    batch, heads, lq, head_dim = query.shape
    lk = key.shape[2]
    scale = head_dim**-0.5 if scale is None else float(scale)

    out, lse = _forward_outputs(query)
    if lq == 0:
        return out, lse

    key_bias_arg, key_strides, bias_arg, bias_strides = _bias_args(
        bias, key_bias, (batch, heads, lq, lk), query
    )
    block_m, block_n, num_warps = _fwd_block_sizes(lq, lk, head_dim)
    grid = (batch * heads, triton.cdiv(lq, block_m))
    _co_attention_fwd_kernel[grid](
        query, key, value, key_bias_arg, bias_arg, out, lse, query if rng is None else rng,
        *query.stride(), *key.stride(), *value.stride(), *key_strides, *bias_strides, *out.stride(),
        heads, lq, lk, head_dim, scale, float(dropout_p),
        HAS_KEY_BIAS=key_bias is not None,
        HAS_BIAS=bias is not None,
        HAS_DROPOUT=dropout_p > 0.0,
        PRECISION=_precision(query.dtype, allow_tf32),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_D=_head_block(head_dim),
        num_warps=num_warps,
        num_stages=1 if lk <= block_n else 2,  # a key loop that runs once has nothing to pipeline
    )  # fmt: skip
    return out, lse


def co_attention_backward(
    grad_out: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    bias: torch.Tensor | None = None,
    key_bias: torch.Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    rng: torch.Tensor | None = None,
    bias_grad: bool = False,
    key_bias_grad: bool = False,
    allow_tf32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """grad_out (B, H, M, D) and the forward's inputs, rng, out and lse -> dq, dk, dv (B, H, L, D) and,
    when asked for, the gradients of ``bias`` and ``key_bias`` in their own shapes.

    dq, dk, dv keep their inputs' strides when those are dense (the model's transposed layout), else are
    contiguous (a packed QKV slice, an expanded K/V); the kernel writes each through its own strides.
    Both lengths within SINGLE_TILE_MAX_LENGTH: one launch, one program per (batch, head)."""
    batch, heads, lq, head_dim = query.shape
    lk = key.shape[2]
    if grad_out.shape != out.shape:
        raise ValueError(
            f"grad_out must have the output's shape {tuple(out.shape)}; got {tuple(grad_out.shape)}"
        )
    scale = head_dim**-0.5 if scale is None else float(scale)
    grad_out = grad_out.to(query.dtype)

    dq, dk, dv = torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)
    write_dbias = bias_grad or key_bias_grad
    # dS is materialised only for a bias that needs its gradient: (B, H, M, N) float32.
    dbias = (
        torch.empty(batch, heads, lq, lk, dtype=torch.float32, device=query.device) if write_dbias else lse
    )
    if lq == 0:
        dk.zero_()
        dv.zero_()
        return dq, dk, dv, None, None

    key_bias_arg, key_strides, bias_arg, bias_strides = _bias_args(
        bias, key_bias, (batch, heads, lq, lk), query
    )
    block_m1, block_n1, block_m2, block_n2, num_warps = _bwd_block_sizes(lq, lk, head_dim)
    block_d = _head_block(head_dim)
    single_tile = block_m1 >= lq and block_n1 >= lk
    delta = lse  # (B, H, M): read only by the multi-block kernel, which gets its own below
    if not single_tile:
        delta = torch.empty_like(lse)
        _co_attention_bwd_preprocess_kernel[(batch * heads, triton.cdiv(lq, block_m2))](
            out, grad_out, delta, *out.stride(), *grad_out.stride(), heads, lq, head_dim,
            BLOCK_M=block_m2, BLOCK_D=block_d,
        )  # fmt: skip
    blocks = 1 if single_tile else max(triton.cdiv(lk, block_n1), triton.cdiv(lq, block_m2))
    _co_attention_bwd_kernel[(batch * heads, blocks)](
        query, key, value, key_bias_arg, bias_arg, out, grad_out, lse, delta, query if rng is None else rng,
        dq, dk, dv, dbias,
        *query.stride(), *key.stride(), *value.stride(), *key_strides, *bias_strides, *out.stride(),
        *grad_out.stride(), *dq.stride(), *dk.stride(), *dv.stride(),
        heads, lq, lk, head_dim, scale, float(dropout_p),
        HAS_KEY_BIAS=key_bias is not None,
        HAS_BIAS=bias is not None,
        HAS_DROPOUT=dropout_p > 0.0,
        WRITE_DBIAS=write_dbias,
        SINGLE_TILE=single_tile,
        PRECISION=_precision(query.dtype, allow_tf32),
        BLOCK_M1=block_m1,
        BLOCK_N1=block_n1,
        BLOCK_M2=block_m2,
        BLOCK_N2=block_n2,
        BLOCK_D=block_d,
        num_warps=num_warps,
        num_stages=1 if single_tile else 2,
    )  # fmt: skip
    grad_bias = dbias.sum_to_size(bias.shape).to(bias.dtype) if bias_grad else None
    grad_key_bias = None
    if key_bias_grad:
        grad_key_bias = dbias.sum((1, 2)).sum_to_size(key_bias.shape).to(key_bias.dtype)  # (B, N)
    return dq, dk, dv, grad_bias, grad_key_bias


def dropout_rng(seed: int | torch.Tensor | None, device: torch.device | str) -> torch.Tensor:
    """The dropout's (seed, offset) as the kernels load it: a (2,) int64 tensor on ``device``.

    ``None`` draws both on the device from torch's generator (``torch.manual_seed`` reproduces a run):
    nothing is read on the host, so a CUDA graph that captured the draw replays a new one each time (the
    generator's offset advances on every replay) and ``torch.compile`` traces it. An int gives (seed, 0),
    a fixed mask for tests; a (2,) tensor is used as it is."""
    if seed is None:
        return torch.randint(0, 2**31 - 1, (2,), dtype=torch.int64, device=device)
    if isinstance(seed, torch.Tensor):
        return seed
    return torch.tensor([seed, 0], dtype=torch.int64, device=device)


def co_attention_dropout_mask(
    seed: int | torch.Tensor, dropout_p: float, shape: tuple[int, int, int, int], device: torch.device | str
) -> torch.Tensor:
    """The keep mask (B, H, M, N) bool that the kernels draw for ``seed`` (an int or a (2,) int64
    (seed, offset) tensor, as ``dropout_rng``) and ``dropout_p``: run the reference with it to reproduce
    a kernel call with dropout."""
    batch, heads, lq, lk = shape
    mask = torch.empty(shape, dtype=torch.bool, device=device)
    block_m, block_n, _ = _fwd_block_sizes(lq, lk, 16)
    _co_attention_dropout_mask_kernel[(batch * heads, triton.cdiv(lq, block_m))](
        mask, dropout_rng(seed, device), heads, lq, lk, float(dropout_p), BLOCK_M=block_m, BLOCK_N=block_n
    )
    return mask


def _no_grad(like: torch.Tensor) -> torch.Tensor:
    """The empty (0,) placeholder a custom op returns for a gradient nobody asked for (ops return tensors)."""
    return like.new_empty(0)


@torch.library.custom_op("ernievil_ds_kernels::co_attention_fwd", mutates_args=())
def _co_attention_fwd_op(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None,
    key_bias: torch.Tensor | None,
    scale: float,
    dropout_p: float,
    rng: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``co_attention_forward`` as an operator that ``torch.compile`` keeps whole (the Triton launch stays
    out of the traced graph; ``rng`` is a device tensor the kernel loads, never read on the host)."""
    return co_attention_forward(query, key, value, bias, key_bias, scale, dropout_p, rng)


@_co_attention_fwd_op.register_fake
def _(query, key, value, bias, key_bias, scale, dropout_p, rng):
    return _forward_outputs(query)


@torch.library.custom_op("ernievil_ds_kernels::co_attention_bwd", mutates_args=())
def _co_attention_bwd_op(
    grad_out: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    bias: torch.Tensor | None,
    key_bias: torch.Tensor | None,
    scale: float,
    dropout_p: float,
    rng: torch.Tensor | None,
    bias_grad: bool,
    key_bias_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``co_attention_backward`` as an operator: dq, dk, dv, and the bias gradients or (0,) placeholders."""
    dq, dk, dv, dbias, dkey_bias = co_attention_backward(
        grad_out, query, key, value, out, lse, bias, key_bias, scale, dropout_p, rng,
        bias_grad=bias_grad, key_bias_grad=key_bias_grad,
    )  # fmt: skip
    return (
        dq,
        dk,
        dv,
        _no_grad(query) if dbias is None else dbias,
        _no_grad(query) if dkey_bias is None else dkey_bias,
    )


@_co_attention_bwd_op.register_fake
def _(grad_out, query, key, value, out, lse, bias, key_bias, scale, dropout_p, rng, bias_grad, key_bias_grad):
    dbias = torch.empty_like(bias) if bias_grad else _no_grad(query)
    dkey_bias = torch.empty_like(key_bias) if key_bias_grad else _no_grad(query)
    return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value), dbias, dkey_bias


class CoAttentionFunction(torch.autograd.Function):
    """``co_attention(query, key, value, bias, key_bias, scale, dropout_p, seed)``, differentiable in
    query, key, value, bias and key_bias. ``seed``: an int, a (2,) int64 (seed, offset) tensor on the
    query's device, or ``None`` to draw one there per call (``dropout_rng``); unused without dropout.
    Forward and backward run as custom operators, so that ``torch.compile`` traces a model through it
    without a graph break, and nothing is read on the host, so that a compiled step is capturable."""

    @staticmethod
    def forward(ctx, query, key, value, bias=None, key_bias=None, scale=None, dropout_p=0.0, seed=None):
        rng = dropout_rng(seed, query.device) if dropout_p > 0.0 else None
        # Checked here too: the op's own checks do not run on the fake tensors torch.compile traces with.
        _validate(query, key, value, bias, key_bias, dropout_p, rng)
        scale = query.shape[-1] ** -0.5 if scale is None else float(scale)
        out, lse = _co_attention_fwd_op(query, key, value, bias, key_bias, scale, float(dropout_p), rng)
        ctx.save_for_backward(query, key, value, bias, key_bias, out, lse, rng)
        ctx.scale, ctx.dropout_p = scale, float(dropout_p)
        return out  # (B, H, M, D)

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, bias, key_bias, out, lse, rng = ctx.saved_tensors
        bias_grad = bias is not None and ctx.needs_input_grad[3]
        key_bias_grad = key_bias is not None and ctx.needs_input_grad[4]
        dq, dk, dv, dbias, dkey_bias = _co_attention_bwd_op(
            grad_out, query, key, value, out, lse, bias, key_bias, ctx.scale, ctx.dropout_p, rng,
            bias_grad, key_bias_grad,
        )  # fmt: skip
        return (
            dq,
            dk,
            dv,
            dbias if bias_grad else None,
            dkey_bias if key_bias_grad else None,
            None,
            None,
            None,
        )


def co_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None = None,
    key_bias: torch.Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    seed: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """``CoAttentionFunction.apply`` with keywords (``apply`` takes positional arguments only):
    query (B, H, M, D), key/value (B, H, N, D) -> (B, H, M, D)."""
    return CoAttentionFunction.apply(query, key, value, bias, key_bias, scale, dropout_p, seed)


def co_attention_reference(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None = None,
    key_bias: torch.Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    dropout_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Plain PyTorch in the inputs' dtype: (B, H, M, D) x (B, H, N, D) -> (B, H, M, D). With ``dropout_p``,
    ``dropout_mask`` (B, H, M, N) bool, e.g. from ``co_attention_dropout_mask``, says what is kept."""
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    scores = query @ key.transpose(-1, -2) * scale  # (B, H, M, N)
    if key_bias is not None:
        scores = scores + key_bias[:, None, None, :]
    if bias is not None:
        scores = scores + bias
    probs = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        if dropout_mask is None:
            raise ValueError("the reference needs the dropout_mask to reproduce a call with dropout_p > 0")
        probs = probs * dropout_mask / (1.0 - dropout_p)
    return probs @ value  # (B, H, M, D)


__all__ = [
    "CoAttentionFunction",
    "co_attention",
    "co_attention_backward",
    "co_attention_dropout_mask",
    "co_attention_forward",
    "co_attention_reference",
    "dropout_rng",
]
