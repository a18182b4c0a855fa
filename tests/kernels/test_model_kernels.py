"""The model on both kernels at once, switched on through its config: the fused masked-token loss gives the
PyTorch loss and gradients with identical state-dict keys, and torch.compile traces the model with the
Triton attention (dropout on) and loss as one graph, with the eager model's loss and gradients."""

from __future__ import annotations

import copy

import pytest
import torch

import ernievil_ds_kernels  # noqa: F401  registers "triton" with the attention and loss registries
from ernievil_ds.data.collator import add_scored_positions
from tests.conftest import preset_config
from tests.kernels.conftest import DEVICE, assert_close


def kernel_models(config, pretraining_model):
    """The same weights with PyTorch's loss, and with both Triton kernels."""
    torch_model = pretraining_model(copy.deepcopy(config), seed=0).to(DEVICE).train()
    triton_model = copy.deepcopy(torch_model)
    triton_model.set_attn_implementation("triton")
    triton_model.config.masked_token_loss_implementation = "triton"
    return torch_model, triton_model


def test_the_fused_loss_in_the_model_matches_the_torch_loss(config, batch_factory, pretraining_model):
    torch_model, triton_model = kernel_models(config, pretraining_model)
    torch_model.set_attn_implementation("triton")  # the loss alone differs
    assert torch_model.state_dict().keys() == triton_model.state_dict().keys()
    batch = {key: value.to(DEVICE) for key, value in batch_factory(config, text_len=11).items()}
    expected, fused = torch_model(**batch), triton_model(**batch)
    expected.loss.backward()
    fused.loss.backward()
    assert fused.masked_token_logits is None and expected.masked_token_logits is not None
    for name in expected:
        if name.endswith("loss"):
            assert_close(fused[name], expected[name], 1e-5, 1e-4, name)
    for name, parameter in torch_model.named_parameters():
        assert_close(triton_model.get_parameter(name).grad, parameter.grad, 2e-5, 1e-4, name)


@pytest.mark.parametrize("preset", ["tiny-grounded"])  # its position bias goes through the kernel as a bias
def test_the_model_on_both_kernels_compiles_without_a_graph_break(preset, batch_factory, pretraining_model):
    config = preset_config(preset)
    config.attention_probs_dropout_prob = 0.1  # the seed is drawn inside the graph
    _, model = kernel_models(config, pretraining_model)
    batch = {
        key: value.to(DEVICE)
        for key, value in add_scored_positions(batch_factory(config), 0.25, 0.15).items()
    }
    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=False):
        explanation = torch._dynamo.explain(lambda **inputs: model(**inputs).loss)(**batch)
        assert explanation.graph_break_count == 0, [reason.reason for reason in explanation.break_reasons]
        reference = copy.deepcopy(model)
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        torch.manual_seed(1)
        loss = compiled(**batch).loss
        torch.manual_seed(1)  # the same dropout seed: aot_eager draws it with torch's generator
        expected = reference(**batch).loss
    loss.backward()
    expected.backward()
    assert_close(loss, expected, 1e-6, 1e-6, "loss")
    for name, parameter in reference.named_parameters():
        assert_close(model.get_parameter(name).grad, parameter.grad, 1e-6, 1e-6, name)
