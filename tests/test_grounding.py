"""The grounding loss and the grounded position bias (not in ERNIE-ViL; on in the tiny and small presets)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.nn import functional as F

from ernievil_ds import ErnieVilConfig, ErnieVilForPreTraining
from ernievil_ds.modeling_ernievil import ErnieVilGroundedPositionBias
from tests.test_modeling import encoder_inputs


def test_position_bias_reads_the_table_at_each_regions_offset_by_hand():
    """Two image->text heads, two text->image heads, span 2: hand-computed table reads."""
    config = ErnieVilConfig.from_preset("tiny", grounded_position_span=2, grounded_position_gain=10.0)
    bias_module = ErnieVilGroundedPositionBias(config)
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
def test_co_layer_with_the_position_bias_matches_a_float64_reference(tiny_config, attn_implementation):
    torch.manual_seed(0)
    config = copy.deepcopy(tiny_config)
    model = ErnieVilForPreTraining(config).eval()
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
        text_out, image_out, scores, attentions = layer(
            text, image, *masks, locations, output_attentions=True
        )
    ref_text, ref_image, ref_scores, ref_attentions = _reference_co_layer(
        layer, text, image, text_keep, image_keep, locations, config.grounded_position_span, 20.0
    )
    torch.testing.assert_close(text_out[text_keep].double(), ref_text[text_keep], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(image_out.double(), ref_image, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(scores.double(), ref_scores, atol=1e-4, rtol=1e-4)
    for weights, reference in zip(attentions, ref_attentions):  # text->image, image->text
        torch.testing.assert_close(weights.double(), reference, atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # without output_attentions the layer takes the fused path, to the same result
        fused_text, fused_image, _, no_attentions = layer(text, image, *masks, locations)
    assert no_attentions is None
    torch.testing.assert_close(fused_text[text_keep], text_out[text_keep], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused_image, image_out, atol=1e-5, rtol=1e-5)


def test_grounding_loss_matches_an_independent_float64_computation(tiny_config, batch_factory):
    torch.manual_seed(0)
    model = ErnieVilForPreTraining(tiny_config).double().eval()
    batch = {k: v.double() if v.is_floating_point() else v for k, v in batch_factory(tiny_config).items()}
    assert tiny_config.grounding_co_layers == [0, 1]
    captured = {}
    for index in tiny_config.grounding_co_layers:
        model.ernievil.co_layers[index].register_forward_pre_hook(
            lambda module, args, index=index: captured.update({index: args})
        )
    out = model(**batch)
    targets = batch["region_word_targets"]
    grounded = targets != -100
    per_layer = []
    for index in tiny_config.grounding_co_layers:
        layer = model.ernievil.co_layers[index]
        text, image, _, _, locations, _ = captured[index]
        image = image + layer.box_embedding(locations.to(image.dtype))
        logits = scores_mean_over_heads(layer, text, image)[:, 1:]  # (B, R, T) without [IMG]
        logits = logits.masked_fill(~batch["attention_mask"].bool()[:, None, :], -math.inf)
        per_layer.append(F.cross_entropy(logits[grounded], targets[grounded]))
    torch.testing.assert_close(out.grounding_loss, sum(per_layer) / len(per_layer))


def test_grounding_weight_scales_the_loss_and_targets_need_a_grounding_layer(tiny_config, batch_factory):
    torch.manual_seed(0)
    model = ErnieVilForPreTraining(tiny_config).eval()
    batch = batch_factory(tiny_config)
    full = model(**batch)
    model.config.task_loss_weights = {**model.config.task_loss_weights, "grounding": 0.25}
    weighted = model(**batch)
    torch.testing.assert_close(weighted.loss, full.loss - 0.75 * full.grounding_loss)

    torch.manual_seed(0)
    without = ErnieVilForPreTraining(ErnieVilConfig.from_preset("tiny", grounding_co_layers=[]))
    with pytest.raises(ValueError, match="no grounding loss"):
        without(**batch)
    batch.pop("region_word_targets")
    assert without(**batch).grounding_loss is None
    assert without.ernievil(**encoder_inputs(batch)).grounding_scores is None


def test_a_position_bias_that_starts_at_zero_changes_nothing(tiny_config, batch_factory):
    """The table starts at zero, so a fresh model with the bias computes what one without it does."""
    torch.manual_seed(0)
    with_bias = ErnieVilForPreTraining(tiny_config).eval()
    plain = ErnieVilForPreTraining(ErnieVilConfig.from_preset("tiny", grounded_position_bias=False)).eval()
    state = {k: v for k, v in with_bias.state_dict().items() if "position_bias" not in k}
    plain.load_state_dict(state)
    assert all(torch.all(layer.position_bias.table == 0) for layer in with_bias.ernievil.co_layers)
    batch = batch_factory(tiny_config)
    with torch.no_grad():
        torch.testing.assert_close(with_bias(**batch).loss, plain(**batch).loss)
