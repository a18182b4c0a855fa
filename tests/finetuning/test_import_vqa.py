"""VQA importers: the official ERNIE-ViL TSV and VQA v2 JSON, written by hand, imported and read back."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from ernievil_ds.cli import main
from ernievil_ds.errors import UserError
from ernievil_ds.finetuning.data import collate_vqa, import_official_vqa, import_vqa_v2, load_vqa
from ernievil_ds.finetuning.data.vqa import answer_soft_score, read_answer_list
from ernievil_ds.finetuning.modeling import ErnieVilForVisualQuestionAnswering
from ernievil_ds.finetuning.vqa_answers import vqa_answer_accuracy
from tests.data.conftest import HostileCall
from tests.finetuning.official_files import image_tsv_row, regions, vqa_row, write_json, write_lines

ANSWERS = ["red", "yes", "white"]


@pytest.fixture
def official_tsv(tmp_path):
    """Three good questions on two images, then four malformed lines (lines 4-7)."""
    boxes_a, features_a = regions(2, seed=0)
    boxes_b, features_b = regions(1, seed=1)
    good = [
        vqa_row(101, "what color is the cat?", [0, 2], [1.0, 0.3], 640, 480, boxes_a, features_a),
        vqa_row(102, "is it raining?", [1], [0.9], 640, 480, boxes_a, features_a),
        vqa_row(103, "how many dogs are there?", [], [], 320, 240, boxes_b, features_b),
    ]
    bad_base64 = vqa_row(104, "q?", [1], [1.0], 640, 480, boxes_a, features_a)
    bad_base64[8] = "!!not base64!!"
    unknown = vqa_row(106, "q?", [7], [1.0], 640, 480, boxes_a, features_a)
    mismatch = vqa_row(107, "q?", [1], [1.0], 640, 480, boxes_a, features_a)
    mismatch[6] = 3  # number_box says 3, the arrays hold 2
    path = tmp_path / "vqa_train.tsv"
    write_lines(path, [*good, bad_base64, good[0][:8], unknown, mismatch])
    answers = tmp_path / "trainval_label2ans.pkl"
    answers.write_bytes(pickle.dumps(ANSWERS))
    return path, answers, (boxes_a, features_a), (boxes_b, features_b)


def test_official_tsv_imports_questions_and_shared_images(official_tsv, tmp_path, tokenizer, tiny_config):
    path, answers, (boxes_a, features_a), (boxes_b, features_b) = official_tsv
    report = import_official_vqa([path], tmp_path / "out", answers=answers)
    assert (report.examples.rows, report.examples.malformed) == (3, 4)
    assert (report.images.rows, report.images.malformed) == (2, 3)  # lines 1 and 2 share their image
    first = report.examples.first_malformed
    assert first[0].startswith("vqa_train.tsv:4: features is not valid base64")
    assert first[1] == "vqa_train.tsv:5: 8 tab-separated fields, expected 9"
    assert first[2] == "vqa_train.tsv:6: unknown answer label 7 (the answer list has 3 answers)"
    assert first[3].startswith("vqa_train.tsv:7: boxes has 32 bytes, expected num_boxes x 4 float32 = 48")
    assert report.summary().startswith("7 records read, 3 imported, 4 skipped (first: vqa_train.tsv:4")

    dataset, answer_list = load_vqa(tmp_path / "out")
    assert answer_list == ANSWERS
    rows = [dataset[i] for i in range(3)]
    assert [r["question_id"] for r in rows] == ["101", "102", "103"]
    assert rows[0]["input_ids"] == tokenizer("what color is the cat?")["input_ids"]
    assert [r["answer_labels"] for r in rows] == [[0, 2], [1], []]
    np.testing.assert_allclose(rows[0]["answer_scores"], [1.0, 0.3], rtol=1e-7)
    assert rows[0]["image_id"] == rows[1]["image_id"] != rows[2]["image_id"]
    np.testing.assert_array_equal(rows[0]["image"]["features"], features_a)
    np.testing.assert_array_equal(rows[1]["image"]["boxes"], boxes_a)
    np.testing.assert_array_equal(rows[2]["image"]["boxes"], boxes_b)
    assert (rows[2]["image"]["width"], rows[2]["image"]["height"]) == (320, 240)

    batch = collate_vqa(rows, num_answers=3, max_length=4)
    ids = tokenizer("what color is the cat?")["input_ids"]
    assert batch["input_ids"][0].tolist() == [*ids[:3], ids[-1]]  # cut keeping [SEP], as the official reader
    np.testing.assert_allclose(batch["labels"].numpy(), [[1.0, 0, 0.3], [0, 0.9, 0], [0, 0, 0]], rtol=1e-7)
    assert batch["region_mask"].tolist() == [[1, 1], [1, 1], [1, 0]]
    assert batch["image_sizes"].tolist() == [[640, 480], [640, 480], [320, 240]]
    np.testing.assert_array_equal(batch["region_features"][2, 0].numpy(), features_b[0])
    tiny_config.num_labels = len(answer_list)
    with torch.no_grad():
        output = ErnieVilForVisualQuestionAnswering(tiny_config).eval()(**batch)
    assert output.logits.shape == (3, 3) and torch.isfinite(output.loss)


def test_rerun_of_a_finished_import_changes_nothing(official_tsv, tmp_path):
    path, answers, _, _ = official_tsv
    first = import_official_vqa([path], tmp_path / "out", answers=answers)
    again = import_official_vqa([path], tmp_path / "out", answers=answers)
    assert again.summary() == first.summary()


def test_answer_list_pickle_with_a_foreign_global_is_refused_unrun(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "label2ans.pkl"
    path.write_bytes(pickle.dumps([HostileCall(open, (str(marker), "w"))]))
    with pytest.raises(UserError, match="refused to unpickle"):
        read_answer_list(path)
    assert not marker.exists()


def _annotation(question_id, mc, answers):
    return {
        "question_id": question_id,
        "multiple_choice_answer": mc,
        "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(answers)],
    }


@pytest.fixture
def vqa_v2_files(tmp_path):
    questions = [
        {"question_id": 1, "image_id": 9, "question": "What colour is the bus?"},
        {"question_id": 2, "image_id": 9, "question": "Is it sunny?"},
        {"question_id": 3, "image_id": 10, "question": "Is the man red?"},
        {"question_id": 4, "image_id": 10},
        {"question_id": 5, "image_id": 10, "question": "Unannotated?"},
    ]
    q1 = ["red", "Red", "red.", "blue", "blue", "green", "red", "red", "dark red", "blue"]
    q2 = ["yes"] * 3 + ["no"] * 7
    q3 = ["yes", "YES", "red", "no", "no", "no", "no", "no", "no", "no"]
    annotations = [_annotation(1, "Red", q1), _annotation(2, "yes", q2), _annotation(3, "Yes", q3)]
    annotations.append(_annotation(4, "no", ["no"] * 10))
    write_json(tmp_path / "questions.json", {"questions": questions})
    write_json(tmp_path / "annotations.json", {"annotations": annotations})
    return tmp_path / "questions.json", tmp_path / "annotations.json", (q1, q2, q3)


def test_vqa_v2_vocabulary_and_soft_scores(vqa_v2_files, tmp_path, tokenizer):
    questions, annotations, (q1, q2, q3) = vqa_v2_files
    output = tmp_path / "train"
    report = import_vqa_v2(questions, output, annotations=annotations, min_answer_count=2)
    # Normalised multiple-choice answers: red 1, yes 2, no 1: only "yes" is given for two questions.
    assert json.loads((output / "answers.json").read_text()) == ["yes"]
    assert (report.examples.rows, report.examples.malformed) == (3, 2)
    assert report.examples.first_malformed == [
        "4: a question needs question_id, image_id and a non-empty question",
        "5: no annotation with answers for this question",
    ]
    report = import_vqa_v2(questions, tmp_path / "train1", annotations=annotations, min_answer_count=1)
    answers = json.loads((tmp_path / "train1" / "answers.json").read_text())
    assert answers == ["yes", "red", "no"]  # by count, then first appearance
    from ernievil_ds.data.storage import load_table

    table = load_table(tmp_path / "train1" / "examples")
    assert table["image_id"] == ["9", "9", "10"]
    assert table["input_ids"][0] == tokenizer("What colour is the bus?")["input_ids"]
    # q1: red x5 -> 1.0 (blue, green, dark red are not answers); q2: yes x3 -> 0.9, no x7 -> 1.0;
    # q3: yes x2 -> 0.6, red x1 -> 0.3, no x7 -> 1.0 -- in order of first appearance.
    assert table["answer_labels"] == [[1], [0, 2], [0, 1, 2]]
    np.testing.assert_allclose(table["answer_scores"][1], [0.9, 1.0], rtol=1e-6)
    np.testing.assert_allclose(table["answer_scores"][2], [0.6, 0.3, 1.0], rtol=1e-6)
    # With ten answers the official min(1, 0.3 n) is the VQA leave-one-out accuracy.
    for humans in (q1, q2, q3):
        for answer in ("red", "yes", "no"):
            n = sum(h.lower().strip(".") == answer for h in humans)
            assert answer_soft_score(n) == pytest.approx(vqa_answer_accuracy(answer, humans))


def test_vqa_v2_test_split_uses_the_given_answers(vqa_v2_files, tmp_path):
    questions, annotations, _ = vqa_v2_files
    import_vqa_v2(questions, tmp_path / "train", annotations=annotations, min_answer_count=1)
    with pytest.raises(UserError, match="--answers"):
        import_vqa_v2(questions, tmp_path / "test")
    report = import_vqa_v2(questions, tmp_path / "test", answers=tmp_path / "train" / "answers.json")
    assert (report.examples.rows, report.examples.malformed) == (4, 1)  # question 4 has no text
    assert json.loads((tmp_path / "test" / "answers.json").read_text()) == ["yes", "red", "no"]


def test_cli_imports_vqa_v2_with_its_images(vqa_v2_files, tmp_path, capsys):
    questions, annotations, _ = vqa_v2_files
    images = tmp_path / "coco.tsv"
    write_lines(
        images, [image_tsv_row(9, 500, 400, *regions(3, seed=2)), image_tsv_row(10, 300, 200, *regions(1, 3))]
    )
    args = [
        "import-finetune",
        "--task",
        "vqa-v2",
        "--questions",
        str(questions),
        "--output-dir",
        str(tmp_path / "o"),
    ]
    status = main(
        [*args, "--annotations", str(annotations), "--min-answer-count", "1", "--images", str(images)]
    )
    assert status == 0
    assert capsys.readouterr().out.strip().startswith("5 records read, 3 imported, 2 skipped (first: 4: ")
    dataset, answers = load_vqa(tmp_path / "o")
    assert len(dataset) == 3 and dataset[2]["image"]["features"].shape == (1, 2048)
    assert collate_vqa([dataset[0], dataset[2]], len(answers))["region_mask"].tolist() == [
        [1, 1, 1],
        [1, 0, 0],
    ]

    assert main(["import-finetune", "--task", "vqa", "--output-dir", str(tmp_path / "p")]) == 2
    assert "--task vqa needs --input and --answers" in capsys.readouterr().err
