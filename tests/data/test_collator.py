"""SGPCollator and collate_cloze: keys, masking rates, node alignment, matching, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ernievil_ds.data import SGPCollator, collate_cloze, load_pretraining_split
from ernievil_ds.data.collator import position_capacity, region_word_targets
from ernievil_ds.data.synth import detector_class_names
from ernievil_ds.objectives import MLM_TASK_ID, NODE_TYPE_IDS

MODEL_KEYS = {
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "region_features",
    "region_boxes",
    "image_sizes",
    "region_mask",
    "masked_regions",
    "region_class_targets",
    "labels",
    "task_ids",
    "itm_labels",
    "masked_token_positions",
    "masked_token_weights",
    "masked_region_positions",
    "masked_region_weights",
}


@pytest.fixture(scope="module")
def examples(synth_dir):
    dataset = load_pretraining_split(synth_dir, "train")
    return dataset.__getitems__(list(range(len(dataset))))


def _batches(examples, collator, batch_size=30, epochs=6):
    for epoch in range(epochs):
        collator.set_epoch(epoch)
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            yield chunk, collator(chunk)


def test_keys_shapes_and_dtypes(examples, tokenizer):
    batch = SGPCollator(tokenizer, max_text_len=20)(examples[:16])
    assert set(batch) == MODEL_KEYS
    batch_size, num_tokens = batch["input_ids"].shape
    num_regions = max(len(e["boxes"]) for e in examples[:16])
    assert batch_size == 16 and num_tokens <= 20
    assert batch["region_features"].shape == (16, num_regions, 2048)
    assert batch["region_features"].dtype == torch.float16
    assert batch["region_boxes"].shape == (16, num_regions, 4)
    assert batch["region_class_targets"].shape == (16, num_regions, 1601)
    assert batch["image_sizes"].shape == (16, 2)
    assert batch["masked_regions"].dtype == torch.bool
    for key in (
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "labels",
        "task_ids",
        "itm_labels",
        "region_mask",
    ):
        assert batch[key].dtype == torch.long, key
    assert (batch["input_ids"][:, 0] == tokenizer.cls_token_id).all()
    lengths = batch["attention_mask"].sum(1)
    assert (batch["input_ids"][torch.arange(16), lengths - 1] == tokenizer.sep_token_id).all()


def test_feature_targets_without_class_distribution(examples, tokenizer):
    plain = [dict(e, cls_prob=None) for e in examples[:8]]
    batch = SGPCollator(tokenizer, region_mask_prob=1.0, region_zero_prob=1.0)(plain)
    assert "region_class_targets" not in batch and set(batch) == MODEL_KEYS - {"region_class_targets"} | {
        "region_feature_targets"
    }
    assert (batch["region_features"] == 0).all()
    assert batch["region_feature_targets"].abs().sum() > 0


def test_masking_rates(examples, tokenizer):
    collator = SGPCollator(tokenizer, seed=3, itm_negative_prob=0.0)
    nodes, chosen_nodes = np.zeros(4), np.zeros(4)  # by task id
    tokens = chosen_tokens = 0
    node_kept = node_masked = token_kept = token_masked = 0
    regions = masked = zeroed = 0
    for chunk, batch in _batches(examples, collator):
        for i, example in enumerate(chunk):
            labels, ids = batch["labels"][i].numpy(), batch["input_ids"][i].numpy()
            in_nodes = np.zeros(len(labels), dtype=bool)
            for node_type, node_wordpieces in zip(example["node_types"], example["node_wordpieces"]):
                wordpieces = node_wordpieces.tolist()
                nodes[node_type] += 1
                in_nodes[wordpieces] = True
                if (batch["task_ids"][i, wordpieces] == int(node_type)).all():
                    chosen_nodes[node_type] += 1
                    node_masked += (ids[wordpieces] == tokenizer.mask_token_id).all()
                    node_kept += (ids[wordpieces] == labels[wordpieces]).all()
            length = len(example["input_ids"])
            free = ~in_nodes[1 : length - 1]  # caption tokens outside every node
            mlm = batch["task_ids"][i, 1 : length - 1].numpy() == MLM_TASK_ID
            tokens += free.sum()
            chosen_tokens += (mlm & free).sum()
            predicted = np.flatnonzero(mlm) + 1
            token_masked += (ids[predicted] == tokenizer.mask_token_id).sum()
            token_kept += (ids[predicted] == labels[predicted]).sum()
        regions += batch["region_mask"].sum().item()
        masked += batch["masked_regions"].sum().item()
        zeroed += (batch["region_features"][batch["masked_regions"]].abs().sum(-1) == 0).sum().item()
    for node_type in ("object", "attribute", "relation"):  # each type on its own, as in the paper
        rate = chosen_nodes[NODE_TYPE_IDS[node_type]] / nodes[NODE_TYPE_IDS[node_type]]
        assert abs(rate - 0.3) < 0.03, (node_type, rate)
    assert abs(chosen_tokens / tokens - 0.15) < 0.02
    node_share = (node_masked / chosen_nodes.sum(), node_kept / chosen_nodes.sum())
    assert abs(node_share[0] - 0.8) < 0.05 and abs(node_share[1] - 0.1) < 0.04
    token_predicted = sum(
        (b["task_ids"] == MLM_TASK_ID).sum().item() for _, b in _batches(examples, collator)
    )
    assert abs(token_masked / token_predicted - 0.8) < 0.04 and abs(token_kept / token_predicted - 0.1) < 0.03
    assert abs(masked / regions - 0.15) < 0.02
    assert abs(zeroed / masked - 0.9) < 0.04


def test_node_mask_rate_per_type(examples, tokenizer):
    """Relations at 1.0 and the other types at 0.0: every relation and nothing else is an SGP target."""
    collator = SGPCollator(
        tokenizer,
        seed=2,
        itm_negative_prob=0.0,
        token_mask_prob=0.0,
        node_mask_prob={"object": 0.0, "attribute": 0.0, "relation": 1.0},
    )
    for chunk, batch in _batches(examples, collator, epochs=1):
        for i, example in enumerate(chunk):
            expected = np.full(batch["task_ids"].shape[1], -100)
            for node_type, wordpieces in zip(example["node_types"], example["node_wordpieces"]):
                if node_type == NODE_TYPE_IDS["relation"]:
                    expected[wordpieces] = node_type
            np.testing.assert_array_equal(batch["task_ids"][i].numpy(), expected)


@pytest.mark.parametrize(
    ("node_mask_prob", "message"),
    [({"relations": 0.5}, "unknown node types"), ({"relation": 1.5}, "probability"), (-0.1, "probability")],
)
def test_bad_node_mask_rates_are_refused(tokenizer, node_mask_prob, message):
    with pytest.raises(ValueError, match=message):
        SGPCollator(tokenizer, node_mask_prob=node_mask_prob)


def test_masked_nodes_decode_to_their_text(examples, tokenizer):
    collator = SGPCollator(tokenizer, seed=1, itm_negative_prob=0.0, token_mask_prob=0.0, node_mask_prob=1.0)
    checked = 0
    for chunk, batch in _batches(examples, collator, epochs=1):
        for i, example in enumerate(chunk):
            for k, node_wordpieces in enumerate(example["node_wordpieces"]):
                wordpieces = node_wordpieces.tolist()
                assert (batch["task_ids"][i, wordpieces] == int(example["node_types"][k])).all()
                text = example["caption"][slice(*example["node_spans"][k])]
                assert tokenizer.decode(batch["labels"][i, wordpieces]) == text.lower()
                checked += 1
    assert checked > 300


def test_regions_are_masked_on_mismatched_pairs_too(examples, tokenizer):
    """Otherwise the zeroed regions would enter the [IMG] mean of mismatched pairs only, a matching cue."""
    collator = SGPCollator(tokenizer, seed=3)
    on_negatives = 0
    for _, batch in _batches(examples, collator, epochs=2):
        on_negatives += int(batch["masked_regions"][batch["itm_labels"] == 0].sum())
    assert on_negatives > 0


def test_mismatched_pairs_have_no_token_targets_and_are_masked_alike(examples, tokenizer):
    collator = SGPCollator(tokenizer, seed=2)
    total = 0
    for chunk, batch in _batches(examples, collator, epochs=2):
        negatives = batch["itm_labels"] == 0
        total += len(chunk)
        assert (batch["labels"][negatives] == -100).all() and (batch["task_ids"][negatives] == -100).all()
        # A swapped-in image is another example's image: its boxes differ from the caption's own.
        for i in torch.nonzero(negatives).flatten().tolist():
            own = torch.tensor(np.array(chunk[i]["boxes"]))
            assert not torch.equal(batch["region_boxes"][i, : len(own)], own)
        # Inputs are masked alike on both kinds of pairs, so the masks do not reveal the label.
        masks = batch["input_ids"] == tokenizer.mask_token_id
        assert masks[negatives].any()
    assert total == 2 * len(examples)


def test_no_sgp_predicts_plain_tokens_only(examples, tokenizer):
    batch = SGPCollator(tokenizer, sgp=False, itm_negative_prob=0.0)(examples[:64])
    predicted = batch["task_ids"][batch["task_ids"] != -100]
    assert len(predicted) > 0 and (predicted == MLM_TASK_ID).all()


def test_deterministic_per_seed_epoch_and_examples(examples, tokenizer):
    chunk = examples[:24]
    first, second = SGPCollator(tokenizer, seed=5), SGPCollator(tokenizer, seed=5)
    a, b = first(chunk), second(chunk)
    assert all(torch.equal(a[k], b[k]) for k in a)
    second.set_epoch(1)
    assert not torch.equal(a["input_ids"], second(chunk)["input_ids"])
    assert not torch.equal(a["input_ids"], SGPCollator(tokenizer, seed=6)(chunk)["input_ids"])


def test_same_batches_whatever_the_worker_count(synth_dir, tokenizer):
    dataset = load_pretraining_split(synth_dir, "eval")
    collator = SGPCollator(tokenizer, seed=4)
    loaders = [
        torch.utils.data.DataLoader(dataset, batch_size=8, collate_fn=collator, num_workers=workers)
        for workers in (0, 2)
    ]
    for a, b in zip(*loaders):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_cloze_masks_exactly_one_node(examples, tokenizer):
    chosen = [(e, len(e["node_types"]) - 1) for e in examples[:40] if len(e["node_types"])]
    chunk, node_indices = [e for e, _ in chosen], [k for _, k in chosen]
    others = chunk[1:] + chunk[:1]
    batch, targets = collate_cloze(chunk, node_indices, tokenizer, image_examples=others)
    assert set(batch) == MODEL_KEYS
    labelled = (batch["labels"] != -100).flatten().nonzero()[:, 0]  # unpadded: one logits row per WordPiece
    assert (
        torch.equal(batch["masked_token_positions"], labelled) and (batch["masked_token_weights"] == 1).all()
    )
    assert len(batch["masked_region_positions"]) == 0
    assert (batch["itm_labels"] == 1).all() and not batch["masked_regions"].any()
    for i, target in enumerate(targets):
        positions = torch.tensor(target["positions"])
        assert (batch["labels"][i] != -100).sum() == len(positions)
        assert (batch["input_ids"][i, positions] == tokenizer.mask_token_id).all()
        assert (batch["task_ids"][i, positions] == target["node_type"]).all()
        assert tokenizer.decode(target["token_ids"]) == target["text"].lower()
        assert torch.equal(
            batch["region_boxes"][i, : len(others[i]["boxes"])], torch.tensor(np.array(others[i]["boxes"]))
        )
    with pytest.raises(ValueError, match="node 99"):
        collate_cloze(chunk[:1], [99], tokenizer)


def test_scored_positions_are_the_labelled_tokens_and_scored_regions_padded_to_a_capacity(
    examples, tokenizer
):
    collator = SGPCollator(tokenizer)
    for _, batch in _batches(examples, collator, batch_size=16, epochs=2):
        for grid, mask, share in (
            ("token", batch["labels"] != -100, 0.25),
            ("region", batch["masked_regions"] & (batch["itm_labels"][:, None] == 1), 0.15),
        ):
            positions, weights = batch[f"masked_{grid}_positions"], batch[f"masked_{grid}_weights"]
            count = int(mask.sum())
            assert positions.dtype == torch.long and weights.dtype == torch.float32
            assert len(positions) == len(weights) == position_capacity(count, mask.numel(), share)
            assert weights.tolist() == [1.0] * count + [0.0] * (len(weights) - count)
            assert torch.equal(positions[:count], mask.flatten().nonzero()[:, 0])  # row-major order
            assert (positions[count:] == 0).all()


def test_capacity_is_fixed_by_the_batch_shape_and_doubles_for_a_batch_that_masks_more():
    assert position_capacity(3, 100, 0.25) == position_capacity(25, 100, 0.25) == 32  # 25 rounded up to 8s
    assert position_capacity(33, 100, 0.25) == 64 and position_capacity(100, 100, 0.25) == 128
    assert position_capacity(0, 3, 0.15) == 8 and position_capacity(7, 100, None) == 7


@pytest.mark.parametrize("name", ["token_capacity", "region_capacity"])
@pytest.mark.parametrize("value", [0.0, 1.5])
def test_bad_capacities_are_refused(tokenizer, name, value):
    with pytest.raises(ValueError, match=rf"{name} must be a share .* in \(0, 1\], got {value}"):
        SGPCollator(tokenizer, **{name: value})


@pytest.mark.parametrize(
    ("box", "max_regions"),
    [([10.0, 10.0, 5.0, 20.0], 100), ([-30.0, 0.0, 20.0, 20.0], 100), ([0.0, 0.0, 20.0, 1e4], 100)],
    ids=["x1 > x2", "left of the image", "below the image"],
)
def test_a_box_outside_its_image_is_refused_with_its_image_and_region(examples, tokenizer, box, max_regions):
    chunk = [dict(e) for e in examples[:4]]
    boxes = np.array(chunk[2]["boxes"])
    boxes[1] = box
    chunk[2]["boxes"] = boxes
    message = rf"image {chunk[2]['image_id']!r}: region 1's box \[{box[0]}, .* inside the image of size"
    with pytest.raises(ValueError, match=message):
        SGPCollator(tokenizer, max_regions=max_regions)(chunk)
    SGPCollator(tokenizer, max_regions=1)(chunk)  # a region cut off by max_regions is not read


def test_region_word_targets_by_hand():
    """One caption "[CLS] brown dog catches a fris ##bee [SEP]": objects dog (1) and frisbee (4, 5)."""
    example = {
        "node_types": [1, 1, 2],
        "node_names": ["dog", "Frisbee", "brown"],
        "node_wordpieces": [np.array([2]), np.array([5, 6]), np.array([1])],
    }
    class_words = [frozenset(), frozenset({"dog"}), frozenset({"frisbee", "disc"}), frozenset({"cat"})]
    region_classes = np.array([[1, 2, 3, 0, 1]])  # dog, frisbee, cat, unnamed, dog (padding)
    region_mask = np.array([[1, 1, 1, 1, 0]])
    labels = np.full((1, 8), -100)
    keep = np.ones((1, 8), dtype=np.int64)

    def targets(examples=(example,), labels=labels, keep=keep, matched=True):
        return region_word_targets(
            list(examples), region_classes, region_mask, labels, keep, np.array([matched]), class_words
        ).tolist()

    assert targets() == [[2, 5, -100, -100, -100]]
    chosen = labels.copy()
    chosen[0, 6] = 999  # a piece of "frisbee" is to be predicted: the word is hidden
    assert targets(labels=chosen) == [[2, -100, -100, -100, -100]]
    truncated = keep.copy()
    truncated[0, 6:] = 0  # the caption was cut after "fris": its [SEP] now sits at position 5
    assert targets(keep=truncated) == [[2, -100, -100, -100, -100]]
    assert targets(matched=False) == [[-100] * 5]
    two_dogs = dict(example, node_types=[1, 1, 2, 1], node_names=[*example["node_names"], "dog"])
    two_dogs["node_wordpieces"] = [*example["node_wordpieces"], np.array([3])]
    assert targets(examples=(two_dogs,)) == [[-100, 5, -100, -100, -100]]


def test_synth_grounding_targets_are_the_unmasked_nouns_of_the_regions_classes(examples, tokenizer):
    """Checked against the token ids: SynthScenes names each region's class by one noun, one WordPiece."""
    names = detector_class_names()
    collator = SGPCollator(tokenizer, seed=1, itm_negative_prob=0.3, region_class_names=names)
    grounded = 0
    for chunk, batch in _batches(examples, collator, epochs=1):
        classes = batch["region_class_targets"].argmax(-1)
        for i, example in enumerate(chunk):
            original = torch.tensor(example["input_ids"].astype(np.int64))
            for r in range(batch["region_mask"].shape[1]):
                expected = -100
                if batch["itm_labels"][i] == 1 and batch["region_mask"][i, r]:
                    noun_id = tokenizer.convert_tokens_to_ids(names[int(classes[i, r])])
                    hits = torch.nonzero(original == noun_id).flatten()
                    if len(hits) and batch["labels"][i, hits[0]] == -100:
                        expected = int(hits[0])
                assert int(batch["region_word_targets"][i, r]) == expected
                grounded += expected != -100
    assert grounded > len(examples) / 2  # a matched caption names one to four of its regions


def test_grounding_targets_need_class_distributions_and_one_name_per_class(examples, tokenizer):
    names = detector_class_names()
    plain = [dict(e, cls_prob=None) for e in examples[:8]]
    with pytest.raises(ValueError, match="no detector class distribution"):
        SGPCollator(tokenizer, region_class_names=names)(plain)
    with pytest.raises(ValueError, match="10 region_class_names for a detector of 1601 classes"):
        SGPCollator(tokenizer, region_class_names=names[:10])(examples[:8])
    assert "region_word_targets" not in SGPCollator(tokenizer)(examples[:8])
