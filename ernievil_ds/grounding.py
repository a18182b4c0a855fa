"""The CPU demo's grounded variant of ERNIE-ViL: three extras for relations, not in the paper.

On a 15-minute CPU budget the paper's model learns attributes but not which two regions a masked
relation is about (``docs/design-notes.md``). The grounded presets (``small``, ``tiny-grounded``; an
``ErnieVilGroundedConfig``) add, beside the paper's architecture:

- **co-layer box embeddings**: every co-layer adds its own learned embedding of the regions' 5-d locations
  to the image states, as DETR re-adds its positional encodings at every layer;
- **a grounding loss**: the cross-entropy of the image->text attention of ``grounding_co_layers``,
  averaged over heads, against the caption position of the word that names each region (the collator's
  ``region_word_targets``);
- **a grounded position bias**: each region's grounded text position, where its image->text attention
  lands, biases every text->image head by the offset from the query token to that position.

Everything else, the attention functions included, is ``ernievil_ds.modeling_ernievil``'s.

Shape legend: B batch, T text tokens, R image regions including [IMG], Hi image->text heads, Ht
text->image heads (Hi = Ht = H), L grounding co-layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init

from ernievil_ds.configuration_ernievil import ErnieVilGroundedConfig
from ernievil_ds.modeling_ernievil import (
    CoAttentionLayerOutput,
    ErnieVilCoAttentionLayer,
    ErnieVilForPreTraining,
    ErnieVilForPreTrainingOutput,
    ErnieVilModel,
    ErnieVilPreTrainedModel,
    TaskLoss,
    at_least_float32,
)
from ernievil_ds.objectives import GROUNDING_TASK, IGNORE_INDEX

#: The co-layer box embeddings start at this multiple of the location projection's fan-in std: at 1x and
#: 2x the demo's relations stay at chance through its 700 steps (docs/design-notes.md).
BOX_EMBEDDING_INIT_SCALE = 3.0


class GroundedPositionBias(nn.Module):
    """A text->image attention bias from where each region is grounded in the caption.

    A region's grounded position is the expected text position of its image->text attention in the same
    co-layer, one per image->text head. Every text->image head gets, for each (token, region), a learned
    bias by the offset from the token to that position, clamped to ``-span .. span`` and read from a table
    (image->text head, offset, text->image head) by linear interpolation, summed over image->text heads.
    So "the noun just before me" and "the noun two words after me", a relation's subject and object,
    become attention targets that plain dot products do not learn to find in the CPU demo's budget.

    The table starts at zero (no bias) and is multiplied by ``gain``: Adam moves a parameter by about the
    learning rate per step whatever its gradient, and at gain 1 the biases stayed under 0.03 in 700 steps.
    """

    def __init__(self, config: ErnieVilGroundedConfig):
        super().__init__()
        heads = config.co_num_attention_heads
        self.span = config.grounded_position_span
        self.gain = float(config.grounded_position_gain)
        self.table = nn.Parameter(torch.zeros(heads, 2 * self.span + 1, heads))  # (Hi, 2*span+1, Ht)

    def forward(self, image_to_text_weights: torch.Tensor) -> torch.Tensor:
        """image_to_text_weights (B, Hi, R, T), rows summing to 1 -> additive text->image bias (B, Ht, T, R)."""
        weights = image_to_text_weights.float()
        positions = torch.arange(weights.shape[-1], device=weights.device, dtype=torch.float32)  # (T,)
        grounded = weights @ positions  # (B, Hi, R)
        offset = (grounded[:, :, None, :] - positions[:, None]).clamp(-self.span, self.span) + self.span
        low = offset.floor().clamp(max=2 * self.span - 1)  # (B, Hi, T, R): the table row below the offset
        table = self.table.float() * self.gain  # (Hi, 2*span+1, Ht)
        head = torch.arange(table.shape[0], device=weights.device)[:, None, None]  # (Hi, 1, 1)
        index = low.long()
        bias = torch.lerp(table[head, index], table[head, index + 1], (offset - low)[..., None])
        return bias.sum(1).permute(0, 3, 1, 2).to(image_to_text_weights.dtype)  # (B, Ht, T, R)


class GroundedCoAttentionLayer(ErnieVilCoAttentionLayer):
    """The paper's co-layer with the box embedding and the grounded position bias.

    The image->text direction runs first, always through the eager attention function: its weights
    ground the regions. With the position bias, those weights bias the text->image direction, which runs
    through the config's attention function (``config._attn_implementation``), unless
    ``output_attentions=True`` asks for its weights too: then it is eager as well.
    """

    def __init__(self, config: ErnieVilGroundedConfig):
        super().__init__(config)
        self.box_embedding = (
            nn.Linear(config.v_loc_size, config.v_hidden_size) if config.co_layer_box_embeddings else None
        )
        self.position_bias = GroundedPositionBias(config) if config.grounded_position_bias else None
        for attention in (self.text_attention.self, self.image_attention.self):
            for projection in (attention.query, attention.key):
                projection.init_std = projection.in_features**-0.5
        if self.box_embedding is not None:
            self.box_embedding.init_std = BOX_EMBEDDING_INIT_SCALE * config.v_loc_size**-0.5

    def forward(
        self,
        text_states: torch.Tensor,
        image_states: torch.Tensor,
        text_mask: torch.Tensor,
        image_mask: torch.Tensor,
        region_locations: torch.Tensor,
        output_attentions: bool = False,
    ) -> CoAttentionLayerOutput:
        """As [`ErnieVilCoAttentionLayer`], with the regions' 5-d locations (B, R, 5). The image->text weights
        are always computed, eagerly (they ground the regions); the text->image direction runs through the
        config's attention function, or eagerly with ``output_attentions`` (which returns both weights)."""
        if self.box_embedding is not None:
            image_states = image_states + self.box_embedding(region_locations.to(image_states.dtype))
        image_attended, image_to_text = self.image_attention(
            image_states, text_states, text_mask, output_attentions=True
        )
        if self.position_bias is not None:
            image_mask = image_mask + self.position_bias(image_to_text)  # (B, Ht, T, R)
        text_attended, text_to_image = self.text_attention(
            text_states, image_states, image_mask, output_attentions
        )
        return CoAttentionLayerOutput(
            self.text_feed_forward(text_attended),
            self.image_feed_forward(image_attended),
            (text_to_image, image_to_text) if output_attentions else None,
        )


def grounding_loss(
    image_to_text_weights: list[torch.Tensor], region_word_targets: torch.Tensor, attention_mask: torch.Tensor
) -> TaskLoss:
    """Cross-entropy of each region's image->text attention, averaged over heads and co-layers, against the
    position of the caption word that names it.

    The logits are the head-mean log attention weights: per region they differ from the head-mean
    attention logits by a constant (each head's log-normaliser), so the softmax over text positions, and
    the loss, are those of the head-mean logits.

    Args:
        image_to_text_weights: one (B, H, R, T) tensor per grounding co-layer, [IMG] at region 0.
        region_word_targets: (B, R - 1): the text position of each input region's word, -100 where none.
        attention_mask: (B, T), 1 for real tokens (padding cannot be a target).

    Returns:
        the loss averaged over (co-layer, grounded region), and the number of those pairs (0 when no region
        is grounded, the loss then a zero connected to the attention).
    """
    layers = len(image_to_text_weights)
    weights = at_least_float32(torch.stack(image_to_text_weights))[:, :, :, 1:]  # (L, B, H, R - 1, T)
    logits = weights.clamp_min(torch.finfo(weights.dtype).tiny).log().mean(2)  # (L, B, R - 1, T)
    logits = logits.masked_fill(~attention_mask.bool()[None, :, None, :], torch.finfo(logits.dtype).min)
    targets = region_word_targets.expand(layers, *region_word_targets.shape)  # (L, B, R - 1)
    # Ungrounded regions are ignored rather than selected out: every shape stays known to the compiler.
    total = F.cross_entropy(
        logits.flatten(0, 2), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )  # over (L * B * (R - 1), T)
    count = (region_word_targets != IGNORE_INDEX).sum() * layers
    return TaskLoss(total / count.clamp(min=1), count)


class ErnieVilGroundedPreTrainedModel(ErnieVilPreTrainedModel):
    config_class = ErnieVilGroundedConfig
    config: ErnieVilGroundedConfig
    _no_split_modules = ["ErnieVilLayer", "GroundedCoAttentionLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        """The paper's initialisation, except where the extras need geometry and grounding from the first
        step: the co-attention query/key projections and the location projections start at std
        1/sqrt(fan-in), the box embeddings at ``BOX_EMBEDDING_INIT_SCALE`` times that (both marked with
        their ``init_std`` by ``GroundedCoAttentionLayer``), the position bias table at zero.

        At std 0.02 a co-attention query.key logit starts ~0.1 from uniform, and Adam takes hundreds of steps
        to grow both matrices before a word can single out its region; the 5-d location enters beside a
        2048-d feature and its share of the region embedding starts ~60x smaller than the feature's.
        """
        super()._init_weights(module)
        if isinstance(module, GroundedPositionBias):
            init.zeros_(module.table)
        elif isinstance(module, nn.Linear) and hasattr(module, "init_std"):
            init.normal_(module.weight, mean=0.0, std=module.init_std)
        elif isinstance(module, nn.Linear) and module.in_features == self.config.v_loc_size:
            # The image embeddings' location projection, the encoder's one other 5-input layer.
            init.normal_(module.weight, mean=0.0, std=module.in_features**-0.5)


class ErnieVilGroundedModel(ErnieVilGroundedPreTrainedModel, ErnieVilModel):
    """[`ErnieVilModel`] with grounded co-layers, which also read the regions' locations."""

    co_layer_class = GroundedCoAttentionLayer

    def co_layer_inputs(self, region_locations: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"region_locations": region_locations}


@dataclass
class ErnieVilGroundedForPreTrainingOutput(ErnieVilForPreTrainingOutput):
    r"""[`ErnieVilForPreTrainingOutput`] plus the grounding loss.

    grounding_loss: cross-entropy of each grounded region's image->text attention against the position of
        the caption word that names it, averaged over `config.grounding_co_layers`; its weight in `loss` is
        `config.task_loss_weights["grounding"]`; NaN when `region_word_targets` ground no region.
    """

    grounding_loss: torch.FloatTensor | None = None


class ErnieVilGroundedForPreTraining(ErnieVilGroundedPreTrainedModel, ErnieVilForPreTraining):
    """[`ErnieVilForPreTraining`] on the grounded encoder, with the grounding loss."""

    encoder_class = ErnieVilGroundedModel

    def forward(
        self,
        input_ids: torch.LongTensor,
        region_features: torch.FloatTensor,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        region_mask: torch.LongTensor | None = None,
        region_boxes: torch.FloatTensor | None = None,
        image_sizes: torch.FloatTensor | None = None,
        region_locations: torch.FloatTensor | None = None,
        masked_regions: torch.BoolTensor | None = None,
        labels: torch.LongTensor | None = None,
        task_ids: torch.LongTensor | None = None,
        region_class_targets: torch.FloatTensor | None = None,
        region_feature_targets: torch.FloatTensor | None = None,
        itm_labels: torch.LongTensor | None = None,
        masked_token_positions: torch.LongTensor | None = None,
        masked_token_weights: torch.FloatTensor | None = None,
        masked_region_positions: torch.LongTensor | None = None,
        masked_region_weights: torch.FloatTensor | None = None,
        output_attentions: bool = False,
        region_word_targets: torch.LongTensor | None = None,
    ) -> ErnieVilGroundedForPreTrainingOutput:
        r"""
        Takes [`ErnieVilForPreTraining`]'s inputs, in its order, plus:

            region_word_targets (`torch.LongTensor` of shape `(batch_size, num_regions)`): for each input
                region, the text position of the caption word that names it, -100 where none does; the
                grounding loss's target.

        Attention dispatch: without `region_word_targets` and `output_attentions`, every attention runs
        through `config._attn_implementation`, except each grounded co-layer's image->text direction, which
        is always eager. With `region_word_targets`, the grounding loss needs the image->text weights of
        `config.grounding_co_layers`, and the encoder runs with `output_attentions=True`: both directions of
        every co-layer then run eagerly (the text and image self-attention layers keep the configured
        function), and `co_attentions` is returned only when `output_attentions` was asked for.
        """
        inputs = {
            "input_ids": input_ids,
            "region_features": region_features,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
            "region_mask": region_mask,
            "region_boxes": region_boxes,
            "image_sizes": image_sizes,
            "region_locations": region_locations,
            "masked_regions": masked_regions,
            "labels": labels,
            "task_ids": task_ids,
            "region_class_targets": region_class_targets,
            "region_feature_targets": region_feature_targets,
            "itm_labels": itm_labels,
            "masked_token_positions": masked_token_positions,
            "masked_token_weights": masked_token_weights,
            "masked_region_positions": masked_region_positions,
            "masked_region_weights": masked_region_weights,
        }
        if region_word_targets is None:
            return ErnieVilGroundedForPreTrainingOutput(
                **super().forward(**inputs, output_attentions=output_attentions)
            )
        if not self.config.grounding_co_layers:
            raise ValueError(
                "region_word_targets were given but this model computes no grounding loss "
                "(config.grounding_co_layers is empty)"
            )
        outputs = super().forward(**inputs, output_attentions=True)
        text_keep = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        return self.add_grounding_loss(outputs, region_word_targets, text_keep, output_attentions)

    def add_grounding_loss(
        self,
        outputs: ErnieVilForPreTrainingOutput,
        region_word_targets: torch.LongTensor,
        text_keep: torch.Tensor,
        output_attentions: bool,
    ) -> ErnieVilGroundedForPreTrainingOutput:
        """The pretraining outputs (run with attention weights) with the grounding loss of the image->text
        weights of ``config.grounding_co_layers`` against region_word_targets (B, R), text_keep (B, T)
        added to ``loss``; ``co_attentions`` kept only when ``output_attentions`` was asked for."""
        image_to_text = [outputs.co_attentions[i][1] for i in self.config.grounding_co_layers]
        loss = grounding_loss(image_to_text, region_word_targets, text_keep)
        weighted = self.config.task_loss_weights[GROUNDING_TASK] * loss.mean
        total = weighted if outputs.loss is None else outputs.loss + weighted
        return ErnieVilGroundedForPreTrainingOutput(
            **{
                **outputs,
                "loss": total,
                "co_attentions": outputs.co_attentions if output_attentions else None,
            },
            grounding_loss=loss.reported(),
        )


__all__ = [
    "ErnieVilGroundedForPreTraining",
    "ErnieVilGroundedForPreTrainingOutput",
    "ErnieVilGroundedModel",
    "GroundedCoAttentionLayer",
    "GroundedPositionBias",
    "grounding_loss",
]
