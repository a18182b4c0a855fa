"""Property-based fuzzing of every importer: random bytes, valid files cut at a random offset, and records
with a field deleted. Whatever the input, an import either ends with a user error (one line at the
command boundary) and leaves no table marked complete, or writes a table that loads with the rows it
reports; records before a defect are imported."""

from __future__ import annotations

import functools
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ernievil_ds.data.prepare import import_region_features
from ernievil_ds.data.storage import load_table
from ernievil_ds.errors import user_error_types

FUZZ = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CAPTIONS = ["a dog on a table", "two cats", "a man with a ball", "the sky"]


# --- valid files of each caption format, with the pair id of each record --------------------------------


def _cc(drop=None):
    lines = [[caption, f"http://a/{n}.jpg"] for n, caption in enumerate(CAPTIONS)]
    return _tsv_lines(lines, drop), [f"cc-{n}" for n in range(len(CAPTIONS))]


def _flickr30k(drop=None):
    lines = [[f"{1000 + n}.jpg#0", caption] for n, caption in enumerate(CAPTIONS)]
    return _tsv_lines(lines, drop), [f"{1000 + n}.jpg#0" for n in range(len(CAPTIONS))]


def _tsv_lines(lines: list[list[str]], drop) -> bytes:
    if drop is not None:
        row, field = drop
        del lines[row % len(lines)][field % 2]
    return "".join("\t".join(fields) + "\n" for fields in lines).encode()


def _records_with_drop(records: list[dict], drop) -> list[dict]:
    if drop is not None:
        record = records[drop[0] % len(records)]
        del record[sorted(record)[drop[1] % len(record)]]
    return records


def _jsonl(drop=None):
    records = [{"pair_id": f"p{n}", "image_id": str(n), "caption": c} for n, c in enumerate(CAPTIONS)]
    lines = _records_with_drop(records, drop)
    return "".join(json.dumps(r) + "\n" for r in lines).encode(), [f"p{n}" for n in range(len(CAPTIONS))]


def _coco(drop=None):
    images = [{"id": n, "coco_url": f"http://c/{n}.jpg"} for n in range(len(CAPTIONS))]
    annotations = [{"image_id": n, "id": 100 + n, "caption": c} for n, c in enumerate(CAPTIONS)]
    document = {"images": images, "annotations": _records_with_drop(annotations, drop)}
    return json.dumps(document, indent=1).encode(), [str(100 + n) for n in range(len(CAPTIONS))]


def _karpathy(drop=None):
    images = [
        {"split": "train", "cocoid": n, "sentences": [{"raw": c, "sentid": 200 + n}]}
        for n, c in enumerate(CAPTIONS)
    ]
    document = {"images": _records_with_drop(images, drop), "dataset": "coco"}
    return json.dumps(document, indent=1).encode(), [str(200 + n) for n in range(len(CAPTIONS))]


def _sbu_json(drop=None):
    records = [{"caption": c, "url": f"http://s/{n}.jpg"} for n, c in enumerate(CAPTIONS)]
    return json.dumps(_records_with_drop(records, drop), indent=1).encode(), [
        f"sbu-{n}" for n in range(len(CAPTIONS))
    ]


CAPTION_FILES = {
    "cc": ("cc", _cc, True),
    "flickr30k": ("flickr30k", _flickr30k, True),
    "jsonl": ("jsonl", _jsonl, True),
    "coco": ("coco", _coco, False),
    "karpathy": ("karpathy", _karpathy, False),
    "sbu-json": ("sbu", _sbu_json, False),
}


def _outcome(run, table_dir: Path):
    """The loaded table of a successful import, or None after a user error that left no complete table."""
    try:
        report = run()
    except user_error_types():
        assert not (table_dir / "manifest.json").exists()
        return None
    table = load_table(table_dir)
    assert len(table) == report.rows > 0
    return table


def _import_caption_bytes(import_pairs, tmp: Path, format: str, data: bytes):
    path = tmp / "captions.txt"
    path.write_bytes(data)
    # Shards of two records: a defect can leave a shard with no row, which must load as well.
    run = functools.partial(import_pairs, format, [path], tmp / "out", shard_size=2)
    return _outcome(run, tmp / "out" / "pairs" / "train")


@pytest.mark.parametrize("kind", sorted(CAPTION_FILES))
@FUZZ
@given(data=st.binary(max_size=600))
def test_caption_importers_on_random_bytes(kind, data, import_pairs, tmp_path_factory):
    format = CAPTION_FILES[kind][0]
    _import_caption_bytes(import_pairs, tmp_path_factory.mktemp("fuzz"), format, data)


@pytest.mark.parametrize("kind", sorted(CAPTION_FILES))
@FUZZ
@given(fraction=st.floats(0, 1))
def test_caption_importers_on_a_cut_file(kind, fraction, import_pairs, tmp_path_factory):
    format, build, line_based = CAPTION_FILES[kind]
    data, pair_ids = build()
    cut = int(len(data) * fraction)
    table = _import_caption_bytes(import_pairs, tmp_path_factory.mktemp("fuzz"), format, data[:cut])
    whole_lines = data[:cut].count(b"\n")
    if line_based and whole_lines:  # every line before the cut is imported
        assert table is not None and set(pair_ids[:whole_lines]) <= set(table["pair_id"])
    if not line_based and data[:cut].strip() == data.strip():
        assert table is not None and list(table["pair_id"]) == pair_ids


@pytest.mark.parametrize("kind", sorted(CAPTION_FILES))
@FUZZ
@given(record=st.integers(0, 50), field=st.integers(0, 50))
def test_caption_importers_on_a_deleted_field(kind, record, field, import_pairs, tmp_path_factory):
    format, build, _ = CAPTION_FILES[kind]
    data, pair_ids = build(drop=(record, field))
    table = _import_caption_bytes(import_pairs, tmp_path_factory.mktemp("fuzz"), format, data)
    damaged = record % len(pair_ids)
    undamaged = pair_ids[:damaged] + pair_ids[damaged + 1 :]
    assert table is not None and set(undamaged) <= set(table["pair_id"])


# --- region features --------------------------------------------------------------------------------------


def _import_features(tmp: Path, format: str, path: Path):
    run = functools.partial(import_region_features, format, [path], tmp / "out", shard_size=1)
    return _outcome(run, tmp / "out" / "images")


@pytest.mark.parametrize("format", ["tsv", "lmdb", "npy"])
@FUZZ
@given(data=st.binary(max_size=4000))
def test_feature_importers_on_random_bytes(format, data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    path = tmp / {"tsv": "features.tsv", "lmdb": "features.lmdb", "npy": "1.npy"}[format]
    path.write_bytes(data)
    _import_features(tmp, format, path)


@FUZZ
@given(fraction=st.floats(0, 1))
def test_feature_tsv_cut_at_any_offset_keeps_the_rows_before(
    fraction, region_images, feature_writers, tmp_path_factory
):
    tmp = tmp_path_factory.mktemp("fuzz")
    data = feature_writers["tsv"](tmp / "whole.tsv", region_images).read_bytes()
    cut = int(len(data) * fraction)
    (tmp / "features.tsv").write_bytes(data[:cut])
    table = _import_features(tmp, "tsv", tmp / "features.tsv")
    whole_rows = data[:cut].count(b"\n")
    if whole_rows:
        assert table is not None
        assert list(table["image_id"])[:whole_rows] == [
            image["image_id"] for image in region_images[:whole_rows]
        ]


@FUZZ
@given(fraction=st.floats(0, 1), victim=st.integers(0, 2))
def test_a_cut_npy_file_spares_the_others(fraction, victim, region_images, feature_writers, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    folder = feature_writers["npy"](tmp / "features", region_images)
    path = folder / f"{region_images[victim]['image_id']}.npy"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    table = _import_features(tmp, "npy", folder)
    others = [image["image_id"] for n, image in enumerate(region_images) if n != victim]
    assert table is not None and set(others) <= set(table["image_id"])


@pytest.mark.parametrize("format", ["tsv", "lmdb", "npy"])
@FUZZ
@given(victim=st.integers(0, 2), field=st.integers(0, 10))
def test_feature_importers_on_a_deleted_field(
    format, victim, field, region_images, feature_writers, tmp_path_factory
):
    tmp = tmp_path_factory.mktemp("fuzz")
    path = feature_writers[format](
        tmp / {"tsv": "features.tsv", "lmdb": "features.lmdb", "npy": "features"}[format], region_images
    )
    key = region_images[victim]["image_id"]
    if format == "tsv":
        lines = [line.split("\t") for line in path.read_text().splitlines()]
        del lines[victim][field % len(lines[victim])]
        path.write_text("".join("\t".join(line) + "\n" for line in lines))
    elif format == "npy":
        record = np.load(path / f"{key}.npy", allow_pickle=True).item()
        del record[sorted(record)[field % len(record)]]
        np.save(path / f"{key}.npy", record)
    else:
        _delete_lmdb_field(path, key, field)
    table = _import_features(tmp, format, path)
    others = [image["image_id"] for n, image in enumerate(region_images) if n != victim]
    assert table is not None and set(others) <= set(table["image_id"])


def _delete_lmdb_field(path: Path, key: str, field: int) -> None:
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        row = pickle.loads(txn.get(key.encode()))
        del row[sorted(row)[field % len(row)]]
        txn.put(key.encode(), pickle.dumps(row))
    env.close()
