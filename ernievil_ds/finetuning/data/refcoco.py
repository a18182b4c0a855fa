"""RefCOCO+ referring expressions from the official ERNIE-ViL TSV.

Layout (``reader/refcoco_plus_finetuning.py``, ``RefcocoPlusDataReader.process_vl``): one expression per
line, nine tab-separated fields ``text, image_w, image_h, number_boxes, number_boxes_gt, boxes, features,
box_label, label``. The image has number_boxes detected regions followed by number_boxes_gt ground-truth
ones; ``boxes`` and ``features`` are base64 float32 arrays (number_boxes + number_boxes_gt, 4) pixel
x1, y1, x2, y2 and (..., 2048); ``box_label`` is the referred box "x1 y1 x2 y2"; ``label`` holds each
region's IoU with it, space-separated. The lines carry no image id: images are keyed by their content
(``tables.content_image_id``).

Examples table (``DIR/examples``), one row per expression:

| column | type | meaning |
| --- | --- | --- |
| ``expression_id`` | string | ``file:line`` |
| ``image_id`` | string | key into ``DIR/images`` |
| ``expression`` | string | |
| ``input_ids`` | list<int32> | ``[CLS] expression [SEP]`` WordPieces, untruncated |
| ``target_box`` | list<float32> (4) | the referred box, pixel x1, y1, x2, y2 |
| ``ious`` | list<float32> | each region's IoU with the referred box, as the file gives them |
| ``num_detected`` | int32 | how many of the image's regions are detected (the rest are ground truth) |
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from datasets import Features, List, Value

from ernievil_ds.data.prepare import describe_inputs
from ernievil_ds.data.tokenization import load_tokenizer
from ernievil_ds.errors import require_output_dir
from ernievil_ds.finetuning.data.collate import pad_images, pad_tokens, truncate_tokens
from ernievil_ds.finetuning.data.dataset import FineTuningDataset, load_examples
from ernievil_ds.finetuning.data.tables import (
    FineTuningImportReport,
    content_image_id,
    embedded_image,
    fields_of,
    parse_floats,
    parse_int,
    read_tsv_lines,
    require_image,
    tokenize,
    write_examples,
    write_images,
    written_image_ids,
)
from ernievil_ds.finetuning.losses import soft_iou_targets

EXAMPLE_FEATURES = Features(
    {
        "expression_id": Value("string"),
        "image_id": Value("string"),
        "expression": Value("string"),
        "input_ids": List(Value("int32")),
        "target_box": List(Value("float32"), length=4),
        "ious": List(Value("float32")),
        "num_detected": Value("int32"),
    }
)
#: The official conf's maximum text length (``conf/refcoco_plus/model_conf_refcoco_plus``, ``MAX_LEN``).
MAX_TEXT_LENGTH = 80
TSV_FIELDS = (
    "text",
    "image_w",
    "image_h",
    "number_boxes",
    "number_boxes_gt",
    "boxes",
    "features",
    "box_label",
    "label",
)


def _image_id(fields: list[str]) -> str:
    return content_image_id(fields[1], fields[2], f"{fields[3]}+{fields[4]}", fields[5], fields[6])


def _num_boxes(fields: list[str]) -> tuple[int, int]:
    return parse_int(fields[3], "number_boxes"), parse_int(fields[4], "number_boxes_gt")


def _image(raw: dict) -> dict:
    fields = fields_of(raw)
    detected, ground_truth = _num_boxes(fields)
    return embedded_image(
        _image_id(fields), fields[1], fields[2], detected + ground_truth, fields[5], fields[6]
    )


def _example(raw: dict, known_images: set[str]) -> dict:
    fields = fields_of(raw)
    if not fields[0].strip():
        raise ValueError("empty expression")
    detected, ground_truth = _num_boxes(fields)
    target_box = parse_floats(fields[7], "box_label", " ")
    if len(target_box) != 4:
        raise ValueError(f"box_label has {len(target_box)} values, expected x1 y1 x2 y2")
    ious = parse_floats(fields[8], "label", " ")
    if len(ious) != detected + ground_truth:
        raise ValueError(
            f"label has {len(ious)} IoUs for {detected} + {ground_truth} boxes (number_boxes + number_boxes_gt)"
        )
    image_id = _image_id(fields)
    require_image(image_id, known_images, lambda: _image(raw))
    return {
        "image_id": image_id,
        "expression": fields[0],
        "target_box": target_box,
        "ious": ious,
        "num_detected": detected,
    }


def _build_columns(records: list[dict], tokenizer) -> dict[str, list]:
    columns = {name: [r[name] for r in records] for name in EXAMPLE_FEATURES if name != "input_ids"}
    columns["input_ids"] = tokenize(tokenizer, columns["expression"])
    return columns


def _items(paths: list[Path]):
    """``read_tsv_lines`` records carrying their ``file:line`` id, which becomes the expression id."""
    for record_id, raw in read_tsv_lines(paths, len(TSV_FIELDS)):
        yield record_id, raw | {"expression_id": record_id}


def _example_with_id(raw: dict, known_images: set[str]) -> dict:
    return _example(raw, known_images) | {"expression_id": raw["expression_id"]}


def import_refcoco(
    inputs: list[str | Path],
    output_dir: str | Path,
    *,
    tokenizer: str | None = None,
    shard_size: int = 10_000,
) -> FineTuningImportReport:
    """Import official ERNIE-ViL RefCOCO+ TSV files of one split into ``output_dir`` (images, examples).

    Raises:
        FileNotFoundError: a missing input. UserError: an output holding another import, or an import of
        zero rows.
    """
    paths, output_dir = [Path(p) for p in inputs], require_output_dir(Path(output_dir))
    source = {"task": "refcoco", "format": "official-tsv", "inputs": describe_inputs(paths)}
    images = write_images(
        _items(paths),
        _image,
        lambda raw: _image_id(fields_of(raw)),
        output_dir,
        source=source,
        shard_size=shard_size,
    )
    examples = write_examples(
        _items(paths),
        functools.partial(_example_with_id, known_images=written_image_ids(output_dir)),
        functools.partial(_build_columns, tokenizer=load_tokenizer(tokenizer)),
        output_dir,
        features=EXAMPLE_FEATURES,
        source=source | {"tokenizer": tokenizer},
        shard_size=shard_size,
    )
    return FineTuningImportReport(examples, images)


def load_refcoco(data_dir: str | Path) -> FineTuningDataset:
    """The imported RefCOCO+ split in ``data_dir``, expressions joined with their images."""
    return load_examples(data_dir, "refcoco")


def image_target_iou(target_box, width: int, height: int) -> float:
    """The [IMG] region's target: the referred box's area over the image's, with the official reader's
    inclusive pixel count ((x2 - x1 + 1) * (y2 - y1 + 1) / (W * H))."""
    x1, y1, x2, y2 = target_box
    return (x2 - x1 + 1) * (y2 - y1 + 1) / (width * height)


def collate_refcoco(
    examples: list[dict], max_length: int | None = MAX_TEXT_LENGTH, pad_token_id: int = 0
) -> dict[str, torch.Tensor]:
    """The RefCOCO+ head's inputs from ``FineTuningDataset`` examples: ``input_ids``, ``attention_mask``,
    ``token_type_ids`` (B, T) (cut to ``max_length``), the image inputs of ``collate.pad_images`` (R
    regions), ``labels`` (B, R + 1), [IMG] first, the training targets (``losses.soft_iou_targets``: IoUs
    below 0.5 zeroed, as the official reader zeroes them in training), and ``ious`` (B, R), the IoUs as
    given, for ``metrics.referring_expression_correct``."""
    tokens = pad_tokens([truncate_tokens(e["input_ids"], max_length) for e in examples], pad_token_id)
    image_inputs = pad_images([e["image"] for e in examples])
    ious = torch.zeros(len(examples), image_inputs["region_mask"].shape[1] + 1)  # (B, R + 1)
    for i, example in enumerate(examples):
        image = example["image"]
        ious[i, 0] = image_target_iou(example["target_box"], image["width"], image["height"])
        ious[i, 1 : 1 + len(example["ious"])] = torch.tensor(example["ious"])
    return tokens | image_inputs | {"labels": soft_iou_targets(ious), "ious": ious[:, 1:]}
