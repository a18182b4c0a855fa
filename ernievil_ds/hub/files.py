"""Which files of a saved model folder are published: safetensors weights, the config (with its
``auto_map``), the model's code (``ernievil_ds.hub.model_code``) and the tokenizer.

Anything else in the folder (optimizer or scheduler states, pickled weights, logs, subfolders) stays
local and is listed with the reason, so that a push never shares what a download would have to unpickle
or what is not part of the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ernievil_ds.errors import UserError, require_dir
from ernievil_ds.hub.model_code import model_code_files

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
#: The files ``save_pretrained`` of a transformers tokenizer writes (fast and slow WordPiece / BPE).
TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
    }
)
#: Suffixes of formats that unpickle (and so may run code) when loaded.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
CARD_FILE = "README.md"


@dataclass(frozen=True)
class ModelFiles:
    """The files of ``model_dir`` to publish (names relative to it, sorted) and those left out, with why."""

    model_dir: Path
    published: tuple[str, ...]
    left_out: tuple[tuple[str, str], ...]

    def sizes(self) -> dict[str, int]:
        """Bytes per published file."""
        return {name: (self.model_dir / name).stat().st_size for name in self.published}


def weight_files(model_dir: Path) -> list[str]:
    """The safetensors weights: ``model.safetensors``, or a sharded model's index and every shard it names.

    Raises:
        UserError: no safetensors weights, or an index naming a shard that is not there.
    """
    index_path = model_dir / WEIGHTS_INDEX_FILE
    if index_path.is_file():
        shards = sorted(set(json.loads(index_path.read_text())["weight_map"].values()))
        missing = [shard for shard in shards if not (model_dir / shard).is_file()]
        if missing:
            raise UserError(f"{index_path} names shards that are not in {model_dir}: {missing}")
        return [WEIGHTS_INDEX_FILE, *shards]
    if (model_dir / WEIGHTS_FILE).is_file():
        return [WEIGHTS_FILE]
    raise UserError(
        f"model folder {model_dir} has no {WEIGHTS_FILE} (nor a sharded {WEIGHTS_INDEX_FILE}): only "
        "safetensors weights are published; save the model with save_pretrained"
    )


def reason_left_out(path: Path) -> str:
    """Why a file or folder of a model folder is not published."""
    if path.is_dir():
        return "a folder: only the model's own files are published"
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return "a pickle-based file (loading it can run code): only safetensors weights are published"
    if path.name == CARD_FILE:
        return "replaced by the generated model card"
    return "not a model file (config.json, safetensors weights, the model's code or tokenizer files)"


def collect_model_files(model_dir: str | Path) -> ModelFiles:
    """Sort the entries of a saved model folder into those to publish and those left out.

    Raises:
        UserError: the folder is missing, or has no ``config.json`` or no safetensors weights.
    """
    model_dir = require_dir(Path(model_dir), "model folder")
    if not (model_dir / CONFIG_FILE).is_file():
        raise UserError(f"model folder {model_dir} has no {CONFIG_FILE}: give a folder save_pretrained wrote")
    wanted = {CONFIG_FILE, *weight_files(model_dir), *model_code_files(), *TOKENIZER_FILES}
    published, left_out = [], []
    for entry in sorted(model_dir.iterdir()):
        if entry.name in wanted and entry.is_file():
            published.append(entry.name)
        else:
            left_out.append((entry.name, reason_left_out(entry)))
    return ModelFiles(model_dir, tuple(published), tuple(left_out))
