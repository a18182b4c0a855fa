"""Sharded tables on disk: atomic shard writes, completion manifests, and memory-mapped loading.

A table directory holds ``shard-NNNNN/`` folders (each a ``Dataset.save_to_disk``) and, once every shard
is written, ``manifest.json``. A shard appears under its final name only when it is complete (it is
written beside it and renamed), so an interrupted job leaves either a whole shard or none.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasets import Dataset, concatenate_datasets, load_from_disk
from datasets.features.features import Array2DExtensionType
from datasets.table import InMemoryTable

from ernievil_ds.data.schema import (
    DETECTOR_CLASSES,
    FEATURE_DIM,
    IMAGES_DIR,
    MANIFEST,
    NUM_DETECTOR_CLASSES,
    PAIR_FEATURES,
    image_features,
)

SHARD_STATS = "import_stats.json"
JOB = ".job.json"  # the source of an import in progress


def shard_dir(table_dir: Path, index: int) -> Path:
    return table_dir / f"shard-{index:05d}"


def completed_shards(table_dir: Path) -> list[int]:
    """Indices of the shards already written under ``table_dir``, in order."""
    if not table_dir.is_dir():
        return []
    return sorted(int(p.name.split("-")[1]) for p in table_dir.glob("shard-[0-9]*") if p.is_dir())


def write_shard(dataset: Dataset, table_dir: Path, index: int, stats: dict | None = None) -> Path:
    """Save ``dataset`` (and the import ``stats`` of its records) as shard ``index`` of ``table_dir``; the
    shard appears under its name only when complete."""
    final = shard_dir(table_dir, index)
    partial = table_dir / f".partial-{index:05d}"
    shutil.rmtree(partial, ignore_errors=True)
    # An empty Dataset saved with the default shard count has no Arrow file, which load_from_disk rejects.
    dataset.save_to_disk(str(partial), num_shards=None if len(dataset) else 1)
    (partial / SHARD_STATS).write_text(json.dumps(stats or {"rows": len(dataset)}))
    partial.rename(final)
    return final


def shard_stats(table_dir: Path, index: int) -> dict:
    return json.loads((shard_dir(table_dir, index) / SHARD_STATS).read_text())


def read_manifest(table_dir: Path) -> dict | None:
    path = table_dir / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def write_manifest(table_dir: Path, manifest: dict) -> None:
    table_dir.mkdir(parents=True, exist_ok=True)
    partial = table_dir / f".{MANIFEST}.partial"
    partial.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    partial.rename(table_dir / MANIFEST)


def table_source(table_dir: Path) -> dict | None:
    """What a table holds or is being written from: its manifest's source, else an unfinished job's."""
    manifest = read_manifest(table_dir)
    if manifest is not None:
        # SynthScenes directories written before manifests named their source kept it under "settings".
        return manifest.get("source", manifest.get("settings"))
    job = table_dir / JOB
    return json.loads(job.read_text()) if job.is_file() else None


def clear_table(table_dir: Path) -> None:
    """Remove a table's shards and manifest (a fresh build)."""
    shutil.rmtree(table_dir, ignore_errors=True)


def load_table(table_dir: Path) -> Dataset:
    """Memory-map a complete table as one ``Dataset``.

    Raises:
        FileNotFoundError: when ``table_dir`` has no manifest (it was never prepared, or not finished), or
            a manifest and no shard.
    """
    if read_manifest(table_dir) is None:
        raise FileNotFoundError(
            f"{table_dir} is not a prepared table (no {MANIFEST}): run launchers/prepare_data.py first, "
            "or rerun the interrupted command to finish it"
        )
    shards = [load_from_disk(str(shard_dir(table_dir, i))) for i in completed_shards(table_dir)]
    if not shards:
        raise FileNotFoundError(f"{table_dir} has a {MANIFEST} but no shard: rerun the import that wrote it")
    return concatenate_datasets(shards) if len(shards) > 1 else shards[0]


def write_detector_class_names(data_dir: Path, names: list[str]) -> None:
    """Record the detector's name of each of its classes beside the images table ("" for an unnamed class).

    Raises:
        ValueError: when there is not one name per detector class.
    """
    if len(names) != NUM_DETECTOR_CLASSES:
        raise ValueError(f"expected {NUM_DETECTOR_CLASSES} detector class names, got {len(names)}")
    path = Path(data_dir) / IMAGES_DIR / DETECTOR_CLASSES
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(names)))


def load_detector_class_names(data_dir: Path) -> list[str] | None:
    """The detector class names recorded with a data directory's images, or ``None`` when it has none."""
    path = Path(data_dir) / IMAGES_DIR / DETECTOR_CLASSES
    return json.loads(path.read_text()) if path.is_file() else None


def _ragged_matrices(arrays: list[np.ndarray], width: int, dtype: str) -> pa.ExtensionArray:
    """An ``Array2D((None, width))`` Arrow column from per-row (num_boxes, width) arrays, built in bulk."""
    counts = np.array([len(a) for a in arrays], dtype=np.int32)
    values = pa.array(
        np.concatenate([np.asarray(a, dtype=dtype).reshape(-1, width) for a in arrays]).reshape(-1)
    )
    rows = pa.ListArray.from_arrays(
        pa.array(np.arange(0, counts.sum() * width + 1, width, dtype=np.int32)), values
    )
    outer = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)), rows
    )
    return pa.ExtensionArray.from_storage(Array2DExtensionType(shape=(None, width), dtype=dtype), outer)


def images_dataset(
    records: list[dict], with_class_distribution: bool, with_img_feature: bool = False
) -> Dataset:
    """Build an images-table ``Dataset`` from image records.

    Each record has ``image_id``, ``width``, ``height``, ``boxes`` (num_boxes, 4) pixel x1, y1, x2, y2,
    ``features`` (num_boxes, 2048), when ``with_class_distribution`` ``cls_prob`` (num_boxes, 1601), and
    when ``with_img_feature`` ``img_feature`` (2048,), the [IMG] region's feature.
    """
    features = image_features(with_class_distribution, with_img_feature)
    if not records:
        return Dataset.from_dict({name: [] for name in features}, features=features)
    columns = {
        "image_id": pa.array([r["image_id"] for r in records], pa.string()),
        "width": pa.array([int(r["width"]) for r in records], pa.int32()),
        "height": pa.array([int(r["height"]) for r in records], pa.int32()),
        "num_boxes": pa.array([len(r["boxes"]) for r in records], pa.int32()),
        "boxes": _ragged_matrices([r["boxes"] for r in records], 4, "float32"),
        "features": _ragged_matrices([r["features"] for r in records], FEATURE_DIM, "float16"),
    }
    if with_class_distribution:
        columns["cls_prob"] = _ragged_matrices(
            [r["cls_prob"] for r in records], NUM_DETECTOR_CLASSES, "float16"
        )
    if with_img_feature:
        img = np.stack([np.asarray(r["img_feature"], dtype=np.float32) for r in records])  # (N, 2048)
        columns["img_feature"] = pa.FixedSizeListArray.from_arrays(pa.array(img.reshape(-1)), FEATURE_DIM)
    return Dataset(InMemoryTable(pa.Table.from_pydict(columns, schema=features.arrow_schema)))


def pairs_dataset(columns: dict[str, list]) -> Dataset:
    """Build a pairs-table ``Dataset`` from complete columns (see ``schema.PAIR_FEATURES``), converted
    by Arrow in bulk."""
    return Dataset(InMemoryTable(pa.Table.from_pydict(columns, schema=PAIR_FEATURES.arrow_schema)))
