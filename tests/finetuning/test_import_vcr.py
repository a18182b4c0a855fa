"""VCR importer: JSON-lines annotations and ViLBERT feature LMDBs, written by hand, imported and collated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ernievil_ds.cli import main
from ernievil_ds.finetuning.data import collate_vcr, import_vcr, load_vcr
from ernievil_ds.finetuning.data.vcr import choice_tokens, converted_image_id, item_names
from ernievil_ds.finetuning.modeling import ErnieVilForMultipleChoice
from tests.data.conftest import HostileCall
from tests.finetuning.official_files import regions, vilbert_beta_row, write_jsonl, write_lmdb

NAMES = ["Casey", "Jordan", "Riley"]


def _item(annot_id, img_id, objects, question, answers, rationales, labels=(0, 0)) -> dict:
    return {
        "annot_id": annot_id,
        "img_id": img_id,
        "objects": objects,
        "question": question,
        "answer_choices": answers,
        "rationale_choices": rationales,
        "answer_label": labels[0],
        "rationale_label": labels[1],
        "metadata_fn": f"{img_id}.json",
    }


RATIONALES = [["Because", "."], ["It", "is", "late", "."], [[0], "smiles", "."], ["No", "reason", "."]]


@pytest.fixture
def vcr_files(tmp_path):
    """Two good items (images val-5 and val-6), then four malformed ones."""
    det = {key: regions(n, seed=n) for key, n in (("1000005", 3), ("1000006", 2))}
    gt = {key: regions(n, seed=10 + n) for key, n in (("1000005", 2), ("1000006", 1))}
    marker = tmp_path / "marker"
    hostile = HostileCall(open, (str(marker), "w"))
    write_lmdb(
        tmp_path / "det.lmdb",
        {key: vilbert_beta_row(key, 80, 60, *arrays) for key, arrays in det.items()} | {"1000008": hostile},
    )
    write_lmdb(
        tmp_path / "gt.lmdb",
        {key: vilbert_beta_row(key, 80, 60, *arrays) for key, arrays in gt.items()}
        | {"1000008": vilbert_beta_row("1000008", 80, 60, *regions(1, seed=0))},
    )
    question = ["What", "is", [0], "doing", "with", [1], "?"]
    answers = [
        [[0], "is", "walking", [1], "."],
        ["Nothing", "."],
        [[0, 2], "are", "talking", "."],
        ["Sleeping", "."],
    ]
    items = [
        _item("val-0", "val-5", ["person", "dog", "person"], question, answers, RATIONALES, (0, 2)),
        _item("val-1", "val-6", ["car"], ["Where", "is", [0], "?"], RATIONALES, RATIONALES, (1, 3)),
        _item("val-2", "val-7", ["car"], ["Why", "?"], RATIONALES, RATIONALES),
        _item("val-3", "val-8", ["car"], ["Why", "?"], RATIONALES, RATIONALES),
        _item("val-4", "val-5", ["car"], ["Is", [5], "?"], RATIONALES, RATIONALES),
    ]
    write_jsonl(tmp_path / "val.jsonl", items)
    with (tmp_path / "val.jsonl").open("a") as file:
        file.write("{not json\n")
    (tmp_path / "names.csv").write_text(
        ",name,count\n" + "".join(f"{i},{n},1\n" for i, n in enumerate(NAMES))
    )
    return tmp_path, det, gt, marker


def test_vcr_import_merges_regions_names_persons_and_skips_bad_items(vcr_files, tokenizer):
    root, det, gt, marker = vcr_files
    report = import_vcr(
        [root / "val.jsonl"],
        [root / "det.lmdb", root / "gt.lmdb"],
        root / "out",
        names=root / "names.csv",
        max_regions=5,
    )
    assert (report.images.rows, report.images.malformed) == (2, 2)
    assert (report.examples.rows, report.examples.malformed) == (2, 4)
    first = report.examples.first_malformed
    assert first[0] == "val-2: image 1000007 is missing from LMDB det.lmdb"
    assert first[1].startswith("val-3: LMDB det.lmdb record 1000008: refused to unpickle")
    assert first[2] == "val-4: tag [5] names no object (the item has 1)"
    assert first[3].startswith("val.jsonl:6: not JSON")
    assert not marker.exists()  # the hostile row never ran

    dataset = load_vcr(root / "out")
    item = dataset[0]
    assert item["image_id"] == "1000005" == converted_image_id("val-5")
    person, dog, other = item_names(["person", "dog", "person"], NAMES, 0, "val-0")
    assert dog == "dog" and {person, other} <= set(NAMES)
    assert item["question"] == f"What is {person} doing with dog ?"
    assert item["answer_choices"][2] == f"{person} {other} are talking ."
    assert item["rationale_choices"][2] == f"{person} smiles ."
    assert (item["answer_label"], item["rationale_label"]) == (0, 2)
    assert item["question_ids"] == tokenizer(item["question"], add_special_tokens=False)["input_ids"]
    assert (
        item["answer_ids"][0] == tokenizer(item["answer_choices"][0], add_special_tokens=False)["input_ids"]
    )
    # max_regions 5 counts [IMG]: min(4, 2) ground-truth boxes, then min(4 - 2, 3) detected ones before them.
    np.testing.assert_array_equal(
        item["image"]["boxes"], np.concatenate([det["1000005"][0][:2], gt["1000005"][0]])
    )
    np.testing.assert_array_equal(item["image"]["features"][2:], gt["1000005"][1])
    # val-6: one ground-truth box and both detected ones fit.
    np.testing.assert_array_equal(
        dataset[1]["image"]["boxes"], np.concatenate([det["1000006"][0], gt["1000006"][0]])
    )
    assert dataset[1]["question"] == "Where is car ?"


def test_vcr_collate_builds_both_tasks(vcr_files, tiny_config, capsys):
    root, _, _, _ = vcr_files
    args = [
        "import-finetune",
        "--task",
        "vcr",
        "--input",
        str(root / "val.jsonl"),
        "--output-dir",
        str(root / "out"),
    ]
    args += ["--images", str(root / "det.lmdb"), str(root / "gt.lmdb")]
    assert main(args) == 2
    assert "--task vcr needs --names" in capsys.readouterr().err
    assert main([*args, "--names", str(root / "names.csv")]) == 0
    assert capsys.readouterr().out.startswith(
        "6 records read, 2 imported, 4 skipped (first: val-2: image 1000007"
    )
    dataset = load_vcr(root / "out")
    items = [dataset[0], dataset[1]]
    batch = collate_vcr(items, task="q2a")
    q, a = items[0]["question_ids"], items[0]["answer_ids"][3]
    expected = [101, *q, 102, *a, 102]
    assert batch["input_ids"][0, 3, : len(expected)].tolist() == expected
    assert batch["token_type_ids"][0, 3, : len(expected)].tolist() == [0] * (len(q) + 2) + [1] * (len(a) + 1)
    assert batch["labels"].tolist() == [0, 1]
    assert batch["region_features"].shape == (2, 4, 5, 2048)  # 3 + 2 regions of val-5 (up to 100)
    assert batch["region_mask"][1, 2].tolist() == [1, 1, 1, 0, 0]
    model = ErnieVilForMultipleChoice(tiny_config).eval()
    with torch.no_grad():
        assert model(**batch, task="q2a").logits.shape == (2, 4)

    batch = collate_vcr(items, task="qa2r")
    first, r = [*items[1]["question_ids"], 102, *items[1]["answer_ids"][1]], items[1]["rationale_ids"][0]
    expected = [101, *first, 102, *r, 102]
    assert batch["input_ids"][1, 0, : len(expected)].tolist() == expected
    assert batch["labels"].tolist() == [2, 3]
    test_items = [item | {"answer_label": -1, "rationale_label": -1} for item in items]
    with pytest.raises(ValueError, match="no answer label"):
        collate_vcr(test_items, task="qa2r")
    assert (
        collate_vcr(test_items, task="qa2r", answers=[1, 1])["input_ids"][1, 0, : len(expected)].tolist()
        == expected
    )


def test_pair_truncation_keeps_the_cut_of_earlier_choices():
    # 5 + 2 tokens over max_length 7 - 3: the longer first part loses 3; the next choice keeps that cut.
    sequences, segments = choice_tokens([1, 2, 3, 4, 5], [[6, 7], [8]], 7, cls_token_id=101, sep_token_id=102)
    assert sequences == [[101, 1, 2, 102, 6, 7, 102], [101, 1, 2, 102, 8, 102]]
    assert segments == [[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1]]
