"""The optimiser policy: the official layer-decay table, the parameter groups and the schedule."""

from __future__ import annotations

import pytest
import torch

from ernievil_ds import ErnieVilConfig
from ernievil_ds.finetuning import ErnieVilForVisualQuestionAnswering
from ernievil_ds.finetuning.arguments import parse_finetune_arguments
from ernievil_ds.finetuning.optimization import (
    build_optimizer,
    encoder_depths,
    manual_warmup_decay,
    manual_warmup_decay_factor,
    official_table_depths,
)


def official_depths(text_init_layers: int, num_text: int, num_image: int, num_co: int) -> dict:
    """The depths of the official ``layer_decay`` (``optim/optimization.py``), written out by its formulas."""
    return {
        "text_layers": tuple(
            layer if layer < text_init_layers else text_init_layers + (layer - text_init_layers) * 2 + 1
            for layer in range(num_text)
        ),
        "image_layers": tuple(text_init_layers + 2 * layer + 1 for layer in range(num_image)),
        "co_layers": tuple(text_init_layers + 2 * layer for layer in range(num_co)),
        "text_embeddings": -1,  # ratio decay ** (n_layers + 1)
        "image_embeddings": text_init_layers - 1,  # ratio decay ** (n_layers - text_init_layers + 1)
    }


@pytest.mark.parametrize(("preset", "text_init_layers", "n_layers"), [("base", 6, 18), ("large", 18, 30)])
def test_encoder_depths_are_the_official_table(preset, text_init_layers, n_layers):
    config = ErnieVilConfig.from_preset(preset)
    depths = encoder_depths(config)
    expected = official_depths(text_init_layers, config.num_hidden_layers, config.v_num_hidden_layers, 6)
    assert {name: getattr(depths, name) for name in expected} == expected
    assert depths.num_depths == n_layers


@pytest.mark.parametrize(("preset", "text_init_layers", "n_layers"), [("base", 6, 18), ("base", 18, 30)])
def test_the_official_scripts_table_on_any_model(preset, text_init_layers, n_layers):
    """Base with the script's own defaults (18, 30), as the RefCOCO+ conf trained it, and with (6, 18),
    which is base's own table."""
    config = ErnieVilConfig.from_preset(preset)
    depths = official_table_depths(config, text_init_layers, n_layers)
    expected = official_depths(text_init_layers, config.num_hidden_layers, config.v_num_hidden_layers, 6)
    assert {name: getattr(depths, name) for name in expected} == expected
    assert depths.num_depths == n_layers
    if (text_init_layers, n_layers) == (6, 18):
        assert depths == encoder_depths(config)


def test_a_layer_decay_table_sets_the_groups_learning_rates(tiny_config):
    """tiny (3 text, 2 image, 2 co-layers) under the table (1, 6): T2 at depth 1 + 2 + 1 = 4, C0 at 1,
    V1 at 4, the image embeddings at 0; decay ** (6 - depth)."""
    model = ErnieVilForVisualQuestionAnswering(tiny_config)
    optimizer = build_optimizer(model, 1.0, layer_decay=0.5, layer_decay_table=(1, 6))
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    encoder = model.ernievil
    expected = {
        encoder.text_layers[2].output.dense.weight: 0.5**2,
        encoder.co_layers[0].text_attention.self.query.weight: 0.5**5,
        encoder.image_layers[1].output.dense.weight: 0.5**2,
        encoder.image_embeddings.feature_projection.weight: 0.5**6,
        encoder.text_embeddings.word_embeddings.weight: 0.5**7,
        model.classifier[0].weight: 1.0,
    }
    for parameter, lr in expected.items():
        assert lr_of[id(parameter)] == pytest.approx(lr)


def test_parameter_groups_scale_the_learning_rate_by_depth(tiny_config):
    """tiny: T0 | C0 | T1+V0 | C1 | T2+V1: depths 0, 1, 2, 3, 4 of 5; embeddings at -1 (text), 0 (image)."""
    model = ErnieVilForVisualQuestionAnswering(tiny_config)
    optimizer = build_optimizer(model, 1e-3, weight_decay=0.01, layer_decay=0.5, head_lr_scale=2.5)
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    decay_of = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    encoder = model.ernievil
    expected_lr = {
        encoder.text_embeddings.word_embeddings.weight: 1e-3 * 0.5**6,
        encoder.image_embeddings.feature_projection.weight: 1e-3 * 0.5**5,
        encoder.text_layers[0].intermediate.dense.weight: 1e-3 * 0.5**5,
        encoder.co_layers[0].text_attention.self.query.weight: 1e-3 * 0.5**4,
        encoder.image_layers[0].output.dense.weight: 1e-3 * 0.5**3,
        encoder.text_layers[1].output.dense.weight: 1e-3 * 0.5**3,
        encoder.text_layers[2].output.LayerNorm.weight: 1e-3 * 0.5,
        encoder.text_pooler.weight: 1e-3,
        model.classifier[0].weight: 1e-3 * 2.5,
    }
    for parameter, lr in expected_lr.items():
        assert lr_of[id(parameter)] == pytest.approx(lr)
    assert decay_of[id(encoder.text_layers[2].output.LayerNorm.weight)] == 0.0
    assert decay_of[id(encoder.text_layers[0].intermediate.dense.bias)] == 0.0
    # Weight decay is not layer-decayed: lr * weight_decay is 1e-3 * 0.01 for every decayed encoder weight.
    weight = encoder.co_layers[0].text_attention.self.query.weight
    assert lr_of[id(weight)] * decay_of[id(weight)] == pytest.approx(1e-3 * 0.01)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_one_adamw_step_moves_a_weight_by_its_scaled_rate(tiny_config):
    """Adam's first step is lr * sign(grad) per element (|grad| >> eps); decoupled decay adds lr * wd * p."""
    model = ErnieVilForVisualQuestionAnswering(tiny_config)
    weight = model.ernievil.co_layers[1].image_feed_forward.output.dense.weight  # depth 3 of 5
    optimizer = build_optimizer(model, 1e-2, weight_decay=0.1, layer_decay=0.5)
    before = weight.detach().clone()
    weight.grad = torch.ones_like(weight)
    optimizer.step()
    expected = before - 1e-2 * 0.5**2 * torch.ones_like(before) - 1e-2 * 0.1 * before
    torch.testing.assert_close(weight.detach(), expected, rtol=1e-5, atol=1e-7)


def test_manual_warmup_decay_factors():
    factors = [manual_warmup_decay_factor(step, 4, (6, 8), 0.1) for step in range(10)]
    assert factors == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


def test_manual_warmup_decay_drives_every_group(tiny_config):
    model = ErnieVilForVisualQuestionAnswering(tiny_config)
    optimizer = build_optimizer(model, 1e-3, layer_decay=0.9)
    peaks = [group["lr"] for group in optimizer.param_groups]
    scheduler = manual_warmup_decay(optimizer, warmup_steps=2, decay_steps=(3,), decay_ratio=0.2)
    seen = []
    for _ in range(4):
        seen.append([group["lr"] / peak for group, peak in zip(optimizer.param_groups, peaks)])
        optimizer.step()
        scheduler.step()
    for step, expected in enumerate([0.0, 0.5, 1.0, 0.2]):
        assert seen[step] == pytest.approx([expected] * len(peaks))
    with pytest.raises(ValueError, match="must increase"):
        manual_warmup_decay(optimizer, 1, (5, 5))


def test_the_layer_decay_table_flag(tmp_path):
    base = ["--task", "refcoco", "--output-dir", str(tmp_path)]
    assert parse_finetune_arguments(base).layer_decay_table is None
    assert parse_finetune_arguments([*base, "--layer-decay-table", "18,30"]).layer_decay_table == (18, 30)
    for bad in ("18", "30,18", "a,b"):
        with pytest.raises(SystemExit):
            parse_finetune_arguments([*base, "--layer-decay-table", bad])
