"""ERNIE-ViL model configuration (the numbers of the official ``ernie_vil_base``/``large`` configs)."""

from __future__ import annotations

import itertools

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

#: Per-task loss weights used when the config names none: every pretraining task counts once.
DEFAULT_TASK_LOSS_WEIGHTS = {
    "mlm": 1.0,
    "sgp_object": 1.0,
    "sgp_attribute": 1.0,
    "sgp_relation": 1.0,
    "mrc": 1.0,
    "itm": 1.0,
    "grounding": 1.0,
}

MASKED_REGION_TARGETS = ("class_distribution", "features")

#: Presets. ``base``/``large`` are the official configs; ``small`` has exactly the all-MiniLM-L6-v2 text
#: stream (so it can start from those weights) and a light image stream for CPU runs; ``tiny`` is for
#: tests and deliberately uses a different width in every stream so that a mixed-up size fails loudly.
PRESETS: dict[str, dict] = {
    "base": {},
    "large": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "v_num_attention_heads": 16,
        "v_intermediate_size": 4096,
        "co_num_attention_heads": 16,
        "text_co_layer_ids": [18, 19, 20, 21, 22, 23],
    },
    # The CPU demo's model: MiniLM's width and its first three layers (text stream initialised from
    # all-MiniLM-L6-v2), a co-layer after each text layer, box embeddings before every co-layer (without them
    # relations stay at chance: benchmarks/RESULTS.md), the grounding loss on every co-layer and the
    # grounded position bias (without them the model cannot find a relation's two regions in the demo's
    # budget: RESULTS.md, "Where relations stall"), a narrow image stream, and no dropout (demo runs are far
    # too short to overfit). Cheap enough for 700 steps of 64 pairs in the 15 minutes of the demo.
    "small": {
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
        "co_layer_box_embeddings": True,
        "grounding_co_layers": [0, 1, 2],
        "grounded_position_bias": True,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    },
    "tiny": {
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
        "co_layer_box_embeddings": True,
        "grounding_co_layers": [0, 1],
        "grounded_position_bias": True,
    },
}


@strict
class ErnieVilConfig(PreTrainedConfig):
    r"""Configuration of the two-stream ERNIE-ViL encoder and its pretraining heads.

    Defaults are ERNIE-ViL base. ``ErnieVilConfig.from_preset("large")`` gives the large model.

    Text stream (a BERT encoder): ``vocab_size``, ``hidden_size``, ``num_hidden_layers``,
    ``num_attention_heads``, ``intermediate_size``, ``max_position_embeddings``, ``type_vocab_size``.
    Image stream: ``v_feature_size`` (detector region feature width, 2048), ``v_loc_size`` (5: x1/W, y1/H,
    x2/W, y2/H, area/(W*H)), ``v_hidden_size``, ``v_num_hidden_layers``, ``v_num_attention_heads``,
    ``v_intermediate_size``.
    Co-attention: ``co_hidden_size`` and ``co_num_attention_heads``; co-layer ``i`` runs after text layers
    ``0 .. text_co_layer_ids[i] - 1`` and image layers ``0 .. image_co_layer_ids[i] - 1``; the layers
    left after the last co-layer run at the end. ``co_layer_box_embeddings`` (not in ERNIE-ViL, off in
    ``base`` and ``large``) adds a learned embedding of each region's 5-d location to the image states
    before every co-layer, as DETR adds its positional encodings at every layer rather than once.
    Grounding (not in ERNIE-ViL either; off in ``base`` and ``large``): ``grounding_co_layers`` names the
    co-layers whose image->text attention the grounding loss teaches to land on the caption's word for each
    region (empty: no grounding loss); ``grounded_position_bias`` gives every co-layer's text->image heads
    a learned bias by the offset between a region's grounded text position and the query token's, over
    offsets ``-grounded_position_span .. grounded_position_span``, its table multiplied by
    ``grounded_position_gain`` (see ``ErnieVilGroundedPositionBias``).
    Heads: ``num_region_classes`` (1601 Visual Genome detector classes), ``num_region_attributes`` (401,
    used by fine-tuning), ``masked_region_target`` (``"class_distribution"``: KL to the detector's
    distribution; ``"features"``: regression of the original feature), ``task_loss_weights``.
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
    co_layer_box_embeddings: bool = False
    grounding_co_layers: list[int] | tuple[int, ...] = ()
    grounded_position_bias: bool = False
    grounded_position_span: int = 12
    grounded_position_gain: float | int = 20.0

    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02

    num_region_classes: int = 1601
    num_region_attributes: int = 401
    masked_region_target: str = "class_distribution"
    task_loss_weights: dict[str, float] | None = None
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        self.text_co_layer_ids = [int(i) for i in self.text_co_layer_ids]
        self.image_co_layer_ids = [int(i) for i in self.image_co_layer_ids]
        self.grounding_co_layers = [int(i) for i in self.grounding_co_layers]
        self.task_loss_weights = {**DEFAULT_TASK_LOSS_WEIGHTS, **(self.task_loss_weights or {})}
        super().__post_init__(**kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> ErnieVilConfig:
        """Build the config of a named preset (``tiny``, ``small``, ``base``, ``large``), then apply overrides."""
        if name not in PRESETS:
            raise ValueError(f"Unknown ERNIE-ViL preset {name!r}; expected one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

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
        if any(not 0 <= i < self.num_co_layers for i in self.grounding_co_layers) or len(
            set(self.grounding_co_layers)
        ) != len(self.grounding_co_layers):
            raise ValueError(
                f"grounding_co_layers={self.grounding_co_layers} must name distinct co-layers of the "
                f"{self.num_co_layers} this model has (indices 0 .. {self.num_co_layers - 1}); [] for no grounding loss"
            )
        if self.grounded_position_span < 1:
            raise ValueError(f"grounded_position_span must be >= 1, got {self.grounded_position_span}")
        if self.masked_region_target not in MASKED_REGION_TARGETS:
            raise ValueError(
                f"masked_region_target={self.masked_region_target!r}; expected one of {MASKED_REGION_TARGETS}"
            )
        unknown = set(self.task_loss_weights) - set(DEFAULT_TASK_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(
                f"task_loss_weights names unknown tasks {sorted(unknown)}; known: {sorted(DEFAULT_TASK_LOSS_WEIGHTS)}"
            )


__all__ = ["PRESETS", "ErnieVilConfig"]
