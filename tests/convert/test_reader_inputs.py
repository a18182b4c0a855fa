"""The image inputs that the converted model embeds equal those the official VQA and VCR readers feed the
official graph: the [IMG] region (VQA: mean of the regions; VCR: the weighted mean of the detected and
ground-truth sets; location [0, 0, 1, 1, 1]) and the 5-d locations.

The official path is ported from PaddlePaddle/ERNIE, branch ``repro``: ``ernie-vil/reader/vqa_finetuning.py``
(``VQADataReader.process_vl``, its image part, with its inner ``decode_feature``) and
``ernie-vil/batching/finetune_batching.py`` (``pad_feature_data``). The project's path is its own: the
record's image fields through ``decode_region_record`` (what ``prepare_data.py features`` stores), the
collators' ``_pack_regions``, and ``ErnieVilModel``, whose image embedding's inputs are captured by a hook.
For VCR, ``reader/_image_features_reader.py`` (``ImageFeaturesH5Reader.__getitem__``) and
``reader/vcr_finetuning.py`` (``VCRDataReader.parse_line`` with ``use_gt_fea``) against the VCR import's
``merge_regions`` and the fine-tuning collate's ``pad_images``.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch

from ernievil_ds import ErnieVilConfig, ErnieVilModel
from ernievil_ds.data.collator import _pack_regions
from ernievil_ds.data.region_features import decode_region_record
from ernievil_ds.data.transfer import batch_to_device
from ernievil_ds.finetuning.data.collate import pad_images
from ernievil_ds.finetuning.data.vcr import merge_regions

FEATURE_SIZE = 2048
#: (question_id, image width, height, number of boxes) of the two records of the batch.
RECORDS = ((262148000, 640, 480, 10), (393225001, 500, 375, 7))


def b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.float32).tobytes()).decode()


def vqa_tsv_line(question_id: int, width: int, height: int, num_boxes: int, rng: np.random.Generator) -> str:
    """One line of the official VQA TSV: question_id, question, answer labels, answer scores, image_w, image_h,
    number_box, image_loc (base64 float32 pixel x1 y1 x2 y2), image_embeddings (base64 float32)."""
    corner = rng.uniform(0, 0.7, (num_boxes, 2)) * (width, height)
    extent = rng.uniform(0.05, 0.3, (num_boxes, 2)) * (width, height)
    boxes = np.concatenate([corner, corner + extent], 1)
    # Bottom-up-attention features: non-negative, mostly small, a few large.
    features = rng.gamma(0.5, 2.0, (num_boxes, FEATURE_SIZE))
    fields = [question_id, "What is on the table?", "12|40", "1.0|0.3", width, height, num_boxes]
    return "\t".join([*map(str, fields), b64(boxes), b64(features)])


# ------------------------------------------------------------------------------------------------------------
# The official reader's code path, ported
# ------------------------------------------------------------------------------------------------------------


def official_decode_feature(base64_str: str, size: int) -> np.ndarray:
    fea_decode = np.frombuffer(base64.b64decode(base64_str), dtype=np.float32)
    return np.resize(fea_decode, (size, int(fea_decode.shape[0] / size)))


def official_process_vl_image(line: str) -> tuple[np.ndarray, np.ndarray]:
    """``VQADataReader.process_vl``, image part -> image_loc (N + 1, 5), image_embeddings (N + 1, F)."""
    _, _, _, _, image_w, image_h, number_box, image_loc, image_embeddings = line.strip().split("\t")
    number_box = int(number_box)
    image_loc = official_decode_feature(image_loc, number_box)
    shape_np = np.repeat(
        np.array([[float(image_w), float(image_h), float(image_w), float(image_h)]]), number_box, axis=0
    )
    boxes_np = image_loc / shape_np
    area = (boxes_np[:, 3] - boxes_np[:, 1]) * (boxes_np[:, 2] - boxes_np[:, 0])
    image_loc = np.concatenate((boxes_np, np.expand_dims(area, 1)), axis=1)
    loc_cls = np.array([[0.0, 0.0, 1.0, 1.0, 1.0]], dtype="float32")
    image_loc = np.concatenate([loc_cls, image_loc], 0)
    image_embeddings = official_decode_feature(image_embeddings, number_box)
    image_embeddings_cls = np.mean(image_embeddings, axis=0, keepdims=True)
    image_embeddings = np.concatenate([image_embeddings_cls, image_embeddings], 0)
    return image_loc, image_embeddings


def official_pad_feature_data(data, pad_value=0.0, dtype="float32", return_mask=False):
    """``finetune_batching.pad_feature_data``."""
    max_length = max([len(item) for item in data])
    data_width = len(data[0][0])
    out_data = np.ones((len(data), max_length, data_width), dtype=dtype) * pad_value
    out_mask = np.zeros((len(data), max_length, 1), dtype=dtype)
    for i in range(len(data)):
        out_data[i, 0 : len(data[i]), :] = data[i]
        if return_mask:
            out_mask[i, 0 : len(data[i]) :] = 1.0
    if return_mask:
        return out_data, out_mask
    return out_data


def official_batch(lines: list[str]) -> dict[str, np.ndarray]:
    """``prepare_vqa_batch_data``'s image arrays: image_embedding (B, R, F), image_loc (B, R, 5), image_mask."""
    return official_batch_of([official_process_vl_image(line)[::-1] for line in lines])


def official_batch_of(images: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """The official batching's padded image arrays from each image's (features (N, F), locations (N, 5))."""
    features, locations = zip(*images)
    image_embedding, image_mask = official_pad_feature_data(list(features), return_mask=True)
    return {
        "features": image_embedding,
        "locations": official_pad_feature_data(list(locations)),
        "mask": image_mask,
    }


# ------------------------------------------------------------------------------------------------------------
# The project's code path
# ------------------------------------------------------------------------------------------------------------


def small_model() -> ErnieVilModel:
    config = ErnieVilConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=16, v_hidden_size=24, v_num_hidden_layers=1, v_num_attention_heads=2,
        v_intermediate_size=40, co_hidden_size=16, co_num_attention_heads=2, text_co_layer_ids=[1],
        image_co_layer_ids=[0], layer_norm_eps=1e-5,
    )  # fmt: skip
    return ErnieVilModel(config).eval()


def embedded_image_inputs(model: ErnieVilModel, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """What ``model`` passes to its image embedding on ``batch``: features (B, R + 1, F), locations
    (B, R + 1, 5), [IMG] first."""
    captured = {}

    def capture(module, args):
        captured["features"], captured["locations"] = (a.detach().numpy() for a in args)

    handle = model.image_embeddings.register_forward_pre_hook(capture)
    try:
        with torch.no_grad():
            model(
                input_ids=torch.tensor([[2, 7, 3], [2, 9, 3]]),
                region_features=batch["region_features"],
                region_mask=batch["region_mask"],
                region_boxes=batch["region_boxes"],
                image_sizes=batch["image_sizes"],
                img_features=batch.get("img_features"),
            )
    finally:
        handle.remove()
    return captured


def project_batch(lines: list[str]) -> dict[str, torch.Tensor]:
    """The records' image fields as ``prepare_data.py features`` decodes and stores them, then padded by the
    collators' ``_pack_regions`` and moved to the model as the training loop moves batches (float32)."""
    images = []
    for line in lines:
        question_id, _, _, _, width, height, num_boxes, boxes, features = line.strip().split("\t")
        raw = {"image_id": question_id, "image_w": width, "image_h": height, "num_boxes": num_boxes}
        record = decode_region_record({**raw, "boxes": boxes, "features": features})
        images.append({**record, "cls_prob": None})
    regions = _pack_regions(images, max_regions=None)
    del regions["cls_prob"]  # None: these records have no class distributions
    return batch_to_device(regions, torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def lines() -> list[str]:
    rng = np.random.default_rng(0)
    return [vqa_tsv_line(*record, rng=rng) for record in RECORDS]


def real_positions(official: dict[str, np.ndarray]) -> np.ndarray:
    return official["mask"][..., 0].astype(bool)  # (B, R + 1)


def test_locations_and_img_region_match_the_official_reader(lines):
    """Through the project's whole path: the 5-d locations, the [IMG] location and the region mask."""
    official = official_batch(lines)
    batch = project_batch(lines)
    ours = embedded_image_inputs(small_model(), batch)
    keep = real_positions(official)
    np.testing.assert_array_equal(np.concatenate([np.ones((2, 1)), batch["region_mask"].numpy()], 1), keep)
    np.testing.assert_allclose(ours["locations"][keep], official["locations"][keep], rtol=0, atol=1e-6)


def test_the_model_builds_the_official_img_feature_from_the_same_features(lines):
    """The model's own [IMG] (mean of the real regions), given the reader's float32 features."""
    official = official_batch(lines)
    batch = project_batch(lines)
    batch["region_features"] = torch.from_numpy(official["features"][:, 1:].copy())
    ours = embedded_image_inputs(small_model(), batch)
    keep = real_positions(official)
    scale = np.abs(official["features"][keep]).max()
    np.testing.assert_allclose(ours["features"][keep], official["features"][keep], rtol=0, atol=1e-6 * scale)


@pytest.mark.xfail(
    strict=True,
    reason="decode_region_record (ernievil_ds/data/region_features.py) stores region features as float16, "
    "and the dataset schema keeps them so (data/schema.py, Array2D float16); the official reader feeds the "
    "base64 float32 values unrounded. Features and the [IMG] mean differ by float16 rounding (relative "
    "error up to 2**-11).",
)
def test_region_features_match_the_official_reader(lines):
    official = official_batch(lines)
    ours = embedded_image_inputs(small_model(), project_batch(lines))
    keep = real_positions(official)
    scale = np.abs(official["features"][keep]).max()
    np.testing.assert_allclose(ours["features"][keep], official["features"][keep], rtol=0, atol=1e-6 * scale)


# ------------------------------------------------------------------------------------------------------------
# VCR: detected and ground-truth regions merged, the [IMG] feature of both sets
# ------------------------------------------------------------------------------------------------------------

#: (image width, height, detected boxes, ground-truth boxes) of the two VCR images; the reader keeps
#: MAX_REGIONS rows counting [IMG], so the first image loses detected regions and its [IMG] still counts them.
VCR_IMAGES = ((640, 480, 12, 5), (500, 375, 4, 3))
MAX_REGIONS = 10


def feature_row(width: int, height: int, num_boxes: int, rng: np.random.Generator) -> dict:
    """A feature-LMDB row as ``_image_features_reader`` unpickles it: base64 float32 boxes and features."""
    corner = rng.uniform(0, 0.7, (num_boxes, 2)) * (width, height)
    extent = rng.uniform(0.05, 0.3, (num_boxes, 2)) * (width, height)
    boxes = np.concatenate([corner, corner + extent], 1)
    features = rng.gamma(0.5, 2.0, (num_boxes, FEATURE_SIZE))
    return {"image_id": "1", "image_h": height, "image_w": width, "num_boxes": num_boxes,
            "boxes": b64(boxes), "features": b64(features)}  # fmt: skip


def official_features_reader(row: dict) -> dict:
    """``ImageFeaturesH5Reader.__getitem__``: [IMG] (the mean of all regions) prepended, num_boxes + 1."""
    num_boxes, width, height = int(row["num_boxes"]), float(row["image_w"]), float(row["image_h"])
    features = np.frombuffer(base64.b64decode(row["features"]), dtype=np.float32).reshape(num_boxes, 2048)
    boxes = np.frombuffer(base64.b64decode(row["boxes"]), dtype=np.float32).reshape(num_boxes, 4)
    g_feat = np.sum(features, axis=0) / num_boxes
    features = np.concatenate([np.expand_dims(g_feat, axis=0), features], axis=0)
    location = np.zeros((boxes.shape[0], 5), dtype=np.float32)
    location[:, :4] = boxes
    location[:, 4] = (location[:, 3] - location[:, 1]) * (location[:, 2] - location[:, 0]) / (width * height)
    location[:, [0, 2]] /= width
    location[:, [1, 3]] /= height
    location = np.concatenate([np.array([[0, 0, 1, 1, 1]]), location], axis=0)
    return {"features": features, "num_boxes": num_boxes + 1, "image_location": location}


def official_vcr_parse_line(detected: dict, ground_truth: dict, max_region_num: int) -> tuple:
    """``VCRDataReader.parse_line`` with ``use_gt_fea``, its image part -> features (N, F), boxes (N, 5)."""
    det, gt = official_features_reader(detected), official_features_reader(ground_truth)
    features, num_boxes, boxes = det["features"].copy(), det["num_boxes"], det["image_location"]
    gt_features, gt_num_boxes, gt_boxes = gt["features"], gt["num_boxes"], gt["image_location"]
    features[0] = (features[0] * num_boxes + gt_features[0] * gt_num_boxes) / (num_boxes + gt_num_boxes)
    gt_boxes, gt_features, gt_num_boxes = (
        gt_boxes[1:gt_num_boxes],
        gt_features[1:gt_num_boxes],
        gt_num_boxes - 1,
    )
    gt_box_preserve = min(max_region_num - 1, gt_num_boxes)
    gt_boxes, gt_features = gt_boxes[:gt_box_preserve], gt_features[:gt_box_preserve]
    num_box_preserve = min(max_region_num - int(gt_box_preserve), int(num_boxes))
    mix_boxes = np.concatenate((boxes[:num_box_preserve], gt_boxes), axis=0)
    mix_features = np.concatenate((features[:num_box_preserve], gt_features), axis=0)
    num_boxes = min(num_box_preserve + int(gt_box_preserve), max_region_num)
    return mix_features[:num_boxes], mix_boxes[:num_boxes]


def test_vcr_img_region_and_merged_regions_match_the_official_reader():
    """The VCR import's merged regions and its [IMG] feature, through the collate and the model's
    ``img_features``, equal the official reader's up to the float16 storage of the region features."""
    rng = np.random.default_rng(1)
    rows = [(feature_row(w, h, d, rng), feature_row(w, h, g, rng)) for w, h, d, g in VCR_IMAGES]
    official = official_batch_of(
        [official_vcr_parse_line(detected, gt, MAX_REGIONS) for detected, gt in rows]
    )
    images = [
        merge_regions(decode_region_record(detected), decode_region_record(gt), MAX_REGIONS)
        for detected, gt in rows
    ]
    ours = embedded_image_inputs(small_model(), pad_images(images))
    keep = real_positions(official)
    np.testing.assert_allclose(ours["locations"][keep], official["locations"][keep], rtol=0, atol=1e-6)
    scale = np.abs(official["features"][keep]).max()
    np.testing.assert_allclose(
        ours["features"][keep], official["features"][keep], rtol=0, atol=2**-11 * scale
    )
    # The [IMG] feature counts the detected regions the merge dropped: it is not the mean of the kept ones.
    kept_mean = official["features"][0, 1:][keep[0, 1:]].mean(0)
    assert np.abs(official["features"][0, 0] - kept_mean).max() > 100 * 2**-11 * scale
