"""BERT uncased WordPiece tokenisation and the alignment of scene-graph node spans to WordPieces."""

from __future__ import annotations

import bisect
from pathlib import Path

from ernievil_ds.objectives import NODE_TYPE_IDS


def load_tokenizer(path: str | Path | None = None):
    """Load a fast Hugging Face tokenizer: by default BERT uncased WordPiece, offline from the MiniLM package.

    Args:
        path: any directory or hub id a ``transformers.AutoTokenizer`` accepts; ``None`` for the default.

    Raises:
        ValueError: when the tokenizer at ``path`` has no fast (Rust) implementation, which the character
            offsets of the span alignment need.
    """
    from transformers import AutoTokenizer

    from ernievil_ds.assets import minilm_dir

    source = str(path) if path is not None else str(minilm_dir())
    tokenizer = AutoTokenizer.from_pretrained(source)
    if not tokenizer.is_fast:
        raise ValueError(f"tokenizer {source!r} is not a fast tokenizer: character offsets need one")
    return tokenizer


def graph_nodes(graph: dict) -> list[tuple[int, str, tuple[int, int]]]:
    """Flatten a scene graph into (node type, name, (start, end)): objects, then attributes, then relations."""
    return [
        (NODE_TYPE_IDS[kind], node["name"], (int(node["span"][0]), int(node["span"][1])))
        for kind, key in (("object", "objects"), ("attribute", "attributes"), ("relation", "relations"))
        for node in graph[key]
    ]


class _SpanIndex:
    """The WordPieces overlapping a character span, by binary search over a caption's offsets (sorted once
    the special tokens, whose offsets are empty, are left out)."""

    def __init__(self, offsets: list[tuple[int, int]]) -> None:
        self.positions = [i for i, (s, e) in enumerate(offsets) if e > s]
        self.starts = [offsets[i][0] for i in self.positions]
        self.ends = [offsets[i][1] for i in self.positions]

    def wordpieces(self, start: int, end: int) -> list[int]:
        first, last = bisect.bisect_right(self.ends, start), bisect.bisect_left(self.starts, end)
        return self.positions[first:last]


def annotate_pairs(captions: list[str], graphs: list[dict], tokenizer) -> dict[str, list]:
    """Tokenise captions and tie every graph node to its WordPieces.

    Returns the pair columns ``input_ids``, ``offsets``, ``node_types``, ``node_names``, ``node_spans`` and
    ``node_wordpieces`` (see ``schema.PAIR_FEATURES``), one entry per caption.
    """
    encoded = tokenizer(captions, return_offsets_mapping=True, add_special_tokens=True)
    columns: dict[str, list] = {
        key: []
        for key in ("input_ids", "offsets", "node_types", "node_names", "node_spans", "node_wordpieces")
    }
    for input_ids, offsets, graph in zip(encoded["input_ids"], encoded["offset_mapping"], graphs):
        nodes = graph_nodes(graph)
        columns["input_ids"].append(input_ids)
        columns["offsets"].append([list(o) for o in offsets])
        columns["node_types"].append([t for t, _, _ in nodes])
        columns["node_names"].append([name for _, name, _ in nodes])
        columns["node_spans"].append([list(span) for _, _, span in nodes])
        index = _SpanIndex(offsets)
        columns["node_wordpieces"].append([index.wordpieces(*span) for _, _, span in nodes])
    return columns
