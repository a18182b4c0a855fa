"""PyTorch ERNIE-ViL: a two-stream (text / image-region) transformer joined by co-attention layers.

Shape legend used in comments: B batch, T text tokens, R image regions including the leading [IMG]
region, H attention heads, D head dim, C hidden width of the stream at hand, N selected positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from ernievil_ds.configuration_ernievil import ErnieVilConfig

#: Tolerance, as a fraction of the image side, for boxes that a detector placed a hair outside the image.
BOX_TOLERANCE = 0.01


def scaled_dot_products(query: torch.Tensor, key: torch.Tensor, scaling: float) -> torch.Tensor:
    """query (B, H, Lq, D), key (B, H, Lk, D) -> attention logits before any mask (B, H, Lq, Lk)."""
    return torch.matmul(query, key.transpose(2, 3)) * scaling


def softmax_attention(
    module: nn.Module, scores: torch.Tensor, value: torch.Tensor, dropout: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked logits (B, H, Lq, Lk) and value (B, H, Lk, D) -> attn_output (B, Lq, H, D) and attn_weights
    (B, H, Lq, Lk); the softmax runs in float32."""
    attn_weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()  # (B, Lq, H, D)
    return attn_output, attn_weights


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention, the reference the other implementations are held to.

    Args:
        query: (B, H, Lq, D); key, value: (B, H, Lk, D).
        attention_mask: additive, broadcastable to (B, H, Lq, Lk).

    Returns:
        attn_output (B, Lq, H, D) and attn_weights (B, H, Lq, Lk).
    """
    scores = scaled_dot_products(query, key, scaling)  # (B, H, Lq, Lk)
    if attention_mask is not None:
        scores = scores + attention_mask
    return softmax_attention(module, scores, value, dropout)


def biased_mask(mask: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """An additive mask (B, 1, 1, Lk) plus an optional additive bias (B, H, Lq, Lk)."""
    return mask if bias is None else mask + bias


def additive_attention_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Turn a (B, L) keep-mask (1 = attend) into an additive (B, 1, 1, L) mask in ``dtype``."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min  # (B, 1, 1, L)


class ErnieVilCoAttentionProjection(nn.Linear):
    """A co-attention query or key projection: a class of its own so that ``_init_weights`` starts it wider."""


class ErnieVilBoxEmbedding(nn.Linear):
    """A co-layer's box embedding, 5-d location -> image width: a class of its own so that ``_init_weights``
    starts it wider than the image embeddings' location projection."""


class ErnieVilMultiHeadAttention(nn.Module):
    """Multi-head attention whose queries and keys/values may come from streams of different widths.

    Self-attention uses one width throughout; a co-attention direction projects queries of one stream and
    keys/values of the other to the co-attention width. The kernel is looked up in
    ``ALL_ATTENTION_FUNCTIONS`` by ``config._attn_implementation`` (``eager``, ``sdpa``, ...).
    """

    is_causal = False

    def __init__(
        self,
        config: ErnieVilConfig,
        query_size: int,
        key_value_size: int,
        inner_size: int,
        num_heads: int,
        co_attention: bool = False,
    ):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = inner_size // num_heads
        self.scaling = self.head_dim**-0.5
        query_key = ErnieVilCoAttentionProjection if co_attention else nn.Linear
        self.query = query_key(query_size, inner_size)
        self.key = query_key(key_value_size, inner_size)
        self.value = nn.Linear(key_value_size, inner_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _project(
        self, hidden_states: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """hidden_states (B, Lq, Cq), context (B, Lk, Ck) -> query (B, H, Lq, D), key and value (B, H, Lk, D)."""
        batch, q_len, _ = hidden_states.shape
        k_len = context.shape[1]
        query = self.query(hidden_states).view(batch, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        key = self.key(context).view(batch, k_len, self.num_heads, self.head_dim).transpose(1, 2)
        value = self.value(context).view(batch, k_len, self.num_heads, self.head_dim).transpose(1, 2)
        return query, key, value

    def forward(
        self,
        hidden_states: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        attention_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """hidden_states (B, Lq, Cq), context (B, Lk, Ck), additive context_mask (B, 1, 1, Lk) and an optional
        additive attention_bias (B, H, Lq, Lk) -> (B, Lq, inner)."""
        query, key, value = self._project(hidden_states, context)
        mask = biased_mask(context_mask, attention_bias)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, _ = attention_interface(
            self,
            query,
            key,
            value,
            mask,
            dropout=self.dropout.p if self.training else 0.0,
            scaling=self.scaling,
        )
        return attn_output.flatten(2)  # (B, Lq, H*D)

    def forward_with_scores(
        self,
        hidden_states: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        attention_bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``forward`` computed explicitly, for callers that need the attention's logits and weights.

        Returns:
            attn_output (B, Lq, inner), scores (B, H, Lq, Lk): the logits before the mask and the bias, and
            attn_weights (B, H, Lq, Lk).
        """
        query, key, value = self._project(hidden_states, context)
        scores = scaled_dot_products(query, key, self.scaling)  # (B, H, Lq, Lk)
        masked = scores + biased_mask(context_mask, attention_bias)
        attn_output, attn_weights = softmax_attention(
            self, masked, value, self.dropout.p if self.training else 0.0
        )
        return attn_output.flatten(2), scores, attn_weights


class ErnieVilResidualOutput(nn.Module):
    """Projection back to the stream width, dropout, residual and post-LayerNorm (BERT's ``*Output``)."""

    def __init__(self, config: ErnieVilConfig, input_size: int, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(input_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class ErnieVilAttention(nn.Module):
    """Attention (self or one co-attention direction) + output projection + residual + LayerNorm."""

    def __init__(
        self,
        config: ErnieVilConfig,
        query_size: int,
        key_value_size: int,
        inner_size: int,
        num_heads: int,
        co_attention: bool = False,
    ):
        super().__init__()
        self.self = ErnieVilMultiHeadAttention(
            config, query_size, key_value_size, inner_size, num_heads, co_attention
        )
        self.output = ErnieVilResidualOutput(config, inner_size, query_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        attention_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.output(self.self(hidden_states, context, context_mask, attention_bias), hidden_states)

    def forward_with_scores(
        self,
        hidden_states: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        attention_bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As ``forward``, plus the attention's logits before mask and bias and its weights (each (B, H, Lq, Lk))."""
        attended, scores, weights = self.self.forward_with_scores(
            hidden_states, context, context_mask, attention_bias
        )
        return self.output(attended, hidden_states), scores, weights


class ErnieVilIntermediate(nn.Module):
    def __init__(self, config: ErnieVilConfig, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class ErnieVilFeedForward(nn.Module):
    """The position-wise FFN of one stream with its residual and post-LayerNorm."""

    def __init__(self, config: ErnieVilConfig, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.intermediate = ErnieVilIntermediate(config, hidden_size, intermediate_size)
        self.output = ErnieVilResidualOutput(config, intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(hidden_states), hidden_states)


class ErnieVilLayer(nn.Module):
    """A post-LN BERT layer; both streams build this class at their own sizes.

    Submodule names (``attention.self.query``, ``attention.output.LayerNorm``, ``intermediate.dense``,
    ``output.dense`` ...) equal ``transformers.BertLayer``'s, so a BERT checkpoint maps onto the text
    stream by a prefix rename.
    """

    def __init__(self, config: ErnieVilConfig, hidden_size: int, num_heads: int, intermediate_size: int):
        super().__init__()
        self.attention = ErnieVilAttention(config, hidden_size, hidden_size, hidden_size, num_heads)
        self.intermediate = ErnieVilIntermediate(config, hidden_size, intermediate_size)
        self.output = ErnieVilResidualOutput(config, intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """hidden_states (B, L, C), additive attention_mask (B, 1, 1, L) -> (B, L, C)."""
        attention_output = self.attention(hidden_states, hidden_states, attention_mask)
        return self.output(self.intermediate(attention_output), attention_output)


class ErnieVilGroundedPositionBias(nn.Module):
    """A text->image attention bias from where each region is grounded in the caption.

    A region's grounded position is the expected text position of its image->text attention in the same
    co-layer, one per image->text head. Every text->image head gets, for each (token, region), a learned
    bias by the offset from the token to that position, clamped to ``-span .. span`` and read from a table
    (image->text head, offset, text->image head) by linear interpolation, summed over image->text heads.
    So "the noun just before me" and "the noun two words after me", a relation's subject and object, become
    attention targets that plain dot products do not learn to find in the CPU demo's budget
    (benchmarks/RESULTS.md, "Where relations stall").

    The table starts at zero (no bias) and is multiplied by ``gain``: Adam moves a parameter by about the
    learning rate per step whatever its gradient, and at gain 1 the biases stayed under 0.03 in 700 steps.
    """

    def __init__(self, config: ErnieVilConfig):
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


class CoAttentionLayerOutput(NamedTuple):
    """What a co-layer returns."""

    text_states: torch.Tensor  # (B, T, Ct)
    image_states: torch.Tensor  # (B, R, Cv)
    #: The image->text logits before the text mask, averaged over heads, in float32 or wider (B, R, T); only
    #: from the layers that ``config.grounding_co_layers`` names.
    grounding_scores: torch.Tensor | None
    #: With ``output_attentions``: the text->image (B, H, T, R) and image->text (B, H, R, T) weights.
    attentions: tuple[torch.Tensor, torch.Tensor] | None


class ErnieVilCoAttentionLayer(nn.Module):
    """Text queries attend image keys/values and image queries attend text keys/values, each direction with
    its own weights through the co-attention width; then each stream's own FFN. No self-attention.

    With ``config.co_layer_box_embeddings`` the image states first get a learned embedding of their regions'
    5-d locations added: the image embeddings add the box once, beside a 2048-d feature, and after a few
    layers little of it is left for a relation to read (benchmarks/RESULTS.md). With
    ``config.grounded_position_bias`` the image->text attention runs first and its weights bias the
    text->image attention (``ErnieVilGroundedPositionBias``); the layers named by
    ``config.grounding_co_layers`` return their image->text logits for the grounding loss.
    """

    def __init__(self, config: ErnieVilConfig, layer_index: int):
        super().__init__()
        t, v, co = config.hidden_size, config.v_hidden_size, config.co_hidden_size
        heads = config.co_num_attention_heads
        self.box_embedding = (
            ErnieVilBoxEmbedding(config.v_loc_size, v) if config.co_layer_box_embeddings else None
        )
        self.position_bias = ErnieVilGroundedPositionBias(config) if config.grounded_position_bias else None
        self.returns_grounding_scores = layer_index in config.grounding_co_layers
        self.text_attention = ErnieVilAttention(config, t, v, co, heads, co_attention=True)
        self.image_attention = ErnieVilAttention(config, v, t, co, heads, co_attention=True)
        self.text_feed_forward = ErnieVilFeedForward(config, t, config.intermediate_size)
        self.image_feed_forward = ErnieVilFeedForward(config, v, config.v_intermediate_size)

    def forward(
        self,
        text_states: torch.Tensor,
        image_states: torch.Tensor,
        text_mask: torch.Tensor,
        image_mask: torch.Tensor,
        image_locations: torch.Tensor,
        output_attentions: bool = False,
    ) -> CoAttentionLayerOutput:
        """text_states (B, T, Ct), image_states (B, R, Cv), their additive masks and the regions' 5-d
        image_locations (B, R, 5) -> updated states, grounding logits and attention weights (see
        ``CoAttentionLayerOutput``)."""
        if self.box_embedding is not None:
            image_states = image_states + self.box_embedding(image_locations.to(image_states.dtype))
        image_to_text = text_to_image = None
        if output_attentions or self.position_bias is not None or self.returns_grounding_scores:
            image_attended, scores, image_to_text = self.image_attention.forward_with_scores(
                image_states, text_states, text_mask
            )
        else:
            image_attended = self.image_attention(image_states, text_states, text_mask)
        bias = self.position_bias(image_to_text) if self.position_bias is not None else None  # (B, Ht, T, R)
        if output_attentions:
            text_attended, _, text_to_image = self.text_attention.forward_with_scores(
                text_states, image_states, image_mask, bias
            )
        else:
            text_attended = self.text_attention(text_states, image_states, image_mask, attention_bias=bias)
        return CoAttentionLayerOutput(
            self.text_feed_forward(text_attended),
            self.image_feed_forward(image_attended),
            at_least_float32(scores).mean(1) if self.returns_grounding_scores else None,
            (text_to_image, image_to_text) if output_attentions else None,
        )


class ErnieVilTextEmbeddings(nn.Module):
    """Word + position + segment embeddings, LayerNorm, dropout (names as in ``BertEmbeddings``)."""

    def __init__(self, config: ErnieVilConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        """input_ids, token_type_ids (B, T) -> (B, T, Ct)."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        embeddings = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)[None]
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(embeddings))


class ErnieVilImageEmbeddings(nn.Module):
    """Linear(region feature) + Linear(5-d location), LayerNorm, dropout."""

    def __init__(self, config: ErnieVilConfig):
        super().__init__()
        self.feature_projection = nn.Linear(config.v_feature_size, config.v_hidden_size)
        self.location_projection = nn.Linear(config.v_loc_size, config.v_hidden_size)
        self.LayerNorm = nn.LayerNorm(config.v_hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, features: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        """features (B, R, 2048), locations (B, R, 5) -> (B, R, Cv)."""
        embeddings = self.feature_projection(features) + self.location_projection(
            locations.to(features.dtype)
        )
        return self.dropout(self.LayerNorm(embeddings))


def box_locations(boxes: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
    """Pixel boxes (B, R, 4) as x1, y1, x2, y2 and image sizes (B, 2) as (width, height) -> (B, R, 5)
    locations x1/W, y1/H, x2/W, y2/H, area/(W*H), computed in float32."""
    boxes = boxes.float()
    width, height = image_sizes.float().unbind(-1)  # (B,), (B,)
    scale = torch.stack([width, height, width, height], dim=-1)[:, None, :]  # (B, 1, 4)
    corners = boxes / scale  # (B, R, 4)
    area = (corners[..., 2] - corners[..., 0]) * (corners[..., 3] - corners[..., 1])  # (B, R)
    return torch.cat([corners, area[..., None]], dim=-1)  # (B, R, 5)


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Losses are computed in float32 (or float64 when the model runs in it), never in half precision."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def image_region_mean(features: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of the kept regions' features: features (B, R, F), keep (B, R) -> (B, F).

    An image whose regions are all dropped gets a zero [IMG] feature rather than a division by zero.
    """
    weights = keep.to(features.dtype)[..., None]  # (B, R, 1)
    return (features * weights).sum(1) / weights.sum(1).clamp(min=1.0)


@dataclass
class ErnieVilModelOutput(ModelOutput):
    r"""Outputs of [`ErnieVilModel`].

    text_hidden_states (`torch.FloatTensor` of shape `(batch_size, text_length, hidden_size)`):
        Last text-stream hidden states; position 0 is [CLS].
    image_hidden_states (`torch.FloatTensor` of shape `(batch_size, num_regions + 1, v_hidden_size)`):
        Last image-stream hidden states; position 0 is the [IMG] region, then the input regions in order.
    pooled_text (`torch.FloatTensor` of shape `(batch_size, co_hidden_size)`):
        h_CLS = ReLU(Linear(text[0])).
    pooled_image (`torch.FloatTensor` of shape `(batch_size, co_hidden_size)`):
        h_IMG = ReLU(Linear(image[0])).
    pooled_output (`torch.FloatTensor` of shape `(batch_size, co_hidden_size)`):
        The fused vector h_CLS * h_IMG.
    grounding_scores (`tuple(torch.FloatTensor)`, one per co-layer of `config.grounding_co_layers`):
        The image->text attention logits of those co-layers, each of shape `(batch_size, num_regions + 1,
        text_length)`, before the text mask, averaged over heads, in float32 or wider; `None` when the
        config names no grounding co-layer.
    all_text_hidden_states (`tuple(torch.FloatTensor)`, returned with `output_hidden_states=True`):
        The text embeddings, then the text stream's state after every text layer and every co-layer,
        in execution order, each of shape `(batch_size, text_length, hidden_size)`.
    co_attentions (`tuple(tuple(torch.FloatTensor))`, returned with `output_attentions=True`):
        Per co-layer, the text->image weights `(batch_size, co_num_attention_heads, text_length,
        num_regions + 1)` and the image->text weights `(batch_size, co_num_attention_heads, num_regions + 1,
        text_length)`.
    """

    text_hidden_states: torch.FloatTensor | None = None
    image_hidden_states: torch.FloatTensor | None = None
    pooled_text: torch.FloatTensor | None = None
    pooled_image: torch.FloatTensor | None = None
    pooled_output: torch.FloatTensor | None = None
    grounding_scores: tuple[torch.FloatTensor, ...] | None = None
    all_text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    co_attentions: tuple[tuple[torch.FloatTensor, torch.FloatTensor], ...] | None = None


@dataclass
class ErnieVilForPreTrainingOutput(ModelOutput):
    r"""Outputs of [`ErnieVilForPreTraining`]. Every loss is a scalar; a task with no target in the batch
    has loss `None`.

    loss: weighted sum (`config.task_loss_weights`) of the task losses present in the batch.
    mlm_loss: cross-entropy on randomly masked tokens.
    sgp_object_loss, sgp_attribute_loss, sgp_relation_loss: cross-entropy on the WordPieces of masked
        scene-graph objects, attributes and relations (Scene Graph Prediction).
    mrc_loss: masked-region classification, KL(detector distribution || predicted), or the feature
        regression MSE when `config.masked_region_target == "features"`.
    itm_loss: image-text matching cross-entropy.
    grounding_loss: cross-entropy of each grounded region's image->text logits (`grounding_scores`) against
        the position of the caption word that names it, averaged over `config.grounding_co_layers` (not in
        ERNIE-ViL).
    masked_token_logits (`torch.FloatTensor` of shape `(num_masked_tokens, vocab_size)`):
        Scores at the positions where `labels != -100`, in row-major (batch, position) order.
    masked_region_logits (`torch.FloatTensor` of shape `(num_masked_regions, num_region_classes or v_feature_size)`):
        Predictions at the masked regions of matched pairs (`masked_regions & itm_labels == 1`), in row-major order.
    itm_logits (`torch.FloatTensor` of shape `(batch_size, 2)`): mismatched / matched scores.
    """

    loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    sgp_object_loss: torch.FloatTensor | None = None
    sgp_attribute_loss: torch.FloatTensor | None = None
    sgp_relation_loss: torch.FloatTensor | None = None
    mrc_loss: torch.FloatTensor | None = None
    itm_loss: torch.FloatTensor | None = None
    grounding_loss: torch.FloatTensor | None = None
    masked_token_logits: torch.FloatTensor | None = None
    masked_region_logits: torch.FloatTensor | None = None
    itm_logits: torch.FloatTensor | None = None


#: Task id in `task_ids` -> name of the loss it feeds (the collator's TASK_IDS use the same numbers).
TOKEN_TASKS = {0: "mlm", 1: "sgp_object", 2: "sgp_attribute", 3: "sgp_relation"}


class ErnieVilPreTrainedModel(PreTrainedModel):
    config_class = ErnieVilConfig
    config: ErnieVilConfig
    base_model_prefix = "ernievil"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["ErnieVilLayer", "ErnieVilCoAttentionLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, ErnieVilGroundedPositionBias):
            init.zeros_(module.table)  # no bias until training finds one
            return
        if isinstance(module, ErnieVilCoAttentionProjection):
            # At std 0.02 a co-attention query.key logit starts ~0.1 from uniform and Adam takes hundreds of
            # steps to grow both matrices before a word can single out its region; a fan-in std starts the
            # logits of order 1 apart (the CPU demo's attribute cloze: 0.708 instead of 0.600 after 620
            # steps, benchmarks/RESULTS.md).
            init.normal_(module.weight, mean=0.0, std=module.in_features**-0.5)
            init.zeros_(module.bias)
            return
        if isinstance(module, nn.Linear) and module.in_features == self.config.v_loc_size:
            # The location projections (the image embeddings' and the co-layers' box embeddings), the only
            # 5-input layers. The 5-d location enters beside a 2048-d feature: at BERT's std 0.02 its share of
            # the region embedding starts ~60x smaller than the feature's and takes thousands of Adam steps to
            # grow, and relations need it. A fan-in std (1/sqrt(5)) starts the two on equal footing. The
            # co-layers' box embeddings start at three times that: at 1x relations stay at chance through
            # the CPU demo's 700 steps; at 3x the demo learns them (0.384 against 0.163 with a mismatched
            # image), at a cost to attributes (0.597 against 0.732 at 2x, where relations stayed at chance;
            # benchmarks/RESULTS.md, "Relations").
            scale = 3.0 if isinstance(module, ErnieVilBoxEmbedding) else 1.0
            init.normal_(module.weight, mean=0.0, std=scale * module.in_features**-0.5)
            init.zeros_(module.bias)
            return
        super()._init_weights(module)

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """Parameter groups for AdamW: weight decay on weight matrices and embeddings, none on biases and
        LayerNorm parameters (the BERT recipe). Tied parameters appear once."""
        decay, no_decay = [], []
        for name, parameter in self.named_parameters():  # yields a tied parameter once
            if not parameter.requires_grad:
                continue
            (no_decay if name.endswith(".bias") or ".LayerNorm." in name else decay).append(parameter)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]


class ErnieVilModel(ErnieVilPreTrainedModel):
    """The two-stream encoder: text embeddings and layers, image embeddings and layers, co-layers, pooler."""

    def __init__(self, config: ErnieVilConfig):
        super().__init__(config)
        self.text_embeddings = ErnieVilTextEmbeddings(config)
        self.image_embeddings = ErnieVilImageEmbeddings(config)
        self.text_layers = nn.ModuleList(
            ErnieVilLayer(config, config.hidden_size, config.num_attention_heads, config.intermediate_size)
            for _ in range(config.num_hidden_layers)
        )
        self.image_layers = nn.ModuleList(
            ErnieVilLayer(
                config, config.v_hidden_size, config.v_num_attention_heads, config.v_intermediate_size
            )
            for _ in range(config.v_num_hidden_layers)
        )
        self.co_layers = nn.ModuleList(
            ErnieVilCoAttentionLayer(config, i) for i in range(config.num_co_layers)
        )
        self.text_pooler = nn.Linear(config.hidden_size, config.co_hidden_size)
        self.image_pooler = nn.Linear(config.v_hidden_size, config.co_hidden_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.text_embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.text_embeddings.word_embeddings = value

    def _validate_inputs(
        self,
        input_ids: torch.Tensor,
        region_features: torch.Tensor,
        region_locations: torch.Tensor | None,
        region_boxes: torch.Tensor | None,
        image_sizes: torch.Tensor | None,
    ) -> None:
        if input_ids.dim() != 2:
            raise ValueError(
                f"input_ids must have shape (batch_size, text_length); got {tuple(input_ids.shape)}"
            )
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"input_ids has {input_ids.shape[1]} tokens; this model takes at most "
                f"max_position_embeddings={self.config.max_position_embeddings}"
            )
        if region_features.dim() != 3 or region_features.shape[-1] != self.config.v_feature_size:
            raise ValueError(
                f"region_features must have shape (batch_size, num_regions, {self.config.v_feature_size}); "
                f"got {tuple(region_features.shape)}"
            )
        batch, num_regions = region_features.shape[:2]
        expected = {
            "input_ids": (input_ids, (batch,)),
            "region_locations": (region_locations, (batch, num_regions, self.config.v_loc_size)),
            "region_boxes": (region_boxes, (batch, num_regions, 4)),
            "image_sizes": (image_sizes, (batch, 2)),
        }
        for name, (tensor, shape) in expected.items():
            if tensor is not None and tuple(tensor.shape[: len(shape)]) != shape:
                raise ValueError(
                    f"{name} has shape {tuple(tensor.shape)} but region_features {tuple(region_features.shape)} "
                    f"implies {shape}: the batch sizes and region counts of the inputs must agree"
                )
        if region_locations is None and (region_boxes is None or image_sizes is None):
            raise ValueError(
                "Pass either region_locations (B, R, 5) or both region_boxes (B, R, 4) and image_sizes (B, 2)"
            )

    def region_locations_from_boxes(
        self, region_boxes: torch.Tensor, image_sizes: torch.Tensor, region_mask: torch.Tensor
    ) -> torch.Tensor:
        """The 5-d locations (B, R, 5) of real regions, after checking that their boxes lie in the image."""
        locations = box_locations(region_boxes, image_sizes)  # (B, R, 5)
        corners = locations[..., :4]
        bad = ((corners < -BOX_TOLERANCE) | (corners > 1 + BOX_TOLERANCE)).any(-1)  # (B, R)
        bad |= (corners[..., 2] < corners[..., 0]) | (corners[..., 3] < corners[..., 1])
        bad &= region_mask.bool()
        if bad.any():
            b, r = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"region_boxes[{b}, {r}] = {region_boxes[b, r].tolist()} is not an x1 <= x2, y1 <= y2 box inside "
                f"the image of size (width, height) = {image_sizes[b].tolist()}"
            )
        return locations

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
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        **kwargs,
    ) -> ErnieVilModelOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, text_length)`): WordPiece ids with [CLS] first.
            region_features (`torch.FloatTensor` of shape `(batch_size, num_regions, v_feature_size)`):
                Detector region features, without the [IMG] region (the model builds it).
            attention_mask (`torch.LongTensor` of shape `(batch_size, text_length)`): 1 for real tokens.
            token_type_ids (`torch.LongTensor` of shape `(batch_size, text_length)`): segment ids.
            region_mask (`torch.LongTensor` of shape `(batch_size, num_regions)`): 1 for real regions.
            region_boxes (`torch.FloatTensor` of shape `(batch_size, num_regions, 4)`): pixel x1, y1, x2, y2.
            image_sizes (`torch.FloatTensor` of shape `(batch_size, 2)`): (width, height) in pixels.
            region_locations (`torch.FloatTensor` of shape `(batch_size, num_regions, 5)`): normalised
                locations given directly, instead of `region_boxes` and `image_sizes`.
            masked_regions (`torch.BoolTensor` of shape `(batch_size, num_regions)`): regions hidden for
                masked-region classification; they are left out of the [IMG] mean.
            output_hidden_states: also return the text stream's state after every step.
            output_attentions: also return every co-layer's attention weights, both directions.
        """
        self._validate_inputs(input_ids, region_features, region_locations, region_boxes, image_sizes)
        batch, num_regions = region_features.shape[:2]
        device = input_ids.device
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if region_mask is None:
            region_mask = torch.ones(batch, num_regions, dtype=torch.long, device=device)
        if region_locations is None:
            region_locations = self.region_locations_from_boxes(region_boxes, image_sizes, region_mask)

        # The [IMG] region: the mean of the real, unmasked regions, located on the whole image.
        keep = region_mask.bool() if masked_regions is None else region_mask.bool() & ~masked_regions.bool()
        img_feature = image_region_mean(region_features, keep)[:, None, :]  # (B, 1, F)
        img_location = region_locations.new_tensor([0.0, 0.0, 1.0, 1.0, 1.0]).expand(
            batch, 1, -1
        )  # (B, 1, 5)
        # Padding regions (no feature, no box) would embed to one constant vector, whose LayerNorm backward
        # is 0 * 1/sqrt(eps) = NaN in fp16; placed on the whole image they are ordinary (and still masked).
        region_locations = torch.where(region_mask.bool()[..., None], region_locations, img_location)
        features = torch.cat([img_feature, region_features], dim=1)  # (B, R, F)
        locations = torch.cat([img_location, region_locations.to(img_location.dtype)], dim=1)  # (B, R, 5)
        image_keep = torch.cat([region_mask.new_ones(batch, 1), region_mask], dim=1)  # (B, R)

        text = self.text_embeddings(input_ids, token_type_ids)  # (B, T, Ct)
        image = self.image_embeddings(features, locations)  # (B, R, Cv)
        text_mask = additive_attention_mask(attention_mask, text.dtype)  # (B, 1, 1, T)
        image_mask = additive_attention_mask(image_keep, image.dtype)  # (B, 1, 1, R)

        all_text = [text] if output_hidden_states else None
        text_start = image_start = 0
        grounding_scores = []
        co_attentions = [] if output_attentions else None
        for co_layer, text_end, image_end in zip(
            self.co_layers, self.config.text_co_layer_ids, self.config.image_co_layer_ids
        ):
            for layer in self.text_layers[text_start:text_end]:
                text = layer(text, text_mask)
                if output_hidden_states:
                    all_text.append(text)
            for layer in self.image_layers[image_start:image_end]:
                image = layer(image, image_mask)
            text, image, scores, attentions = co_layer(
                text, image, text_mask, image_mask, locations, output_attentions
            )
            if scores is not None:
                grounding_scores.append(scores)
            if output_attentions:
                co_attentions.append(attentions)
            if output_hidden_states:
                all_text.append(text)
            text_start, image_start = text_end, image_end
        for layer in self.text_layers[text_start:]:
            text = layer(text, text_mask)
            if output_hidden_states:
                all_text.append(text)
        for layer in self.image_layers[image_start:]:
            image = layer(image, image_mask)

        pooled_text = F.relu(self.text_pooler(text[:, 0]))  # (B, Co)
        pooled_image = F.relu(self.image_pooler(image[:, 0]))  # (B, Co)
        return ErnieVilModelOutput(
            text_hidden_states=text,
            image_hidden_states=image,
            pooled_text=pooled_text,
            pooled_image=pooled_image,
            pooled_output=pooled_text * pooled_image,
            grounding_scores=tuple(grounding_scores) if grounding_scores else None,
            all_text_hidden_states=tuple(all_text) if output_hidden_states else None,
            co_attentions=tuple(co_attentions) if output_attentions else None,
        )


class ErnieVilPredictionHeadTransform(nn.Module):
    """Dense + activation + LayerNorm before a prediction layer (BERT's head transform)."""

    def __init__(self, config: ErnieVilConfig, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class ErnieVilMaskedTokenHead(nn.Module):
    """Predicts masked WordPieces; the decoder weight is tied to the word embeddings. Serves MLM and the
    three Scene Graph Prediction tasks."""

    def __init__(self, config: ErnieVilConfig):
        super().__init__()
        self.transform = ErnieVilPredictionHeadTransform(config, config.hidden_size)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(N, Ct) -> (N, vocab_size)."""
        return self.decoder(self.transform(hidden_states))


class ErnieVilMaskedRegionHead(nn.Module):
    """Predicts a masked region's detector class distribution (or its original feature)."""

    def __init__(self, config: ErnieVilConfig):
        super().__init__()
        out_size = (
            config.num_region_classes
            if config.masked_region_target == "class_distribution"
            else config.v_feature_size
        )
        self.transform = ErnieVilPredictionHeadTransform(config, config.v_hidden_size)
        self.decoder = nn.Linear(config.v_hidden_size, out_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(N, Cv) -> (N, num_region_classes or v_feature_size)."""
        return self.decoder(self.transform(hidden_states))


class ErnieVilForPreTraining(ErnieVilPreTrainedModel):
    """ERNIE-ViL with its pretraining heads: masked tokens (MLM + SGP), masked regions, image-text matching."""

    _tied_weights_keys = {"token_head.decoder.weight": "ernievil.text_embeddings.word_embeddings.weight"}

    def __init__(self, config: ErnieVilConfig):
        super().__init__(config)
        self.ernievil = ErnieVilModel(config)
        self.token_head = ErnieVilMaskedTokenHead(config)
        self.region_head = ErnieVilMaskedRegionHead(config)
        self.itm_head = nn.Linear(config.co_hidden_size, 2)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.token_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.token_head.decoder = new_embeddings

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
        region_word_targets: torch.LongTensor | None = None,
        **kwargs,
    ) -> ErnieVilForPreTrainingOutput:
        r"""
        Takes [`ErnieVilModel`]'s inputs, plus the targets of each task (all optional):

            labels (`torch.LongTensor` of shape `(batch_size, text_length)`): the original WordPiece id where a
                token is to be predicted, -100 elsewhere.
            task_ids (`torch.LongTensor` of shape `(batch_size, text_length)`): 0 mlm, 1 object, 2 attribute,
                3 relation where `labels != -100`; all positions count as mlm when omitted.
            region_class_targets (`torch.FloatTensor` of shape `(batch_size, num_regions, num_region_classes)`):
                the detector's class distribution, the target at `masked_regions`.
            region_feature_targets (`torch.FloatTensor` of shape `(batch_size, num_regions, v_feature_size)`):
                the original features, the target at `masked_regions` when
                `config.masked_region_target == "features"`.
            itm_labels (`torch.LongTensor` of shape `(batch_size,)`): 1 matched pair, 0 mismatched.
            region_word_targets (`torch.LongTensor` of shape `(batch_size, num_regions)`): for each input
                region, the text position of the caption word that names it, -100 where none does; the
                grounding loss's target (needs `config.grounding_co_layers`).

        Token targets are expected on matched pairs only (the collator blanks them on mismatched ones);
        masked regions are scored on matched pairs only (all pairs when `itm_labels` is omitted).
        """
        outputs = self.ernievil(
            input_ids,
            region_features,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            region_mask=region_mask,
            region_boxes=region_boxes,
            image_sizes=image_sizes,
            region_locations=region_locations,
            masked_regions=masked_regions,
        )
        losses: dict[str, torch.Tensor] = {}
        masked_token_logits = masked_region_logits = None
        # ZeRO-2 fills its gradient buckets in the order gradients arrive, so a head that gets no gradient on
        # one rank (a micro-batch without a scored masked region, say) desynchronises the ranks' reductions.
        # The heads therefore also run on empty selections, and such an output joins the loss times zero.
        unused_outputs: list[torch.Tensor] = []

        if labels is not None:
            selected = labels != -100  # (B, T)
            masked_token_logits = self.token_head(outputs.text_hidden_states[selected])  # (N, V)
            token_losses = F.cross_entropy(
                at_least_float32(masked_token_logits), labels[selected], reduction="none"
            )  # (N,)
            tasks = task_ids[selected] if task_ids is not None else torch.zeros_like(labels[selected])  # (N,)
            for task_id, name in TOKEN_TASKS.items():
                in_task = tasks == task_id
                if in_task.any():
                    losses[name] = token_losses[in_task].mean()
            if not selected.any():
                unused_outputs.append(masked_token_logits)

        if masked_regions is not None:
            # Regions are masked on every pair (so that [IMG] cannot tell matched from mismatched pairs),
            # but scored on matched pairs only.
            scored = masked_regions.bool()
            if itm_labels is not None:
                scored = scored & (itm_labels[:, None] == 1)
            # Image position 0 is [IMG]; input region r sits at r + 1.
            region_states = outputs.image_hidden_states[:, 1:][scored]  # (N, Cv)
            masked_region_logits = self.region_head(region_states)  # (N, classes or F)
            if scored.any():
                losses["mrc"] = self._masked_region_loss(
                    masked_region_logits, scored, region_class_targets, region_feature_targets
                )
            else:
                unused_outputs.append(masked_region_logits)

        itm_logits = self.itm_head(outputs.pooled_output)  # (B, 2)
        if itm_labels is not None:
            losses["itm"] = F.cross_entropy(at_least_float32(itm_logits), itm_labels)

        if region_word_targets is not None:
            if outputs.grounding_scores is None:
                raise ValueError(
                    "region_word_targets were given but this model computes no grounding loss "
                    "(config.grounding_co_layers is empty)"
                )
            text_keep = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            # Image position 0 is [IMG]; input region r sits at r + 1. Padding tokens cannot be targets.
            # (L, B, R - 1, T) over the L grounding co-layers
            scores = torch.stack(outputs.grounding_scores)[:, :, 1:]
            scores = scores.masked_fill(~text_keep.bool()[None, :, None, :], torch.finfo(scores.dtype).min)
            grounded = region_word_targets != -100  # (B, R - 1)
            if grounded.any():
                # Every layer grounds the same regions: the mean over (layer, region) is the layers' mean.
                losses["grounding"] = F.cross_entropy(
                    scores[:, grounded].flatten(0, 1), region_word_targets[grounded].repeat(len(scores))
                )
            else:
                unused_outputs.extend(outputs.grounding_scores)  # the masked scores would give 0 * -inf

        weights = self.config.task_loss_weights
        loss = sum(weights[name] * value for name, value in losses.items()) if losses else None
        if loss is not None:
            loss = loss + sum(0.0 * output.sum() for output in unused_outputs)
        return ErnieVilForPreTrainingOutput(
            loss=loss,
            mlm_loss=losses.get("mlm"),
            sgp_object_loss=losses.get("sgp_object"),
            sgp_attribute_loss=losses.get("sgp_attribute"),
            sgp_relation_loss=losses.get("sgp_relation"),
            mrc_loss=losses.get("mrc"),
            itm_loss=losses.get("itm"),
            grounding_loss=losses.get("grounding"),
            masked_token_logits=masked_token_logits,
            masked_region_logits=masked_region_logits,
            itm_logits=itm_logits,
        )

    def _masked_region_loss(
        self,
        logits: torch.Tensor,
        masked_regions: torch.Tensor,
        region_class_targets: torch.Tensor | None,
        region_feature_targets: torch.Tensor | None,
    ) -> torch.Tensor:
        """KL(target || softmax(logits)) summed over classes and averaged over regions, or feature MSE."""
        if self.config.masked_region_target == "class_distribution":
            if region_class_targets is None:
                raise ValueError(
                    "masked_regions were given but region_class_targets is missing; this model predicts the "
                    "detector class distribution (config.masked_region_target='class_distribution')"
                )
            target = at_least_float32(region_class_targets[masked_regions])  # (N, classes)
            return F.kl_div(F.log_softmax(at_least_float32(logits), dim=-1), target, reduction="batchmean")
        if region_feature_targets is None:
            raise ValueError(
                "masked_regions were given but region_feature_targets is missing; this model regresses region "
                "features (config.masked_region_target='features')"
            )
        return F.mse_loss(at_least_float32(logits), at_least_float32(region_feature_targets[masked_regions]))


def count_parameters_by_component(model: ErnieVilForPreTraining) -> dict[str, int]:
    """Parameter counts of the text stream, image stream, co-layers, poolers and heads, and their total.

    The masked-token decoder weight is tied to the word embeddings and counted once, in the text stream.
    """
    encoder = model.ernievil
    components = {
        "text stream": [encoder.text_embeddings, encoder.text_layers],
        "image stream": [encoder.image_embeddings, encoder.image_layers],
        "co-attention layers": [encoder.co_layers],
        "poolers": [encoder.text_pooler, encoder.image_pooler],
        "pretraining heads": [model.token_head, model.region_head, model.itm_head],
    }
    seen: set[int] = set()
    counts = {}
    for name, modules in components.items():
        total = 0
        for module in modules:
            for parameter in module.parameters():
                if id(parameter) not in seen:
                    seen.add(id(parameter))
                    total += parameter.numel()
        counts[name] = total
    counts["total"] = sum(counts.values())
    return counts


def training_flops_per_sample(config: ErnieVilConfig, text_len: int, num_regions: int) -> float:
    """Estimated FLOPs of one forward + backward pass on one pair (3x the forward's matmul FLOPs).

    Counts every dense projection and the attention score/value products of the encoder at ``text_len``
    tokens and ``num_regions`` regions (including [IMG]); embeddings, norms and the heads (run on the
    few masked positions only) are left out.
    """
    t, r = text_len, num_regions
    ct, cv, co = config.hidden_size, config.v_hidden_size, config.co_hidden_size
    ft, fv = config.intermediate_size, config.v_intermediate_size
    text_layer = t * (4 * ct * ct + 2 * ct * ft) + 2 * t * t * ct
    image_layer = r * (4 * cv * cv + 2 * cv * fv) + 2 * r * r * cv
    co_layer = (
        t
        * (
            2 * ct * co + 2 * ct * co + 2 * ct * ft
        )  # text: query + output, keys/values for the image side, FFN
        + r * (2 * cv * co + 2 * cv * co + 2 * cv * fv)  # the same for the image stream
        + 2 * 2 * t * r * co  # scores and weighted values, both directions
    )
    macs = (
        config.num_hidden_layers * text_layer
        + config.v_num_hidden_layers * image_layer
        + config.num_co_layers * co_layer
    )
    return 3 * 2 * float(macs)


__all__ = [
    "ErnieVilForPreTraining",
    "ErnieVilForPreTrainingOutput",
    "ErnieVilModel",
    "ErnieVilModelOutput",
    "ErnieVilPreTrainedModel",
    "count_parameters_by_component",
    "training_flops_per_sample",
]
