"""The fused co-attention against its float64 PyTorch reference: output and every input gradient, on
awkward lengths and head dims, with key padding masks, additive biases and dropout."""

from __future__ import annotations

import pytest
import torch

from ernievil_ds_kernels import co_attention as co_attention_module
from ernievil_ds_kernels.co_attention import co_attention, co_attention_dropout_mask, co_attention_reference
from tests.kernels.conftest import DEVICE, assert_close, dtype_case, gpu_only

DTYPES = [
    dtype_case(torch.float32, 1e-5, 1e-4),
    dtype_case(torch.float16, 2e-3, 5e-3),
    dtype_case(torch.bfloat16, 2e-2, 2e-2),
]

#: (B, H, Lq, Lk, D): text 9/37 against regions 7/37/101, head dims that are and are not powers of two.
SHAPES = [
    pytest.param((2, 2, 9, 7, 8), id="B2-H2-q9-k7-d8"),
    pytest.param((2, 2, 37, 101, 12), id="B2-H2-q37-k101-d12"),
    pytest.param((1, 12, 9, 37, 16), id="B1-H12-q9-k37-d16"),
    pytest.param((1, 2, 37, 9, 64), id="B1-H2-q37-k9-d64"),
    pytest.param((1, 2, 70, 150, 16), id="B1-H2-q70-k150-d16"),  # several blocks of queries and of keys
    pytest.param((4, 12, 37, 101, 64), id="B4-H12-q37-k101-d64", marks=gpu_only),
    pytest.param((8, 8, 128, 101, 128), id="B8-H8-q128-k101-d128", marks=gpu_only),
    pytest.param((2, 16, 150, 200, 128), id="B2-H16-q150-k200-d128", marks=gpu_only),
]


def model_layout(batch: int, heads: int, length: int, head_dim: int, dtype: torch.dtype, gen) -> torch.Tensor:
    """A (B, H, L, D) leaf laid out as the model's projections leave it: a transposed (B, L, H, D)."""
    x = torch.randn(batch, length, heads, head_dim, generator=gen).to(device=DEVICE, dtype=dtype)
    return x.transpose(1, 2).requires_grad_()  # (B, H, L, D)


def key_padding(batch: int, lk: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, Lk) additive mask as the model builds it: example b has its last b % 3 keys padded (never all)."""
    bias = torch.zeros(batch, lk, dtype=dtype, device=DEVICE)
    for b in range(batch):
        if b % 3:
            bias[b, lk - min(b % 3, lk - 1) :] = torch.finfo(dtype).min
    return bias


def make_inputs(shape, dtype, seed=0, key_mask=True, bias=True):
    batch, heads, lq, lk, head_dim = shape
    gen = torch.Generator().manual_seed(seed)
    q = model_layout(batch, heads, lq, head_dim, dtype, gen)
    k = model_layout(batch, heads, lk, head_dim, dtype, gen)
    v = model_layout(batch, heads, lk, head_dim, dtype, gen)
    full = (
        torch.randn(batch, heads, lq, lk, generator=gen).to(DEVICE, dtype).requires_grad_() if bias else None
    )
    return q, k, v, full, key_padding(batch, lk, dtype) if key_mask else None


def compare(inputs, grad_out, atol, rtol, dropout_p=0.0, seed=0, names=("q", "k", "v", "bias", "key_bias")):
    """Run the kernel and the float64 reference on ``inputs``; compare the output and each gradient."""
    q, k, v, bias, key_bias = inputs
    mask = None
    if dropout_p > 0.0:
        mask = co_attention_dropout_mask(seed, dropout_p, (*q.shape[:3], k.shape[2]), q.device)
    out = co_attention(q, k, v, bias, key_bias, None, dropout_p, seed)
    out.backward(grad_out)
    ref_inputs = [None if x is None else x.detach().double().requires_grad_(x.requires_grad) for x in inputs]
    reference = co_attention_reference(*ref_inputs, None, dropout_p, mask)
    reference.backward(grad_out.double())
    errors = {"out": assert_close(out, reference, atol, rtol, "out")}
    for name, x, ref in zip(names, inputs, ref_inputs):
        if x is not None and x.requires_grad:
            errors[f"d{name}"] = assert_close(x.grad, ref.grad, atol, rtol, f"d{name}")
    print(errors)
    return errors


@pytest.mark.parametrize(("dtype", "atol", "rtol"), DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_output_and_gradients_match_the_float64_reference(shape, dtype, atol, rtol, poisoned_allocations):
    inputs = make_inputs(shape, dtype)
    grad_out = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(1)).to(DEVICE, dtype)
    compare(inputs, grad_out, atol, rtol)


@pytest.mark.parametrize(
    "masking",
    ["none", "key mask only", "bias only", "bias broadcast over batch and heads", "key mask with a gradient"],
)
def test_each_way_of_masking_matches_the_reference(masking, poisoned_allocations):
    shape = (2, 2, 9, 37, 16)
    q, k, v, bias, key_bias = make_inputs(shape, torch.float32)
    if masking == "none":
        bias = key_bias = None
    elif masking == "key mask only":
        bias = None
    elif masking == "bias only":
        key_bias = None
    elif masking == "bias broadcast over batch and heads":
        bias, key_bias = bias.detach()[:1, :1].clone().requires_grad_(), None  # (1, 1, Lq, Lk)
    else:
        bias, key_bias = None, torch.randn(2, 37, device=DEVICE, requires_grad=True)
    grad_out = torch.randn(q.shape, device=DEVICE)
    compare((q, k, v, bias, key_bias), grad_out, 1e-5, 1e-4)


def test_padded_keys_get_zero_weight_and_zero_gradients():
    q, k, v, _, key_bias = make_inputs((3, 2, 9, 7, 16), torch.float32, bias=False)
    padded = key_bias == torch.finfo(torch.float32).min  # (B, Lk)
    assert padded.any()
    out = co_attention(q, k, v, None, key_bias)
    out.sum().backward()
    assert torch.all(k.grad.transpose(1, 2)[padded] == 0) and torch.all(v.grad.transpose(1, 2)[padded] == 0)
    with torch.no_grad():  # whatever the padded keys and values hold, the output is the same
        k2, v2 = k.detach().clone(), v.detach().clone()
        k2.transpose(1, 2)[padded] = 1e3
        v2.transpose(1, 2)[padded] = -1e3
        torch.testing.assert_close(co_attention(q, k2, v2, None, key_bias), out, atol=0.0, rtol=0.0)


def test_rows_with_every_key_masked_by_minus_infinity_give_zeros_and_zero_gradients():
    """Example 1 has no key at all (-inf everywhere); query 3 of example 0 is cut off by the full bias."""
    q, k, v, _, _ = make_inputs((2, 2, 5, 6, 8), torch.float32, key_mask=False, bias=False)
    key_bias = torch.zeros(2, 6, device=DEVICE)
    key_bias[1] = float("-inf")
    bias = torch.zeros(2, 2, 5, 6, device=DEVICE)
    bias[0, :, 3] = float("-inf")
    bias.requires_grad_()
    out = co_attention(q, k, v, bias, key_bias)
    out.sum().backward()
    for grad in (out, q.grad, k.grad, v.grad, bias.grad):
        assert torch.isfinite(grad).all()
    assert torch.all(out[1] == 0) and torch.all(out[0, :, 3] == 0)
    assert torch.all(q.grad[1] == 0) and torch.all(q.grad[0, :, 3] == 0)
    assert torch.all(k.grad[1] == 0) and torch.all(v.grad[1] == 0) and torch.all(bias.grad[0, :, 3] == 0)
    rows = [0, 1, 2, 4]
    reference = co_attention_reference(q[:1], k[:1], v[:1], bias[:1].detach())  # (1, H, Lq, D)
    torch.testing.assert_close(out[:1, :, rows], reference[:, :, rows], atol=1e-5, rtol=1e-4)


def test_dropout_keeps_one_minus_p_and_follows_the_seed():
    shape = (2, 3, 37, 101)
    mask = co_attention_dropout_mask(7, 0.25, shape, DEVICE)
    rate = mask.float().mean().item()
    sigma = (0.25 * 0.75 / mask.numel()) ** 0.5
    assert abs(rate - 0.75) < 5 * sigma, rate
    assert torch.equal(mask, co_attention_dropout_mask(7, 0.25, shape, DEVICE))
    assert not torch.equal(mask, co_attention_dropout_mask(8, 0.25, shape, DEVICE))
    assert 0.55 < co_attention_dropout_mask(7, 0.4, shape, DEVICE).float().mean().item() < 0.65


@pytest.mark.parametrize(("dtype", "atol", "rtol"), DTYPES)
def test_dropout_matches_the_reference_given_the_kernels_mask(dtype, atol, rtol, poisoned_allocations):
    inputs = make_inputs((2, 2, 9, 37, 16), dtype)
    grad_out = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(1)).to(DEVICE, dtype)
    compare(inputs, grad_out, atol, rtol, dropout_p=0.3, seed=1234)


def test_dropout_without_a_seed_is_reproducible_from_torch_manual_seed():
    q, k, v, _, key_bias = make_inputs((1, 2, 9, 7, 8), torch.float32, bias=False)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(co_attention(q, k, v, None, key_bias, None, 0.5))
    torch.testing.assert_close(runs[0], runs[1], atol=0.0, rtol=0.0)
    assert not torch.equal(runs[0], co_attention(q, k, v, None, key_bias, None, 0.5))


def test_the_output_is_a_view_of_the_layout_the_model_reads():
    q, k, v, _, _ = make_inputs((2, 3, 9, 7, 8), torch.float32, key_mask=False, bias=False)
    out = co_attention(q, k, v)  # (B, H, Lq, D)
    assert out.shape == (2, 3, 9, 8) and out.transpose(1, 2).is_contiguous()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"k": (2, 2, 7, 16)}, "key and value must be"),
        ({"q": (2, 2, 9)}, "must be \\(B, H, L, D\\)"),
        ({"bias": (2, 2, 9, 8)}, "does not broadcast"),
        ({"key_bias": (2, 6)}, "does not broadcast"),
        ({"dropout_p": 1.0}, "dropout_p"),
        ({"dtype": torch.float64}, "must share one of"),
    ],
)
def test_bad_inputs_raise_errors_that_name_the_problem(change, message):
    dtype = change.get("dtype", torch.float32)
    sizes = {"q": (2, 2, 9, 8), "k": (2, 2, 7, 8), "bias": (2, 2, 9, 7), "key_bias": (2, 7)} | change
    q = torch.randn(sizes["q"], dtype=dtype, device=DEVICE)
    k = torch.randn(sizes["k"], dtype=dtype, device=DEVICE)
    v = torch.randn(2, 2, 7, 8, dtype=dtype, device=DEVICE)
    bias = torch.zeros(sizes["bias"], dtype=dtype, device=DEVICE)
    key_bias = torch.zeros(sizes["key_bias"], dtype=dtype, device=DEVICE)
    with pytest.raises(ValueError, match=message):
        co_attention(q, k, v, bias, key_bias, None, change.get("dropout_p", 0.0))


def test_a_device_triton_cannot_run_on_is_named_in_the_error():
    q = torch.empty(2, 2, 9, 8, device="meta")
    with pytest.raises(ValueError, match=r"need a CUDA or ROCm GPU.*got tensors on meta"):
        co_attention(q, q, q)


def test_packed_qkv_and_expanded_key_value_get_gradients_in_their_own_layout(poisoned_allocations):
    """Q, K, V as slices of one (B, L, 3, H, D) projection (strides no dense tensor has), and K/V expanded
    from one head (stride 0): the gradients come back right, none written through the inputs' strides."""
    batch, heads, length, head_dim = 2, 3, 9, 16
    gen = torch.Generator().manual_seed(0)
    qkv = torch.randn(batch, length, 3, heads, head_dim, generator=gen).to(DEVICE).requires_grad_()
    grad_out = torch.randn(batch, heads, length, head_dim, generator=gen).to(DEVICE)
    reference_qkv = qkv.detach().double().requires_grad_()
    for packed in (qkv, reference_qkv):
        q, k, v = packed.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, L, D) each
        attention = co_attention if packed is qkv else co_attention_reference
        attention(q, k, v).backward(grad_out.to(packed.dtype))
    assert_close(qkv.grad, reference_qkv.grad, 1e-5, 1e-4, "dqkv")

    one_head = torch.randn(batch, 1, 37, head_dim, generator=gen).to(DEVICE).requires_grad_()
    expanded = one_head.expand(batch, heads, 37, head_dim)
    query = torch.randn(batch, heads, length, head_dim, generator=gen).to(DEVICE).requires_grad_()
    out = co_attention(query, expanded, expanded)
    out.backward(grad_out)
    reference_key = one_head.detach().double().requires_grad_()
    reference_query = query.detach().double().requires_grad_()
    reference = co_attention_reference(
        reference_query,
        reference_key.expand(batch, heads, 37, head_dim),
        reference_key.expand(-1, heads, -1, -1),
    )
    reference.backward(grad_out.double())
    assert_close(out, reference, 1e-5, 1e-4, "out")
    assert_close(query.grad, reference_query.grad, 1e-5, 1e-4, "dq")
    assert_close(one_head.grad, reference_key.grad, 1e-5, 1e-4, "dk + dv")


@pytest.fixture
def launches(monkeypatch):
    """The (kernel name, grid) of every co-attention kernel launched while the test runs."""
    recorded = []

    class Recorded:
        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, grid):
            recorded.append((self.name, tuple(grid)))
            return self.kernel[grid]

    for name in (
        "_co_attention_fwd_kernel",
        "_co_attention_bwd_preprocess_kernel",
        "_co_attention_bwd_kernel",
    ):
        monkeypatch.setattr(co_attention_module, name, Recorded(name, getattr(co_attention_module, name)))
    return recorded


@pytest.mark.parametrize(("lq", "lk"), [(40, 37), (37, 101), (128, 128)])
def test_short_sequences_take_one_backward_launch_of_one_program_per_batch_and_head(lq, lk, launches):
    q, k, v, _, key_bias = make_inputs((2, 3, lq, lk, 8), torch.float32, bias=False)
    out = co_attention(q, k, v, None, key_bias, None, 0.2, 3)
    launches.clear()
    out.backward(torch.ones_like(out))
    assert launches == [("_co_attention_bwd_kernel", (6, 1))]


def test_long_sequences_take_the_blocked_backward(launches):
    q, k, v, _, key_bias = make_inputs((1, 2, 70, 150, 16), torch.float32, bias=False)
    out = co_attention(q, k, v, None, key_bias)
    out.backward(torch.ones_like(out))
    assert [name for name, _ in launches] == [
        "_co_attention_fwd_kernel",
        "_co_attention_bwd_preprocess_kernel",
        "_co_attention_bwd_kernel",
    ]


def test_batch_times_heads_is_on_grid_axis_0_whose_limit_is_2_to_the_31(launches):
    """Grid axes 1 and 2 stop at 65,535 programs: B * H (64 x 12 x 86 = 66,048 at B=5,504) must not be
    there. Checked on the grids launched, not by running 66k programs in the interpreter."""
    q, k, v, _, key_bias = make_inputs((5, 7, 70, 150, 8), torch.float32, bias=False)
    co_attention(q, k, v, None, key_bias).sum().backward()
    assert len(launches) == 3
    for name, grid in launches:
        assert grid[0] == 35 and all(size < 35 for size in grid[1:]), (name, grid)
