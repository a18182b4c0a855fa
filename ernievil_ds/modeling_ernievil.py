"""PyTorch ERNIE-ViL (arXiv 2006.16934): a two-stream (text / image-region) transformer joined by
co-attention layers, and its pretraining heads.

This module is the paper's model and nothing else; the CPU demo's extras for relations live in
``ernievil_ds.grounding``.

Shape legend used in comments: B batch, T text tokens, R image regions including the leading [IMG]
region, H attention heads, D head dim, C hidden width of the stream at hand (Ct text, Cv image, Co
co-attention), N rows a head scores (the masked positions padded to a capacity), V vocabulary.
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
from ernievil_ds.masked_token_loss import masked_token_loss_function
from ernievil_ds.objectives import IGNORE_INDEX, MLM_TASK_ID, TOKEN_TASKS, loss_name

#: Tolerance, as a fraction of the image side, for boxes that a detector placed a hair outside the image.
BOX_TOLERANCE = 0.01

#: The [IMG] region's location: the whole image.
WHOLE_IMAGE_LOCATION = (0.0, 0.0, 1.0, 1.0, 1.0)


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
    """Plain softmax attention: the reference the other ``ALL_ATTENTION_FUNCTIONS`` are held to, and the
    one that returns its weights.

    Args:
        query: (B, H, Lq, D); key, value: (B, H, Lk, D).
        attention_mask: additive, broadcastable to (B, H, Lq, Lk).
        kwargs: what other attention functions take and this one does not need.

    Returns:
        attn_output (B, Lq, H, D) and attn_weights (B, H, Lq, Lk), after dropout; the softmax runs in float32.
    """
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, Lq, Lk)
    if attention_mask is not None:
        scores = scores + attention_mask
    attn_weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()  # (B, Lq, H, D)
    return attn_output, attn_weights


def additive_attention_mask(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Turn a (B, L) keep-mask (1 = attend) into an additive (B, 1, 1, L) mask in ``dtype``."""
    return (1.0 - keep[:, None, None, :].to(dtype)) * torch.finfo(dtype).min  # (B, 1, 1, L)


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Losses are computed in float32 (or float64 when the model runs in it), never in half precision."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


class TaskLoss(NamedTuple):
    """One task's loss on a batch, computed the same way whatever the batch holds, so that the compiled
    model has no branch on tensor values: with nothing to score the mean is a zero that is still
    connected to the head (see ``ErnieVilForPreTraining.weighted_loss``)."""

    mean: torch.Tensor  # ()
    #: How many items (tokens, regions) the task scored, () integer; None for a task that scores every pair.
    count: torch.Tensor | None = None

    def reported(self) -> torch.Tensor:
        """The loss as the outputs report it: NaN when the task scored nothing in the batch."""
        if self.count is None:
            return self.mean
        return torch.where(self.count > 0, self.mean, torch.nan)


class ScoredRows(NamedTuple):
    """The rows a pretraining head scores: flat positions into a (B, L) grid, padded to a capacity fixed
    before the step, and their weights (0 for padding). Gathering them keeps every shape independent of
    tensor values, so the host never waits for a count of masked positions."""

    positions: torch.Tensor  # (N,) int64: b * L + l
    weights: torch.Tensor  # (N,)

    @classmethod
    def of(
        cls, grid: torch.Tensor | None, positions: torch.Tensor | None, weights: torch.Tensor | None
    ) -> ScoredRows | None:
        """The given rows of ``grid`` (B, L), or every position of it, weight 1, when ``positions`` is None;
        None without a grid.

        Raises:
            ValueError: positions without weights, or positions and weights of different lengths.
        """
        if grid is None:
            return None
        if positions is None:
            every = torch.arange(grid.numel(), device=grid.device)  # (B * L,)
            return cls(every, torch.ones(every.shape, device=grid.device))
        if weights is None or weights.shape != positions.shape:
            raise ValueError(
                f"the scored positions {tuple(positions.shape)} need weights of the same shape (1 for a row "
                f"to score, 0 for padding), got {None if weights is None else tuple(weights.shape)}"
            )
        return cls(positions, weights)

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """values (B, L, ...) -> the rows' values (N, ...)."""
        return values.flatten(0, 1).index_select(0, self.positions)  # (N, ...)


class ErnieVilMultiHeadAttention(nn.Module):
    """Multi-head attention whose queries and keys/values may come from streams of different widths.

    Self-attention uses one width throughout; a co-attention direction projects queries of one stream and
    keys/values of the other to the co-attention width. The attention function is looked up in
    ``ALL_ATTENTION_FUNCTIONS`` by ``config._attn_implementation`` (``eager``, ``sdpa``, ...); the eager
    one runs when the weights are asked for.
    """

    is_causal = False

    def __init__(
        self, config: ErnieVilConfig, query_size: int, key_value_size: int, inner_size: int, num_heads: int
    ):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = inner_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.query = nn.Linear(query_size, inner_size)
        self.key = nn.Linear(key_value_size, inner_size)
        self.value = nn.Linear(key_value_size, inner_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _heads(self, projected: torch.Tensor) -> torch.Tensor:
        """(B, L, H*D) -> (B, H, L, D)."""
        batch, length, _ = projected.shape
        return projected.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, D)

    def forward(
        self,
        hidden_states: torch.Tensor,
        context: torch.Tensor,
        attention_mask: torch.Tensor,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states (B, Lq, Cq) attend context (B, Lk, Ck) under an additive attention_mask broadcastable
        to (B, H, Lq, Lk) -> (B, Lq, H*D), and with ``output_attentions`` the weights (B, H, Lq, Lk)."""
        query = self._heads(self.query(hidden_states))  # (B, H, Lq, D)
        key, value = self._heads(self.key(context)), self._heads(self.value(context))  # (B, H, Lk, D)
        attention_interface: Callable = eager_attention_forward
        if not output_attentions:
            attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
                self.config._attn_implementation, eager_attention_forward
            )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.dropout.p if self.training else 0.0,
            scaling=self.scaling,
        )
        return attn_output.flatten(2), attn_weights if output_attentions else None  # (B, Lq, H*D)


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
        self, config: ErnieVilConfig, query_size: int, key_value_size: int, inner_size: int, num_heads: int
    ):
        super().__init__()
        self.self = ErnieVilMultiHeadAttention(config, query_size, key_value_size, inner_size, num_heads)
        self.output = ErnieVilResidualOutput(config, inner_size, query_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        context: torch.Tensor,
        attention_mask: torch.Tensor,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, Lq, Cq) attending (B, Lk, Ck) -> (B, Lq, Cq), and the weights (B, H, Lq, Lk) if asked for."""
        attended, weights = self.self(hidden_states, context, attention_mask, output_attentions)
        return self.output(attended, hidden_states), weights


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
        attention_output, _ = self.attention(hidden_states, hidden_states, attention_mask)
        return self.output(self.intermediate(attention_output), attention_output)


class CoAttentionLayerOutput(NamedTuple):
    """What a co-layer returns."""

    text_states: torch.Tensor  # (B, T, Ct)
    image_states: torch.Tensor  # (B, R, Cv)
    #: With ``output_attentions``: the text->image (B, H, T, R) and image->text (B, H, R, T) weights.
    attentions: tuple[torch.Tensor, torch.Tensor] | None


class ErnieVilCoAttentionLayer(nn.Module):
    """The paper's co-attentional transformer layer.

    Text queries attend image keys/values and image queries attend text keys/values, each direction with
    its own weights through the co-attention width, then residual + LayerNorm; then each stream's own FFN.
    No self-attention inside.
    """

    def __init__(self, config: ErnieVilConfig):
        super().__init__()
        t, v, co = config.hidden_size, config.v_hidden_size, config.co_hidden_size
        heads = config.co_num_attention_heads
        self.text_attention = ErnieVilAttention(config, t, v, co, heads)
        self.image_attention = ErnieVilAttention(config, v, t, co, heads)
        self.text_feed_forward = ErnieVilFeedForward(config, t, config.intermediate_size)
        self.image_feed_forward = ErnieVilFeedForward(config, v, config.v_intermediate_size)

    def forward(
        self,
        text_states: torch.Tensor,
        image_states: torch.Tensor,
        text_mask: torch.Tensor,
        image_mask: torch.Tensor,
        output_attentions: bool = False,
    ) -> CoAttentionLayerOutput:
        """text_states (B, T, Ct), image_states (B, R, Cv) and their additive masks (B, 1, 1, T), (B, 1, 1, R)
        -> the updated states and, with ``output_attentions``, both directions' weights."""
        text_attended, text_to_image = self.text_attention(
            text_states, image_states, image_mask, output_attentions
        )
        image_attended, image_to_text = self.image_attention(
            image_states, text_states, text_mask, output_attentions
        )
        return CoAttentionLayerOutput(
            self.text_feed_forward(text_attended),
            self.image_feed_forward(image_attended),
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


def image_region_mean(features: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of the kept regions' features: features (B, R, F), keep (B, R) -> (B, F).

    An image whose regions are all dropped gets a zero [IMG] feature rather than a division by zero.
    """
    weights = keep.to(features.dtype)[..., None]  # (B, R, 1)
    return (features * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def run_layers(
    layers: nn.ModuleList, states: torch.Tensor, mask: torch.Tensor, history: list | None = None
) -> torch.Tensor:
    """Run one stream's ``layers`` in order on states (B, L, C) under an additive mask (B, 1, 1, L),
    appending each layer's output to ``history`` when one is given."""
    for layer in layers:
        states = layer(states, mask)
        if history is not None:
            history.append(states)
    return states


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
    all_text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    co_attentions: tuple[tuple[torch.FloatTensor, torch.FloatTensor], ...] | None = None


@dataclass
class ErnieVilForPreTrainingOutput(ModelOutput):
    r"""Outputs of [`ErnieVilForPreTraining`]. Every loss is a scalar; a task whose targets were not passed
    has loss `None`, and a task whose targets were passed but mark nothing in the batch has loss NaN (it
    adds nothing to `loss`): the outputs' structure depends on the arguments only, never on tensor values.

    loss: weighted sum (`config.task_loss_weights`) of the task losses present in the batch.
    mlm_loss: cross-entropy on randomly masked tokens.
    sgp_object_loss, sgp_attribute_loss, sgp_relation_loss: cross-entropy on the WordPieces of masked
        scene-graph objects, attributes and relations (Scene Graph Prediction).
    mrc_loss: masked-region classification, KL(detector distribution || predicted), or the feature
        regression MSE when `config.masked_region_target == "features"`.
    itm_loss: image-text matching cross-entropy.
    masked_token_logits (`torch.FloatTensor` of shape `(token_capacity, vocab_size)`):
        Scores at `masked_token_positions` (rows of weight 0 are padding), or at every position in row-major
        (batch, position) order when the positions were not given.
    masked_region_logits (`torch.FloatTensor` of shape `(region_capacity, num_region_classes or v_feature_size)`):
        Predictions at `masked_region_positions` (rows of weight 0 are padding), or at every region in
        row-major order when the positions were not given.
    itm_logits (`torch.FloatTensor` of shape `(batch_size, 2)`): mismatched / matched scores.
    co_attentions: as [`ErnieVilModelOutput`]'s, returned with `output_attentions=True`.
    """

    loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    sgp_object_loss: torch.FloatTensor | None = None
    sgp_attribute_loss: torch.FloatTensor | None = None
    sgp_relation_loss: torch.FloatTensor | None = None
    mrc_loss: torch.FloatTensor | None = None
    itm_loss: torch.FloatTensor | None = None
    masked_token_logits: torch.FloatTensor | None = None
    masked_region_logits: torch.FloatTensor | None = None
    itm_logits: torch.FloatTensor | None = None
    co_attentions: tuple[tuple[torch.FloatTensor, torch.FloatTensor], ...] | None = None


class ErnieVilPreTrainedModel(PreTrainedModel):
    config_class = ErnieVilConfig
    config: ErnieVilConfig
    base_model_prefix = "ernievil"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["ErnieVilLayer", "ErnieVilCoAttentionLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        """The official initialisation: every weight from a normal distribution truncated at two standard
        deviations (Paddle's ``TruncatedNormal(scale=initializer_range)``), every bias zero, LayerNorms at
        the identity."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init.trunc_normal_(module.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """Parameter groups for AdamW: weight decay on weight matrices and embeddings, none on biases and
        LayerNorm parameters (the BERT recipe). Tied parameters appear once; frozen ones not at all."""
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

    #: The co-layer this encoder builds; a variant with other co-layers sets its own.
    co_layer_class = ErnieVilCoAttentionLayer

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
        self.co_layers = nn.ModuleList(self.co_layer_class(config) for _ in range(config.num_co_layers))
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
        img_features: torch.Tensor | None = None,
        img_locations: torch.Tensor | None = None,
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
            "img_features": (img_features, (batch, self.config.v_feature_size)),
            "img_locations": (img_locations, (batch, self.config.v_loc_size)),
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
        """The 5-d locations (B, R, 5) of real regions, asserting on the device that their boxes lie in the
        image: the host never waits for the check (the data pipeline, ``SGPCollator``, names a bad box)."""
        locations = box_locations(region_boxes, image_sizes)  # (B, R, 5)
        corners = locations[..., :4]
        bad = ((corners < -BOX_TOLERANCE) | (corners > 1 + BOX_TOLERANCE)).any(-1)  # (B, R)
        bad |= (corners[..., 2] < corners[..., 0]) | (corners[..., 3] < corners[..., 1])
        bad &= region_mask.bool()
        torch._assert_async(
            ~bad.any(),
            "region_boxes holds a real region whose box is not an x1 <= x2, y1 <= y2 box inside its image "
            "(image_sizes gives each image's width and height)",
        )
        return locations

    def embed_image(
        self,
        region_features: torch.Tensor,
        region_locations: torch.Tensor,
        region_mask: torch.Tensor,
        masked_regions: torch.Tensor | None,
        img_features: torch.Tensor | None = None,
        img_locations: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prepend the [IMG] region and embed every region.

        Args:
            region_features: (B, R - 1, F); region_locations: (B, R - 1, 5); region_mask: (B, R - 1);
            masked_regions: (B, R - 1) or None, regions hidden from the [IMG] mean.
            img_features: (B, F), the [IMG] region's feature; None: the mean of the kept regions.
            img_locations: (B, 5), its location; None: the whole image.

        Returns:
            the image embeddings (B, R, Cv) and the 5-d locations (B, R, 5) of [IMG] and the regions.
        """
        batch = region_features.shape[0]
        real = region_mask.bool()
        if img_features is None:
            keep = real if masked_regions is None else real & ~masked_regions.bool()
            img_features = image_region_mean(region_features, keep)  # (B, F)
        img_feature = img_features.to(region_features.dtype)[:, None, :]  # (B, 1, F)
        whole_image = region_locations.new_tensor(WHOLE_IMAGE_LOCATION).expand(batch, -1)  # (B, 5)
        img_location = (whole_image if img_locations is None else img_locations.to(whole_image))[:, None]
        # Padding regions (no feature, no box) would embed to one constant vector, whose LayerNorm backward
        # is 0 * 1/sqrt(eps) = NaN in fp16; placed on the whole image they are ordinary (and still masked).
        region_locations = torch.where(real[..., None], region_locations, whole_image[:, None])
        features = torch.cat([img_feature, region_features], dim=1)  # (B, R, F)
        locations = torch.cat([img_location, region_locations], dim=1)  # (B, R, 5)
        return self.image_embeddings(features, locations), locations

    def co_layer_inputs(self, region_locations: torch.Tensor) -> dict[str, torch.Tensor]:
        """Keyword inputs of every co-layer beyond the two streams and their masks: none for the paper's
        co-layer. A variant whose co-layers read the regions' locations (B, R, 5) passes them here."""
        return {}

    def encode(
        self,
        text: torch.Tensor,
        image: torch.Tensor,
        text_mask: torch.Tensor,
        image_mask: torch.Tensor,
        region_locations: torch.Tensor,
        output_attentions: bool = False,
    ) -> tuple[
        torch.Tensor, torch.Tensor, list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor] | None]
    ]:
        """Run the interleaved schedule: before co-layer i, the text layers up to ``text_co_layer_ids[i]`` and
        the image layers up to ``image_co_layer_ids[i]``; the layers left run after the last co-layer.

        Args:
            text: (B, T, Ct) and image: (B, R, Cv) embeddings; text_mask (B, 1, 1, T) and image_mask
            (B, 1, 1, R) additive masks; region_locations (B, R, 5).

        Returns:
            the last text (B, T, Ct) and image (B, R, Cv) states, the text states after every step, and
            every co-layer's attention weights (None per co-layer without ``output_attentions``).
        """
        all_text, co_attentions = [text], []
        co_inputs = self.co_layer_inputs(region_locations)
        text_start = image_start = 0
        for co_layer, text_stop, image_stop in zip(
            self.co_layers, self.config.text_co_layer_ids, self.config.image_co_layer_ids
        ):
            text = run_layers(self.text_layers[text_start:text_stop], text, text_mask, all_text)
            image = run_layers(self.image_layers[image_start:image_stop], image, image_mask)
            text, image, attentions = co_layer(
                text, image, text_mask, image_mask, output_attentions=output_attentions, **co_inputs
            )
            all_text.append(text)
            co_attentions.append(attentions)
            text_start, image_start = text_stop, image_stop
        text = run_layers(self.text_layers[text_start:], text, text_mask, all_text)
        image = run_layers(self.image_layers[image_start:], image, image_mask)
        return text, image, all_text, co_attentions

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
        img_features: torch.FloatTensor | None = None,
        img_locations: torch.FloatTensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
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
            img_features (`torch.FloatTensor` of shape `(batch_size, v_feature_size)`): the [IMG] region's
                feature, when the data gives it (the official VCR reader's mean of the detected and
                ground-truth sets); by default the mean of the real, unmasked regions.
            img_locations (`torch.FloatTensor` of shape `(batch_size, 5)`): the [IMG] region's normalised
                location; by default the whole image, (0, 0, 1, 1, 1).
            output_hidden_states: also return the text stream's state after every step.
            output_attentions: also return every co-layer's attention weights, both directions.
        """
        given_img = {"img_features": img_features, "img_locations": img_locations}
        self._validate_inputs(
            input_ids, region_features, region_locations, region_boxes, image_sizes, **given_img
        )
        batch, num_regions = region_features.shape[:2]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if region_mask is None:
            region_mask = torch.ones(batch, num_regions, dtype=torch.long, device=input_ids.device)
        if region_locations is None:
            region_locations = self.region_locations_from_boxes(region_boxes, image_sizes, region_mask)

        text = self.text_embeddings(input_ids, token_type_ids)  # (B, T, Ct)
        image, locations = self.embed_image(
            region_features, region_locations.float(), region_mask, masked_regions, **given_img
        )
        image_keep = torch.cat([region_mask.new_ones(batch, 1), region_mask], dim=1)  # (B, R) with [IMG]
        text_mask = additive_attention_mask(attention_mask, text.dtype)  # (B, 1, 1, T)
        image_mask = additive_attention_mask(image_keep, image.dtype)  # (B, 1, 1, R)
        text, image, all_text, co_attentions = self.encode(
            text, image, text_mask, image_mask, locations, output_attentions
        )
        pooled_text = F.relu(self.text_pooler(text[:, 0]))  # (B, Co)
        pooled_image = F.relu(self.image_pooler(image[:, 0]))  # (B, Co)
        return ErnieVilModelOutput(
            text_hidden_states=text,
            image_hidden_states=image,
            pooled_text=pooled_text,
            pooled_image=pooled_image,
            pooled_output=pooled_text * pooled_image,
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
    """ERNIE-ViL with its pretraining heads: masked tokens (MLM + SGP), masked regions, image-text matching.

    The loss is the paper's weighted sum over the tasks present in a batch::

        loss = w_mlm L_mlm + w_obj L_obj + w_attr L_attr + w_rel L_rel + w_mrc L_mrc + w_itm L_itm

    with the weights of ``config.task_loss_weights`` (all 1 by default).
    """

    _tied_weights_keys = {"token_head.decoder.weight": "ernievil.text_embeddings.word_embeddings.weight"}
    #: The encoder this model builds; a variant with another encoder sets its own.
    encoder_class = ErnieVilModel

    def __init__(self, config: ErnieVilConfig):
        super().__init__(config)
        self.ernievil = self.encoder_class(config)
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
        masked_token_positions: torch.LongTensor | None = None,
        masked_token_weights: torch.FloatTensor | None = None,
        masked_region_positions: torch.LongTensor | None = None,
        masked_region_weights: torch.FloatTensor | None = None,
        output_attentions: bool = False,
    ) -> ErnieVilForPreTrainingOutput:
        r"""
        Takes [`ErnieVilModel`]'s inputs, plus the targets of each task (all optional):

            labels (`torch.LongTensor` of shape `(batch_size, text_length)`): the original WordPiece id where a
                token is to be predicted, -100 elsewhere.
            task_ids (`torch.LongTensor` of shape `(batch_size, text_length)`): where `labels != -100`, the
                index of its task in `ernievil_ds.objectives.TOKEN_TASKS` (0 mlm, 1 object, 2 attribute,
                3 relation); all positions count as mlm when omitted.
            region_class_targets (`torch.FloatTensor` of shape `(batch_size, num_regions, num_region_classes)`):
                the detector's class distribution, the target at `masked_regions`.
            region_feature_targets (`torch.FloatTensor` of shape `(batch_size, num_regions, v_feature_size)`):
                the original features, the target at `masked_regions` when
                `config.masked_region_target == "features"`.
            itm_labels (`torch.LongTensor` of shape `(batch_size,)`): 1 matched pair, 0 mismatched.
            masked_token_positions (`torch.LongTensor` of shape `(token_capacity,)`): the rows the token head
                scores, as flat indices `b * text_length + t`: the labelled positions, then padding up to a
                capacity that the batch's shape fixes (`SGPCollator` makes them); every position when omitted.
            masked_token_weights (`torch.FloatTensor` of shape `(token_capacity,)`): 1 for a labelled row, 0 for
                a padding row; required with `masked_token_positions`.
            masked_region_positions (`torch.LongTensor` of shape `(region_capacity,)`) and
                masked_region_weights (`torch.FloatTensor` of shape `(region_capacity,)`): the same for the
                region head, as flat indices `b * num_regions + r` of the regions it scores.

        Token targets are expected on matched pairs only (the collator blanks them on mismatched ones);
        masked regions are scored on matched pairs only (all pairs when `itm_labels` is omitted). A row
        counts in a loss where its weight is nonzero and the targets mark it (a label, a masked region of a
        matched pair): the positions only bound the work, so that every shape is known before the step
        runs and the host never waits for a count.
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
            output_attentions=output_attentions,
        )
        token_rows = ScoredRows.of(labels, masked_token_positions, masked_token_weights)
        token_logits, token_loss, losses = self.masked_token_losses(
            outputs.text_hidden_states, labels, task_ids, token_rows
        )
        region_logits, losses["mrc"] = self.masked_region_loss(
            outputs.image_hidden_states,
            masked_regions,
            itm_labels,
            region_class_targets,
            region_feature_targets,
            ScoredRows.of(masked_regions, masked_region_positions, masked_region_weights),
        )
        itm_logits, losses["itm"] = self.image_text_matching_loss(outputs.pooled_output, itm_labels)
        losses = {task: value for task, value in losses.items() if value is not None}
        return ErnieVilForPreTrainingOutput(
            loss=self.weighted_loss(losses, token_loss),
            **{loss_name(task): value.reported() for task, value in losses.items()},
            masked_token_logits=token_logits,
            masked_region_logits=region_logits,
            itm_logits=itm_logits,
            co_attentions=outputs.co_attentions,
        )

    def masked_token_losses(
        self,
        text_states: torch.Tensor,
        labels: torch.Tensor | None,
        task_ids: torch.Tensor | None,
        rows: ScoredRows | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, dict[str, TaskLoss]]:
        """MLM and the three SGP losses: the token head's cross-entropy at the labelled rows, averaged within
        each task of ``TOKEN_TASKS``, through ``config.masked_token_loss_implementation``.

        Each row's weight in the total, its task's weight over the task's count, is known before the loss
        runs, so the loss function returns the weighted total itself (a fused one forms its gradient in
        the forward) and the per-task means are read off the rows' losses for reporting.

        Args:
            text_states: (B, T, Ct); labels, task_ids: (B, T), -100 where nothing is predicted; rows: the N
                rows to score (``ScoredRows.of(labels, ...)``).

        Returns:
            the logits (N, V) of the rows (None without labels, or from a fused loss that never forms them);
            the token tasks' weighted total () (None without labels), what they add to ``loss``; and every
            token task's loss, not differentiable (none without labels).
        """
        if labels is None:
            return None, None, {}
        row_labels = torch.where(rows.weights > 0, rows.gather(labels), IGNORE_INDEX)  # (N,) -100: padding
        tasks = rows.gather(task_ids) if task_ids is not None else torch.full_like(row_labels, MLM_TASK_ID)
        # (N, tasks): a sum per task, not a selection per task, keeps every shape known to the compiler.
        in_task = tasks[:, None] == torch.arange(len(TOKEN_TASKS), device=tasks.device)
        in_task &= (row_labels != IGNORE_INDEX)[:, None]
        counts = in_task.sum(0)  # (tasks,)
        task_weights = [self.config.task_loss_weights[task] for task in TOKEN_TASKS]
        row_weight = sum(
            in_task[:, i] * (weight / counts[i].clamp(min=1)) for i, weight in enumerate(task_weights)
        )  # (N,) float32
        hidden = self.token_head.transform(rows.gather(text_states))  # (N, Ct)
        decoder = self.token_head.decoder
        loss_function = masked_token_loss_function(self.config.masked_token_loss_implementation)
        total, per_row, logits = loss_function(hidden, decoder.weight, decoder.bias, row_labels, row_weight)
        sums = torch.where(in_task, per_row[:, None], 0.0).sum(0)  # (tasks,): a NaN stays in its task
        means = sums / counts.clamp(min=1)
        return logits, total, {task: TaskLoss(means[i], counts[i]) for i, task in enumerate(TOKEN_TASKS)}

    def masked_region_loss(
        self,
        image_states: torch.Tensor,
        masked_regions: torch.Tensor | None,
        itm_labels: torch.Tensor | None,
        region_class_targets: torch.Tensor | None,
        region_feature_targets: torch.Tensor | None,
        rows: ScoredRows | None,
    ) -> tuple[torch.Tensor | None, TaskLoss | None]:
        """Masked-region classification on the matched pairs: KL(detector distribution || softmax(logits))
        summed over classes and averaged over regions, or the feature regression MSE.

        Regions are masked on every pair (so that [IMG] cannot tell matched from mismatched pairs), but
        scored on matched pairs only.

        Args:
            image_states: (B, R, Cv) with [IMG] first; masked_regions: (B, R - 1); itm_labels: (B,);
            region_class_targets: (B, R - 1, classes); region_feature_targets: (B, R - 1, F); rows: the N
            rows of the (B, R - 1) regions to score (``ScoredRows.of(masked_regions, ...)``).

        Returns:
            the logits (N, classes or F) of the rows (None without ``masked_regions``), and the loss (None
            without ``masked_regions``; zero, counting no region, when none is scored).
        """
        if masked_regions is None:
            return None, None
        scored = masked_regions.bool()  # (B, R - 1)
        if itm_labels is not None:
            scored = scored & (itm_labels[:, None] == 1)
        scored = rows.gather(scored) & (rows.weights > 0)  # (N,)
        logits = at_least_float32(self.region_head(rows.gather(image_states[:, 1:])))  # (N, classes or F)
        count = scored.sum()
        if self.config.masked_region_target == "class_distribution":
            if region_class_targets is None:
                raise ValueError(
                    "masked_regions were given but region_class_targets is missing; this model predicts the "
                    "detector class distribution (config.masked_region_target='class_distribution')"
                )
            target = at_least_float32(rows.gather(region_class_targets))  # (N, classes)
            per_region = F.kl_div(F.log_softmax(logits, dim=-1), target, reduction="none").sum(-1)  # (N,)
            total = torch.where(scored, per_region, 0.0).sum()
            return logits, TaskLoss(total / count.clamp(min=1), count)  # KL's "batchmean"
        if region_feature_targets is None:
            raise ValueError(
                "masked_regions were given but region_feature_targets is missing; this model regresses region "
                "features (config.masked_region_target='features')"
            )
        target = at_least_float32(rows.gather(region_feature_targets))  # (N, F)
        per_region = F.mse_loss(logits, target, reduction="none").sum(-1)  # (N,)
        total = torch.where(scored, per_region, 0.0).sum()
        return logits, TaskLoss(total / (count * logits.shape[-1]).clamp(min=1), count)

    def image_text_matching_loss(
        self, pooled_output: torch.Tensor, itm_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, TaskLoss | None]:
        """Image-text matching: the ITM head's logits (B, 2) on the fused vector (B, Co), and their
        cross-entropy against itm_labels (B,) (None without labels)."""
        logits = self.itm_head(pooled_output)  # (B, 2)
        if itm_labels is None:
            return logits, None
        return logits, TaskLoss(F.cross_entropy(at_least_float32(logits), itm_labels))

    def weighted_loss(
        self, losses: dict[str, TaskLoss], token_loss: torch.Tensor | None
    ) -> torch.Tensor | None:
        """The weighted sum of the task losses (``config.task_loss_weights``), None when there is none: the
        token tasks' weighted total as ``masked_token_losses`` formed it, plus the other tasks' losses.

        ZeRO-2 fills its gradient buckets in the order gradients arrive, so a head that gets no gradient on
        one rank (a micro-batch without a scored masked region, say) desynchronises the ranks' reductions.
        A task with nothing to score therefore still joins the sum, as a zero computed from its head's
        empty output: its parameters get a zero gradient.
        """
        weights = self.config.task_loss_weights
        terms = [weights[task] * value.mean for task, value in losses.items() if task not in TOKEN_TASKS]
        if token_loss is not None:
            terms.append(token_loss)
        return sum(terms) if terms else None


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
