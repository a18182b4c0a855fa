"""Flickr30K image-text retrieval from the official ERNIE-ViL files.

Layout (``reader/flickr_finetuning.py``, ``FlickrDataReader``): an image TSV per split with six
tab-separated fields ``image_id, width, height, number_box, boxes, features`` (base64 float32
(number_box, 4) pixel x1, y1, x2, y2 and (number_box, 2048); 10 to 36 boxes), which is the
bottom-up-attention TSV that ``data/region_features.py`` already reads, and a caption file with one caption
per line, ``image_id \\t sent_id \\t text``.

Examples table (``DIR/examples``), one row per caption:

| column | type | meaning |
| --- | --- | --- |
| ``caption_id`` | string | the file's ``sent_id`` |
| ``image_id`` | string | key into ``DIR/images`` |
| ``caption`` | string | |
| ``input_ids`` | list<int32> | ``[CLS] caption [SEP]`` WordPieces, untruncated |

A caption whose image is not in the split's image TSV is malformed. Training groups pair each caption with
its image and with ``num_negatives`` other images drawn at random (the official conf's ``negative_schema``
is twenty ``"ei"``: an easy negative, the image replaced), see ``negative_image_groups``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from datasets import Features, List, Value

from ernievil_ds.data.prepare import describe_inputs, import_region_features
from ernievil_ds.data.tokenization import load_tokenizer
from ernievil_ds.errors import require_output_dir
from ernievil_ds.finetuning.data.collate import group, pad_images, pad_tokens, truncate_tokens
from ernievil_ds.finetuning.data.dataset import FineTuningDataset, load_examples
from ernievil_ds.finetuning.data.tables import (
    FineTuningImportReport,
    fields_of,
    read_tsv_lines,
    require_image,
    tokenize,
    write_examples,
    written_image_ids,
)

EXAMPLE_FEATURES = Features(
    {
        "caption_id": Value("string"),
        "image_id": Value("string"),
        "caption": Value("string"),
        "input_ids": List(Value("int32")),
    }
)
#: The official conf's maximum text length and negatives per caption (``conf/flickr``).
MAX_TEXT_LENGTH = 48
NUM_NEGATIVES = 20


def _caption(raw: dict, known_images: set[str]) -> dict:
    image_id, caption_id, text = (field.strip() for field in fields_of(raw))
    if not image_id or not caption_id or not text:
        raise ValueError("empty image_id, sent_id or caption")
    require_image(image_id, known_images)
    return {"caption_id": caption_id, "image_id": image_id, "caption": text}


def _build_columns(records: list[dict], tokenizer) -> dict[str, list]:
    columns = {name: [r[name] for r in records] for name in EXAMPLE_FEATURES if name != "input_ids"}
    columns["input_ids"] = tokenize(tokenizer, columns["caption"])
    return columns


def import_retrieval(
    captions: list[str | Path],
    images: list[str | Path],
    output_dir: str | Path,
    *,
    tokenizer: str | None = None,
    shard_size: int = 10_000,
) -> FineTuningImportReport:
    """Import a split of the official Flickr30K files into ``output_dir``: the image TSVs into
    ``images`` (by ``data.prepare.import_region_features``), the caption files into ``examples``.

    Raises:
        FileNotFoundError: a missing input. UserError: an image file that is not a feature TSV, an output
        holding another import, or an import of zero rows.
    """
    caption_paths, output_dir = [Path(p) for p in captions], require_output_dir(Path(output_dir))
    image_report = import_region_features("tsv", images, output_dir)
    source = {
        "task": "retrieval",
        "format": "official-flickr",
        "inputs": describe_inputs([*caption_paths, *(Path(p) for p in images)]),
        "tokenizer": tokenizer,
    }
    examples = write_examples(
        read_tsv_lines(caption_paths, 3),
        functools.partial(_caption, known_images=written_image_ids(output_dir)),
        functools.partial(_build_columns, tokenizer=load_tokenizer(tokenizer)),
        output_dir,
        features=EXAMPLE_FEATURES,
        source=source,
        shard_size=shard_size,
    )
    return FineTuningImportReport(examples, image_report)


def load_retrieval(data_dir: str | Path) -> FineTuningDataset:
    """The imported Flickr30K split in ``data_dir``, captions joined with their images."""
    return load_examples(data_dir, "retrieval")


def negative_image_groups(
    dataset: FineTuningDataset,
    indices: list[int],
    rng: np.random.Generator,
    num_negatives: int = NUM_NEGATIVES,
) -> list[list[dict]]:
    """One group per caption index: the caption with its image, then with ``num_negatives`` images drawn
    uniformly among the split's others (the official ``"ei"`` negatives). Each pair is an example dict
    whose ``image`` is the pair's image."""
    if dataset.num_images < 2:
        raise ValueError("negatives need at least two images in the split")
    groups = []
    for index in indices:
        example = dataset[index]
        positive = dataset.image_rows[example["image_id"]]
        rows = rng.integers(dataset.num_images - 1, size=num_negatives).tolist()  # rows but the positive's
        negatives = [example | {"image": dataset.image_at(row + (row >= positive))} for row in rows]
        groups.append([example, *negatives])
    return groups


def collate_retrieval(
    pairs: list[dict], max_length: int | None = MAX_TEXT_LENGTH, pad_token_id: int = 0
) -> dict[str, torch.Tensor]:
    """The retrieval head's inputs for N caption-image pairs (evaluation: every caption with every image):
    ``input_ids``, ``attention_mask``, ``token_type_ids`` (N, T) and the image inputs of
    ``collate.pad_images``."""
    tokens = pad_tokens([truncate_tokens(p["input_ids"], max_length) for p in pairs], pad_token_id)
    return tokens | pad_images([p["image"] for p in pairs])


def collate_retrieval_groups(
    groups: list[list[dict]], max_length: int | None = MAX_TEXT_LENGTH, pad_token_id: int = 0
) -> dict[str, torch.Tensor]:
    """Training groups (``negative_image_groups``), each the matched pair first, as inputs of shape
    (B, 1 + K, ...) for ``ErnieVilForImageTextRetrieval(..., return_loss=True)``."""
    sizes = {len(g) for g in groups}
    if len(sizes) != 1:
        raise ValueError(f"every group needs the same number of pairs, got sizes {sorted(sizes)}")
    flat = collate_retrieval([pair for g in groups for pair in g], max_length, pad_token_id)
    return group(flat, len(groups))
