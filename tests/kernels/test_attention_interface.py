"""The fused co-attention behind transformers' attention registry: the tiny model (both presets, padding
on both streams) gives the same losses, states and parameter gradients with ``"triton"`` as with
``"eager"``."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import AttentionInterface, AutoModel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

import ernievil_ds
import ernievil_ds_kernels
from ernievil_ds import ErnieVilConfig
from ernievil_ds.modeling_ernievil import additive_attention_mask, eager_attention_forward
from ernievil_ds_kernels.attention import triton_attention_forward
from tests.kernels.conftest import DEVICE, assert_close


def test_importing_the_package_registers_triton():
    assert ernievil_ds_kernels.register_attention is not None
    assert ALL_ATTENTION_FUNCTIONS["triton"] is triton_attention_forward
    assert AttentionInterface().get_interface("triton", None) is triton_attention_forward


def test_the_model_never_imports_the_kernels():
    for path in Path(ernievil_ds.__file__).parent.rglob("*.py"):
        source = path.read_text()
        assert "ernievil_ds_kernels" not in source and "import kernels" not in source, path


class _Module(torch.nn.Module):
    is_causal = False


@pytest.mark.parametrize("mask", ["key padding (B, 1, 1, Lk)", "full (B, H, Lq, Lk)", "none"])
def test_each_mask_form_the_model_passes_matches_eager_attention(mask):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(3, 2, 9, 8, generator=gen).to(DEVICE).requires_grad_()
    k = torch.randn(3, 2, 7, 8, generator=gen).to(DEVICE).requires_grad_()
    v = torch.randn(3, 2, 7, 8, generator=gen).to(DEVICE).requires_grad_()
    keep = torch.ones(3, 7, device=DEVICE)
    keep[1, -3:] = 0
    attention_mask = additive_attention_mask(keep, torch.float32)  # (B, 1, 1, Lk)
    if mask == "full (B, H, Lq, Lk)":
        bias = torch.randn(3, 2, 9, 7, generator=gen).to(DEVICE)
        attention_mask = (attention_mask + bias).requires_grad_()
    elif mask == "none":
        attention_mask = None
    module = _Module().eval()
    outputs, grads = [], []
    for function in (triton_attention_forward, eager_attention_forward):
        out, _ = function(module, q, k, v, attention_mask, scaling=8**-0.5)
        assert out.shape == (3, 9, 2, 8) and out.is_contiguous()
        inputs = [x for x in (q, k, v, attention_mask) if x is not None and x.requires_grad]
        outputs.append(out)
        grads.append(torch.autograd.grad(out, inputs, torch.ones_like(out)))
    assert_close(outputs[0], outputs[1], 1e-5, 1e-4, "attn_output")
    for index, (got, expected) in enumerate(zip(*grads)):
        assert_close(got, expected, 1e-5, 1e-4, f"gradient {index}")


def test_the_model_with_triton_matches_eager_with_padding_on_both_streams(
    config, batch_factory, pretraining_model
):
    """Losses of every task, final states and the gradient of every parameter (the grounded preset's
    position-bias table included, whose gradient flows through the kernel's bias)."""
    models = {}
    for implementation in ("eager", "triton"):
        model = pretraining_model(copy.deepcopy(config), seed=0).to(DEVICE).train()
        model.set_attn_implementation(implementation)
        models[implementation] = model
    assert models["triton"].config._attn_implementation == "triton"
    assert models["eager"].state_dict().keys() == models["triton"].state_dict().keys()
    batch = {
        key: value.to(DEVICE) for key, value in batch_factory(config, text_len=11, num_regions=7).items()
    }
    outputs = {}
    for implementation, model in models.items():
        outputs[implementation] = model(**batch)
        outputs[implementation].loss.backward()
    eager, triton = outputs["eager"], outputs["triton"]
    assert eager.keys() == triton.keys() and {"loss", "mlm_loss", "sgp_relation_loss"} <= eager.keys()
    for name in eager:  # every loss and logits tensor present
        assert_close(triton[name], eager[name], 1e-5, 1e-4, name)
    for name, parameter in models["eager"].named_parameters():
        other = models["triton"].get_parameter(name)
        assert (parameter.grad is None) == (other.grad is None), name
        if parameter.grad is not None:
            assert_close(other.grad, parameter.grad, 2e-5, 1e-4, name)


def test_the_encoder_with_triton_matches_eager_in_eval(config, batch_factory, encoder_inputs):
    torch.manual_seed(0)
    eager = AutoModel.from_config(copy.deepcopy(config)).to(DEVICE).eval()
    triton = AutoModel.from_config(copy.deepcopy(config)).to(DEVICE).eval()
    triton.load_state_dict(eager.state_dict())
    triton.set_attn_implementation("triton")
    batch = {key: value.to(DEVICE) for key, value in batch_factory(config).items()}
    with torch.no_grad():
        a, b = eager(**encoder_inputs(batch)), triton(**encoder_inputs(batch))
    for name in ("text_hidden_states", "image_hidden_states", "pooled_output"):
        assert_close(getattr(b, name), getattr(a, name), 1e-5, 1e-4, name)


def test_attention_dropout_in_training_follows_torch_manual_seed(batch_factory, pretraining_model):
    """With attention dropout on, the fused path draws its seed from torch's generator: the same
    ``torch.manual_seed`` gives the same loss, another seed another loss (the dropout gradients are
    tested against the reference in test_co_attention.py)."""
    config = ErnieVilConfig.from_preset("tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.3)
    model = pretraining_model(config).to(DEVICE).train()
    model.set_attn_implementation("triton")
    batch = {key: value.to(DEVICE) for key, value in batch_factory(config).items()}
    losses = []
    with torch.no_grad():
        for seed in (5, 5, 6):
            torch.manual_seed(seed)
            losses.append(model(**batch).loss.item())
    assert losses[0] == losses[1] != losses[2]


def test_the_model_in_fp16_with_padded_regions_matches_eager_and_keeps_gradients_finite(
    config, batch_factory, pretraining_model
):
    """DeepSpeed's fp16 engine runs the model in half precision, where the padding mask is
    finfo(float16).min: the fused path's losses equal eager's to fp16 precision and every gradient is
    finite (padded regions carry zero features and boxes, as the collator pads them)."""
    batch = batch_factory(config)
    padding = batch["region_mask"] == 0
    batch["region_features"][padding] = 0.0
    batch["region_boxes"][padding] = 0.0
    batch = {k: (v.half() if v.is_floating_point() else v).to(DEVICE) for k, v in batch.items()}
    outputs = {}
    for implementation in ("eager", "triton"):
        model = pretraining_model(copy.deepcopy(config)).half().to(DEVICE).train()
        model.set_attn_implementation(implementation)
        outputs[implementation] = model(**batch)
        outputs[implementation].loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    for name in outputs["eager"]:
        if name.endswith("loss"):
            assert_close(outputs["triton"][name], outputs["eager"][name], 1e-3, 1e-3, name)
