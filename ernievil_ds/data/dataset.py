"""Pairs joined with their images: a map-style torch ``Dataset`` over the memory-mapped tables.

Every list column is read as numpy views into the memory-mapped Arrow buffers, found through offsets read
once when the dataset opens: no Arrow list becomes a Python list, and no row is copied until collation.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from ernievil_ds.data.schema import FEATURE_DIM, IMAGES_DIR, NUM_DETECTOR_CLASSES, PAIRS_DIR
from ernievil_ds.data.storage import load_table
from ernievil_ds.distributed import get_logger
from ernievil_ds.errors import UserError

logger = get_logger(__name__)

#: How many image ids of pairs without an image are named.
MAX_REPORTED_IDS = 5


def _list_storage(chunk: pa.Array) -> pa.ListArray:
    return chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk


def _leaf_numpy(array: pa.Array) -> np.ndarray:
    """The unsliced leaf values under ``array``'s list levels, zero-copy over the memory-mapped buffer."""
    while not pa.types.is_primitive(array.type):
        array = array.values
    return array.to_numpy(zero_copy_only=True)


class _ListColumn:
    """Row access to a list column (``list<x>``, ``list<list<x>>``, ``list<fixed_size_list<x>>``) as numpy views.

    Arrow ``take`` on a chunked nested column concatenates the whole column first; here each row is a
    slice of its chunk's leaf buffer, found through offsets read once.
    """

    def __init__(self, column: pa.ChunkedArray, width: int = 1, nested: bool = False) -> None:
        self.leaves, self.inner_offsets, starts, ends, chunk_ids = [], [], [], [], []
        for k, chunk in enumerate(column.chunks):
            storage = _list_storage(chunk)
            offsets = storage.offsets.to_numpy()
            if nested and not pa.types.is_fixed_size_list(storage.type.value_type):
                self.inner_offsets.append(storage.values.offsets.to_numpy())
            else:
                self.inner_offsets.append(None)
            leaf = _leaf_numpy(storage)
            self.leaves.append(leaf.reshape(-1, width) if width > 1 else leaf)  # (rows_in_chunk, width)
            starts.append(offsets[:-1])
            ends.append(offsets[1:])
            chunk_ids.append(np.full(len(chunk), k, dtype=np.int32))
        self.starts, self.ends = np.concatenate(starts), np.concatenate(ends)
        self.chunk_ids = np.concatenate(chunk_ids)

    def take(self, rows: np.ndarray) -> list[np.ndarray] | list[list[np.ndarray]]:
        """The given rows: one array each, or for a nested column one list of arrays each."""
        rows_out = []
        for k, a, b in zip(
            self.chunk_ids[rows].tolist(), self.starts[rows].tolist(), self.ends[rows].tolist()
        ):
            leaf, inner = self.leaves[k], self.inner_offsets[k]
            if inner is None:
                rows_out.append(leaf[a:b])
            else:
                bounds = inner[a : b + 1].tolist()
                rows_out.append([leaf[s:e] for s, e in itertools.pairwise(bounds)])
        return rows_out


class _ScalarColumn:
    """Row access to a column of scalars (strings, ints) or of lists of strings, as Python objects."""

    def __init__(self, column: pa.ChunkedArray) -> None:
        self.chunks = column.chunks
        lengths = [len(c) for c in self.chunks]
        self.chunk_ids = np.repeat(np.arange(len(lengths)), lengths)
        self.local = np.arange(sum(lengths)) - np.repeat(np.cumsum([0, *lengths[:-1]]), lengths)

    def take(self, rows: np.ndarray) -> list:
        """The given rows as Python objects."""
        chunks = self.chunks
        return [
            chunks[k][i].as_py() for k, i in zip(self.chunk_ids[rows].tolist(), self.local[rows].tolist())
        ]


class PretrainingDataset(torch.utils.data.Dataset):
    """Image-text pairs, each joined with its image's regions by ``image_id``.

    An example is a dict with ``pair_id``, ``image_id``, ``caption``, ``input_ids`` (num_tokens,) int32
    ([CLS] ... [SEP]), the scene-graph nodes as ``node_types`` (num_nodes,) int8 (1 object, 2 attribute,
    3 relation), ``node_names`` list[str], ``node_spans`` (num_nodes, 2) character offsets (a node's text is
    ``caption[start:end]``) and ``node_wordpieces`` (one int32 array of token positions per node), and the
    image as ``features`` (num_boxes, 2048) float16, ``boxes`` (num_boxes, 4) float32 pixel x1, y1, x2, y2,
    ``cls_prob`` (num_boxes, 1601) float16 or ``None``, ``width`` and ``height``. The arrays are read-only
    views of the memory-mapped files: copy one before writing to it.
    """

    def __init__(self, pairs, images) -> None:
        self._tables = (pairs, images)
        image_ids = images.data.table.column("image_id").to_pylist()
        image_row = {image_id: row for row, image_id in enumerate(image_ids)}
        pair_image_ids = pairs.data.table.column("image_id").to_pylist()
        rows = np.array([image_row.get(i, -1) for i in pair_image_ids], dtype=np.int64)
        self._pair_rows = np.flatnonzero(rows >= 0)
        self._image_rows = rows[self._pair_rows]
        self.missing_images = [pair_image_ids[i] for i in np.flatnonzero(rows < 0)[:MAX_REPORTED_IDS]]
        self.num_missing_images = len(rows) - len(self._pair_rows)
        if self.num_missing_images:
            logger.warning(
                "%d of %d pairs have no image in the images table and are left out (first image ids: %s)",
                self.num_missing_images,
                len(rows),
                ", ".join(self.missing_images),
            )
        self._open_columns()

    def _open_columns(self) -> None:
        pair_table, image_table = (table.data.table for table in self._tables)
        self.has_class_distribution = "cls_prob" in image_table.column_names
        self._pair_columns = {
            "pair_id": _ScalarColumn(pair_table.column("pair_id")),
            "image_id": _ScalarColumn(pair_table.column("image_id")),
            "caption": _ScalarColumn(pair_table.column("caption")),
            "input_ids": _ListColumn(pair_table.column("input_ids")),
            "node_types": _ListColumn(pair_table.column("node_types")),
            "node_names": _ScalarColumn(pair_table.column("node_names")),
            "node_spans": _ListColumn(pair_table.column("node_spans"), width=2),
            "node_wordpieces": _ListColumn(pair_table.column("node_wordpieces"), nested=True),
        }
        self._image_columns = {
            "features": _ListColumn(image_table.column("features"), width=FEATURE_DIM),
            "boxes": _ListColumn(image_table.column("boxes"), width=4),
            "cls_prob": _ListColumn(image_table.column("cls_prob"), width=NUM_DETECTOR_CLASSES)
            if self.has_class_distribution
            else None,
        }
        self._sizes = np.stack(
            [image_table.column("width").to_numpy(), image_table.column("height").to_numpy()], axis=1
        )  # (num_images, 2)

    def __getstate__(self) -> dict:
        """Pickle the memory-mapped tables by their files (for spawned DataLoader workers), not the views."""
        return {"tables": self._tables, "pair_rows": self._pair_rows, "image_rows": self._image_rows}

    def __setstate__(self, state: dict) -> None:
        self._tables, self._pair_rows, self._image_rows = (
            state["tables"],
            state["pair_rows"],
            state["image_rows"],
        )
        self._open_columns()

    def __len__(self) -> int:
        return len(self._pair_rows)

    def text_lengths(self) -> np.ndarray:
        """(num_examples,) the number of WordPieces of each example's caption, read from the offsets."""
        column = self._pair_columns["input_ids"]
        return (column.ends - column.starts)[self._pair_rows]

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        pair_rows, image_rows = self._pair_rows[indices], self._image_rows[indices]
        columns = {name: column.take(pair_rows) for name, column in self._pair_columns.items()}
        for name, column in self._image_columns.items():
            columns[name] = column.take(image_rows) if column is not None else [None] * len(indices)
        columns["width"], columns["height"] = self._sizes[image_rows].T.tolist()
        return [dict(zip(columns, values)) for values in zip(*columns.values())]


def load_pretraining_split(data_dir: str | Path, split: str = "train") -> PretrainingDataset:
    """Load one split of a prepared data directory (pairs joined with the images table).

    Pairs whose image is not in the images table are left out, with a warning that counts them.

    Raises:
        FileNotFoundError: when ``data_dir`` or its split is missing, naming the splits it has.
        UserError: when no pair is left, naming both tables.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data directory {data_dir} does not exist")
    pairs_dir = data_dir / PAIRS_DIR / split
    if not pairs_dir.is_dir():
        available = sorted(p.name for p in (data_dir / PAIRS_DIR).glob("*") if p.is_dir())
        raise FileNotFoundError(
            f"{data_dir} has no split {split!r} (no {pairs_dir}); splits found: {available}"
        )
    dataset = PretrainingDataset(load_table(pairs_dir), load_table(data_dir / IMAGES_DIR))
    if len(dataset) == 0 and dataset.num_missing_images:
        raise UserError(
            f"none of the {dataset.num_missing_images} pairs of {pairs_dir} has its image in "
            f"{data_dir / IMAGES_DIR} (first image ids: {', '.join(dataset.missing_images)}): import those "
            "images' features, or key the captions as the features are keyed (--image-id)"
        )
    if len(dataset) == 0:
        raise UserError(f"{pairs_dir} holds no pairs")
    return dataset
