"""ERNIE-ViL model configuration (the numbers of the official ``ernie_vil_base``/``large`` configs), the
configuration of the demo's grounded variant, and the named presets of both."""

from __future__ import annotations

import itertools

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ernievil_ds.objectives import GROUNDING_TASK, PRETRAINING_TASKS

MASKED_REGION_TARGETS = ("class_distribution", "features")


@strict
class ErnieVilConfig(PreTrainedConfig):
    r"""Configuration of the two-stream ERNIE-ViL encoder and its pretraining heads, as published.

    Defaults are ERNIE-ViL base. ``ErnieVilConfig.from_preset("large")`` gives the large model.

    Text stream (a BERT encoder): ``vocab_size``, ``hidden_size``, ``num_hidden_layers``,
    ``num_attention_heads``, ``intermediate_size``, ``max_position_embeddings``, ``type_vocab_size``.
    Image stream: ``v_feature_size`` (detector region feature width, 2048), ``v_loc_size`` (5: x1/W, y1/H,
    x2/W, y2/H, area/(W*H)), ``v_hidden_size``, ``v_num_hidden_layers``, ``v_num_attention_heads``,
    ``v_intermediate_size``.
    Co-attention: ``co_hidden_size`` and ``co_num_attention_heads``; co-layer ``i`` runs after text layers
    ``0 .. text_co_layer_ids[i] - 1`` and image layers ``0 .. image_co_layer_ids[i] - 1``; the layers
    left after the last co-layer run at the end.
    ``layer_norm_eps`` defaults to 1e-5, Paddle's LayerNorm epsilon, which the official model uses.
    Initialisation (``initializer_range``): every weight from a normal distribution truncated at two
    standard deviations, std 0.02, every bias zero, as the official code's ``TruncatedNormal``.
    Heads: ``num_region_classes`` (1601 Visual Genome detector classes), ``num_region_attributes`` (401,
    used by fine-tuning), ``masked_region_target`` (``"class_distribution"``: KL to the detector's
    distribution; ``"features"``: regression of the original feature), ``task_loss_weights`` (a weight per
    task of ``ernievil_ds.objectives.PRETRAINING_TASKS``; a task left out weighs 1),
    ``masked_token_loss_implementation`` (the name of the masked-token cross-entropy in
    ``ernievil_ds.masked_token_loss``: ``"torch"``, or ``"triton"`` once the Triton kernel package of
    ``kernels/`` is imported).
    """

    model_type = "ernievil"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    pad_token_id: int | None = 0

    v_feature_size: int = 2048
    v_loc_size: int = 5
    v_hidden_size: int = 1024
    v_num_hidden_layers: int = 6
    v_num_attention_heads: int = 8
    v_intermediate_size: int = 1024

    co_hidden_size: int = 1024
    co_num_attention_heads: int = 8
    text_co_layer_ids: list[int] | tuple[int, ...] = (6, 7, 8, 9, 10, 11)
    image_co_layer_ids: list[int] | tuple[int, ...] = (0, 1, 2, 3, 4, 5)

    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02

    num_region_classes: int = 1601
    num_region_attributes: int = 401
    masked_region_target: str = "class_distribution"
    task_loss_weights: dict[str, float] | None = None
    masked_token_loss_implementation: str = "torch"
    tie_word_embeddings: bool = True

    #: The tasks that ``task_loss_weights`` may name.
    loss_tasks = PRETRAINING_TASKS

    def __post_init__(self, **kwargs):
        self.text_co_layer_ids = [int(i) for i in self.text_co_layer_ids]
        self.image_co_layer_ids = [int(i) for i in self.image_co_layer_ids]
        self.task_loss_weights = {**dict.fromkeys(self.loss_tasks, 1.0), **(self.task_loss_weights or {})}
        super().__post_init__(**kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> ErnieVilConfig:
        """The config of a named preset (see ``PRESETS``) with ``overrides`` applied; the preset decides
        the class (the grounded presets give an ``ErnieVilGroundedConfig``)."""
        if name not in PRESETS:
            raise ValueError(f"Unknown ERNIE-ViL preset {name!r}; expected one of {sorted(PRESETS)}")
        config_class, values = PRESETS[name]
        return config_class(**{**values, **overrides})

    @property
    def num_co_layers(self) -> int:
        return len(self.text_co_layer_ids)

    def validate_architecture(self):
        """Part of ``@strict`` validation: every size must divide and every co-layer index must exist."""
        for stream, hidden, heads in (
            ("text", self.hidden_size, self.num_attention_heads),
            ("image", self.v_hidden_size, self.v_num_attention_heads),
            ("co-attention", self.co_hidden_size, self.co_num_attention_heads),
        ):
            if heads <= 0 or hidden % heads != 0:
                raise ValueError(
                    f"The {stream} hidden size ({hidden}) is not a multiple of its number of attention heads ({heads})"
                )
        if len(self.text_co_layer_ids) != len(self.image_co_layer_ids):
            raise ValueError(
                f"text_co_layer_ids ({self.text_co_layer_ids}) and image_co_layer_ids "
                f"({self.image_co_layer_ids}) must have one entry per co-layer, i.e. the same length"
            )
        for stream, ids, num_layers in (
            ("text", self.text_co_layer_ids, self.num_hidden_layers),
            ("image", self.image_co_layer_ids, self.v_num_hidden_layers),
        ):
            if any(i < 0 or i > num_layers for i in ids):
                raise ValueError(
                    f"{stream}_co_layer_ids {ids} must lie in [0, {num_layers}] "
                    f"(the {stream} stream has {num_layers} layers)"
                )
            if any(b <= a for a, b in itertools.pairwise(ids)):
                raise ValueError(f"{stream}_co_layer_ids {ids} must be strictly increasing")

    def validate_heads(self):
        """Part of ``@strict`` validation: a known region target, and loss weights for known tasks only."""
        if self.masked_region_target not in MASKED_REGION_TARGETS:
            raise ValueError(
                f"masked_region_target={self.masked_region_target!r}; expected one of {MASKED_REGION_TARGETS}"
            )
        unknown = set(self.task_loss_weights) - set(self.loss_tasks)
        if unknown:
            raise ValueError(
                f"task_loss_weights names unknown tasks {sorted(unknown)}; known: {list(self.loss_tasks)}"
            )


@strict
class ErnieVilGroundedConfig(ErnieVilConfig):
    r"""ERNIE-ViL with the CPU demo's three extras for relations (``ernievil_ds.grounding``); not in the paper.

    On a 15-minute CPU budget the paper's model does not learn which two regions a masked relation is
    about; these extras make it (``docs/design-notes.md`` has the evidence):

    - ``co_layer_box_embeddings``: every co-layer adds its own learned embedding of the regions' 5-d
      locations to the image states, as DETR re-adds its positional encodings at every layer;
    - ``grounding_co_layers``: the co-layers whose image->text attention a grounding loss (weight
      ``task_loss_weights["grounding"]``) teaches to land on the caption word that names each region;
      the loss reads the attention weights, so attention dropout must be 0 when it is on;
    - ``grounded_position_bias``: every co-layer's text->image heads get a learned bias by the offset
      between a region's grounded text position and the query token, over offsets
      ``-grounded_position_span .. grounded_position_span``, the table multiplied by
      ``grounded_position_gain``.

    Initialisation departs from the paper's too, and only in these presets: the co-attention query/key
    projections and the location projections start at std 1/sqrt(fan-in) and the co-layer box embeddings
    at three times that, so that geometry and a word's choice of region count from the first step.
    """

    model_type = "ernievil_grounded"

    co_layer_box_embeddings: bool = True
    grounding_co_layers: list[int] | tuple[int, ...] = ()
    grounded_position_bias: bool = True
    grounded_position_span: int = 12
    grounded_position_gain: float | int = 20.0

    loss_tasks = (*PRETRAINING_TASKS, GROUNDING_TASK)

    def __post_init__(self, **kwargs):
        self.grounding_co_layers = [int(i) for i in self.grounding_co_layers]
        super().__post_init__(**kwargs)

    def validate_grounding(self):
        """Part of ``@strict`` validation: grounding layers that exist, a positive span, no attention dropout
        under the grounding loss."""
        layers = self.grounding_co_layers
        if any(not 0 <= i < self.num_co_layers for i in layers) or len(set(layers)) != len(layers):
            raise ValueError(
                f"grounding_co_layers={layers} must name distinct co-layers of the {self.num_co_layers} this "
                f"model has (indices 0 .. {self.num_co_layers - 1}); [] for no grounding loss"
            )
        if self.grounded_position_span < 1:
            raise ValueError(f"grounded_position_span must be >= 1, got {self.grounded_position_span}")
        if layers and self.attention_probs_dropout_prob:
            raise ValueError(
                f"The grounding loss reads the co-attention weights, which attention dropout zeroes: set "
                f"attention_probs_dropout_prob to 0 (got {self.attention_probs_dropout_prob}) or "
                f"grounding_co_layers to []"
            )


_TINY = {
    # Test size; a different width in every stream, so that a mixed-up size fails loudly.
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "max_position_embeddings": 64,
    "v_hidden_size": 24,
    "v_num_hidden_layers": 2,
    "v_num_attention_heads": 2,
    "v_intermediate_size": 40,
    "co_hidden_size": 16,
    "co_num_attention_heads": 2,
    "text_co_layer_ids": [1, 2],
    "image_co_layer_ids": [0, 1],
}

#: Named presets: name -> (config class, field values). ``base`` and ``large`` are the official
#: configs and ``tiny`` their architecture at test size. ``small`` is the CPU demo's model: exactly the
#: all-MiniLM-L6-v2 text stream (its first three layers, BERT's LayerNorm epsilon, so that it starts
#: from those weights), a co-layer after each text layer, a narrow image stream, the grounding extras
#: on every co-layer, and no dropout (700 steps are far too few to overfit). ``tiny-grounded`` is
#: ``tiny`` with the same extras.
PRESETS: dict[str, tuple[type[ErnieVilConfig], dict]] = {
    "base": (ErnieVilConfig, {}),
    "large": (
        ErnieVilConfig,
        {
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "intermediate_size": 4096,
            "v_num_attention_heads": 16,
            "v_intermediate_size": 4096,
            "co_num_attention_heads": 16,
            "text_co_layer_ids": [18, 19, 20, 21, 22, 23],
        },
    ),
    "small": (
        ErnieVilGroundedConfig,
        {
            "hidden_size": 384,
            "num_hidden_layers": 3,
            "num_attention_heads": 12,
            "intermediate_size": 1536,
            "v_hidden_size": 256,
            "v_num_hidden_layers": 2,
            "v_num_attention_heads": 4,
            "v_intermediate_size": 512,
            "co_hidden_size": 256,
            "co_num_attention_heads": 4,
            "text_co_layer_ids": [1, 2, 3],
            "image_co_layer_ids": [0, 1, 2],
            "grounding_co_layers": [0, 1, 2],
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
            "layer_norm_eps": 1e-12,
        },
    ),
    "tiny": (ErnieVilConfig, _TINY),
    "tiny-grounded": (
        ErnieVilGroundedConfig,
        {
            **_TINY,
            "grounding_co_layers": [0, 1],
            "attention_probs_dropout_prob": 0.0,
            "layer_norm_eps": 1e-12,
        },
    ),
}


__all__ = ["PRESETS", "ErnieVilConfig", "ErnieVilGroundedConfig"]
