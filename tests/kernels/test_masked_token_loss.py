"""The fused masked-token loss against its float64 PyTorch reference: per-position losses and the
gradients of the hidden states, the tied embedding matrix and the decoder bias."""

from __future__ import annotations

import pytest
import torch

import ernievil_ds_kernels.masked_token_loss as module
from ernievil_ds import ErnieVilConfig, ErnieVilForPreTraining
from ernievil_ds_kernels.masked_token_loss import masked_token_loss, masked_token_loss_reference
from tests.conftest import make_batch
from tests.kernels.conftest import DEVICE, assert_close, dtype_case, gpu_only

DTYPES = [
    dtype_case(torch.float32, 1e-5, 1e-4),
    dtype_case(torch.float16, 5e-3, 5e-3),
    dtype_case(torch.bfloat16, 5e-2, 2e-2),
]

#: (N positions, C width, V vocabulary, vocabulary entries per chunk or None for the default).
SHAPES = [
    pytest.param((13, 24, 1000, 300), id="N13-C24-V1000-chunk300"),
    pytest.param((9, 32, 30522, None), id="N9-C32-V30522"),
    pytest.param((37, 16, 37, 10), id="N37-C16-V37-chunk10"),
    pytest.param((1, 8, 17, None), id="N1-C8-V17"),
    pytest.param((3000, 768, 30522, None), id="N3000-C768-V30522", marks=gpu_only),
]


def make_inputs(shape, dtype, seed=0):
    """Hidden states, a weight and bias of the scale a trained head has, labels with every fifth position
    from the second on ignored."""
    num_positions, width, vocab, _ = shape
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(num_positions, width, generator=gen).to(DEVICE, dtype).requires_grad_()
    weight = (torch.randn(vocab, width, generator=gen) * width**-0.5).to(DEVICE, dtype).requires_grad_()
    bias = (torch.randn(vocab, generator=gen) * 0.1).to(DEVICE, dtype).requires_grad_()
    labels = torch.randint(0, vocab, (num_positions,), generator=gen).to(DEVICE)
    labels[1::5] = -100
    return hidden, weight, bias, labels


def compare(inputs, chunk_size, reduction, atol, rtol, grad_seed=1):
    hidden, weight, bias, labels = inputs
    loss = masked_token_loss(hidden, weight, bias, labels, reduction, -100, chunk_size)
    grad = torch.randn(loss.shape, generator=torch.Generator().manual_seed(grad_seed)).to(DEVICE)
    loss.backward(grad)
    reference_inputs = [x.detach().double().requires_grad_() for x in (hidden, weight, bias)]
    reference = masked_token_loss_reference(*reference_inputs, labels, reduction)
    reference.backward(grad.double())
    errors = {"loss": assert_close(loss, reference, atol, rtol, "loss")}
    for name, x, ref in zip(("hidden", "weight", "bias"), (hidden, weight, bias), reference_inputs):
        errors[f"d{name}"] = assert_close(x.grad, ref.grad, atol, rtol, f"d{name}")
    print(errors)


@pytest.mark.parametrize(("dtype", "atol", "rtol"), DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_losses_and_gradients_match_the_float64_reference(shape, dtype, atol, rtol, poisoned_allocations):
    compare(make_inputs(shape, dtype), shape[3], "none", atol, rtol)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_reductions_match_the_reference(reduction):
    compare(make_inputs((13, 24, 1000, 300), torch.float32), 300, reduction, 1e-5, 1e-4)


def test_ignored_positions_have_zero_loss_and_zero_gradient():
    hidden, weight, bias, labels = make_inputs((11, 16, 300, 4), torch.float32)
    loss = masked_token_loss(hidden, weight, bias, labels)
    loss.sum().backward()
    ignored = labels == -100
    assert torch.all(loss[ignored] == 0) and torch.all(loss[~ignored] > 0)
    assert torch.all(hidden.grad[ignored] == 0) and torch.all(hidden.grad[~ignored].abs().sum(1) > 0)


def test_a_label_outside_the_vocabulary_gives_nan_not_a_wrong_number():
    hidden, weight, bias, labels = make_inputs((4, 8, 50, None), torch.float32)
    labels[1] = 50
    labels[2] = -7
    loss = masked_token_loss(hidden, weight, bias, labels)
    assert torch.isnan(loss[1:3]).all() and torch.isfinite(loss[[0, 3]]).all()


def test_the_vocabulary_is_processed_in_chunks_of_the_chunk_size(monkeypatch):
    """Logits exist one (N, chunk) block at a time, in the forward and in the backward: never (N, V)."""
    widths = []
    chunk_logits = module._chunk_logits

    def recording(hidden, weight, bias):
        widths.append(weight.shape[0])
        return chunk_logits(hidden, weight, bias)

    monkeypatch.setattr(module, "_chunk_logits", recording)
    compare(make_inputs((13, 24, 1000, 300), torch.float32), 300, "none", 1e-5, 1e-4)
    assert widths == [300, 300, 300, 100] * 2
    widths.clear()
    # The default chunk: the widest multiple of MIN_VOCAB_CHUNK within LOGITS_CHUNK_ELEMENTS.
    monkeypatch.setattr(module, "LOGITS_CHUNK_ELEMENTS", 1000)
    monkeypatch.setattr(module, "MIN_VOCAB_CHUNK", 16)
    compare(make_inputs((10, 8, 300, None), torch.float32), None, "none", 1e-5, 1e-4)
    assert widths == [96, 96, 96, 12] * 2


def test_no_positions_give_no_losses_and_zero_gradients():
    hidden, weight, bias, labels = make_inputs((0, 8, 50, None), torch.float32)
    loss = masked_token_loss(hidden, weight, bias, labels)
    assert loss.shape == (0,)
    loss.sum().backward()
    assert torch.all(weight.grad == 0) and torch.all(bias.grad == 0) and hidden.grad.shape == (0, 8)


def test_the_models_token_head_loss_through_the_fused_kernel():
    """How the pretraining model would call it: the head's transform in PyTorch, then the fused decoder +
    cross-entropy on the tied word embeddings, per position; equal to the model's own per-position loss,
    and the gradients of every head and embedding parameter equal too."""
    config = ErnieVilConfig.from_preset("tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = ErnieVilForPreTraining(config).to(DEVICE)
    batch = make_batch(config)
    labels = batch["labels"].to(DEVICE)
    text_states = torch.randn(*labels.shape, config.hidden_size, device=DEVICE)
    selected = labels != -100  # (B, T)
    head = model.token_head

    def fused():
        hidden = head.transform(text_states[selected])  # (N, Ct)
        return masked_token_loss(hidden, head.decoder.weight, head.decoder.bias, labels[selected])  # (N,)

    def unfused():
        logits = head(text_states[selected])  # (N, V)
        return torch.nn.functional.cross_entropy(logits.float(), labels[selected], reduction="none")

    grads = []
    for loss_fn in (fused, unfused):
        model.zero_grad()
        loss = loss_fn()
        (loss * torch.arange(1.0, loss.numel() + 1, device=DEVICE)).sum().backward()
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
        ({"reduction": "max"}, "reduction must be"),
    ],
)
def test_bad_inputs_raise_errors_that_name_the_problem(change, message):
    sizes = {"hidden": (5, 8), "bias": (11,), "labels": (5,)} | change
    with pytest.raises(ValueError, match=message):
        masked_token_loss(
            torch.randn(sizes["hidden"]),
            torch.randn(11, 8),
            torch.randn(sizes["bias"]),
            torch.zeros(sizes["labels"], dtype=torch.long),
            change.get("reduction", "none"),
        )
