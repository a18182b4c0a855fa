"""The official fine-tuning optimiser policy (``optim/optimization.py`` of the release): Adam with
decoupled weight decay (none on LayerNorms and biases), optional layer-wise learning-rate decay, and
linear warmup then step decay (``manual_warmup_decay``).

Depth in the two-stream encoder. The blocks run in the order of ``ErnieVilModel.encode``: the text and
image layers between two co-layers run side by side, so the k-th of them in either stream shares depth
with the k-th of the other; each co-layer is one depth after them. With ERNIE-ViL base (text layers
T0..T11, image layers V0..V5, co-layers C0..C5 after text layers 6..11) that is

    T0..T5 -> 0..5, C_i -> 6 + 2i, T(6+i) and V_i -> 7 + 2i, 18 depths in all,

the official ``layer_decay`` table (``text_init_layers=6``, ``n_layers=18``). Each embedding sits one
depth before the first block that reads it: text embeddings -1, image embeddings 5 (one before C0). A
parameter at depth d gets the learning rate times ``decay ** (num_depths - d)``; the poolers and the
task head sit above the encoder and get it times 1 (times ``head_lr_scale``: the official VQA conf
gives its classifier 2.5).

The official script numbers depths by its two arguments rather than by the model, and defaults them to
the large model's table (18, 30). A conf that sets a layer decay without them (RefCOCO+) trained base
with that table: ``official_table_depths`` reproduces it (``--layer-decay-table 18,30``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR

from ernievil_ds.configuration_ernievil import ErnieVilConfig

#: The official fine-tuning's Adam and decoupled weight decay.
WEIGHT_DECAY = 0.01
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class EncoderDepths:
    """Depth of every block of the encoder, and the number of depths (the heads sit at ``num_depths``)."""

    text_embeddings: int
    image_embeddings: int
    text_layers: tuple[int, ...]
    image_layers: tuple[int, ...]
    co_layers: tuple[int, ...]
    num_depths: int


def encoder_depths(config: ErnieVilConfig) -> EncoderDepths:
    """The depth of each encoder block under the interleaved schedule of ``config`` (see the module doc)."""
    text, image, co = [], [], []
    depth = 0
    stops = zip(
        [*config.text_co_layer_ids, config.num_hidden_layers],
        [*config.image_co_layer_ids, config.v_num_hidden_layers],
    )
    for index, (text_stop, image_stop) in enumerate(stops):
        text_gap, image_gap = text_stop - len(text), image_stop - len(image)
        text += [depth + k for k in range(text_gap)]
        image += [depth + k for k in range(image_gap)]
        depth += max(text_gap, image_gap)
        if index < config.num_co_layers:
            co.append(depth)
            depth += 1
    return EncoderDepths(
        text_embeddings=min(text + co) - 1,
        image_embeddings=min(image + co) - 1,
        text_layers=tuple(text),
        image_layers=tuple(image),
        co_layers=tuple(co),
        num_depths=depth,
    )


def official_table_depths(config: ErnieVilConfig, text_init_layers: int, n_layers: int) -> EncoderDepths:
    """The depths the official ``layer_decay`` gives ``config``'s blocks with its ``text_init_layers`` and
    ``n_layers`` arguments: text layer l at l below ``text_init_layers`` and ``text_init_layers + 2 (l -
    text_init_layers) + 1`` from it on, image layer l at ``text_init_layers + 2 l + 1``, co-layer l at
    ``text_init_layers + 2 l``, the text embeddings at -1 and the image embeddings at ``text_init_layers
    - 1``. With (6, 18) on base, and (18, 30) on large, these are ``encoder_depths(config)``."""
    t = text_init_layers
    return EncoderDepths(
        text_embeddings=-1,
        image_embeddings=t - 1,
        text_layers=tuple(
            layer if layer < t else t + 2 * (layer - t) + 1 for layer in range(config.num_hidden_layers)
        ),
        image_layers=tuple(t + 2 * layer + 1 for layer in range(config.v_num_hidden_layers)),
        co_layers=tuple(t + 2 * layer for layer in range(config.num_co_layers)),
        num_depths=n_layers,
    )


def parameter_depth(name: str, depths: EncoderDepths, prefix: str = "ernievil.") -> int:
    """The depth of a parameter named as in the fine-tuning model (``ernievil.text_layers.3.…``);
    ``depths.num_depths`` for the poolers, the heads and anything else outside the encoder's blocks."""
    if not name.startswith(prefix):
        return depths.num_depths
    parts = name[len(prefix) :].split(".")
    if parts[0] == "text_embeddings":
        return depths.text_embeddings
    if parts[0] == "image_embeddings":
        return depths.image_embeddings
    layers = {
        "text_layers": depths.text_layers,
        "image_layers": depths.image_layers,
        "co_layers": depths.co_layers,
    }
    if parts[0] in layers:
        return layers[parts[0]][int(parts[1])]
    return depths.num_depths


def finetuning_parameter_groups(
    model: torch.nn.Module,
    learning_rate: float,
    *,
    weight_decay: float = WEIGHT_DECAY,
    layer_decay: float | None = None,
    layer_decay_table: tuple[int, int] | None = None,
    head_lr_scale: float = 1.0,
) -> list[dict]:
    """AdamW parameter groups of the official policy, one per (learning-rate scale, decayed or not).

    A group's ``lr`` is ``learning_rate`` times its scale: the layer decay of its depth (1 without
    ``layer_decay``) and ``head_lr_scale`` outside the encoder (``ernievil.``). The depths are the
    model's own (``encoder_depths``), or those of the official script's ``(text_init_layers, n_layers)``
    when ``layer_decay_table`` gives them (``official_table_depths``). The official code scales
    each parameter's Adam step by its layer factor but not its weight decay (``param -= wd * lr * param``
    with the scheduled lr, times the head's own scale), so a layer-decayed group's ``weight_decay`` is
    divided by its layer factor: AdamW multiplies the two back to ``wd * lr``. Biases and LayerNorm
    parameters get no weight decay; frozen parameters are left out.

    Raises:
        ValueError: ``layer_decay`` outside (0, 1].
    """
    if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer decay must lie in (0, 1], got {layer_decay}")
    config = model.config
    if layer_decay_table is None:
        depths = encoder_depths(config)
    else:
        depths = official_table_depths(config, *layer_decay_table)
    groups: dict[tuple[float, float], dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        layer_scale = 1.0
        if layer_decay is not None:
            layer_scale = layer_decay ** (depths.num_depths - parameter_depth(name, depths))
        scale = layer_scale * (1.0 if name.startswith("ernievil.") else head_lr_scale)
        no_decay = name.endswith(".bias") or ".LayerNorm." in name
        decay = 0.0 if no_decay else weight_decay / layer_scale
        group = groups.setdefault(
            (scale, decay), {"params": [], "lr": learning_rate * scale, "weight_decay": decay}
        )
        group["params"].append(parameter)
    return list(groups.values())


def manual_warmup_decay_factor(
    step: int, warmup_steps: int, decay_steps: tuple[int, ...], decay_ratio: float
) -> float:
    """The multiple of the peak learning rate at ``step`` (0-based, the official global step): ``step /
    warmup_steps`` during warmup, then ``decay_ratio ** i`` before the i-th boundary of ``decay_steps``
    (``decay_ratio ** len(decay_steps)`` after the last)."""
    if step < warmup_steps:
        return step / warmup_steps
    passed = sum(step >= boundary for boundary in decay_steps)
    return decay_ratio**passed


def manual_warmup_decay(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    decay_steps: tuple[int, ...] = (),
    decay_ratio: float = 0.1,
) -> LambdaLR:
    """The official fine-tuning schedule on ``optimizer``, whose groups' learning rates are the peaks.

    Raises:
        ValueError: negative ``warmup_steps`` or ``decay_steps`` not increasing.
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup steps must be >= 0, got {warmup_steps}")
    if any(b <= a for a, b in itertools.pairwise(decay_steps)):
        raise ValueError(f"decay steps must increase, got {list(decay_steps)}")
    boundaries = tuple(decay_steps)
    return LambdaLR(
        optimizer, lambda step: manual_warmup_decay_factor(step, warmup_steps, boundaries, decay_ratio)
    )


def build_optimizer(
    model: torch.nn.Module,
    learning_rate: float,
    *,
    weight_decay: float = WEIGHT_DECAY,
    layer_decay: float | None = None,
    layer_decay_table: tuple[int, int] | None = None,
    head_lr_scale: float = 1.0,
) -> torch.optim.AdamW:
    """AdamW over ``finetuning_parameter_groups`` with the official betas and epsilon, fused: one kernel
    per parameter group, where torch's default on the CPU loops over the parameters with a temporary per
    operation (1.5x faster fine-tuning steps on the CPU, ``benchmarks/bench_finetune_step.py``)."""
    groups = finetuning_parameter_groups(
        model,
        learning_rate,
        weight_decay=weight_decay,
        layer_decay=layer_decay,
        layer_decay_table=layer_decay_table,
        head_lr_scale=head_lr_scale,
    )
    return torch.optim.AdamW(groups, lr=learning_rate, betas=ADAM_BETAS, eps=ADAM_EPS, fused=True)


__all__ = [
    "EncoderDepths",
    "build_optimizer",
    "encoder_depths",
    "finetuning_parameter_groups",
    "manual_warmup_decay",
    "manual_warmup_decay_factor",
    "official_table_depths",
    "parameter_depth",
]
