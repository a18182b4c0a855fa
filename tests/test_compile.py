"""torch.compile traces the pretraining forward, losses included, as one graph with every shape known before
the step runs (``capture_dynamic_output_shape_ops`` off): no graph break for the paper's presets and the
grounded one, with eager and SDPA attention, and the compiled model's loss and gradients equal the
uncompiled model's (the Triton attention and loss: tests/kernels/test_model_kernels.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForPreTraining

from ernievil_ds.data.collator import add_scored_positions
from tests.conftest import make_batch, preset_config


@pytest.fixture(autouse=True)
def static_output_shapes():
    """A fresh dynamo, which may not trace an operator whose output shape depends on tensor values."""
    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=False):
        yield


def pretraining_loss(model):
    return lambda **batch: model(**batch).loss


def uninitialised_model(config):
    """The pretraining model without its initialisation (seconds instead of minutes for ``base`` on a CPU):
    the graph does not depend on the weights' values."""
    with torch.device("meta"):
        model = AutoModelForPreTraining.from_config(config)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.02)
    return model.train()


@pytest.mark.parametrize(
    ("preset", "attention", "positions"),
    [
        *(
            pytest.param(preset, attention, positions, id=f"{preset}-{attention}-{label}")
            for preset, attention in (("tiny", "eager"), ("tiny", "sdpa"), ("tiny-grounded", "sdpa"))
            for positions, label in ((True, "scored positions"), (False, "every position"))
        ),
        # base's graph differs from tiny's in sizes and depth only: once, as the collator sends batches.
        pytest.param("base", "sdpa", True, id="base-sdpa-scored positions", marks=pytest.mark.slow),
    ],
)
def test_the_pretraining_forward_and_loss_compile_without_a_graph_break(preset, attention, positions):
    config = preset_config(preset)
    config._attn_implementation = attention
    model = uninitialised_model(config)
    batch = make_batch(config, text_len=8, num_regions=5)
    if positions:  # as the collator sends it
        batch = add_scored_positions(batch, 0.25, 0.15)
    explanation = torch._dynamo.explain(pretraining_loss(model))(**batch)
    reasons = [reason.reason for reason in explanation.break_reasons]
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, reasons
    torch.compile(pretraining_loss(model), backend="eager", fullgraph=True)(**batch).backward()


@pytest.mark.slow
@pytest.mark.parametrize("blanked", [False, True], ids=["every task", "only itm has something to score"])
def test_the_compiled_model_gives_the_uncompiled_loss_outputs_and_gradients(grounded_config, blanked):
    """Through AOTAutograd (the ``aot_eager`` backend: the graphs inductor would compile, run by PyTorch),
    forward and backward, also on batches where a task has nothing to score."""
    torch.manual_seed(0)
    model = AutoModelForPreTraining.from_config(grounded_config).train()
    reference = copy.deepcopy(model)
    batch = make_batch(grounded_config)
    if blanked:  # targets passed, marking nothing: token, region and grounding losses are NaN-reported zeros
        batch["masked_regions"][:] = False
        batch["labels"][:] = -100
        batch["region_word_targets"][:] = -100
    batch = add_scored_positions(batch, 0.25, 0.15)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    outputs, expected = compiled(**batch), reference(**batch)
    outputs.loss.backward()
    expected.loss.backward()
    assert outputs.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(outputs[name], expected[name], equal_nan=True, msg=name)
    for name, parameter in reference.named_parameters():
        torch.testing.assert_close(model.get_parameter(name).grad, parameter.grad, msg=name)
