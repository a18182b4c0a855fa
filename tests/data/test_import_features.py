"""Region-feature importers on small files written in the real formats, and the join with captions."""

from __future__ import annotations

import base64
import collections
import json
import pickle
import re

import lmdb
import numpy as np
import pytest

from ernievil_ds.data import SGPCollator, load_pretraining_split
from ernievil_ds.data.prepare import import_captions, import_region_features, read_detector_classes
from ernievil_ds.data.storage import load_detector_class_names, load_table
from tests.data.word_parser import WordParser


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array)).decode()


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    result = []
    for n, (image_id, boxes) in enumerate((("101", 3), ("102", 5), ("103", 2))):
        result.append(
            {
                "image_id": image_id,
                "width": 640 + n,
                "height": 480 - n,
                # Two (x, y) points per box, sorted: x1 <= x2, y1 <= y2.
                "boxes": np.sort(rng.random((boxes, 2, 2)) * 400, axis=1)
                .reshape(boxes, 4)
                .astype(np.float32),
                "features": rng.random((boxes, 2048)).astype(np.float32),
                "cls_prob": rng.dirichlet(np.ones(1601), boxes).astype(np.float32),
            }
        )
    return result


def _tsv_row(image, variant):
    n = len(image["boxes"])
    if variant == "lxmert":  # height before width, detector labels instead of cls_prob
        labels = [_b64(np.zeros(n, np.int64)), _b64(np.ones(n, np.float32))] * 2
        return [
            image["image_id"],
            image["height"],
            image["width"],
            *labels,
            n,
            _b64(image["boxes"]),
            _b64(image["features"]),
        ]
    row = [
        image["image_id"],
        image["width"],
        image["height"],
        n,
        _b64(image["boxes"]),
        _b64(image["features"]),
    ]
    return [*row, _b64(image["cls_prob"])] if variant == "vilbert" else row


def _write_tsv(path, images, variant):
    path.write_text("".join("\t".join(map(str, _tsv_row(image, variant))) + "\n" for image in images))
    return path


def _lmdb_row(image, flavour):
    if flavour == "vilbert_beta":  # csv.DictReader rows of the TSV: OrderedDicts of strings before Python 3.8
        return collections.OrderedDict(
            image_id=image["image_id"],
            image_w=str(image["width"]),
            image_h=str(image["height"]),
            num_boxes=str(len(image["boxes"])),
            boxes=_b64(image["boxes"]),
            features=_b64(image["features"]),
        )
    return {  # vilbert-multi-task: numpy arrays
        "image_id": image["image_id"],
        "image_h": image["height"],
        "image_w": image["width"],
        "num_boxes": len(image["boxes"]),
        "boxes": image["boxes"],
        "features": image["features"],
        "cls_prob": image["cls_prob"],
    }


def _put_lmdb(path, rows, keys, protocol=pickle.DEFAULT_PROTOCOL):
    """An LMDB as the ViLBERT converters write one: ``rows`` (key -> row) and ``keys``, each pickled."""
    env = lmdb.open(str(path), map_size=1 << 28)
    with env.begin(write=True) as txn:
        for key, row in rows.items():
            txn.put(key.encode(), pickle.dumps(row, protocol=protocol))
        txn.put(b"keys", pickle.dumps(keys, protocol=protocol))
    env.close()
    return path


def _write_lmdb(path, images, flavour, protocol=pickle.DEFAULT_PROTOCOL):
    rows = {image["image_id"]: _lmdb_row(image, flavour) for image in images}
    return _put_lmdb(path, rows, [key.encode() for key in rows], protocol)


def _extractor_dict(image):
    return {
        "bbox": image["boxes"],
        "num_boxes": len(image["boxes"]),
        "objects": np.zeros(len(image["boxes"]), np.int64),
        "cls_prob": image["cls_prob"],
        "image_width": image["width"],
        "image_height": image["height"],
        "image_id": image["image_id"],
        "features": image["features"],
    }


def _check_table(out, images, with_cls):
    table = load_table(out / "images").with_format("numpy")
    assert list(table["image_id"]) == [image["image_id"] for image in images]
    assert ("cls_prob" in table.column_names) == with_cls
    for row, image in zip(table, images):
        assert (row["width"], row["height"], row["num_boxes"]) == (
            image["width"],
            image["height"],
            len(image["boxes"]),
        )
        np.testing.assert_array_equal(row["boxes"], image["boxes"])
        np.testing.assert_array_equal(row["features"], image["features"].astype(np.float16))
        if with_cls:
            np.testing.assert_array_equal(row["cls_prob"], image["cls_prob"].astype(np.float16))


@pytest.mark.parametrize("variant, with_cls", [("bottom_up", False), ("vilbert", True), ("lxmert", False)])
def test_tsv_variants(tmp_path, images, variant, with_cls):
    path = _write_tsv(tmp_path / "features.tsv", images, variant)
    report = import_region_features("tsv", [path], tmp_path / "out", shard_size=2)
    assert (report.rows, report.malformed) == (3, 0)
    _check_table(tmp_path / "out", images, with_cls)


@pytest.mark.parametrize("protocol", sorted({2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL}))
@pytest.mark.parametrize("flavour, with_cls", [("vilbert_beta", False), ("vilbert_multi_task", True)])
def test_lmdb_flavours(tmp_path, images, flavour, with_cls, protocol):
    path = _write_lmdb(tmp_path / "features.lmdb", images, flavour, protocol)
    import_region_features("lmdb", [path], tmp_path / "out")
    _check_table(tmp_path / "out", images, with_cls)


def test_npy_and_npz_files(tmp_path, images):
    folder = tmp_path / "features"
    folder.mkdir()
    np.save(folder / "101.npy", _extractor_dict(images[0]))
    np.savez(folder / "102.npz", **_extractor_dict(images[1]))
    np.save(folder / "103.npy", _extractor_dict(images[2]))
    import_region_features("npy", [folder], tmp_path / "out")
    _check_table(tmp_path / "out", images, with_cls=True)


def _check_refused(report, hostile_call, source):
    """One record refused and reported like a malformed one, naming the file and the global."""
    assert (report.rows, report.malformed) == (2, 1)
    assert report.first_malformed == [
        f"102: {source}: refused to unpickle {hostile_call.global_name} (this file may hold only numpy "
        "arrays, numpy scalars and Python builtins)"
    ]


def test_hostile_lmdb_row_is_refused_and_reported(tmp_path, images, hostile_call):
    rows = {image["image_id"]: _lmdb_row(image, "vilbert_multi_task") for image in images}
    rows["102"]["features"] = hostile_call
    path = _put_lmdb(tmp_path / "features.lmdb", rows, [b"101", b"102", b"103"])
    report = import_region_features("lmdb", [path], tmp_path / "out")
    assert not (tmp_path / "marker").exists()
    _check_refused(report, hostile_call, f"LMDB {path} record 102")
    _check_table(tmp_path / "out", [images[0], images[2]], with_cls=True)


def test_hostile_lmdb_keys_entry_refuses_the_file(tmp_path, images, hostile_call):
    rows = {image["image_id"]: _lmdb_row(image, "vilbert_multi_task") for image in images}
    path = _put_lmdb(tmp_path / "features.lmdb", rows, [b"101", hostile_call])
    message = f"LMDB {path} 'keys' entry: refused to unpickle {hostile_call.global_name} "
    with pytest.raises(ValueError, match=re.escape(message)):
        import_region_features("lmdb", [path], tmp_path / "out")
    assert not (tmp_path / "marker").exists()


def test_hostile_npy_dict_is_refused_and_reported(tmp_path, images, hostile_call):
    folder = tmp_path / "features"
    folder.mkdir()
    for image in images:
        np.save(folder / f"{image['image_id']}.npy", _extractor_dict(image))
    np.save(folder / "102.npy", _extractor_dict(images[1]) | {"features": hostile_call})
    report = import_region_features("npy", [folder], tmp_path / "out")
    assert not (tmp_path / "marker").exists()
    _check_refused(report, hostile_call, folder / "102.npy")
    _check_table(tmp_path / "out", [images[0], images[2]], with_cls=True)


def test_malformed_rows_are_skipped_and_reported(tmp_path, images):
    rows = [_tsv_row(image, "bottom_up") for image in images]
    rows[1][5] = rows[1][5][:100]  # truncated features
    lines = ["\t".join(map(str, row)) for row in rows] + ["a\tb\tc"]
    (tmp_path / "bad.tsv").write_text("\n".join(lines) + "\n")
    report = import_region_features("tsv", [tmp_path / "bad.tsv"], tmp_path / "out")
    assert (report.rows, report.malformed) == (2, 2)
    assert report.first_malformed[0].startswith("102: features")
    assert report.first_malformed[1].startswith("a: 3 fields")


def test_captions_join_features(tmp_path, images, tokenizer):
    _write_tsv(tmp_path / "features.tsv", images, "bottom_up")
    import_region_features("tsv", [tmp_path / "features.tsv"], tmp_path / "data")
    lines = [
        json.dumps({"image_id": image_id, "caption": f"a dog near a cat {image_id}"})
        for image_id in ("101", "103", "999")
    ]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    import_captions(
        "jsonl", [tmp_path / "pairs.jsonl"], tmp_path / "data", split="train", parser_factory=WordParser
    )
    dataset = load_pretraining_split(tmp_path / "data", "train")
    assert len(dataset) == 2  # the pair whose image has no features is left out
    assert dataset[1]["image_id"] == "103" and dataset[1]["cls_prob"] is None
    batch = SGPCollator(tokenizer)(dataset.__getitems__([0, 1]))
    assert batch["region_feature_targets"].shape == (2, 3, 2048)


def test_detector_class_names_are_recorded_with_the_images(tmp_path, images):
    path = _write_tsv(tmp_path / "features.tsv", images, "vilbert")
    vocabulary = [f"class {k},synonym {k}" for k in range(1, 1601)]  # objects_vocab.txt: no background
    (tmp_path / "objects_vocab.txt").write_text("\n".join(vocabulary) + "\n")
    import_region_features("tsv", [path], tmp_path / "out", detector_classes=tmp_path / "objects_vocab.txt")
    assert load_detector_class_names(tmp_path / "out") == ["", *vocabulary]
    assert load_detector_class_names(tmp_path) is None

    (tmp_path / "short.txt").write_text("dog\ncat\n")
    with pytest.raises(ValueError, match=r"short\.txt has 2 lines; expected 1600 class names"):
        import_region_features("tsv", [path], tmp_path / "other", detector_classes=tmp_path / "short.txt")
    with pytest.raises(FileNotFoundError, match=r"detector class file .*missing\.txt does not exist"):
        read_detector_classes(tmp_path / "missing.txt")
