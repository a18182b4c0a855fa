"""Readers of detector region features, each yielding (record id, raw record), and one decoder for all.

Formats:

- bottom-up-attention TSV: ``image_id, image_w, image_h, num_boxes, boxes, features`` with base64 float32
  arrays; ViLBERT's variant adds ``cls_prob`` (num_boxes x 1601); LXMERT's has ten fields
  ``img_id, img_h, img_w, objects_id, objects_conf, attrs_id, attrs_conf, num_boxes, boxes, features``
  (height before width). The variant is told by the number of fields.
- ViLBERT-style LMDB with a ``keys`` entry: vilbert_beta / ERNIE-ViL rows (pickled dicts of the TSV
  fields, arrays as base64 strings) or vilbert-multi-task rows (pickled dicts of numpy arrays).
- per-image ``.npy`` written by vilbert-multi-task's extractor (``np.save`` of a dict with ``bbox``,
  ``num_boxes``, ``objects``, ``cls_prob``, ``image_width``, ``image_height``, ``image_id``, ``features``)
  and ``.npz`` with the same keys.

LMDB rows, their ``keys`` entry and ``.npy`` dicts are Python pickles, which could run code when loaded:
they are unpickled by ``safe_pickle``, which allows only the numpy and builtin globals those files hold. A
record that refers to any other is reported as malformed and skipped; a ``keys`` entry that does refuses
the whole LMDB. ``.npz`` and TSV involve no pickle.
"""

from __future__ import annotations

import base64
import binascii
import csv
import pickle
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from ernievil_ds.data import safe_pickle
from ernievil_ds.data.schema import FEATURE_DIM, NUM_DETECTOR_CLASSES

_TSV_FIELDS = {
    6: ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features"),
    7: ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features", "cls_prob"),
    10: (
        "img_id",
        "img_h",
        "img_w",
        "objects_id",
        "objects_conf",
        "attrs_id",
        "attrs_conf",
        "num_boxes",
        "boxes",
        "features",
    ),
}
# Names of the same field across the formats.
_ALIASES = {
    "image_id": ("image_id", "img_id"),
    "width": ("image_w", "image_width", "img_w"),
    "height": ("image_h", "image_height", "img_h"),
    "boxes": ("boxes", "bbox"),
}


def read_feature_tsv(paths: list[Path]) -> Iterator[tuple[str, Mapping]]:
    """Rows of bottom-up-attention TSV files (any of the three variants) as dicts of strings."""
    csv.field_size_limit(sys.maxsize)
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"feature file {path} does not exist")
        with path.open(newline="") as file:
            for n, row in enumerate(csv.reader(file, delimiter="\t")):
                record_id = row[0] if row else f"{path.name}:{n + 1}"
                fields = _TSV_FIELDS.get(len(row))
                if fields is None:
                    yield record_id, {"error": f"{len(row)} fields, expected 6, 7 (cls_prob) or 10 (LXMERT)"}
                    continue
                yield record_id, dict(zip(fields, row))


def _feature_dict(value, source: str) -> Mapping:
    """The dict of fields in an unpickled row, or an error record saying what the row holds instead."""
    if isinstance(value, Mapping):
        return value
    return {"error": f"{source} holds a {type(value).__name__}, not a dict of fields"}


def _lmdb_keys(txn, path: Path) -> list | tuple:
    """The row keys listed in an LMDB's pickled ``keys`` entry.

    Raises:
        ValueError: no ``keys`` entry, or one that is refused, unreadable or not a list.
    """
    keys_value = txn.get(b"keys")
    if keys_value is None:
        raise ValueError(f"LMDB {path} has no 'keys' entry listing its images")
    try:
        keys = safe_pickle.loads(keys_value, source=f"LMDB {path} 'keys' entry")
    except pickle.UnpicklingError as error:
        raise ValueError(f"{error}; nothing of {path} is imported") from error
    if not isinstance(keys, (list, tuple)):
        raise ValueError(f"LMDB {path}: the 'keys' entry holds a {type(keys).__name__}, not a list of keys")
    return keys


def _lmdb_row(value: bytes, source: str) -> Mapping:
    """One unpickled LMDB row, or an error record (a refused global, a corrupt pickle) for the report."""
    try:
        return _feature_dict(safe_pickle.loads(value, source=source), source)
    except pickle.UnpicklingError as error:
        return {"error": str(error)}


def read_feature_lmdb(paths: list[Path]) -> Iterator[tuple[str, Mapping]]:
    """Rows of ViLBERT-style LMDBs (either flavour), in the order of each one's pickled ``keys`` entry."""
    import lmdb

    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"LMDB {path} does not exist")
        env = lmdb.open(
            str(path), readonly=True, lock=False, readahead=False, meminit=False, subdir=path.is_dir()
        )
        try:
            with env.begin(write=False) as txn:
                for key in _lmdb_keys(txn, path):
                    key_bytes = key if isinstance(key, bytes) else str(key).encode()
                    value = txn.get(key_bytes)
                    record_id = key_bytes.decode(errors="replace")
                    if value is None:
                        yield record_id, {"error": "listed in 'keys' but absent"}
                        continue
                    yield record_id, _lmdb_row(value, source=f"LMDB {path} record {record_id}")
        finally:
            env.close()


def _npy_record(file: Path) -> Mapping:
    """The dict in a per-image ``.npy`` file (a 0-d object array), or an error record for the report."""
    try:
        array = safe_pickle.load_npy(file)
    except pickle.UnpicklingError as error:  # names the file already
        return {"error": str(error)}
    except (OSError, ValueError) as error:
        return {"error": f"cannot read {file.name} ({error})"}
    if array.shape != ():
        return {"error": f"{file} holds a {array.dtype} array of shape {array.shape}, not a dict"}
    return _feature_dict(array.item(), str(file))


def read_feature_files(paths: list[Path]) -> Iterator[tuple[str, Mapping]]:
    """Per-image ``.npy`` dicts and ``.npz`` archives; directories are searched for both, in sorted order."""
    files = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz"))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"feature file or directory {path} does not exist")
    for file in files:
        if file.suffix == ".npy":
            yield file.stem, _npy_record(file)
            continue
        try:
            with np.load(file, allow_pickle=False) as archive:
                yield file.stem, {key: archive[key] for key in archive.files}
        except (OSError, ValueError) as error:
            yield file.stem, {"error": f"cannot read {file.name} ({error})"}


def _field(raw: Mapping, name: str):
    for key in _ALIASES.get(name, (name,)):
        if key in raw:
            return raw[key]
    raise ValueError(f"missing field {name!r} (looked for {', '.join(_ALIASES.get(name, (name,)))})")


def _matrix(value, width: int, num_boxes: int, name: str) -> np.ndarray:
    """A (num_boxes, width) array from a numpy array or a base64 string of float32 (or float64) values."""
    if isinstance(value, (bytes, str)):
        try:
            buffer = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ValueError(f"{name} is not valid base64 ({error})") from error
        if len(buffer) not in (num_boxes * width * 4, num_boxes * width * 8):
            raise ValueError(
                f"{name} has {len(buffer)} bytes, expected num_boxes x {width} float32 = {num_boxes * width * 4}"
            )
        array = np.frombuffer(
            buffer, dtype=np.float64 if len(buffer) == num_boxes * width * 8 else np.float32
        )
    else:
        array = np.asarray(value)
    if array.size != num_boxes * width:
        raise ValueError(
            f"{name} has {array.size} values, expected num_boxes x {width} = {num_boxes * width}"
        )
    return array.reshape(num_boxes, width)  # (num_boxes, width)


def decode_region_record(raw: Mapping) -> dict:
    """An image record (``image_id``, ``width``, ``height``, ``boxes``, ``features``, ``cls_prob`` or absent)
    from any format's raw row.

    Raises:
        ValueError: naming the missing or inconsistent field.
    """
    if "error" in raw:
        raise ValueError(raw["error"])
    image_id = _field(raw, "image_id")
    image_id = image_id.decode() if isinstance(image_id, bytes) else str(np.asarray(image_id).item())
    try:
        width, height = int(float(_field(raw, "width"))), int(float(_field(raw, "height")))
    except TypeError as error:
        raise ValueError(f"image size is not a number ({error})") from error
    features = _field(raw, "features")
    num_boxes = (
        int(raw["num_boxes"])
        if "num_boxes" in raw
        else np.asarray(features).reshape(-1, FEATURE_DIM).shape[0]
    )
    if num_boxes < 1 or width < 1 or height < 1:
        raise ValueError(f"no boxes or empty image (num_boxes={num_boxes}, width={width}, height={height})")
    record = {
        "image_id": image_id,
        "width": width,
        "height": height,
        "boxes": _matrix(_field(raw, "boxes"), 4, num_boxes, "boxes").astype(np.float32),
        "features": _matrix(features, FEATURE_DIM, num_boxes, "features").astype(np.float16),
    }
    if raw.get("cls_prob") is not None:
        record["cls_prob"] = _matrix(raw["cls_prob"], NUM_DETECTOR_CLASSES, num_boxes, "cls_prob").astype(
            np.float16
        )
    return record


#: Formats of ``prepare_data.py features --format``.
FEATURE_READERS = {"tsv": read_feature_tsv, "lmdb": read_feature_lmdb, "npy": read_feature_files}
