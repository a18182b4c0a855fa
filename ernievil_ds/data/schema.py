"""The on-disk format: a pairs table and an images table (Hugging Face ``datasets``, Arrow, memory-mapped).

A prepared data directory holds::

    DATA/images/shard-00000/ ...        one row per image: boxes and region features, stored once
    DATA/images/detector_classes.json   optional: the detector's name of each class (grounding targets)
    DATA/pairs/<split>/shard-00000/ ... one row per caption: scene graph and WordPieces
    DATA/pairs/<split>/manifest.json    written last: the split is complete

The two tables are joined by ``image_id`` when batches are built, so COCO's five captions per image share
one copy of its features. Node types are stored as their ids in ``ernievil_ds.objectives.NODE_TYPE_IDS``.
"""

from __future__ import annotations

from datasets import Array2D, Features, List, Value

IMAGES_DIR = "images"
PAIRS_DIR = "pairs"
MANIFEST = "manifest.json"
DETECTOR_CLASSES = "detector_classes.json"

FEATURE_DIM = 2048
NUM_DETECTOR_CLASSES = 1601

_SPAN = List(Value("int32"), length=2)

SCENE_GRAPH_FEATURES = {
    "objects": List({"name": Value("string"), "span": _SPAN}),
    "attributes": List({"object": Value("int32"), "name": Value("string"), "span": _SPAN}),
    "relations": List(
        {"subject": Value("int32"), "object": Value("int32"), "name": Value("string"), "span": _SPAN}
    ),
}

PAIR_FEATURES = Features(
    {
        "pair_id": Value("string"),
        "image_id": Value("string"),
        "caption": Value("string"),
        "scene_graph": SCENE_GRAPH_FEATURES,
        # [CLS] caption [SEP], untruncated; offsets are character offsets, (0, 0) for the special tokens.
        "input_ids": List(Value("int32")),
        "offsets": List(_SPAN),
        # One entry per graph node: objects, then attributes, then relations, in scene_graph order.
        "node_types": List(Value("int8")),
        "node_names": List(Value("string")),
        "node_spans": List(_SPAN),
        "node_wordpieces": List(List(Value("int32"))),
    }
)


def image_features(with_class_distribution: bool, with_img_feature: bool = False) -> Features:
    """The images table's schema; ``cls_prob`` only when the detector's class distribution is available,
    ``img_feature`` (the [IMG] region's feature, float32) only when the source defines it otherwise than
    as the mean of the stored regions (VCR)."""
    columns = {
        "image_id": Value("string"),
        "width": Value("int32"),
        "height": Value("int32"),
        "num_boxes": Value("int32"),
        "boxes": Array2D(shape=(None, 4), dtype="float32"),
        "features": Array2D(shape=(None, FEATURE_DIM), dtype="float16"),
    }
    if with_class_distribution:
        columns["cls_prob"] = Array2D(shape=(None, NUM_DETECTOR_CLASSES), dtype="float16")
    if with_img_feature:
        columns["img_feature"] = List(Value("float32"), length=FEATURE_DIM)
    return Features(columns)
