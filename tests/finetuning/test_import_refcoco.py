"""RefCOCO+ importer: the official nine-field TSV, written by hand, imported, read back and collated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ernievil_ds.errors import UserError
from ernievil_ds.finetuning.data import collate_refcoco, import_refcoco, load_refcoco, load_vqa
from ernievil_ds.finetuning.modeling import ErnieVilForReferringExpressions
from tests.finetuning.official_files import refcoco_row, regions, write_lines


def test_refcoco_tsv_imports_expressions_and_collates_targets(tmp_path, tokenizer, tiny_config):
    boxes, features = regions(3, seed=4)  # 2 detected + 1 ground-truth box
    good = [
        refcoco_row("man on the left", 100, 50, 2, boxes, features, [10, 5, 59, 34], [0.8, 0.2, 1.0]),
        refcoco_row("whole scene", 100, 50, 2, boxes, features, [0, 0, 99, 49], [0.1, 0.6, 0.45]),
    ]
    too_few_ious = refcoco_row("left", 100, 50, 2, boxes, features, [0, 0, 9, 9], [0.8, 0.2])
    bad_base64 = refcoco_row("right", 100, 50, 2, boxes, features, [0, 0, 9, 9], [0.8, 0.2, 1.0])
    bad_base64[5] = "#"
    path = tmp_path / "refcoco+_train.tsv"
    write_lines(path, [*good, too_few_ious, bad_base64, [*good[0], "extra"]])

    report = import_refcoco([path], tmp_path / "out")
    assert (report.examples.rows, report.examples.malformed) == (2, 3)
    assert (report.images.rows, report.images.malformed) == (1, 2)  # both good lines show one image
    assert report.examples.first_malformed[0] == (
        "refcoco+_train.tsv:3: label has 2 IoUs for 2 + 1 boxes (number_boxes + number_boxes_gt)"
    )
    assert report.examples.first_malformed[1].startswith("refcoco+_train.tsv:4: boxes is not valid base64")
    assert report.examples.first_malformed[2] == "refcoco+_train.tsv:5: 10 tab-separated fields, expected 9"

    dataset = load_refcoco(tmp_path / "out")
    with pytest.raises(UserError, match="holds refcoco examples, not vqa examples"):
        load_vqa(tmp_path / "out")
    rows = [dataset[0], dataset[1]]
    assert [r["expression_id"] for r in rows] == ["refcoco+_train.tsv:1", "refcoco+_train.tsv:2"]
    assert rows[0]["input_ids"] == tokenizer("man on the left")["input_ids"]
    assert rows[0]["target_box"] == [10, 5, 59, 34] and rows[0]["num_detected"] == 2
    np.testing.assert_allclose(rows[1]["ious"], [0.1, 0.6, 0.45], rtol=1e-6)
    np.testing.assert_array_equal(rows[0]["image"]["features"], features)
    np.testing.assert_array_equal(rows[1]["image"]["boxes"], boxes)

    batch = collate_refcoco(rows)
    # [IMG]: (x2 - x1 + 1)(y2 - y1 + 1) / (W H) = 50 * 30 / 5000 = 0.3 and 100 * 50 / 5000 = 1; below 0.5
    # every target is zeroed.
    np.testing.assert_allclose(batch["labels"].numpy(), [[0, 0.8, 0, 1.0], [1.0, 0, 0.6, 0]], rtol=1e-6)
    np.testing.assert_allclose(batch["ious"].numpy(), [[0.8, 0.2, 1.0], [0.1, 0.6, 0.45]], rtol=1e-6)
    model = ErnieVilForReferringExpressions(tiny_config).eval()
    inputs = {key: value for key, value in batch.items() if key != "ious"}
    with torch.no_grad():
        output = model(**inputs)
    assert output.logits.shape == (2, 4) and torch.isfinite(output.loss)
