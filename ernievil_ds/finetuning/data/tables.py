"""The fine-tuning data directory: a task's examples table beside an images table, written resumably and read
back as one torch dataset.

One directory holds one split of one task::

    DIR/images/        one row per image: the pretraining images table (``docs/data.md``, "Images table")
    DIR/examples/      one row per question, expression, caption or VCR item: the task's columns
    DIR/answers.json   VQA only: the answer vocabulary, label i being answers[i]

Both tables are written by ``ernievil_ds.data.prepare.write_table``: shards written atomically, a rerun
resumes, malformed records are counted, skipped and the first ten named, a manifest marks a table complete.
The examples table's manifest records the task (``source["task"]``), so that a directory is never read as
another task's. Images are written first; an example whose image was malformed is reported as malformed
too, with the image's reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset, Features
from datasets.table import InMemoryTable

from ernievil_ds.data.prepare import ImportReport, write_table
from ernievil_ds.data.region_features import decode_region_record
from ernievil_ds.data.schema import FEATURE_DIM, IMAGES_DIR
from ernievil_ds.data.storage import images_dataset, load_table, read_manifest
from ernievil_ds.distributed import get_logger
from ernievil_ds.errors import UserError

logger = get_logger(__name__)

EXAMPLES_DIR = "examples"
ANSWERS_FILE = "answers.json"
#: The fine-tuning tasks (``--task``), each with its examples table.
TASKS = ("vqa", "refcoco", "retrieval", "vcr")
#: How many image ids of examples without an image are named.
MAX_REPORTED_IDS = 5


@dataclass
class FineTuningImportReport:
    """What an import wrote: the examples table's report and the images table's (``None`` when the images
    come from elsewhere)."""

    examples: ImportReport
    images: ImportReport | None = None

    def summary(self) -> str:
        """One line: records read, imported, skipped with the first skipped ids and reasons."""
        report = self.examples
        text = f"{report.rows + report.malformed} records read, {report.rows} imported, {report.malformed} skipped"
        if report.first_malformed:
            text += " (first: " + "; ".join(report.first_malformed) + ")"
        if self.images is not None:
            text += f"; images: {self.images.rows} rows, {self.images.malformed} malformed skipped"
        return text


def content_image_id(*fields: str) -> str:
    """An image key for files whose lines carry no image id (the official VQA and RefCOCO+ TSV): the SHA-1
    of the fields that make the image (size, box counts, boxes and features as written), so that the lines
    of one image share one images-table row."""
    digest = hashlib.sha1()
    for value in fields:
        digest.update(value.encode() + b"\t")
    return digest.hexdigest()[:24]


def read_tsv_lines(paths: list[Path], num_fields: int) -> Iterator[tuple[str, dict]]:
    """(``file:line``, {"fields": [...]}) per line of tab-separated files, split as the official readers
    split them (``line.strip().split("\\t")``), or an error record for a line with another field count."""
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"input file {path} does not exist")
        # Bytes that are not UTF-8 become U+FFFD, which no base64 field accepts: the line is malformed.
        with path.open(encoding="utf-8", errors="replace", newline="\n") as file:
            for n, line in enumerate(file, start=1):
                line = line.strip("\r\n")
                if not line.strip():
                    continue
                fields = line.split("\t")
                record_id = f"{path.name}:{n}"
                if len(fields) != num_fields:
                    yield record_id, {"error": f"{len(fields)} tab-separated fields, expected {num_fields}"}
                else:
                    yield record_id, {"fields": fields}


def fields_of(raw: dict) -> list[str]:
    """The fields of a ``read_tsv_lines`` record; ValueError with the reason for an error record."""
    if "error" in raw:
        raise ValueError(raw["error"])
    return raw["fields"]


def embedded_image(image_id: str, width: str, height: str, num_boxes: int, boxes: str, features: str) -> dict:
    """The image record of a line that carries its regions: base64 float32 ``boxes`` (num_boxes, 4) and
    ``features`` (num_boxes, 2048).

    Raises:
        ValueError: naming the field that is not a number, not base64, or of the wrong size.
    """
    raw = {"image_id": image_id, "image_w": width, "image_h": height, "num_boxes": num_boxes}
    record = decode_region_record(raw | {"boxes": boxes, "features": features})
    record.pop("cls_prob", None)
    return record


def write_images(
    items: Iterable[tuple[str, object]],
    decode: Callable[[object], dict],
    image_id: Callable[[object], str],
    output_dir: Path,
    *,
    source: dict,
    shard_size: int,
) -> ImportReport:
    """Write ``DIR/images`` from (record id, raw) items; ``decode`` gives an image record or raises
    ValueError, ``image_id`` gives a raw record's image id without decoding it.

    An image met again after it was decoded is neither decoded nor written again in the same run (the
    official VQA files repeat an image's regions for each of its questions); a resumed run, which does not
    decode the shards already written, may write it a second time (either copy serves the loader).
    """
    decoded: set[str] = set()

    def decode_once(raw) -> dict:
        key = image_id(raw)
        if key in decoded:
            return {"image_id": key, "repeated": True}
        record = decode(raw)
        decoded.add(key)
        return record

    def build(records: list[dict]) -> tuple[Dataset, dict]:
        unique = [record for record in records if "repeated" not in record]
        return images_dataset(unique, with_class_distribution=False), {}

    return write_table(
        items,
        decode_once,
        build,
        output_dir / IMAGES_DIR,
        source=source | {"table": "images"},
        shard_size=shard_size,
    )


def write_examples(
    items: Iterable[tuple[str, object]],
    decode: Callable[[object], dict],
    build_columns: Callable[[list[dict]], dict[str, list]],
    output_dir: Path,
    *,
    features: Features,
    source: dict,
    shard_size: int,
) -> ImportReport:
    """Write ``DIR/examples`` from (record id, raw) items: ``decode`` checks a record (ValueError when
    malformed), ``build_columns`` turns a shard's records into the columns of ``features`` (tokenising them
    in one batch)."""

    def build(records: list[dict]) -> tuple[Dataset, dict]:
        columns = build_columns(records) if records else {name: [] for name in features}
        return Dataset(InMemoryTable(pa.Table.from_pydict(columns, schema=features.arrow_schema))), {}

    table_dir = output_dir / EXAMPLES_DIR
    return write_table(items, decode, build, table_dir, source=source, shard_size=shard_size)


def written_image_ids(output_dir: Path) -> set[str]:
    """The image ids of a complete images table under ``output_dir``."""
    return set(load_table(output_dir / IMAGES_DIR).data.table.column("image_id").to_pylist())


def require_image(image_id: str, known: set[str], reason: Callable[[], object] | None = None) -> None:
    """Raise ValueError unless ``image_id`` is among ``known``; ``reason()``, when given, raises the
    image's own error (a bad base64 field, a box count mismatch) for the report."""
    if image_id in known:
        return
    if reason is not None:
        reason()
    raise ValueError(f"image {image_id} is not in the images table")


def tokenize(tokenizer, texts: list[str], special_tokens: bool = True) -> list[list[int]]:
    """WordPieces of each text: ``[CLS] text [SEP]`` (or the bare WordPieces), untruncated."""
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=special_tokens)["input_ids"]


# --- reading back -----------------------------------------------------------------------------------------


class FineTuningDataset(torch.utils.data.Dataset):
    """A task's examples, each joined with its image by ``image_id``.

    An example is the examples-table row (a dict of Python values) plus ``image``: ``features`` (N, 2048)
    float32, ``boxes`` (N, 4) float32 pixel x1, y1, x2, y2, ``width`` and ``height``. Examples whose image
    is not in the images table are left out with a warning.
    """

    def __init__(self, examples: Dataset, images: Dataset) -> None:
        self.examples = examples
        self.images = images.with_format("numpy", columns=["features", "boxes", "width", "height"])
        image_ids = images.data.table.column("image_id").to_pylist()
        self.image_rows = {image_id: row for row, image_id in enumerate(image_ids)}
        example_image_ids = examples.data.table.column("image_id").to_pylist()
        rows = np.array([self.image_rows.get(i, -1) for i in example_image_ids], dtype=np.int64)
        self._example_rows = np.flatnonzero(rows >= 0)
        self.num_missing_images = len(rows) - len(self._example_rows)
        if self.num_missing_images:
            missing = [example_image_ids[i] for i in np.flatnonzero(rows < 0)[:MAX_REPORTED_IDS]]
            logger.warning(
                "%d of %d examples have no image in the images table and are left out (first image ids: %s)",
                self.num_missing_images,
                len(rows),
                ", ".join(missing),
            )

    def __len__(self) -> int:
        return len(self._example_rows)

    def __getitem__(self, index: int) -> dict:
        example = self.examples[int(self._example_rows[index])]
        return example | {"image": self.image(example["image_id"])}

    def image(self, image_id: str) -> dict:
        """An image's ``features`` (N, 2048), ``boxes`` (N, 4), ``width`` and ``height``."""
        row = self.images[self.image_rows[image_id]]
        return {
            "features": row["features"],
            "boxes": row["boxes"],
            "width": int(row["width"]),
            "height": int(row["height"]),
        }


def load_examples(data_dir: str | Path, task: str) -> FineTuningDataset:
    """The imported split in ``data_dir`` of ``task``, examples joined with their images.

    Raises:
        FileNotFoundError: no complete examples or images table. UserError: a directory of another task,
        or one whose examples have no image at all.
    """
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir / EXAMPLES_DIR)
    if manifest is None:
        raise FileNotFoundError(
            f"{data_dir} holds no imported fine-tuning examples (no {EXAMPLES_DIR}/manifest.json): run "
            "ernievil-ds import-finetune first, or rerun the interrupted import"
        )
    found = manifest["source"].get("task")
    if found != task:
        raise UserError(f"{data_dir} holds {found} examples, not {task} examples")
    dataset = FineTuningDataset(load_table(data_dir / EXAMPLES_DIR), load_table(data_dir / IMAGES_DIR))
    if len(dataset) == 0:
        raise UserError(f"none of the examples of {data_dir} has its image in {data_dir / IMAGES_DIR}")
    return dataset


# --- collation --------------------------------------------------------------------------------------------


def truncate_tokens(input_ids: list[int], max_length: int | None) -> list[int]:
    """``[CLS] ... [SEP]`` cut to ``max_length`` keeping the final [SEP], as the official readers cut it
    (``token_ids[:max_seq_len - 1] + [token_ids[-1]]``)."""
    if max_length is None or len(input_ids) <= max_length:
        return list(input_ids)
    return [*input_ids[: max_length - 1], input_ids[-1]]


def pad_tokens(
    sequences: list[list[int]], pad_token_id: int, segments: list[list[int]] | None = None
) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``token_type_ids`` (N, T) from N token lists (and their
    segment ids, zeros when not given), padded on the right."""
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(len(sequences), length, dtype=torch.long)
    token_type_ids = torch.zeros(len(sequences), length, dtype=torch.long)
    for i, tokens in enumerate(sequences):
        input_ids[i, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        attention_mask[i, : len(tokens)] = 1
        if segments is not None:
            token_type_ids[i, : len(tokens)] = torch.tensor(segments[i], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


def pad_images(images: list[dict]) -> dict[str, torch.Tensor]:
    """The encoder's image inputs from N images: ``region_features`` (N, R, 2048), ``region_boxes``
    (N, R, 4), ``region_mask`` (N, R) and ``image_sizes`` (N, 2) (width, height); R is the most regions of
    any image, the rest padding. The model prepends [IMG] itself."""
    num_regions = max(len(image["boxes"]) for image in images)
    region_features = torch.zeros(len(images), num_regions, FEATURE_DIM)
    region_boxes = torch.zeros(len(images), num_regions, 4)
    region_mask = torch.zeros(len(images), num_regions, dtype=torch.long)
    for i, image in enumerate(images):
        regions = len(image["boxes"])
        region_features[i, :regions] = torch.as_tensor(np.asarray(image["features"], dtype=np.float32))
        region_boxes[i, :regions] = torch.as_tensor(np.asarray(image["boxes"], dtype=np.float32))
        region_mask[i, :regions] = 1
    sizes = torch.tensor([[image["width"], image["height"]] for image in images], dtype=torch.float32)
    return {
        "region_features": region_features,
        "region_boxes": region_boxes,
        "region_mask": region_mask,
        "image_sizes": sizes,
    }


def group(batch: dict[str, torch.Tensor], groups: int) -> dict[str, torch.Tensor]:
    """Tensors of B * C rows, (B * C, ...), as (B, C, ...): the choices or pairs of a group second."""
    return {name: t.view(groups, -1, *t.shape[1:]) for name, t in batch.items()}


def parse_int(text: str, name: str) -> int:
    """An integer field; ValueError naming the field otherwise."""
    try:
        return int(text)
    except ValueError as error:
        raise ValueError(f"{name} is not an integer ({text[:40]!r})") from error


def parse_ints(text: str, name: str, separator: str) -> list[int]:
    """Integers separated by ``separator`` (none for an empty field); ValueError naming the field otherwise."""
    return [parse_int(value, name) for value in text.split(separator)] if text.strip() else []


def parse_floats(text: str, name: str, separator: str) -> list[float]:
    """Numbers separated by ``separator`` (none for an empty field); ValueError naming the field otherwise."""
    try:
        return [float(value) for value in text.split(separator)] if text.strip() else []
    except ValueError as error:
        raise ValueError(f"{name} holds a value that is not a number ({text[:40]!r})") from error
