"""The fused masked-token loss against its float64 PyTorch reference: the weighted loss with its gradient
formed in the forward, per-position losses with any upstream gradient, and the gradients of the hidden
states, the tied embedding matrix and the decoder bias; the chunks of positions it works in."""

from __future__ import annotations

import pytest
import torch

import ernievil_ds_kernels.masked_token_loss as module
from ernievil_ds import ErnieVilConfig, ErnieVilForPreTraining
from ernievil_ds_kernels.masked_token_loss import (
    masked_token_loss,
    masked_token_loss_reference,
)
from tests.conftest import make_batch
from tests.kernels.conftest import DEVICE, assert_close, dtype_case, gpu_only

DTYPES = [
    dtype_case(torch.float32, 1e-5, 1e-4),
    dtype_case(torch.float16, 5e-3, 5e-3),
    dtype_case(torch.bfloat16, 5e-2, 2e-2),
]

#: (N positions, C width, V vocabulary, positions per chunk or None for the default).
SHAPES = [
    pytest.param((13, 24, 1000, 4), id="N13-C24-V1000-rows4"),
    pytest.param((9, 32, 30522, None), id="N9-C32-V30522"),
    pytest.param((37, 16, 37, 10), id="N37-C16-V37-rows10"),
    pytest.param((1, 8, 17, None), id="N1-C8-V17"),
    pytest.param((3000, 768, 30522, None), id="N3000-C768-V30522", marks=gpu_only),
]


def make_inputs(shape, dtype, seed=0):
    """Hidden states, a weight and bias of the scale a trained head has, labels with every fifth position
    from the second on ignored, and a weight per position as the model's per-task means give."""
    num_positions, width, vocab, _ = shape
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(num_positions, width, generator=gen).to(DEVICE, dtype).requires_grad_()
    weight = (torch.randn(vocab, width, generator=gen) * width**-0.5).to(DEVICE, dtype).requires_grad_()
    bias = (torch.randn(vocab, generator=gen) * 0.1).to(DEVICE, dtype).requires_grad_()
    labels = torch.randint(0, vocab, (num_positions,), generator=gen).to(DEVICE)
    labels[1::5] = -100
    row_weight = torch.rand(num_positions, generator=gen).to(DEVICE) / max(1, num_positions)
    return hidden, weight, bias, labels, row_weight


def compare_gradients(inputs, reference_inputs, atol, rtol):
    errors = {}
    for name, x, ref in zip(("hidden", "weight", "bias"), inputs, reference_inputs):
        errors[f"d{name}"] = assert_close(x.grad, ref.grad, atol, rtol, f"d{name}")
    return errors


def compare_weighted(inputs, chunk_rows, atol, rtol):
    """``masked_token_loss`` (gradient formed in the forward) against float64, upstream gradient 3."""
    hidden, weight, bias, labels, row_weight = inputs
    total, per_position = masked_token_loss(hidden, weight, bias, labels, row_weight, -100, chunk_rows)
    (3.0 * total).backward()
    reference_inputs = [x.detach().double().requires_grad_() for x in (hidden, weight, bias)]
    reference_rows = masked_token_loss_reference(*reference_inputs, labels)
    reference = masked_token_loss_reference(*reference_inputs, labels, row_weight.double())
    (3.0 * reference).backward()
    errors = {"loss": assert_close(total, reference, atol, rtol, "loss")}
    errors["rows"] = assert_close(per_position, reference_rows, atol, rtol, "per-position loss")
    print(errors | compare_gradients((hidden, weight, bias), reference_inputs, atol, rtol))


@pytest.mark.parametrize(("dtype", "atol", "rtol"), DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_the_weighted_loss_and_its_gradients_match_the_float64_reference(
    shape, dtype, atol, rtol, poisoned_allocations
):
    compare_weighted(make_inputs(shape, dtype), shape[3], atol, rtol)


def test_without_row_weights_the_loss_is_the_mean_over_the_positions_not_ignored():
    hidden, weight, bias, labels, _ = make_inputs((13, 24, 1000, None), torch.float32)
    total, _ = masked_token_loss(hidden, weight, bias, labels)
    expected = torch.nn.functional.cross_entropy(torch.nn.functional.linear(hidden, weight, bias), labels)
    torch.testing.assert_close(total, expected, atol=1e-5, rtol=1e-5)


def test_ignored_positions_have_zero_loss_and_zero_gradient():
    hidden, weight, bias, labels, _ = make_inputs((11, 16, 300, 4), torch.float32)
    total, loss = masked_token_loss(hidden, weight, bias, labels, torch.ones(11, device=DEVICE), -100, 4)
    total.backward()
    ignored = labels == -100
    assert torch.all(loss[ignored] == 0) and torch.all(loss[~ignored] > 0)
    assert torch.all(hidden.grad[ignored] == 0) and torch.all(hidden.grad[~ignored].abs().sum(1) > 0)


def test_a_label_outside_the_vocabulary_gives_nan_not_a_wrong_number():
    hidden, weight, bias, labels, _ = make_inputs((4, 8, 50, None), torch.float32)
    labels[1] = 50
    labels[2] = -7
    total, loss = masked_token_loss(hidden, weight, bias, labels)
    assert torch.isnan(loss[1:3]).all() and torch.isfinite(loss[[0, 3]]).all() and torch.isnan(total)


@pytest.fixture
def chunks(monkeypatch):
    """The (rows, vocabulary) shape of every chunk of logits formed while the test runs."""
    shapes = []
    chunk_logits = module._chunk_logits

    def recording(hidden, weight, bias):
        shapes.append((hidden.shape[0], weight.shape[0]))
        return chunk_logits(hidden, weight, bias)

    monkeypatch.setattr(module, "_chunk_logits", recording)
    return shapes


def test_the_loss_forms_each_chunk_of_logits_once(chunks):
    """Chunks of positions over the whole vocabulary, never (N, V) at once, each formed once: the
    gradient is formed in the forward, so the backward forms no logits."""
    masked_token_loss(*make_inputs((13, 24, 1000, 4), torch.float32)[:4], None, -100, 4)[0].backward()
    assert chunks == [(4, 1000), (4, 1000), (4, 1000), (1, 1000)]


@pytest.mark.parametrize("num_positions", [10, 100, 1000])
def test_the_default_chunk_does_not_shrink_as_positions_grow(num_positions, chunks, monkeypatch):
    """The rows per chunk depend on the vocabulary only (the largest power of two whose logits fit in
    LOGITS_CHUNK_ELEMENTS): more positions give more chunks of the same height, not narrower ones."""
    monkeypatch.setattr(module, "LOGITS_CHUNK_ELEMENTS", 3000)
    inputs = make_inputs((num_positions, 8, 50, None), torch.float32)
    with torch.no_grad():
        masked_token_loss(*inputs[:4])
    assert (
        {rows for rows, _ in chunks[:-1]} <= {32} and chunks[-1][0] <= 32 and all(v == 50 for _, v in chunks)
    )
    assert len(chunks) == -(-num_positions // 32)


def test_grad_hidden_is_accumulated_over_the_whole_vocabulary_before_rounding(monkeypatch):
    """fp16 inputs: each row of grad_hidden is one matmul over every word (float32 accumulation inside),
    rounded to fp16 once, so it is as close to float64 as one rounding allows, however small the chunks
    of logits are made (here 1,000 elements: sums of fp16-rounded vocabulary slices would drift)."""
    monkeypatch.setattr(module, "LOGITS_CHUNK_ELEMENTS", 1000)
    hidden, weight, bias, labels, row_weight = make_inputs((8, 16, 30522, None), torch.float16)
    masked_token_loss(hidden, weight, bias, labels, row_weight)[0].backward()
    reference_inputs = [x.detach().double().requires_grad_() for x in (hidden, weight, bias)]
    masked_token_loss_reference(*reference_inputs, labels, row_weight.double()).backward()
    expected = reference_inputs[0].grad
    error = (hidden.grad.double() - expected).abs()
    assert torch.all(error <= 2e-3 * expected.abs() + 1e-6), error.max()


def test_no_positions_give_no_losses_and_zero_gradients():
    hidden, weight, bias, labels, _ = make_inputs((0, 8, 50, None), torch.float32)
    total, loss = masked_token_loss(hidden, weight, bias, labels)
    assert loss.shape == (0,) and total.item() == 0
    total.backward()
    assert torch.all(weight.grad == 0) and torch.all(bias.grad == 0) and hidden.grad.shape == (0, 8)


def test_the_models_token_head_loss_through_the_fused_kernel():
    """As the pretraining model calls it: the head's transform in PyTorch, then the fused decoder +
    cross-entropy on the tied word embeddings with a weight per position; equal to the weighted sum of
    the unfused per-position losses, and the gradients of every head and embedding parameter equal too."""
    config = ErnieVilConfig.from_preset("tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = ErnieVilForPreTraining(config).to(DEVICE)
    batch = make_batch(config)
    labels = batch["labels"].to(DEVICE)
    text_states = torch.randn(*labels.shape, config.hidden_size, device=DEVICE)
    selected = labels != -100  # (B, T)
    head = model.token_head

    row_weight = torch.arange(1.0, int(selected.sum()) + 1, device=DEVICE)  # (N,)

    def fused():
        hidden = head.transform(text_states[selected])  # (N, Ct)
        return masked_token_loss(
            hidden, head.decoder.weight, head.decoder.bias, labels[selected], row_weight
        )[0]

    def unfused():
        logits = head(text_states[selected])  # (N, V)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[selected], reduction="none")
        return (row_weight * loss).sum()

    grads = []
    for loss_fn in (fused, unfused):
        model.zero_grad()
        loss = loss_fn()
        loss.backward()
        grads.append(
            (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        )
    (fused_loss, fused_grads), (loss, expected) = grads
    assert_close(fused_loss, loss, 1e-5, 1e-4, "loss")
    assert (
        fused_grads.keys() == expected.keys()
        and "ernievil.text_embeddings.word_embeddings.weight" in expected
    )
    for name in expected:
        assert_close(fused_grads[name], expected[name], 1e-5, 1e-4, name)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hidden": (5, 7)}, "hidden must be \\(N, C\\)"),
        ({"bias": (9,)}, "bias must be"),
        ({"labels": (4,)}, "labels must be"),
        ({"row_weight": (4,)}, "row_weight must be"),
    ],
)
def test_bad_inputs_raise_errors_that_name_the_problem(change, message):
    sizes = {"hidden": (5, 8), "bias": (11,), "labels": (5,), "row_weight": (5,)} | change
    with pytest.raises(ValueError, match=message):
        masked_token_loss(
            torch.randn(sizes["hidden"], device=DEVICE),
            torch.randn(11, 8, device=DEVICE),
            torch.randn(sizes["bias"], device=DEVICE),
            torch.zeros(sizes["labels"], dtype=torch.long, device=DEVICE),
            torch.ones(sizes["row_weight"], device=DEVICE),
        )
