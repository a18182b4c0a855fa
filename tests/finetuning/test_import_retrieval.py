"""Flickr30K importer: the official image TSV and caption file, written by hand, imported and collated."""

from __future__ import annotations

import numpy as np
import torch

from ernievil_ds.finetuning.data import (
    collate_retrieval,
    collate_retrieval_groups,
    import_retrieval,
    load_retrieval,
    negative_image_groups,
)
from ernievil_ds.finetuning.modeling import ErnieVilForImageTextRetrieval
from tests.finetuning.official_files import image_tsv_row, regions, write_lines

#: Image id -> number of boxes; the counts tell the images apart in the groups.
IMAGE_BOXES = {"1001": 2, "1002": 1, "1003": 3}


def test_flickr_files_import_captions_and_build_groups(tmp_path, tokenizer, tiny_config):
    image_regions = {image_id: regions(n, seed=int(image_id)) for image_id, n in IMAGE_BOXES.items()}
    images = tmp_path / "flickr_bottom_up_10_36.csv.0"
    bad_base64 = image_tsv_row("1004", 200, 100, *image_regions["1001"])
    bad_base64[5] = "%%"
    write_lines(images, [*(image_tsv_row(i, 200, 100, *image_regions[i]) for i in IMAGE_BOXES), bad_base64])
    captions = tmp_path / "flickr.train.data"
    lines = [
        "1001\t0\ta dog runs",
        "1001\t1\ttwo dogs play",
        "1002\t2\ta cat",
        "9999\t3\tno image",
        "1003\t4",
    ]
    captions.write_text("\n".join([*lines, "1003\t5\ta bird sings"]) + "\n")

    report = import_retrieval([captions], [images], tmp_path / "out")
    assert (report.examples.rows, report.examples.malformed) == (4, 2)
    assert (report.images.rows, report.images.malformed) == (3, 1)
    assert report.images.first_malformed[0].startswith("1004: features is not valid base64")
    assert report.examples.first_malformed == [
        "flickr.train.data:4: image 9999 is not in the images table",
        "flickr.train.data:5: 2 tab-separated fields, expected 3",
    ]
    dataset = load_retrieval(tmp_path / "out")
    rows = [dataset[i] for i in range(4)]
    assert [(r["caption_id"], r["image_id"], r["caption"]) for r in rows] == [
        ("0", "1001", "a dog runs"),
        ("1", "1001", "two dogs play"),
        ("2", "1002", "a cat"),
        ("5", "1003", "a bird sings"),
    ]
    assert rows[3]["input_ids"] == tokenizer("a bird sings")["input_ids"]
    np.testing.assert_array_equal(rows[3]["image"]["features"], image_regions["1003"][1])

    groups = negative_image_groups(dataset, [0, 2], np.random.default_rng(0), num_negatives=4)
    assert [len(g[0]["image"]["boxes"]) for g in groups] == [2, 1]  # the matched pair first
    assert all(len(pair["image"]["boxes"]) != 2 for pair in groups[0][1:])  # never the caption's image
    assert all(len(pair["image"]["boxes"]) != 1 for pair in groups[1][1:])
    assert all(pair["input_ids"] == groups[0][0]["input_ids"] for pair in groups[0])

    batch = collate_retrieval_groups(groups)
    assert batch["input_ids"].shape[:2] == (2, 5) and batch["region_features"].shape == (2, 5, 3, 2048)
    model = ErnieVilForImageTextRetrieval(tiny_config).eval()
    with torch.no_grad():
        output = model(**batch, return_loss=True)
    assert output.logits.shape == (2, 5) and torch.isfinite(output.loss)

    pairs = collate_retrieval(rows, max_length=3)
    assert pairs["input_ids"].shape == (4, 3) and pairs["region_mask"].sum(1).tolist() == [2, 2, 1, 3]
