"""load_pretraining_split: the join of pairs and images, batched access, and missing data."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from datasets import load_from_disk

from ernievil_ds.data import load_pretraining_split


def test_examples_are_joined_with_their_image(synth_dir):
    dataset = load_pretraining_split(synth_dir, "eval")
    images = load_from_disk(str(synth_dir / "images" / "shard-00000")).with_format("numpy")
    row_of = {image_id: row for row, image_id in enumerate(images["image_id"])}
    for index in (0, 7, len(dataset) - 1):
        example = dataset[index]
        image = images[row_of[example["image_id"]]]
        np.testing.assert_array_equal(example["features"], image["features"])
        np.testing.assert_array_equal(example["boxes"], image["boxes"])
        np.testing.assert_array_equal(example["cls_prob"], image["cls_prob"])
        assert (example["width"], example["height"]) == (image["width"], image["height"])
        assert example["features"].dtype == np.float16 and example["features"].shape[1] == 2048
        assert example["pair_id"].startswith(example["image_id"])
        assert len(example["node_types"]) == len(example["node_names"]) == len(example["node_wordpieces"])


def test_batched_fetch_equals_single_fetch(synth_dir):
    dataset = load_pretraining_split(synth_dir, "train")
    indices = [5, 0, 17, 5]
    for batched, index in zip(dataset.__getitems__(indices), indices):
        single = dataset[index]
        assert batched["pair_id"] == single["pair_id"]
        np.testing.assert_array_equal(batched["input_ids"], single["input_ids"])
        for a, b in zip(batched["node_wordpieces"], single["node_wordpieces"]):
            np.testing.assert_array_equal(a, b)


def test_pickles_by_file_for_spawned_workers(synth_dir):
    dataset = load_pretraining_split(synth_dir, "train")
    payload = pickle.dumps(dataset)
    assert len(payload) < 100_000  # the tables travel as file references, not as their contents
    restored = pickle.loads(payload)
    np.testing.assert_array_equal(restored[3]["features"], dataset[3]["features"])
    assert restored[3]["caption"] == dataset[3]["caption"]


def test_missing_directory_or_split_is_named(synth_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretraining_split(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"'valid'.*\['eval', 'train'\]"):
        load_pretraining_split(synth_dir, "valid")
