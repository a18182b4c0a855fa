"""ErnieVilModel / ErnieVilForPreTraining behaviour on the tiny preset."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from ernievil_ds import ErnieVilConfig, ErnieVilForPreTraining, ErnieVilModel
from ernievil_ds.modeling_ernievil import box_locations, count_parameters_by_component
from ernievil_ds.training.metrics import LOSS_NAMES, TASK_LOSS_NAMES

MODEL_KEYS = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "region_features",
    "region_boxes",
    "image_sizes",
    "region_mask",
    "masked_regions",
)


def encoder_inputs(batch):
    return {k: batch[k] for k in MODEL_KEYS}


def test_every_output_field_has_its_documented_shape(tiny_config, batch_factory):
    torch.manual_seed(0)
    model = ErnieVilForPreTraining(tiny_config)
    batch = batch_factory(tiny_config)
    out = model(**batch)
    num_masked_tokens = int((batch["labels"] != -100).sum())
    num_masked_regions = int((batch["masked_regions"] & (batch["itm_labels"][:, None] == 1)).sum())
    assert out.masked_token_logits.shape == (num_masked_tokens, tiny_config.vocab_size)
    assert out.masked_region_logits.shape == (num_masked_regions, tiny_config.num_region_classes)
    assert out.itm_logits.shape == (3, 2)
    for name in LOSS_NAMES:
        assert out[name].shape == () and torch.isfinite(out[name]), name
    enc = model.ernievil(**encoder_inputs(batch), output_hidden_states=True)
    assert enc.text_hidden_states.shape == (3, 9, tiny_config.hidden_size)
    assert enc.image_hidden_states.shape == (3, 6 + 1, tiny_config.v_hidden_size)
    for name in ("pooled_text", "pooled_image", "pooled_output"):
        assert enc[name].shape == (3, tiny_config.co_hidden_size)
    # embeddings + 3 text layers + 2 co-layers
    assert len(enc.all_text_hidden_states) == 1 + tiny_config.num_hidden_layers + tiny_config.num_co_layers


def test_layers_run_in_the_interleaved_order(tiny_config, batch_factory):
    """tiny: text_co_layer_ids [1, 2], image_co_layer_ids [0, 1] -> T0, C0, T1, V0, C1, T2, V1."""
    model = ErnieVilModel(tiny_config)
    order = []
    for prefix, layers in (("T", model.text_layers), ("V", model.image_layers), ("C", model.co_layers)):
        for i, layer in enumerate(layers):
            layer.register_forward_hook(lambda *_, name=f"{prefix}{i}": order.append(name))
    model(**encoder_inputs(batch_factory(tiny_config)))
    assert order == ["T0", "C0", "T1", "V0", "C1", "T2", "V1"]


def test_base_interleaving_matches_the_paper_order():
    config = ErnieVilConfig()
    schedule, text_start, image_start = [], 0, 0
    for i, (t, v) in enumerate(zip(config.text_co_layer_ids, config.image_co_layer_ids)):
        schedule += (
            [f"T{j}" for j in range(text_start, t)] + [f"V{j}" for j in range(image_start, v)] + [f"C{i}"]
        )
        text_start, image_start = t, v
    schedule += [f"T{j}" for j in range(text_start, 12)] + [f"V{j}" for j in range(image_start, 6)]
    expected = ["T0", "T1", "T2", "T3", "T4", "T5", "C0"]
    for i in range(1, 6):
        expected += [f"T{5 + i}", f"V{i - 1}", f"C{i}"]
    assert schedule == [*expected, "T11", "V5"]


def test_padding_has_no_effect_on_real_positions(tiny_config, batch_factory):
    torch.manual_seed(0)
    model = ErnieVilModel(tiny_config).eval()
    batch = encoder_inputs(batch_factory(tiny_config))
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


def test_img_region_is_the_mean_of_the_unmasked_real_regions(tiny_config, batch_factory):
    model = ErnieVilModel(tiny_config).eval()
    batch = encoder_inputs(batch_factory(tiny_config))
    captured = {}
    model.image_embeddings.register_forward_hook(lambda m, args, out: captured.update(features=args[0]))
    model(**batch)
    keep = batch["region_mask"].bool() & ~batch["masked_regions"]
    for b in range(3):
        expected = batch["region_features"][b][keep[b]].double().mean(0)
        torch.testing.assert_close(captured["features"][b, 0].double(), expected, atol=1e-6, rtol=1e-6)


def test_box_locations_are_normalised_corners_and_area():
    boxes = torch.tensor([[[64.0, 48.0, 320.0, 240.0]]])
    locations = box_locations(boxes, torch.tensor([[640.0, 480.0]]))
    torch.testing.assert_close(locations, torch.tensor([[[0.1, 0.1, 0.5, 0.5, 0.16]]]))


def test_every_parameter_receives_a_gradient_from_the_pretraining_loss(tiny_config, batch_factory):
    torch.manual_seed(0)
    model = ErnieVilForPreTraining(tiny_config)
    model(**batch_factory(tiny_config)).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_padding_regions_leave_fp16_gradients_finite(tiny_config, batch_factory):
    """The collator pads with zero features and zero boxes; in fp16 (DeepSpeed's fp16 engine runs the model
    in half precision) such a constant embedding must not turn the LayerNorm gradient into NaN."""
    torch.manual_seed(0)
    model = ErnieVilForPreTraining(tiny_config).half()
    batch = batch_factory(tiny_config)
    padding = batch["region_mask"] == 0
    batch["region_features"][padding] = 0.0
    batch["region_boxes"][padding] = 0.0
    batch = {k: v.half() if v.is_floating_point() else v for k, v in batch.items()}
    model(**batch).loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("without", ["masked regions", "token targets", "grounding targets"])
def test_a_head_with_nothing_to_score_still_gets_a_zero_gradient(tiny_config, batch_factory, without):
    """ZeRO-2 needs a gradient for every parameter on every rank, even when a micro-batch has nothing for
    one head to score; that head's gradient is zero and the loss is the other tasks' alone."""
    torch.manual_seed(0)
    model = ErnieVilForPreTraining(tiny_config)
    batch = batch_factory(tiny_config)
    if without == "masked regions":
        batch["masked_regions"][:] = False
        head, absent = model.region_head, "mrc_loss"
    elif without == "grounding targets":  # no head of its own: its logits also feed every other task
        batch["region_word_targets"][:] = -100
        head, absent = None, "grounding_loss"
    else:
        batch["labels"][:] = -100
        head, absent = model.token_head.transform, "mlm_loss"
    out = model(**batch)
    out.loss.backward()
    assert getattr(out, absent) is None
    present = [v for k, v in out.items() if k.endswith("_loss") and v is not None]
    torch.testing.assert_close(out.loss, sum(present))
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    if head is not None:
        assert all(p.grad.abs().sum() == 0 for p in head.parameters())


def test_losses_match_an_independent_float64_computation(tiny_config, batch_factory):
    torch.manual_seed(0)
    model = ErnieVilForPreTraining(tiny_config).double().eval()
    batch = {k: v.double() if v.is_floating_point() else v for k, v in batch_factory(tiny_config).items()}
    out = model(**batch)
    enc = model.ernievil(**encoder_inputs(batch))
    logits = model.token_head(enc.text_hidden_states)  # (B, T, V)
    for task_id, name in enumerate(
        ("mlm_loss", "sgp_object_loss", "sgp_attribute_loss", "sgp_relation_loss")
    ):
        where = batch["task_ids"] == task_id
        expected = F.cross_entropy(logits[where], batch["labels"][where])
        torch.testing.assert_close(out[name], expected)
    scored = batch["masked_regions"] & (batch["itm_labels"][:, None] == 1)  # matched pairs only
    region_logits = model.region_head(enc.image_hidden_states[:, 1:])[scored]
    target = batch["region_class_targets"][scored]
    expected_kl = (target * (target.log() - region_logits.log_softmax(-1))).sum(-1).mean()
    torch.testing.assert_close(out.mrc_loss, expected_kl)
    expected_itm = F.cross_entropy(model.itm_head(enc.pooled_output), batch["itm_labels"])
    torch.testing.assert_close(out.itm_loss, expected_itm)
    torch.testing.assert_close(out.loss, sum(out[name] for name in TASK_LOSS_NAMES))


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
    assert out.masked_region_logits.shape == (2, config.v_feature_size)  # example 1 is a mismatched pair
    expected = (
        out.mlm_loss
        + out.sgp_object_loss
        + out.sgp_attribute_loss
        + out.sgp_relation_loss
        + 2 * out.mrc_loss
        + out.grounding_loss
    )
    torch.testing.assert_close(out.loss, expected)


def test_eager_and_sdpa_agree(tiny_config, batch_factory):
    torch.manual_seed(0)
    eager = ErnieVilForPreTraining(copy.deepcopy(tiny_config)).eval()
    sdpa = ErnieVilForPreTraining(copy.deepcopy(tiny_config)).eval()
    sdpa.load_state_dict(eager.state_dict())
    eager.set_attn_implementation("eager")
    sdpa.set_attn_implementation("sdpa")
    assert (eager.config._attn_implementation, sdpa.config._attn_implementation) == ("eager", "sdpa")
    batch = batch_factory(tiny_config)
    with torch.no_grad():
        a, b = eager.ernievil(**encoder_inputs(batch)), sdpa.ernievil(**encoder_inputs(batch))
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(a.text_hidden_states[real], b.text_hidden_states[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.image_hidden_states, b.image_hidden_states, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.pooled_output, b.pooled_output, atol=1e-5, rtol=1e-5)


def test_masked_token_head_is_tied_to_the_word_embeddings(tiny_config):
    model = ErnieVilForPreTraining(tiny_config)
    assert model.token_head.decoder.weight is model.ernievil.text_embeddings.word_embeddings.weight


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda b: b.update(region_features=b["region_features"][..., :1024]),
            r"\(batch_size, num_regions, 2048\)",
        ),
        (lambda b: b.update(input_ids=b["input_ids"][:2]), r"input_ids has shape \(2, 9\).*batch sizes"),
        (lambda b: b.update(image_sizes=b["image_sizes"][:2]), r"image_sizes has shape \(2, 2\)"),
        (
            lambda b: b["region_boxes"].__setitem__((1, 2, 2), 900.0),
            r"region_boxes\[1, 2\].*\[640.0, 480.0\]",
        ),
        (lambda b: b["region_boxes"].__setitem__((0, 0, 0), -50.0), r"region_boxes\[0, 0\] = \[-50.0"),
        (lambda b: b.pop("image_sizes"), "Pass either region_locations"),
        (
            lambda b: b.update(input_ids=torch.ones(3, 100, dtype=torch.long)),
            "at most max_position_embeddings=64",
        ),
    ],
)
def test_bad_inputs_raise_errors_that_name_the_problem(tiny_config, batch_factory, change, message):
    model = ErnieVilModel(tiny_config)
    batch = encoder_inputs(batch_factory(tiny_config))
    change(batch)
    if batch["input_ids"].shape[1] == 100:
        batch["attention_mask"] = batch["token_type_ids"] = None
    with pytest.raises(ValueError, match=message):
        model(**batch)


def test_boxes_of_padded_regions_are_not_checked(tiny_config, batch_factory):
    model = ErnieVilModel(tiny_config)
    batch = encoder_inputs(batch_factory(tiny_config))
    batch["region_boxes"][2, -1] = torch.tensor([-1e4, -1e4, 1e4, 1e4])  # region_mask[2, -1] == 0
    model(**batch)


def test_parameter_counts_add_up(tiny_config):
    model = ErnieVilForPreTraining(tiny_config)
    counts = count_parameters_by_component(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


def test_co_attention_queries_and_keys_start_at_fan_in_std(tiny_config):
    torch.manual_seed(0)
    model = ErnieVilModel(tiny_config)
    for layer in model.co_layers:
        for attention in (layer.text_attention.self, layer.image_attention.self):
            for projection in (attention.query, attention.key):
                expected = projection.in_features**-0.5
                assert projection.weight.std().item() == pytest.approx(expected, rel=0.15)
                assert torch.all(projection.bias == 0)
            assert attention.value.weight.std().item() == pytest.approx(
                tiny_config.initializer_range, rel=0.15
            )
    text_self_attention = model.text_layers[0].attention.self
    assert text_self_attention.query.weight.std().item() == pytest.approx(
        tiny_config.initializer_range, rel=0.15
    )


@pytest.mark.parametrize("box_embeddings", [True, False])
def test_co_layer_box_embeddings_carry_the_boxes_into_every_co_layer(
    tiny_config, batch_factory, box_embeddings
):
    """With the image embeddings' location projection zeroed, the boxes reach the text stream through the
    co-layers' box embeddings, and only through them."""
    config = copy.deepcopy(tiny_config)
    config.co_layer_box_embeddings = box_embeddings
    torch.manual_seed(0)
    model = ErnieVilModel(config).eval()
    with torch.no_grad():
        model.image_embeddings.location_projection.weight.zero_()
        model.image_embeddings.location_projection.bias.zero_()
    batch = encoder_inputs(batch_factory(config))
    moved = dict(batch, region_boxes=batch["region_boxes"] * 0.5)  # every real box moves, stays valid
    with torch.no_grad():
        text, moved_text = (model(**inputs).text_hidden_states for inputs in (batch, moved))
    real = batch["attention_mask"].bool()
    changed = (text - moved_text)[real].abs().max().item()
    if box_embeddings:
        assert changed > 1e-3
        for layer in model.co_layers:  # the box embeddings start at 3x the location projection's std
            assert layer.box_embedding.weight.std().item() == pytest.approx(3 * 5**-0.5, rel=0.3)
    else:
        assert changed == 0.0


def test_base_and_large_have_no_co_layer_box_embeddings_and_no_grounding():
    """The official architectures stay ERNIE-ViL's: the box enters once, in the image embeddings, and
    there is neither a grounding loss nor a grounded position bias."""
    for preset in ("base", "large"):
        config = ErnieVilConfig.from_preset(preset)
        assert not config.co_layer_box_embeddings
        assert config.grounding_co_layers == [] and not config.grounded_position_bias
    small = ErnieVilConfig.from_preset("small")
    assert (
        small.co_layer_box_embeddings
        and small.grounding_co_layers == [0, 1, 2]
        and small.grounded_position_bias
    )
