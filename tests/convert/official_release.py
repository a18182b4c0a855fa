"""The official release's config and vocabulary files for the converter tests: a small official-format
config and a vocab.txt writer."""

from __future__ import annotations

from pathlib import Path

#: Official-format config keys (those ``ernie_vil.py`` reads) of a small model with a different width and head
#: count in every stream, a co-layer that is not the first layer of either stream, and ReLU.
SMALL_OFFICIAL_CONFIG = {
    "hidden_size": 48,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "hidden_act": "relu",
    "v_hidden_size": 40,
    "v_num_attention_heads": 5,
    "v_intermediate_size": 56,
    "co_hidden_size": 36,
    "co_num_attention_heads": 3,
    "co_intermediate_size": 52,
    "vocab_size": 97,
    "max_position_embeddings": 20,
    "sent_type_vocab_size": 3,
    "task_type_vocab_size": 5,
    "class_size": 11,
    "class_attr_size": 7,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "initializer_range": 0.02,
    "v_biattention_id": [1, 2],
    "t_biattention_id": [1, 3],
}
SMALL_FEATURE_SIZE = 24
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_vocab(path: Path, size: int, words: list[str] = ()) -> Path:
    tokens = SPECIAL_TOKENS + list(words)
    tokens += [f"unused{i}" for i in range(size - len(tokens))]
    path.write_text("\n".join(tokens) + "\n")
    return path
