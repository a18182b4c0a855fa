"""Region inputs stay float16 from the collator to the device, and static padding changes no loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ernievil_ds import ErnieVilConfig
from ernievil_ds.data import SGPCollator, load_pretraining_split
from ernievil_ds.data.transfer import batch_to_device
from ernievil_ds.modeling_ernievil import ErnieVilForPreTraining
from ernievil_ds.objectives import PRETRAINING_TASKS, loss_name

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def examples(synth_dir):
    dataset = load_pretraining_split(synth_dir, "train")
    return dataset.__getitems__(list(range(24)))


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return ErnieVilForPreTraining(ErnieVilConfig.from_preset("tiny")).eval()


def widened_regions(examples: list[dict], key: str, num_regions: int, zeroed: np.ndarray) -> torch.Tensor:
    """(B, R, D) float32: each example's stored float16 rows widened by numpy, zero where padded or zeroed."""
    width = examples[0][key].shape[1]
    out = np.zeros((len(examples), num_regions, width), dtype=np.float32)
    for i, example in enumerate(examples):
        out[i, : len(example[key])] = example[key].astype(np.float32)
    out[zeroed] = 0.0
    return torch.from_numpy(out)


def test_region_inputs_stay_float16_and_equal_the_float32_path(examples, tokenizer, tiny_model):
    # Every pair keeps its own image and every chosen region is zeroed, so the float32 reference can be
    # rebuilt from the examples alone.
    collator = SGPCollator(tokenizer, seed=1, itm_negative_prob=0.0, region_zero_prob=1.0)
    batch = collator(examples)
    assert batch["region_features"].dtype == torch.float16
    assert batch["region_class_targets"].dtype == torch.float16
    assert batch["labels"].dtype == batch["input_ids"].dtype == torch.long
    num_regions = batch["region_mask"].shape[1]
    masked = batch["masked_regions"].numpy()
    assert masked.any()
    features = widened_regions(examples, "features", num_regions, masked)
    classes = widened_regions(examples, "cls_prob", num_regions, np.zeros_like(masked))
    moved = batch_to_device(batch, CPU, torch.float32)
    assert moved["region_features"].dtype == torch.float32 and moved["labels"].dtype == torch.long
    assert torch.equal(moved["region_features"], features)
    assert torch.equal(moved["region_class_targets"], classes)

    reference = {**moved, "region_features": features, "region_class_targets": classes}
    with torch.no_grad():
        loss = tiny_model(**moved).loss
        expected = tiny_model(**reference).loss
    assert torch.isfinite(loss) and loss.item() == expected.item()


def test_batch_to_device_casts_features_but_not_integers_or_pixel_geometry():
    batch = {
        "region_features": torch.tensor([[0.5, -2.0]], dtype=torch.float16),
        "masked_regions": torch.tensor([[True, False]]),
        "labels": torch.tensor([[3, -100]]),
        "region_boxes": torch.tensor([[[0.0, 0.0, 641.0, 479.0], [1.0, 2.0, 3.0, 4.0]]]),
        "image_sizes": torch.tensor([[641.0, 480.0]]),
    }
    moved = batch_to_device(batch, CPU, torch.bfloat16)
    assert moved["region_features"].dtype == torch.bfloat16
    assert moved["region_features"].tolist() == [[0.5, -2.0]]
    # Pixel geometry stays float32: bfloat16 would round 641 to 640.
    assert moved["region_boxes"].dtype == moved["image_sizes"].dtype == torch.float32
    assert moved["region_boxes"][0, 0, 2].item() == moved["image_sizes"][0, 0].item() == 641.0
    assert moved["masked_regions"].dtype == torch.bool and moved["labels"].dtype == torch.long


@pytest.mark.parametrize("multiple", [8, 5])
def test_padding_to_a_multiple_changes_no_loss(examples, tokenizer, tiny_model, multiple):
    chunk = examples[:12]
    plain = SGPCollator(tokenizer, seed=2)(chunk)
    padded = SGPCollator(tokenizer, seed=2, pad_to_multiple_of=multiple)(chunk)
    assert set(padded) == set(plain)
    num_tokens, num_regions = plain["input_ids"].shape[1], plain["region_mask"].shape[1]
    assert padded["input_ids"].shape[1] % multiple == 0 and padded["region_mask"].shape[1] % multiple == 0
    assert padded["input_ids"].shape[1] - num_tokens < multiple
    assert padded["region_mask"].shape[1] - num_regions < multiple
    for grid, length in (("token", num_tokens), ("region", num_regions)):  # the same rows, in padded grids
        positions, weights = plain[f"masked_{grid}_positions"], plain[f"masked_{grid}_weights"]
        padded_positions = padded[f"masked_{grid}_positions"][padded[f"masked_{grid}_weights"] == 1]
        padded_length = padded["input_ids" if grid == "token" else "region_mask"].shape[1]
        real = positions[weights == 1]
        assert torch.equal(
            padded_positions // padded_length * length + padded_positions % padded_length, real
        )
    for key, value in plain.items():  # the real positions are untouched
        if key.startswith(("masked_token_", "masked_region_")):
            continue
        if value.dim() >= 2 and value.shape[1] in (num_tokens, num_regions) and key != "image_sizes":
            assert torch.equal(padded[key][:, : value.shape[1]], value), key
        else:
            assert torch.equal(padded[key], value), key
    tail_tokens = padded["input_ids"][:, num_tokens:]
    assert (tail_tokens == tokenizer.pad_token_id).all() and (padded["labels"][:, num_tokens:] == -100).all()
    assert not padded["masked_regions"][:, num_regions:].any()
    assert (padded["region_mask"][:, num_regions:] == 0).all()
    with torch.no_grad():
        expected = tiny_model(**batch_to_device(plain, CPU, torch.float32))
        outputs = tiny_model(**batch_to_device(padded, CPU, torch.float32))
    assert torch.isfinite(expected.loss)
    for name in ("loss", *(loss_name(task) for task in PRETRAINING_TASKS)):
        torch.testing.assert_close(getattr(outputs, name), getattr(expected, name), rtol=1e-5, atol=0)


def test_padding_multiple_must_be_positive(tokenizer):
    with pytest.raises(ValueError, match="pad_to_multiple_of must be >= 1, got 0"):
        SGPCollator(tokenizer, pad_to_multiple_of=0)
