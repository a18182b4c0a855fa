"""Caption importers on small files written in the real formats; malformed records; resumption."""

from __future__ import annotations

import json

import pytest

from ernievil_ds.data import build_synth_scenes, prepare
from ernievil_ds.data.prepare import import_captions
from ernievil_ds.data.storage import load_table
from tests.data.word_parser import WordParser


def _import(format, inputs, out, **kwargs):
    kwargs.setdefault("split", "train")
    return import_captions(format, inputs, out, parser_factory=WordParser, **kwargs)


def _rows(out, split="train"):
    table = load_table(out / "pairs" / split)
    return [
        (r["pair_id"], r["image_id"], r["caption"])
        for r in table.select_columns(["pair_id", "image_id", "caption"])
    ]


def test_conceptual_captions_tsv_with_malformed_lines(tmp_path):
    path = tmp_path / "Train_GCC-training.tsv"
    path.write_text(
        "a dog on a table\thttp://a/1.jpg\nno tab here\n\thttp://a/3.jpg\nthe sky\thttp://a/4.jpg\n"
    )
    report = _import("cc", [path], tmp_path / "out")
    assert _rows(tmp_path / "out") == [("cc-0", "0", "a dog on a table"), ("cc-3", "3", "the sky")]
    assert (report.rows, report.malformed, report.empty_graphs) == (2, 2, 1)  # "the sky" has no node: kept
    assert report.first_malformed[0].startswith("cc-1: expected") and report.first_malformed[1].startswith(
        "cc-2: empty"
    )


def test_sbu_keyed_by_url(tmp_path):
    (tmp_path / "captions.txt").write_text("a man and his dog\nblue sky\n")
    (tmp_path / "urls.txt").write_text("http://s/1.jpg\nhttp://s/2.jpg\n")
    _import("sbu", [tmp_path / "captions.txt"], tmp_path / "out", urls=tmp_path / "urls.txt", image_id="url")
    assert _rows(tmp_path / "out") == [
        ("sbu-0", "http://s/1.jpg", "a man and his dog"),
        ("sbu-1", "http://s/2.jpg", "blue sky"),
    ]


def test_coco_json(tmp_path):
    annotations = [
        {"image_id": 9, "id": 48, "caption": "A man with a dog."},
        {"image_id": 9, "id": 67, "caption": "A cat."},
        {"id": 70, "caption": "no image"},
    ]
    path = tmp_path / "captions_train2017.json"
    path.write_text(json.dumps({"images": [{"id": 9}], "annotations": annotations}))
    report = _import("coco", [path], tmp_path / "out")
    assert _rows(tmp_path / "out") == [("48", "9", "A man with a dog."), ("67", "9", "A cat.")]
    assert report.malformed == 1


def test_flickr30k_token_file(tmp_path):
    path = tmp_path / "results_20130124.token"
    path.write_text(
        "1000092795.jpg#0\tTwo young guys with shaggy hair .\n1000092795.jpg#1\tTwo young men .\n"
    )
    _import("flickr30k", [path], tmp_path / "out")
    assert _rows(tmp_path / "out")[0] == (
        "1000092795.jpg#0",
        "1000092795",
        "Two young guys with shaggy hair .",
    )


def test_karpathy_split_json(tmp_path):
    images = [
        {"split": "train", "cocoid": 9, "filename": "a.jpg", "sentences": [{"raw": "A dog.", "sentid": 1}]},
        {
            "split": "restval",
            "cocoid": 10,
            "filename": "b.jpg",
            "sentences": [{"raw": "A cat.", "sentid": 2}],
        },
        {"split": "test", "cocoid": 11, "filename": "c.jpg", "sentences": [{"raw": "A man.", "sentid": 3}]},
    ]
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    _import("karpathy", [path], tmp_path / "out")
    assert _rows(tmp_path / "out") == [("1", "9", "A dog."), ("2", "10", "A cat.")]
    _import("karpathy", [path], tmp_path / "out", split="test", karpathy_splits=("test",))
    assert _rows(tmp_path / "out", "test") == [("3", "11", "A man.")]


def test_jsonl_with_a_given_graph(tmp_path, tokenizer):
    graph = {
        "objects": [{"name": "ball", "span": [6, 10]}],
        "attributes": [{"object": 0, "name": "red", "span": [2, 5]}],
        "relations": [],
    }
    lines = [
        json.dumps({"pair_id": "p1", "image_id": "i1", "caption": "a red ball", "scene_graph": graph}),
        "{not json",
        json.dumps({"image_id": "i2", "caption": "a dog"}),
    ]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    report = _import("jsonl", [tmp_path / "pairs.jsonl"], tmp_path / "out")
    assert report.malformed == 1 and "line 2: invalid JSON" in report.first_malformed[0]
    table = load_table(tmp_path / "out" / "pairs" / "train")
    first, second = table[0], table[1]
    assert first["node_names"] == ["ball", "red"] and first["node_types"] == [1, 2]
    assert [tokenizer.decode([first["input_ids"][i] for i in wp]) for wp in first["node_wordpieces"]] == [
        "ball",
        "red",
    ]
    assert second["pair_id"] == "line-3" and second["node_names"] == ["dog"]


def _cc_file(path, count):
    path.write_text("".join(f"a dog number {n}\thttp://a/{n}.jpg\n" for n in range(count)))
    return path


def test_interrupted_import_resumes_without_loss_or_duplicates(tmp_path, monkeypatch):
    source = _cc_file(tmp_path / "cc.tsv", 11)
    _import("cc", [source], tmp_path / "clean", shard_size=3)

    calls = []
    real_write_shard = prepare.write_shard

    def failing_write_shard(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated interruption")
        return real_write_shard(*args, **kwargs)

    monkeypatch.setattr(prepare, "write_shard", failing_write_shard)
    with pytest.raises(KeyboardInterrupt):
        _import("cc", [source], tmp_path / "resumed", shard_size=3)
    monkeypatch.setattr(prepare, "write_shard", real_write_shard)
    with pytest.raises(FileNotFoundError, match="manifest"):
        load_table(tmp_path / "resumed" / "pairs" / "train")
    report = _import("cc", [source], tmp_path / "resumed", shard_size=3, num_proc=2)
    assert report.rows == 11
    assert _rows(tmp_path / "resumed") == _rows(tmp_path / "clean")


def test_a_different_source_is_refused(tmp_path):
    _import("cc", [_cc_file(tmp_path / "a.tsv", 2)], tmp_path / "out")
    assert _import("cc", [tmp_path / "a.tsv"], tmp_path / "out").rows == 2  # same command: reused
    with pytest.raises(ValueError, match="another output"):
        _import("cc", [_cc_file(tmp_path / "b.tsv", 3)], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"missing\.tsv"):
        _import("cc", [tmp_path / "missing.tsv"], tmp_path / "other")


def test_imports_and_synthscenes_never_overwrite_each_other(tmp_path, synth_dir, tokenizer):
    with pytest.raises(ValueError, match="synth"):
        _import("cc", [_cc_file(tmp_path / "a.tsv", 2)], synth_dir)
    _import("cc", [tmp_path / "a.tsv"], tmp_path / "out")
    with pytest.raises(ValueError, match="captions"):
        build_synth_scenes(
            tmp_path / "out", num_train_images=2, num_eval_images=1, seed=0, tokenizer=tokenizer
        )


def test_a_failed_start_that_wrote_nothing_does_not_block_the_corrected_command(tmp_path):
    (tmp_path / "coco.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="no 'annotations' list"):
        _import("coco", [tmp_path / "coco.json"], tmp_path / "out")
    (tmp_path / "coco.json").write_text(
        json.dumps({"annotations": [{"image_id": 1, "id": 2, "caption": "A dog."}]})
    )
    assert _import("coco", [tmp_path / "coco.json"], tmp_path / "out").rows == 1
    with pytest.raises(ValueError, match="unknown caption format 'xml'"):
        _import("xml", [tmp_path / "coco.json"], tmp_path / "out")
