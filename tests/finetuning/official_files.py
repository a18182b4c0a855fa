"""Writers of small files in the official ERNIE-ViL fine-tuning layouts (``ernie-vil/reader/*``) and of VQA
v2 JSON, for the importer tests: each writes exactly the fields the official readers split."""

from __future__ import annotations

import base64
import json
import pickle

import lmdb
import numpy as np


def b64(array: np.ndarray) -> str:
    """base64 of an array's float32 bytes, as the official files hold boxes and features."""
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.float32)).decode()


def regions(num_boxes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(num_boxes, 4) pixel x1 <= x2, y1 <= y2 boxes inside any image of at least 40 x 40 pixels and
    (num_boxes, 2048) features, exactly representable in float16."""
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, 20, size=(num_boxes, 2))
    boxes = np.concatenate([corners, corners + rng.integers(1, 20, size=(num_boxes, 2))], 1).astype(
        np.float32
    )
    features = (np.round(rng.random((num_boxes, 2048)) * 64) / 64).astype(np.float32)
    return boxes, features


def write_lines(path, rows: list[list]) -> None:
    path.write_text("".join("\t".join(str(field) for field in row) + "\n" for row in rows))


def vqa_row(question_id, question, labels, scores, width, height, boxes, features) -> list:
    """``question_id, question, labels, scores, image_w, image_h, number_box, boxes, features``."""
    return [
        question_id,
        question,
        "|".join(map(str, labels)),
        "|".join(map(str, scores)),
        width,
        height,
        len(boxes),
        b64(boxes),
        b64(features),
    ]


def refcoco_row(text, width, height, detected, boxes, features, target_box, ious) -> list:
    """``text, image_w, image_h, number_boxes, number_boxes_gt, boxes, features, box_label, label``."""
    return [
        text,
        width,
        height,
        detected,
        len(boxes) - detected,
        b64(boxes),
        b64(features),
        " ".join(map(str, target_box)),
        " ".join(map(str, ious)),
    ]


def image_tsv_row(image_id, width, height, boxes, features) -> list:
    """Flickr30K image TSV: ``image_id, width, height, number_box, boxes, features``."""
    return [image_id, width, height, len(boxes), b64(boxes), b64(features)]


def vilbert_beta_row(image_id, width, height, boxes, features) -> dict:
    """A ViLBERT LMDB row as ``_image_features_reader.py`` reads it: the arrays as base64 strings."""
    return {
        "image_id": image_id,
        "image_h": height,
        "image_w": width,
        "num_boxes": len(boxes),
        "boxes": b64(boxes),
        "features": b64(features),
    }


def write_lmdb(path, rows: dict[str, object]) -> None:
    """An LMDB of pickled rows by key, with the pickled list of keys under ``keys``."""
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for key, row in rows.items():
            txn.put(key.encode(), pickle.dumps(row))
        txn.put(b"keys", pickle.dumps([key.encode() for key in rows]))
    env.close()


def write_json(path, data) -> None:
    path.write_text(json.dumps(data))


def write_jsonl(path, items: list) -> None:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
