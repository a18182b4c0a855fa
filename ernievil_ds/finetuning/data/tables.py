"""The fine-tuning data directory: a task's examples table beside an images table, written resumably and read
back as one torch dataset (``dataset.py``).

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

import pyarrow as pa
from datasets import Dataset, Features
from datasets.table import InMemoryTable

from ernievil_ds.data.prepare import ImportReport, write_table
from ernievil_ds.data.region_features import decode_region_record
from ernievil_ds.data.schema import IMAGES_DIR
from ernievil_ds.data.storage import images_dataset, load_table

EXAMPLES_DIR = "examples"
ANSWERS_FILE = "answers.json"


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
    with_img_feature: bool = False,
) -> ImportReport:
    """Write ``DIR/images`` from (record id, raw) items; ``decode`` gives an image record or raises
    ValueError, ``image_id`` gives a raw record's image id without decoding it. With ``with_img_feature``
    every record carries ``img_feature`` (2048,), its [IMG] region's feature.

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
        return images_dataset(unique, with_class_distribution=False, with_img_feature=with_img_feature), {}

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
