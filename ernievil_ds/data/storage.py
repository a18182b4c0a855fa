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
from datasets import Dataset, concatenate_datasets, load_from_disk

from ernievil_ds.data.schema import MANIFEST, PAIR_FEATURES, image_features

SHARD_STATS = "import_stats.json"


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
    dataset.save_to_disk(str(partial))
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


def clear_table(table_dir: Path) -> None:
    """Remove a table's shards and manifest (a fresh build)."""
    shutil.rmtree(table_dir, ignore_errors=True)


def load_table(table_dir: Path) -> Dataset:
    """Memory-map a complete table as one ``Dataset``.

    Raises:
        FileNotFoundError: when ``table_dir`` has no manifest (it was never prepared, or not finished).
    """
    if read_manifest(table_dir) is None:
        raise FileNotFoundError(
            f"{table_dir} is not a prepared table (no {MANIFEST}): run launchers/prepare_data.py first, "
            "or rerun the interrupted command to finish it"
        )
    shards = [load_from_disk(str(shard_dir(table_dir, i))) for i in completed_shards(table_dir)]
    return concatenate_datasets(shards) if len(shards) > 1 else shards[0]


def images_dataset(records: list[dict], with_class_distribution: bool) -> Dataset:
    """Build an images-table ``Dataset`` from image records.

    Each record has ``image_id``, ``width``, ``height``, ``boxes`` (num_boxes, 4) pixel x1, y1, x2, y2,
    ``features`` (num_boxes, 2048) and, when ``with_class_distribution``, ``cls_prob`` (num_boxes, 1601).
    """
    columns = {
        "image_id": [r["image_id"] for r in records],
        "width": [int(r["width"]) for r in records],
        "height": [int(r["height"]) for r in records],
        "num_boxes": [len(r["boxes"]) for r in records],
        "boxes": [np.asarray(r["boxes"], dtype=np.float32) for r in records],
        "features": [np.asarray(r["features"], dtype=np.float16) for r in records],
    }
    if with_class_distribution:
        columns["cls_prob"] = [np.asarray(r["cls_prob"], dtype=np.float16) for r in records]
    return Dataset.from_dict(columns, features=image_features(with_class_distribution))


def pairs_dataset(columns: dict[str, list]) -> Dataset:
    """Build a pairs-table ``Dataset`` from complete columns (see ``schema.PAIR_FEATURES``)."""
    return Dataset.from_dict(columns, features=PAIR_FEATURES)
