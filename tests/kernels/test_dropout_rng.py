"""The attention dropout's random numbers: 32-bit Philox4x32-10 with all four outputs of a call used, keyed
by a (seed, offset) tensor on the device that the kernels load, so that a compiled step draws a new mask
on every call without reading anything on the host."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ernievil_ds_kernels.co_attention import co_attention, co_attention_dropout_mask, dropout_rng
from tests.kernels.conftest import DEVICE

M32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(counters: tuple[np.ndarray, ...], key: int) -> tuple[np.ndarray, ...]:
    """Random123's Philox4x32-10 on uint64 arrays holding 32-bit words: counters (c0, c1, c2, c3) and the
    64-bit key (low word k0, high word k1) -> four 32-bit outputs."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) & M32 for c in counters)
    k0, k1 = np.uint64(key & 0xFFFFFFFF), np.uint64(key >> 32)
    for _ in range(10):
        product0 = np.uint64(0xD2511F53) * c0
        product1 = np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = (
            (product1 >> np.uint64(32)) ^ c1 ^ k0,
            product1 & M32,
            (product0 >> np.uint64(32)) ^ c3 ^ k1,
            product0 & M32,
        )
        k0, k1 = (k0 + np.uint64(0x9E3779B9)) & M32, (k1 + np.uint64(0xBB67AE85)) & M32
    return c0, c1, c2, c3


def uniform(bits: np.ndarray) -> np.ndarray:
    """A 32-bit word -> float32 in [0, 1): the word as int32, negatives mirrored (~x), times 2**-31."""
    signed = bits.astype(np.uint32).view(np.int32)
    signed = np.where(signed < 0, ~signed, signed)
    return signed.astype(np.float32) * np.float32(4.6566127342e-10)


def reference_keep_mask(seed: int, offset: int, p: float, shape: tuple[int, int, int, int]) -> torch.Tensor:
    """Key n of row r = (b * H + h) * Lq + m is kept when output n % 4 of Philox(counter (n // 4, r,
    offset, 0), key seed), as a uniform float, exceeds p."""
    batch, heads, lq, lk = shape
    rows = np.arange(batch * heads * lq, dtype=np.uint64)[:, None]  # (B * H * Lq, 1)
    keys = np.arange(lk, dtype=np.uint64)[None, :]  # (1, Lk)
    groups, rows = np.broadcast_arrays(keys // np.uint64(4), rows)
    outputs = philox4x32_10((groups, rows, np.full_like(rows, offset), np.zeros_like(rows)), seed)
    bits = np.choose((keys % np.uint64(4)).astype(np.int64) + np.zeros_like(rows, dtype=np.int64), outputs)
    return torch.from_numpy(uniform(bits) > np.float32(p)).reshape(shape)


def test_the_philox_reference_gives_random123s_known_answers():
    zero = np.zeros(1, dtype=np.uint64)
    assert [int(x[0]) for x in philox4x32_10((zero, zero, zero, zero), 0)] == [
        0x6627E8D5,
        0xE169C58D,
        0xBC57AC4C,
        0x9B00DBD8,
    ]
    ones = np.full(1, 0xFFFFFFFF, dtype=np.uint64)
    assert [int(x[0]) for x in philox4x32_10((ones, ones, ones, ones), 0xFFFFFFFFFFFFFFFF)] == [
        0x408F276D,
        0x41C83B0E,
        0xA20BC7C6,
        0x6D5451FD,
    ]


@pytest.mark.parametrize(("seed", "offset"), [(7, 0), (2**31 - 2, 123456789), (12345, 2**31 - 1)])
@pytest.mark.parametrize("shape", [(2, 3, 9, 37), (1, 2, 70, 150)], ids=["one-block", "several-blocks"])
def test_the_mask_is_32_bit_philox_with_all_four_outputs_of_each_call(seed, offset, shape):
    rng = torch.tensor([seed, offset], dtype=torch.int64, device=DEVICE)
    mask = co_attention_dropout_mask(rng, 0.3, shape, DEVICE).cpu()
    assert torch.equal(mask, reference_keep_mask(seed, offset, 0.3, shape))


def test_the_offset_alone_changes_the_mask():
    shape = (2, 2, 9, 37)
    first = co_attention_dropout_mask(torch.tensor([5, 0], device=DEVICE), 0.5, shape, DEVICE)
    second = co_attention_dropout_mask(torch.tensor([5, 1], device=DEVICE), 0.5, shape, DEVICE)
    assert (first != second).float().mean() > 0.3


def test_an_rng_that_is_not_a_device_int64_pair_is_refused():
    q = torch.randn(1, 2, 9, 8, device=DEVICE)
    with pytest.raises(ValueError, match=r"\(2,\) int64 tensor on"):
        co_attention(q, q, q, dropout_p=0.1, seed=torch.tensor([1, 2, 3], device=DEVICE))


def test_the_drawn_rng_lives_on_the_device_and_follows_torch_manual_seed():
    torch.manual_seed(0)
    first = dropout_rng(None, DEVICE)
    torch.manual_seed(0)
    assert first.device.type == DEVICE.type and first.dtype == torch.int64 and first.shape == (2,)
    assert torch.equal(first, dropout_rng(None, DEVICE))


def kept(out: torch.Tensor) -> torch.Tensor:
    """With V the identity (Lk = D) and no mask, out = dropout(P) / (1 - p) and every P > 0: the keep
    mask (B, H, Lq, Lk) is where out is not 0."""
    return out != 0


def test_two_calls_of_a_compiled_step_draw_different_masks():
    """The step traces the draw (``torch.randint`` on the device) into its graph, with no graph break; each
    call of the compiled function draws anew, as a CUDA graph's replays do."""
    torch._dynamo.reset()
    q = torch.randn(2, 2, 9, 16, device=DEVICE, requires_grad=True)
    k = torch.randn(2, 2, 16, 16, device=DEVICE)
    v = torch.eye(16, device=DEVICE).expand(2, 2, 16, 16)

    def step(q, k, v):
        out = co_attention(q, k, v, dropout_p=0.5)
        out.sum().backward()
        return out.detach()

    compiled = torch.compile(step, backend="aot_eager", fullgraph=False)
    masks = []
    for _ in range(2):
        q.grad = None
        masks.append(kept(compiled(q, k, v)))
    assert not torch.equal(masks[0], masks[1])
    for mask in masks:
        assert 0.35 < mask.float().mean().item() < 0.65
    explanation = torch._dynamo.explain(lambda q, k, v: co_attention(q, k, v, dropout_p=0.5))(q, k, v)
    assert explanation.graph_break_count == 0, explanation.break_reasons
