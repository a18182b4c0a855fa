"""Whole-file problems of the importers: a file of another format refused at its start, zero rows an error
with no table left, empty shards loadable, cross-file consistency, and the upstream edge cases."""

from __future__ import annotations

import json
import logging
import pickle

import numpy as np
import pytest
from datasets import load_from_disk

from ernievil_ds.data import load_pretraining_split
from ernievil_ds.data.prepare import import_region_features
from ernievil_ds.data.storage import load_table
from ernievil_ds.errors import UserError

COCO = {
    "info": {"description": "COCO 2014 Dataset"},
    "images": [{"id": 9, "coco_url": "http://images.cocodataset.org/train2014/9.jpg"}],
    "annotations": [{"image_id": 9, "id": 48, "caption": "A man with a dog."}],
}
KARPATHY = {
    "images": [{"split": "train", "cocoid": 9, "sentences": [{"raw": "A dog.", "sentid": 1}]}],
    "dataset": "coco",
}


def _rows(out, split="train"):
    return load_table(out / "pairs" / split).select_columns(["pair_id", "image_id", "caption"]).to_list()


@pytest.mark.parametrize(
    ("format", "content", "message"),
    [
        (
            "karpathy",
            json.dumps(COCO),
            "is a COCO annotations file, not a Karpathy split file: use --format coco",
        ),
        (
            "coco",
            json.dumps(KARPATHY),
            "is a Karpathy split file, not a COCO annotations file: use --format karpathy",
        ),
        (
            "cc",
            '{"image_id": 1, "caption": "a dog"}\n',
            "is a JSON lines file, not a Conceptual Captions TSV",
        ),
        (
            "jsonl",
            "a dog\thttp://x/1.jpg\n",
            "is a Conceptual Captions TSV file, not a JSON lines file: use --format cc",
        ),
        ("flickr30k", "", "is empty, not a Flickr30K token file$"),
        ("jsonl", "a man and his dog\n", "is a text file, not a JSON lines file$"),
        (
            "cc",
            "\x00\x01binary\n",
            r"is a binary file \(not UTF-8 text\), not a Conceptual Captions TSV file",
        ),
        (
            "coco",
            json.dumps({"captions": ["a"], "image_urls": ["u"]}),
            "is the SBU JSON release, not a COCO annotations file: use --format sbu",
        ),
    ],
)
def test_a_file_of_another_format_is_refused_at_its_start(tmp_path, import_pairs, format, content, message):
    path = tmp_path / "captions_train2014.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        import_pairs(format, [path], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.parametrize(
    ("written", "format", "message"),
    [
        ("npy", "tsv", r"features is .npy/.npz features, not a feature TSV: use --format npy"),
        ("lmdb", "npy", r"features is an LMDB, not .npy/.npz features: use --format lmdb"),
        ("tsv", "npy", r"features is a feature TSV, not .npy/.npz features: use --format tsv"),
        ("nothing", "npy", r"features is empty \(no .npy or .npz file in a folder"),
    ],
)
def test_a_feature_input_of_another_format_is_refused_at_its_start(
    tmp_path, region_images, feature_writers, written, format, message
):
    path = tmp_path / "features"
    if written == "nothing":
        path.mkdir()
    else:
        feature_writers[written](path, region_images)
    with pytest.raises(UserError, match=message):
        import_region_features(format, [path], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_sbu_json_release_as_columns_and_as_records(tmp_path, import_pairs):
    columns = {
        "image_urls": ["http://s/1.jpg", "http://s/2.jpg"],
        "captions": ["a dog", "blue sky"],
        "user_ids": ["u", "v"],
    }
    (tmp_path / "sbu-captions-all.json").write_text(json.dumps(columns))
    import_pairs("sbu", [tmp_path / "sbu-captions-all.json"], tmp_path / "columns", image_id="url")
    assert _rows(tmp_path / "columns") == [
        {"pair_id": "sbu-0", "image_id": "http://s/1.jpg", "caption": "a dog"},
        {"pair_id": "sbu-1", "image_id": "http://s/2.jpg", "caption": "blue sky"},
    ]
    records = [{"caption": "a dog", "url": "http://s/1.jpg"}, {"caption": "a cat"}]
    (tmp_path / "sbu.json").write_text(json.dumps(records))
    report = import_pairs("sbu", [tmp_path / "sbu.json"], tmp_path / "records")
    assert _rows(tmp_path / "records") == [{"pair_id": "sbu-0", "image_id": "0", "caption": "a dog"}]
    assert report.first_malformed == ["sbu-1: record without an image URL"]


def test_sbu_caption_text_without_its_url_file_is_refused(tmp_path, import_pairs):
    (tmp_path / "captions.txt").write_text("a man and his dog\n")
    with pytest.raises(UserError, match=r"captions.txt is SBU's caption text: give its URL file with --urls"):
        import_pairs("sbu", [tmp_path / "captions.txt"], tmp_path / "out")


def test_an_import_of_zero_rows_is_an_error_and_leaves_no_table(tmp_path, import_pairs):
    path = tmp_path / "cc.tsv"
    path.write_text("no tab here\nnor here\n")
    with pytest.raises(
        UserError, match=r"nothing imported from cc.tsv into .*pairs/train: 0 rows written, 2 malformed"
    ):
        import_pairs("cc", [path], tmp_path / "out")
    assert not (tmp_path / "out" / "pairs" / "train").exists()
    path.write_text("a dog\thttp://a/0.jpg\n")  # the corrected file is not blocked by the failed run
    assert import_pairs("cc", [path], tmp_path / "out").rows == 1


def test_random_bytes_as_npy_import_nothing_and_say_so(tmp_path):
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "1.npy").write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(UserError, match=r"nothing imported from features into .*images: .*cannot read 1.npy"):
        import_region_features("npy", [tmp_path / "features"], tmp_path / "out")
    assert not (tmp_path / "out" / "images").exists()


def test_a_shard_of_malformed_records_only_is_loadable(tmp_path, import_pairs):
    path = tmp_path / "cc.tsv"
    path.write_text("a dog\thttp://a/0.jpg\na cat\thttp://a/1.jpg\nbad\nworse\nthe sky\thttp://a/4.jpg\n")
    report = import_pairs("cc", [path], tmp_path / "out", shard_size=2)
    assert (report.rows, report.malformed) == (3, 2)
    assert [row["pair_id"] for row in _rows(tmp_path / "out")] == ["cc-0", "cc-1", "cc-4"]
    empty_shard = load_from_disk(str(tmp_path / "out" / "pairs" / "train" / "shard-00001"))
    assert len(empty_shard) == 0 and "input_ids" in empty_shard.column_names


def test_a_text_line_that_is_not_utf8_is_one_malformed_record(tmp_path, import_pairs):
    path = tmp_path / "cc.tsv"
    path.write_bytes(b"a dog\thttp://a/0.jpg\n\xff\xfe broken\thttp://a/1.jpg\nthe sky\thttp://a/2.jpg\n")
    report = import_pairs("cc", [path], tmp_path / "out")
    assert [row["pair_id"] for row in _rows(tmp_path / "out")] == ["cc-0", "cc-2"]
    assert report.first_malformed == ["cc-1: the line is not UTF-8 text"]


def test_a_truncated_json_file_is_refused_naming_where(tmp_path, import_pairs):
    text = json.dumps(COCO)
    (tmp_path / "captions.json").write_text(text[: len(text) // 2])
    with pytest.raises(
        UserError, match=r"captions.json is not valid JSON \(.* at line 1 column \d+; a download cut"
    ):
        import_pairs("coco", [tmp_path / "captions.json"], tmp_path / "out")


def test_coco_caption_of_an_image_missing_from_its_file_is_malformed(tmp_path, import_pairs):
    coco = {**COCO, "annotations": [*COCO["annotations"], {"image_id": 10, "id": 49, "caption": "A cat."}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    report = import_pairs("coco", [tmp_path / "coco.json"], tmp_path / "out")
    assert [row["pair_id"] for row in _rows(tmp_path / "out")] == ["48"]
    assert report.first_malformed == ["49: image 10 is not among the file's images"]


def test_karpathy_images_without_sentences_are_counted(tmp_path, import_pairs):
    images = [
        *KARPATHY["images"],
        {"split": "train", "cocoid": 10, "sentences": []},
        {"split": "test", "cocoid": 11},
    ]
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": images}))
    report = import_pairs("karpathy", [tmp_path / "dataset_coco.json"], tmp_path / "out")
    assert (report.rows, report.malformed) == (1, 1)  # the test image is not asked for: not counted
    assert report.first_malformed == ["images[1] (10): image without sentences"]


def test_npy_with_fewer_confident_boxes_than_rows_keeps_every_row(tmp_path, region_images, feature_writers):
    """vilbert-multi-task's reader: ``features.reshape(-1, 2048)``, ``boxes.reshape(-1, 4)``, so every row."""
    folder = feature_writers["npy"](tmp_path / "features", region_images, num_boxes={"203": 1})
    report = import_region_features("npy", [folder], tmp_path / "out")
    assert (report.rows, report.malformed) == (3, 0)
    row = load_table(tmp_path / "out" / "images").with_format("numpy")[2]
    upstream = np.load(folder / "203.npy", allow_pickle=True).item()
    assert row["num_boxes"] == upstream["features"].reshape(-1, 2048).shape[0] == 3
    np.testing.assert_array_equal(row["boxes"], upstream["bbox"].reshape(-1, 4))
    np.testing.assert_array_equal(row["features"], upstream["features"].reshape(-1, 2048).astype(np.float16))


def test_an_lmdb_without_keys_is_refused(tmp_path, region_images, feature_writers):
    path = feature_writers["lmdb"](tmp_path / "features.lmdb", region_images, keys=False)
    with pytest.raises(UserError, match=r"features.lmdb has no 'keys' entry listing its images"):
        import_region_features("lmdb", [path], tmp_path / "out")


def test_a_file_that_is_not_an_lmdb_is_refused(tmp_path):
    (tmp_path / "features.lmdb").write_bytes(pickle.dumps(list(range(100))))
    with pytest.raises(UserError, match=r"features.lmdb is not an LMDB"):
        import_region_features("lmdb", [tmp_path / "features.lmdb"], tmp_path / "out")


def test_pairs_without_images_are_counted_and_none_left_is_an_error(
    tmp_path, import_pairs, region_images, feature_writers, caplog
):
    feature_writers["tsv"](tmp_path / "features.tsv", region_images)
    import_region_features("tsv", [tmp_path / "features.tsv"], tmp_path / "data")
    lines = [{"image_id": image_id, "caption": "a dog"} for image_id in ("201", "7", "8")]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    import_pairs("jsonl", [tmp_path / "train.jsonl"], tmp_path / "data")
    with caplog.at_level(logging.WARNING):
        assert len(load_pretraining_split(tmp_path / "data", "train")) == 1
    assert (
        "2 of 3 pairs have no image in the images table and are left out (first image ids: 7, 8)"
        in caplog.text
    )
    (tmp_path / "eval.jsonl").write_text(json.dumps({"image_id": "9", "caption": "a cat"}) + "\n")
    import_pairs("jsonl", [tmp_path / "eval.jsonl"], tmp_path / "data", split="eval")
    with pytest.raises(
        UserError,
        match=r"none of the 1 pairs of .*pairs/eval has its image in .*images \(first image ids: 9\)",
    ):
        load_pretraining_split(tmp_path / "data", "eval")


def test_a_table_marked_complete_without_shards_says_so(tmp_path):
    (tmp_path / "pairs" / "train").mkdir(parents=True)
    (tmp_path / "pairs" / "train" / "manifest.json").write_text("{}")
    with pytest.raises(
        FileNotFoundError, match=r"pairs/train has a manifest.json but no shard: rerun the import"
    ):
        load_table(tmp_path / "pairs" / "train")
