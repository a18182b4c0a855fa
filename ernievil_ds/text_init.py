"""Initialise ERNIE-ViL's text stream from a BERT checkpoint directory.

The text stream's embeddings and layers use ``transformers.BertModel``'s submodule names, so BERT's
``embeddings.*`` and ``encoder.layer.{i}.*`` map onto ``text_embeddings.*`` and ``text_layers.{i}.*`` by a
prefix rename. The image stream, co-layers, poolers and heads keep their fresh initialisation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from ernievil_ds.distributed import get_logger
from ernievil_ds.modeling_ernievil import ErnieVilModel, ErnieVilPreTrainedModel

logger = get_logger(__name__)

#: BERT config fields that must equal the ERNIE-ViL text stream's for the weights to fit.
_MATCHING_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "type_vocab_size",
)
#: BERT config fields the checkpoint must have at least as many of (extra layers/positions go unused).
_AT_LEAST_FIELDS = ("num_hidden_layers", "max_position_embeddings")
_BERT_PREFIXES = ("bert.", "model.")
_LAYER_KEY = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")


@dataclass
class TextInitReport:
    """What a text-stream initialisation loaded (ERNIE-ViL names), left fresh, and ignored (BERT names)."""

    loaded: list[str] = field(default_factory=list)
    not_initialised: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"loaded {len(self.loaded)} tensors into the text stream; {len(self.not_initialised)} tensors keep "
            f"their fresh initialisation (image stream, co-layers, poolers, heads); "
            f"{len(self.ignored)} checkpoint tensors unused ({_abbreviate(self.ignored)})"
        )


def _abbreviate(names: list[str], limit: int = 4) -> str:
    """``names`` joined, or the first ``limit`` of them and how many more (a deeper checkpoint's layers)."""
    if len(names) <= limit:
        return ", ".join(names) or "none"
    return f"{', '.join(names[:limit])} and {len(names) - limit} more"


def _bert_to_ernievil_name(name: str) -> str | None:
    """Map one BERT state-dict key to the ErnieVilModel key it initialises, or None when it has no place."""
    for prefix in _BERT_PREFIXES:
        name = name.removeprefix(prefix)
    if name.startswith("embeddings.") and not name.endswith("position_ids"):
        return "text_embeddings." + name.removeprefix("embeddings.")
    match = _LAYER_KEY.match(name)
    if match:
        return f"text_layers.{match.group(1)}.{match.group(2)}"
    return None


def _load_bert_state_dict(bert_dir: Path) -> dict[str, torch.Tensor]:
    safetensors_file = bert_dir / "model.safetensors"
    if safetensors_file.is_file():
        return load_file(safetensors_file)
    torch_file = bert_dir / "pytorch_model.bin"
    if torch_file.is_file():
        return torch.load(torch_file, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{bert_dir} holds neither model.safetensors nor pytorch_model.bin")


def init_text_stream_from_bert(model: ErnieVilPreTrainedModel, bert_dir: str | Path) -> TextInitReport:
    """Copy a BERT checkpoint's embeddings and encoder layers into ``model``'s text stream, in place.

    A checkpoint deeper than the text stream gives it its first ``num_hidden_layers`` layers; the rest are
    reported unused.

    Args:
        model: an ``ErnieVilModel`` or a model holding one (``ErnieVilForPreTraining``).
        bert_dir: a directory with ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``).

    Raises:
        FileNotFoundError: the directory or its files are missing.
        ValueError: the BERT shape differs from the text stream's, or has fewer layers (each field named).
    """
    bert_dir = Path(bert_dir)
    config_file = bert_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"No BERT checkpoint at {bert_dir}: {config_file} does not exist")
    bert_config = json.loads(config_file.read_text())
    encoder: ErnieVilModel = model if isinstance(model, ErnieVilModel) else model.ernievil
    mismatches = [
        f"{name}: checkpoint {bert_config.get(name)!r} vs model {getattr(encoder.config, name)!r}"
        for name in _MATCHING_FIELDS
        if bert_config.get(name) != getattr(encoder.config, name)
    ]
    mismatches += [  # the checkpoint may have more of these than the model uses, not fewer
        f"{name}: checkpoint {bert_config.get(name)} < model {getattr(encoder.config, name)}"
        for name in _AT_LEAST_FIELDS
        if bert_config.get(name, 0) < getattr(encoder.config, name)
    ]
    if mismatches:
        raise ValueError(
            f"The BERT checkpoint in {bert_dir} does not fit the ERNIE-ViL text stream: "
            + "; ".join(mismatches)
        )

    target = encoder.state_dict()
    report = TextInitReport()
    updates = {}
    for bert_name, tensor in _load_bert_state_dict(bert_dir).items():
        name = _bert_to_ernievil_name(bert_name)
        if name is None or name not in target:
            report.ignored.append(bert_name)
            continue
        if name == "text_embeddings.position_embeddings.weight":
            tensor = tensor[: encoder.config.max_position_embeddings]
        updates[name] = tensor
    encoder.load_state_dict(updates, strict=False)
    report.loaded = sorted(updates)
    report.not_initialised = sorted(set(target) - set(updates))
    logger.info("Text stream initialised from %s: %s", bert_dir, report.summary())
    return report
