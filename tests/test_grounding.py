"""The grounded variant's extras (not in ERNIE-ViL; the small and tiny-grounded presets): the position bias,
the grounded co-layer, the grounding loss and the extras' initialisation."""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch
from torch.nn import functional as F
from transformers import AttentionInterface, AutoConfig, AutoModel, AutoModelForPreTraining
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ernievil_ds import ErnieVilConfig, ErnieVilGroundedForPreTraining
from ernievil_ds.grounding import GroundedPositionBias
from ernievil_ds.modeling_ernievil import ErnieVilForPreTraining


def test_position_bias_reads_the_table_at_each_regions_offset_by_hand():
    """Two image->text heads, two text->image heads, span 2: hand-computed table reads."""
    config = ErnieVilConfig.from_preset(
        "tiny-grounded", grounded_position_span=2, grounded_position_gain=10.0
    )
    bias_module = GroundedPositionBias(config)
    with (
        torch.no_grad()
    ):  # table[hi, offset + span, ht] = 100 * hi + 10 * (offset + span) + ht, over the gain
        for hi in range(2):
            for row in range(5):
                for ht in range(2):
                    bias_module.table[hi, row, ht] = (100 * hi + 10 * row + ht) / 10.0
    weights = torch.zeros(1, 2, 2, 6)  # (B, Hi, R, T)
    weights[0, 0, 0, 1] = 1.0  # head 0 grounds region 0 at position 1
    weights[0, 1, 0, 4] = 1.0  # head 1 grounds region 0 at position 4
    weights[0, 0, 1, 2] = weights[0, 0, 1, 3] = 0.5  # region 1 at 2.5 for head 0
    weights[0, 1, 1, 5] = 1.0  # and at 5 for head 1
    bias = bias_module(weights)  # (B, Ht, T, R)
    assert bias.shape == (1, 2, 6, 2)

    def table(hi, offset, ht):  # the hand formula, clamped to the span
        return 100 * hi + 10 * (min(max(offset, -2), 2) + 2) + ht

    for ht in range(2):
        for t in range(6):
            region0 = table(0, 1 - t, ht) + table(1, 4 - t, ht)
            # 2.5 - t lies halfway between the rows of offsets 2 - t and 3 - t (both clamped to the span)
            region1 = (table(0, 2 - t, ht) + table(0, 3 - t, ht)) / 2 + table(1, 5 - t, ht)
            assert bias[0, ht, t, 0].item() == pytest.approx(region0)
            assert bias[0, ht, t, 1].item() == pytest.approx(region1)


def _reference_co_layer(layer, text, image, text_keep, image_keep, locations, span, gain):
    """The co-layer with the grounded position bias, written out in float64 from the layer's weights."""
    text, image, locations = text.double(), image.double(), locations.double()
    image = image + locations @ layer.box_embedding.weight.double().T + layer.box_embedding.bias.double()

    def heads(linear, x, num_heads):  # (B, L, C) -> (B, H, L, D)
        y = x @ linear.weight.double().T + linear.bias.double()
        return y.view(x.shape[0], x.shape[1], num_heads, -1).transpose(1, 2)

    def residual(output, x, attended):
        y = attended @ output.dense.weight.double().T + output.dense.bias.double() + x
        return F.layer_norm(
            y, y.shape[-1:], output.LayerNorm.weight.double(), output.LayerNorm.bias.double(), 1e-12
        )

    image_to_text = layer.image_attention.self
    q, k, v = (
        heads(m, x, 2)
        for m, x in zip((image_to_text.query, image_to_text.key, image_to_text.value), (image, text, text))
    )
    d = q.shape[-1]
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)  # (B, Hi, R, T)
    weights = torch.softmax(scores.masked_fill(~text_keep[:, None, None, :], -math.inf), -1)
    image_attended = (weights @ v).transpose(1, 2).flatten(2)
    grounded = (weights * torch.arange(text.shape[1], dtype=torch.float64)).sum(-1)  # (B, Hi, R)
    table = layer.position_bias.table.double() * gain  # (Hi, 2 span + 1, Ht)
    batch, num_tokens, num_regions = text.shape[0], text.shape[1], image.shape[1]
    bias = torch.zeros(batch, 2, num_tokens, num_regions, dtype=torch.float64)
    for b in range(batch):
        for hi in range(2):
            for t in range(num_tokens):
                for r in range(num_regions):
                    offset = min(max(grounded[b, hi, r].item() - t, -span), span) + span
                    low = min(math.floor(offset), 2 * span - 1)
                    frac = offset - low
                    bias[b, :, t, r] += (1 - frac) * table[hi, low] + frac * table[hi, low + 1]

    attention = layer.text_attention.self
    q, k, v = (
        heads(m, x, 2)
        for m, x in zip((attention.query, attention.key, attention.value), (text, image, image))
    )
    scores = q @ k.transpose(-1, -2) / math.sqrt(d) + bias
    text_to_image = torch.softmax(scores.masked_fill(~image_keep[:, None, None, :], -math.inf), -1)
    text_attended = (text_to_image @ v).transpose(1, 2).flatten(2)

    def feed_forward(module, x):
        hidden = F.gelu(
            x @ module.intermediate.dense.weight.double().T + module.intermediate.dense.bias.double()
        )
        return residual(module.output, x, hidden)

    text_out = feed_forward(
        layer.text_feed_forward, residual(layer.text_attention.output, text, text_attended)
    )
    image_out = feed_forward(
        layer.image_feed_forward, residual(layer.image_attention.output, image, image_attended)
    )
    return text_out, image_out, scores_mean_over_heads(layer, text, image), (text_to_image, weights)


def scores_mean_over_heads(layer, text, image):
    """Unmasked image->text logits averaged over heads (B, R, T), in float64 (the box already added)."""
    attention = layer.image_attention.self
    q = (image @ attention.query.weight.double().T + attention.query.bias.double()).view(
        *image.shape[:2], 2, -1
    )
    k = (text @ attention.key.weight.double().T + attention.key.bias.double()).view(*text.shape[:2], 2, -1)
    return torch.einsum("brhd,bthd->brt", q, k) / math.sqrt(q.shape[-1]) / 2


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_co_layer_with_the_position_bias_matches_a_float64_reference(grounded_config, attn_implementation):
    torch.manual_seed(0)
    config = copy.deepcopy(grounded_config)
    model = ErnieVilGroundedForPreTraining(config).eval()
    model.set_attn_implementation(attn_implementation)
    layer = model.ernievil.co_layers[0]
    with torch.no_grad():
        layer.position_bias.table.normal_(0.0, 0.05)  # x gain 20: biases of order 1
    text, image = torch.randn(2, 7, config.hidden_size), torch.randn(2, 5, config.v_hidden_size)
    locations = torch.rand(2, 5, 5)
    text_keep = torch.tensor([[1] * 7, [1] * 4 + [0] * 3]).bool()
    image_keep = torch.tensor([[1] * 5, [1] * 3 + [0] * 2]).bool()
    masks = [
        (1.0 - keep[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for keep in (text_keep, image_keep)
    ]
    with torch.no_grad():
        text_out, image_out, attentions = layer(text, image, *masks, locations, output_attentions=True)
    ref_text, ref_image, _, ref_attentions = _reference_co_layer(
        layer, text, image, text_keep, image_keep, locations, config.grounded_position_span, 20.0
    )
    torch.testing.assert_close(text_out[text_keep].double(), ref_text[text_keep], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(image_out.double(), ref_image, atol=1e-4, rtol=1e-4)
    for weights, reference in zip(attentions, ref_attentions):  # text->image, image->text
        torch.testing.assert_close(weights.double(), reference, atol=1e-5, rtol=1e-4)
    with (
        torch.no_grad()
    ):  # without output_attentions text->image takes the config's function, to the same result
        plain_text, plain_image, no_attentions = layer(text, image, *masks, locations)
    assert no_attentions is None
    torch.testing.assert_close(plain_text[text_keep], text_out[text_keep], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain_image, image_out, atol=1e-5, rtol=1e-5)


def test_grounding_loss_matches_an_independent_float64_computation(
    grounded_config, batch_factory, pretraining_model
):
    """The head-mean attention logits of every grounding co-layer, computed here from the layer's weights in
    float64, against each region's target position; the model takes them from the attention weights."""
    model = pretraining_model(grounded_config).double().eval()
    batch = {k: v.double() if v.is_floating_point() else v for k, v in batch_factory(grounded_config).items()}
    assert grounded_config.grounding_co_layers == [0, 1]
    captured = {}
    for index in grounded_config.grounding_co_layers:
        model.ernievil.co_layers[index].register_forward_pre_hook(
            lambda module, args, kwargs, index=index: captured.update({index: (args, kwargs)}),
            with_kwargs=True,
        )
    out = model(**batch)
    targets = batch["region_word_targets"]
    grounded = targets != -100
    per_layer = []
    for index in grounded_config.grounding_co_layers:
        layer = model.ernievil.co_layers[index]
        (text, image, _, _), kwargs = captured[index]
        image = image + layer.box_embedding(kwargs["region_locations"].to(image.dtype))
        logits = scores_mean_over_heads(layer, text, image)[:, 1:]  # (B, R, T) without [IMG]
        logits = logits.masked_fill(~batch["attention_mask"].bool()[:, None, :], -math.inf)
        per_layer.append(F.cross_entropy(logits[grounded], targets[grounded]))
    torch.testing.assert_close(out.grounding_loss, sum(per_layer) / len(per_layer))


def test_grounding_weight_scales_the_loss_and_targets_need_a_grounding_layer(
    grounded_config, batch_factory, pretraining_model
):
    model = pretraining_model(grounded_config).eval()
    batch = batch_factory(grounded_config)
    full = model(**batch)
    model.config.task_loss_weights = {**model.config.task_loss_weights, "grounding": 0.25}
    weighted = model(**batch)
    torch.testing.assert_close(weighted.loss, full.loss - 0.75 * full.grounding_loss)
    assert full.co_attentions is None  # read for the loss, returned only when asked for

    without = pretraining_model(ErnieVilConfig.from_preset("tiny-grounded", grounding_co_layers=[]))
    with pytest.raises(ValueError, match="no grounding loss"):
        without(**batch)
    batch.pop("region_word_targets")
    assert without(**batch).grounding_loss is None


def test_no_grounded_region_leaves_the_other_losses_alone(grounded_config, batch_factory, pretraining_model):
    model = pretraining_model(grounded_config).eval()
    batch = batch_factory(grounded_config)
    batch["region_word_targets"][:] = -100
    out = model(**batch)
    assert torch.isnan(out.grounding_loss)
    batch.pop("region_word_targets")
    torch.testing.assert_close(out.loss, model(**batch).loss)


def test_a_position_bias_that_starts_at_zero_changes_nothing(
    grounded_config, batch_factory, pretraining_model
):
    """The table starts at zero, so a fresh model with the bias computes what one without it does."""
    with_bias = pretraining_model(grounded_config).eval()
    plain = pretraining_model(
        ErnieVilConfig.from_preset("tiny-grounded", grounded_position_bias=False)
    ).eval()
    state = {k: v for k, v in with_bias.state_dict().items() if "position_bias" not in k}
    plain.load_state_dict(state)
    assert all(torch.all(layer.position_bias.table == 0) for layer in with_bias.ernievil.co_layers)
    batch = batch_factory(grounded_config)
    with torch.no_grad():
        torch.testing.assert_close(with_bias(**batch).loss, plain(**batch).loss)


def test_the_grounded_presets_start_geometry_and_grounding_at_fan_in_std(grounded_config, pretraining_model):
    """Co-attention queries/keys and the location projection at 1/sqrt(fan-in), box embeddings at 3x that;
    every other weight at the paper's std."""
    model = pretraining_model(grounded_config).ernievil
    for layer in model.co_layers:
        for attention in (layer.text_attention.self, layer.image_attention.self):
            for projection in (attention.query, attention.key):
                assert projection.weight.std().item() == pytest.approx(projection.in_features**-0.5, rel=0.15)
                assert torch.all(projection.bias == 0)
            assert attention.value.weight.std().item() == pytest.approx(0.02 * 0.8796, rel=0.15)
        assert layer.box_embedding.weight.std().item() == pytest.approx(3 * 5**-0.5, rel=0.3)
    location = model.image_embeddings.location_projection
    assert location.weight.std().item() == pytest.approx(5**-0.5, rel=0.3)
    assert model.text_layers[0].attention.self.query.weight.abs().max() <= 0.04


@pytest.mark.parametrize("box_embeddings", [True, False])
def test_co_layer_box_embeddings_carry_the_boxes_into_every_co_layer(
    grounded_config, batch_factory, encoder_inputs, box_embeddings
):
    """With the image embeddings' location projection zeroed, the boxes reach the text stream through the
    co-layers' box embeddings, and only through them."""
    config = copy.deepcopy(grounded_config)
    config.co_layer_box_embeddings = box_embeddings
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    with torch.no_grad():
        model.image_embeddings.location_projection.weight.zero_()
        model.image_embeddings.location_projection.bias.zero_()
    batch = encoder_inputs(batch_factory(config))
    moved = dict(batch, region_boxes=batch["region_boxes"] * 0.5)  # every real box moves, stays valid
    with torch.no_grad():
        text, moved_text = (model(**inputs).text_hidden_states for inputs in (batch, moved))
    changed = (text - moved_text)[batch["attention_mask"].bool()].abs().max().item()
    assert changed > 1e-3 if box_embeddings else changed == 0.0


def test_a_grounded_model_round_trips_through_the_auto_classes(grounded_config, tmp_path, pretraining_model):
    model = pretraining_model(grounded_config)
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "ernievil_grounded"
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert type(loaded) is ErnieVilGroundedForPreTraining
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_grounded_forward_takes_the_paper_models_inputs_by_position_too(
    grounded_config, batch_factory, pretraining_model
):
    model = pretraining_model(grounded_config).eval()
    names = list(inspect.signature(ErnieVilForPreTraining.forward).parameters)[1:]
    grounded_names = list(inspect.signature(ErnieVilGroundedForPreTraining.forward).parameters)[1:]
    assert grounded_names == [*names, "region_word_targets"]
    batch = batch_factory(grounded_config)
    by_keyword = model(**batch)
    by_position = model(
        *(batch.get(name, False if name == "output_attentions" else None) for name in grounded_names)
    )
    torch.testing.assert_close(by_position.loss, by_keyword.loss, rtol=0, atol=0)
    torch.testing.assert_close(by_position.grounding_loss, by_keyword.grounding_loss, rtol=0, atol=0)


COUNTING = "counting-sdpa-test"


@pytest.fixture
def attention_calls():
    """A registered attention function that records (query length, key length) per call, then runs sdpa."""
    calls = []

    def counting(module, query, key, value, attention_mask, **kwargs):
        calls.append((query.shape[2], key.shape[2]))  # (B, H, L, D)
        return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register(COUNTING, counting)
    return calls


@pytest.mark.parametrize(
    ("targets", "output_attentions", "configured_co_directions"),
    [(False, False, ["text->image"]), (True, False, []), (False, True, [])],
)
def test_dispatch_is_as_the_docstrings_say(
    grounded_config,
    batch_factory,
    pretraining_model,
    attention_calls,
    targets,
    output_attentions,
    configured_co_directions,
):
    """The configured function runs every self-attention; in each grounded co-layer the image->text
    direction is always eager, and text->image is eager too once weights are asked for (the grounding loss
    asks for them)."""
    model = pretraining_model(grounded_config).eval()
    model.config._attn_implementation = COUNTING
    batch = batch_factory(grounded_config)
    if not targets:
        batch.pop("region_word_targets")
    text_length, regions = batch["input_ids"].shape[1], batch["region_features"].shape[1] + 1  # with [IMG]
    assert text_length != regions
    outputs = model(**batch, output_attentions=output_attentions)
    config = model.config
    kinds = {
        (text_length, text_length): "text self",
        (regions, regions): "image self",
        (text_length, regions): "text->image",
        (regions, text_length): "image->text",
    }
    counted = {kind: 0 for kind in kinds.values()}
    for call in attention_calls:
        counted[kinds[call]] += 1
    co_layers = len(config.text_co_layer_ids)
    assert counted == {
        "text self": config.num_hidden_layers,
        "image self": config.v_num_hidden_layers,
        "text->image": co_layers if "text->image" in configured_co_directions else 0,
        "image->text": 0,
    }
    assert (outputs.co_attentions is not None) == output_attentions
