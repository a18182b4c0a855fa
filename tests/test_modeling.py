"""ErnieVilModel / ErnieVilForPreTraining behaviour, on the paper's architecture and the grounded variant
at test size (the ``config`` fixture runs a test on each)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoModel

from ernievil_ds import ErnieVilConfig, ErnieVilForPreTraining, ErnieVilModel
from ernievil_ds.data.collator import add_scored_positions
from ernievil_ds.modeling_ernievil import (
    ErnieVilCoAttentionLayer,
    box_locations,
    count_parameters_by_component,
)
from ernievil_ds.objectives import PRETRAINING_TASKS, TOKEN_TASKS, loss_name


def task_losses(config: ErnieVilConfig) -> list[str]:
    """The loss fields a batch of ``make_batch`` fills for ``config``'s model."""
    return [loss_name(task) for task in config.task_loss_weights]


def test_every_output_field_has_its_documented_shape(
    config, batch_factory, encoder_inputs, pretraining_model
):
    model = pretraining_model(config)
    batch = batch_factory(config)
    out = model(**batch)  # the heads score every position
    assert out.masked_token_logits.shape == (3 * 9, config.vocab_size)
    assert out.masked_region_logits.shape == (3 * 6, config.num_region_classes)
    gathered = model(**add_scored_positions(batch, 0.5, 1.0))  # at capacities of 16 and 24 rows
    assert gathered.masked_token_logits.shape == (16, config.vocab_size)
    assert gathered.masked_region_logits.shape == (24, config.num_region_classes)
    assert out.itm_logits.shape == (3, 2)
    for name in ["loss", *task_losses(config)]:
        assert out[name].shape == () and torch.isfinite(out[name]), name
    enc = model.ernievil(**encoder_inputs(batch), output_hidden_states=True, output_attentions=True)
    assert enc.text_hidden_states.shape == (3, 9, config.hidden_size)
    assert enc.image_hidden_states.shape == (3, 6 + 1, config.v_hidden_size)
    for name in ("pooled_text", "pooled_image", "pooled_output"):
        assert enc[name].shape == (3, config.co_hidden_size)
    # embeddings + 3 text layers + 2 co-layers
    assert len(enc.all_text_hidden_states) == 1 + config.num_hidden_layers + config.num_co_layers
    heads = config.co_num_attention_heads
    assert [(a.shape, b.shape) for a, b in enc.co_attentions] == [((3, heads, 9, 7), (3, heads, 7, 9))] * 2


def test_layers_run_in_the_interleaved_order(config, batch_factory, encoder_inputs):
    """tiny: text_co_layer_ids [1, 2], image_co_layer_ids [0, 1] -> T0, C0, T1, V0, C1, T2, V1."""
    model = AutoModel.from_config(config)
    order = []
    for prefix, layers in (("T", model.text_layers), ("V", model.image_layers), ("C", model.co_layers)):
        for i, layer in enumerate(layers):
            layer.register_forward_hook(lambda *_, name=f"{prefix}{i}": order.append(name))
    model(**encoder_inputs(batch_factory(config)))
    assert order == ["T0", "C0", "T1", "V0", "C1", "T2", "V1"]


def test_base_runs_its_layers_in_the_paper_order():
    """ERNIE-ViL base: T0..T5, C0, then T(5+i), V(i-1), C(i) for i = 1..5, then T11 and V5. The model runs
    on the meta device (shapes only), with a hook on every layer."""
    with torch.device("meta"):
        model = ErnieVilModel(ErnieVilConfig.from_preset("base"))
    order = []
    for prefix, layers in (("T", model.text_layers), ("V", model.image_layers), ("C", model.co_layers)):
        for i, layer in enumerate(layers):
            layer.register_forward_hook(lambda *_, name=f"{prefix}{i}": order.append(name))
    with torch.device("meta"):
        out = model(
            torch.ones(2, 7, dtype=torch.long), torch.zeros(2, 5, 2048), region_locations=torch.zeros(2, 5, 5)
        )
    expected = ["T0", "T1", "T2", "T3", "T4", "T5", "C0"]
    for i in range(1, 6):
        expected += [f"T{5 + i}", f"V{i - 1}", f"C{i}"]
    assert order == [*expected, "T11", "V5"]
    assert out.pooled_output.shape == (2, 1024)


def test_padding_has_no_effect_on_real_positions(config, batch_factory, encoder_inputs):
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    batch = encoder_inputs(batch_factory(config))
    padded = dict(batch)
    extra_tokens, extra_regions = 4, 3
    padded["input_ids"] = F.pad(batch["input_ids"], (0, extra_tokens), value=7)
    padded["attention_mask"] = F.pad(batch["attention_mask"], (0, extra_tokens))
    padded["token_type_ids"] = F.pad(batch["token_type_ids"], (0, extra_tokens))
    padded["region_features"] = torch.cat(
        [batch["region_features"], torch.randn(3, extra_regions, 2048) * 5], 1
    )
    padded["region_boxes"] = torch.cat([batch["region_boxes"], torch.full((3, extra_regions, 4), 1e4)], 1)
    padded["region_mask"] = F.pad(batch["region_mask"], (0, extra_regions))
    padded["masked_regions"] = F.pad(batch["masked_regions"], (0, extra_regions), value=True)
    with torch.no_grad():
        ref, out = model(**batch), model(**padded)
    text_real = batch["attention_mask"].bool()
    image_real = torch.cat([torch.ones(3, 1, dtype=torch.bool), batch["region_mask"].bool()], 1)
    torch.testing.assert_close(out.text_hidden_states[:, :9][text_real], ref.text_hidden_states[text_real])
    torch.testing.assert_close(
        out.image_hidden_states[:, :7][image_real], ref.image_hidden_states[image_real]
    )
    torch.testing.assert_close(out.pooled_output, ref.pooled_output)


def test_img_region_is_the_mean_of_the_unmasked_real_regions(tiny_config, batch_factory, encoder_inputs):
    model = ErnieVilModel(tiny_config).eval()
    batch = encoder_inputs(batch_factory(tiny_config))
    captured = {}
    model.image_embeddings.register_forward_hook(lambda m, args, out: captured.update(args=args))
    model(**batch)
    features, locations = captured["args"]
    keep = batch["region_mask"].bool() & ~batch["masked_regions"]
    for b in range(3):
        expected = batch["region_features"][b][keep[b]].double().mean(0)
        torch.testing.assert_close(features[b, 0].double(), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(locations[:, 0], torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0]] * 3))


def test_box_locations_are_normalised_corners_and_area():
    boxes = torch.tensor([[[64.0, 48.0, 320.0, 240.0]]])
    locations = box_locations(boxes, torch.tensor([[640.0, 480.0]]))
    torch.testing.assert_close(locations, torch.tensor([[[0.1, 0.1, 0.5, 0.5, 0.16]]]))


def test_every_parameter_receives_a_gradient_from_the_pretraining_loss(
    config, batch_factory, pretraining_model
):
    model = pretraining_model(config)
    model(**batch_factory(config)).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_padding_regions_leave_fp16_gradients_finite(config, batch_factory, pretraining_model):
    """The collator pads with zero features and zero boxes; in fp16 (DeepSpeed's fp16 engine runs the model
    in half precision) such a constant embedding must not turn the LayerNorm gradient into NaN."""
    model = pretraining_model(config).half()
    batch = batch_factory(config)
    padding = batch["region_mask"] == 0
    batch["region_features"][padding] = 0.0
    batch["region_boxes"][padding] = 0.0
    batch = {k: v.half() if v.is_floating_point() else v for k, v in batch.items()}
    model(**batch).loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("without", ["masked regions", "token targets"])
def test_a_head_with_nothing_to_score_still_gets_a_zero_gradient(
    config, batch_factory, pretraining_model, without
):
    """ZeRO-2 needs a gradient for every parameter on every rank, even when a micro-batch has nothing for
    one head to score; that head's gradient is zero and the loss is the other tasks' alone."""
    model = pretraining_model(config)
    batch = batch_factory(config)
    if without == "masked regions":
        batch["masked_regions"][:] = False
        head, absent = model.region_head, ["mrc_loss"]
    else:
        batch["labels"][:] = -100
        head, absent = model.token_head.transform, [loss_name(task) for task in TOKEN_TASKS]
    out = model(**batch)
    out.loss.backward()
    assert all(torch.isnan(out[name]) for name in absent)  # passed, but nothing to score in this batch
    present = [v for k, v in out.items() if k.endswith("_loss") and not torch.isnan(v)]
    torch.testing.assert_close(out.loss, sum(present))
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert all(p.grad.abs().sum() == 0 for p in head.parameters())


def float64_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}


@pytest.mark.parametrize("capacity", [None, 0.5], ids=["every position", "padded to a capacity"])
def test_losses_match_an_independent_float64_computation(
    config, batch_factory, encoder_inputs, pretraining_model, capacity
):
    """The losses of plain boolean-mask selections, whether the heads score every position or the masked
    ones padded to a capacity (``add_scored_positions``; the region rows are then padded too)."""
    model = pretraining_model(config).double().eval()
    batch = float64_batch(batch_factory(config))
    out = model(**(batch if capacity is None else add_scored_positions(batch, capacity, capacity)))
    enc = model.ernievil(**encoder_inputs(batch))
    logits = model.token_head(enc.text_hidden_states)  # (B, T, V)
    for task_id, task in enumerate(TOKEN_TASKS):
        where = batch["task_ids"] == task_id
        expected = F.cross_entropy(logits[where], batch["labels"][where])
        torch.testing.assert_close(out[loss_name(task)], expected)
    scored = batch["masked_regions"] & (batch["itm_labels"][:, None] == 1)  # matched pairs only
    region_logits = model.region_head(enc.image_hidden_states[:, 1:])[scored]
    target = batch["region_class_targets"][scored]
    expected_kl = (target * (target.log() - region_logits.log_softmax(-1))).sum(-1).mean()
    torch.testing.assert_close(out.mrc_loss, expected_kl)
    expected_itm = F.cross_entropy(model.itm_head(enc.pooled_output), batch["itm_labels"])
    torch.testing.assert_close(out.itm_loss, expected_itm)
    torch.testing.assert_close(out.loss, sum(out[name] for name in task_losses(config)))


@pytest.mark.parametrize("target", ["class_distribution", "features"])
def test_padded_rows_change_no_loss_and_no_gradient(target, batch_factory):
    """In float64, the heads on the masked rows padded to a capacity give the losses and gradients of the
    heads on every position (the plain masked loss), also where padding rows repeat a scored position."""
    config = ErnieVilConfig.from_preset(
        "tiny", masked_region_target=target, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    torch.manual_seed(0)
    model = ErnieVilForPreTraining(config).double().train()
    padded = copy.deepcopy(model)
    batch = float64_batch(batch_factory(config))
    if target == "features":
        del batch["region_class_targets"]
        batch["region_feature_targets"] = torch.randn_like(batch["region_features"])
    gathered = add_scored_positions(batch, 1.0, 1.0)
    # Padding rows on scored rows: a relation token of example 0 (tasks with 3 rows) and a masked region.
    gathered["masked_token_positions"][gathered["masked_token_weights"] == 0] = 4
    gathered["masked_region_positions"][gathered["masked_region_weights"] == 0] = 1
    plain, out = model(**batch), padded(**gathered)
    plain.loss.backward()
    out.loss.backward()
    for name in ["loss", *task_losses(config)]:
        torch.testing.assert_close(out[name], plain[name], rtol=1e-12, atol=1e-12, msg=name)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(padded.get_parameter(name).grad, parameter.grad, msg=name)


def test_task_loss_weights_and_feature_regression(batch_factory):
    config = ErnieVilConfig.from_preset(
        "tiny", masked_region_target="features", task_loss_weights={"itm": 0.0, "mrc": 2.0}
    )
    model = ErnieVilForPreTraining(config).eval()
    batch = batch_factory(config)
    batch.pop("region_class_targets")
    with pytest.raises(ValueError, match="region_feature_targets is missing"):
        model(**batch)
    batch["region_feature_targets"] = batch["region_features"].clone()
    out = model(**batch)
    assert out.masked_region_logits.shape == (3 * 6, config.v_feature_size)  # every region: no positions
    expected = (
        out.mlm_loss + out.sgp_object_loss + out.sgp_attribute_loss + out.sgp_relation_loss + 2 * out.mrc_loss
    )
    torch.testing.assert_close(out.loss, expected)


def test_eager_and_sdpa_agree(config, batch_factory, encoder_inputs):
    torch.manual_seed(0)
    eager = AutoModel.from_config(copy.deepcopy(config)).eval()
    sdpa = AutoModel.from_config(copy.deepcopy(config)).eval()
    sdpa.load_state_dict(eager.state_dict())
    eager.set_attn_implementation("eager")
    sdpa.set_attn_implementation("sdpa")
    assert (eager.config._attn_implementation, sdpa.config._attn_implementation) == ("eager", "sdpa")
    batch = batch_factory(config)
    with torch.no_grad():
        a, b = eager(**encoder_inputs(batch)), sdpa(**encoder_inputs(batch))
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(a.text_hidden_states[real], b.text_hidden_states[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.image_hidden_states, b.image_hidden_states, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.pooled_output, b.pooled_output, atol=1e-5, rtol=1e-5)


def test_output_attentions_changes_nothing_but_the_returned_weights(config, batch_factory, encoder_inputs):
    """With output_attentions every attention runs the eager function; the states equal the default path's."""
    model = AutoModel.from_config(config).eval()
    batch = encoder_inputs(batch_factory(config))
    with torch.no_grad():
        plain, weighed = model(**batch), model(**batch, output_attentions=True)
    assert plain.co_attentions is None
    torch.testing.assert_close(weighed.image_hidden_states, plain.image_hidden_states, atol=1e-5, rtol=1e-5)
    for text_to_image, image_to_text in weighed.co_attentions:  # rows are distributions over real keys
        torch.testing.assert_close(text_to_image.sum(-1), torch.ones(text_to_image.shape[:-1]))
        padded_regions = (batch["region_mask"] == 0)[:, None, None, :].expand_as(text_to_image[..., 1:])
        padded_tokens = (batch["attention_mask"] == 0)[:, None, None, :].expand_as(image_to_text)
        assert torch.all(text_to_image[..., 1:][padded_regions] == 0)
        assert torch.all(image_to_text[padded_tokens] == 0)


def test_masked_token_head_is_tied_to_the_word_embeddings(config, pretraining_model):
    model = pretraining_model(config)
    assert model.token_head.decoder.weight is model.ernievil.text_embeddings.word_embeddings.weight


def test_a_misspelled_argument_is_an_error(config, batch_factory, pretraining_model):
    model = pretraining_model(config)
    batch = batch_factory(config)
    batch["itm_label"] = batch.pop("itm_labels")
    with pytest.raises(TypeError, match="itm_label"):
        model(**batch)
    with pytest.raises(TypeError, match="label"):
        model.ernievil(input_ids=batch["input_ids"], region_features=batch["region_features"], label=1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda b: b.update(region_features=b["region_features"][..., :1024]),
            r"\(batch_size, num_regions, 2048\)",
        ),
        (lambda b: b.update(input_ids=b["input_ids"][:2]), r"input_ids has shape \(2, 9\).*batch sizes"),
        (lambda b: b.update(image_sizes=b["image_sizes"][:2]), r"image_sizes has shape \(2, 2\)"),
        (lambda b: b.pop("image_sizes"), "Pass either region_locations"),
        (
            lambda b: b.update(input_ids=torch.ones(3, 100, dtype=torch.long)),
            "at most max_position_embeddings=64",
        ),
    ],
)
def test_bad_inputs_raise_errors_that_name_the_problem(
    tiny_config, batch_factory, encoder_inputs, change, message
):
    model = ErnieVilModel(tiny_config)
    batch = encoder_inputs(batch_factory(tiny_config))
    change(batch)
    if batch["input_ids"].shape[1] == 100:
        batch["attention_mask"] = batch["token_type_ids"] = None
    with pytest.raises(ValueError, match=message):
        model(**batch)


@pytest.mark.parametrize(
    "change",
    [
        lambda b: b["region_boxes"].__setitem__((1, 2, 2), 900.0),  # x2 beyond the width
        lambda b: b["region_boxes"].__setitem__((0, 0, 0), -50.0),  # x1 left of the image
        lambda b: b["region_boxes"].__setitem__((2, 1, 0), b["region_boxes"][2, 1, 2] + 1),  # x1 > x2
    ],
)
def test_a_box_outside_its_image_fails_the_device_assertion(
    tiny_config, batch_factory, encoder_inputs, change
):
    """On the CPU ``torch._assert_async`` raises at once; on a GPU the step fails when the device runs it
    (the collator names the box: tests/data/test_collator.py)."""
    model = ErnieVilModel(tiny_config)
    batch = encoder_inputs(batch_factory(tiny_config))
    change(batch)
    with pytest.raises(RuntimeError, match="region_boxes holds a real region whose box is not an x1 <= x2"):
        model(**batch)


def test_scored_positions_need_weights_of_their_shape(tiny_config, batch_factory):
    model = ErnieVilForPreTraining(tiny_config)
    batch = add_scored_positions(batch_factory(tiny_config), 0.25, 0.25)
    batch["masked_region_weights"] = batch["masked_region_weights"][:-1]
    with pytest.raises(
        ValueError, match=r"scored positions \(8,\) need weights of the same shape.*got \(7,\)"
    ):
        model(**batch)
    del batch["masked_region_weights"]
    with pytest.raises(ValueError, match=r"need weights of the same shape.*got None"):
        model(**batch)


def test_boxes_of_padded_regions_are_not_checked(tiny_config, batch_factory, encoder_inputs):
    model = ErnieVilModel(tiny_config)
    batch = encoder_inputs(batch_factory(tiny_config))
    batch["region_boxes"][2, -1] = torch.tensor([-1e4, -1e4, 1e4, 1e4])  # region_mask[2, -1] == 0
    assert torch.isfinite(model(**batch).pooled_output).all()


def test_parameter_counts_add_up(config, pretraining_model):
    model = pretraining_model(config)
    counts = count_parameters_by_component(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


def test_the_paper_presets_start_from_the_official_initialisation(tiny_config):
    """Every weight from a normal distribution truncated at 2 std (std 0.02), every bias zero, LayerNorms at
    the identity; none of the grounded presets' fan-in starts."""
    torch.manual_seed(0)
    model = ErnieVilForPreTraining(tiny_config)
    truncated_std = 0.02 * 0.8796  # the standard deviation of N(0, 0.02) truncated at +-2 std
    for name, parameter in model.named_parameters():
        if "LayerNorm" in name:
            expected = 1.0 if name.endswith("weight") else 0.0
            assert torch.all(parameter == expected), name
        elif name.endswith("bias"):
            assert torch.all(parameter == 0), name
        else:
            assert parameter.abs().max() <= 0.04, name
            if parameter.numel() >= 500:
                assert parameter.std().item() == pytest.approx(truncated_std, rel=0.15), name


def test_base_and_large_are_the_papers_architecture():
    """The official presets build the paper's model: no grounded co-layer, no extra parameter."""
    for preset in ("base", "large", "tiny"):
        config = ErnieVilConfig.from_preset(preset)
        assert type(config) is ErnieVilConfig and not hasattr(config, "grounding_co_layers")
        with torch.device("meta"):
            model = AutoModel.from_config(config)
        assert type(model) is ErnieVilModel
        assert all(type(layer) is ErnieVilCoAttentionLayer for layer in model.co_layers)
    assert ErnieVilConfig.from_preset("base").layer_norm_eps == 1e-5  # Paddle's LayerNorm epsilon
    assert set(PRETRAINING_TASKS) == set(ErnieVilConfig().task_loss_weights)


def test_a_given_img_region_replaces_the_mean_and_the_whole_image(config, batch_factory, encoder_inputs):
    """``img_features`` and ``img_locations`` are what the image embedding sees at [IMG]; the default is
    the mean of the real, unmasked regions at (0, 0, 1, 1, 1); a wrong shape is refused by name."""
    model = AutoModel.from_config(config).eval()
    inputs = encoder_inputs(batch_factory(config))
    seen = []
    model.image_embeddings.register_forward_pre_hook(lambda module, args: seen.append(args))
    img_features = torch.randn(3, config.v_feature_size)
    img_locations = torch.tensor([[0.1, 0.2, 0.5, 0.6, 0.16]]).expand(3, -1)
    with torch.no_grad():
        model(**inputs)
        model(**inputs, img_features=img_features, img_locations=img_locations)
    (default_features, default_locations), (given_features, given_locations) = seen
    keep = (inputs["region_mask"].bool() & ~inputs["masked_regions"].bool()).float()[..., None]  # (B, R, 1)
    mean = (inputs["region_features"] * keep).sum(1) / keep.sum(1).clamp(min=1)
    torch.testing.assert_close(default_features[:, 0], mean)
    torch.testing.assert_close(
        default_locations[:, 0], torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0]]).expand(3, -1)
    )
    torch.testing.assert_close(given_features[:, 0], img_features)
    torch.testing.assert_close(given_locations[:, 0], img_locations)
    torch.testing.assert_close(given_features[:, 1:], default_features[:, 1:])
    with pytest.raises(ValueError, match="img_features has shape"):
        model(**inputs, img_features=torch.zeros(2, config.v_feature_size))
