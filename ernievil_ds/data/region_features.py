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

Where the arrays are numpy arrays (``.npy``, ``.npz``, vilbert-multi-task LMDB rows), every row of them is
a region, whatever ``num_boxes`` says: vilbert-multi-task's extractor sets ``num_boxes`` to the number of
boxes above the confidence threshold, which can be smaller than the rows it saves, ``convert_to_lmdb.py``
copies the arrays as they are, and its ``ImageFeaturesH5Reader`` reads all their rows
(``features.reshape(-1, 2048)``, ``boxes.reshape(-1, 4)``, ``num_boxes = features.shape[0]``). Where they are base64 strings (TSV, vilbert_beta LMDB rows),
``num_boxes`` gives their number of rows, as the readers of those files use it.

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
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from ernievil_ds.data import safe_pickle
from ernievil_ds.data.schema import FEATURE_DIM, NUM_DETECTOR_CLASSES
from ernievil_ds.errors import UserError

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
        # Bytes that are not UTF-8 become U+FFFD, which no base64 field accepts: the row is malformed.
        with path.open(newline="", encoding="utf-8", errors="replace") as file:
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
        UserError: no ``keys`` entry, or one that is refused, unreadable or not a list.
    """
    keys_value = txn.get(b"keys")
    if keys_value is None:
        raise UserError(
            f"LMDB {path} has no 'keys' entry listing its images: it is not a ViLBERT-style feature LMDB "
            "(their writers store the pickled list of row keys under 'keys')"
        )
    try:
        keys = safe_pickle.loads(keys_value, source=f"LMDB {path} 'keys' entry")
    except pickle.UnpicklingError as error:
        raise UserError(f"{error}; nothing of {path} is imported") from error
    if not isinstance(keys, (list, tuple)):
        raise UserError(f"LMDB {path}: the 'keys' entry holds a {type(keys).__name__}, not a list of keys")
    return keys


def lmdb_row(value: bytes, source: str) -> Mapping:
    """One unpickled LMDB row, or an error record (a refused global, a corrupt pickle) for the report."""
    try:
        return _feature_dict(safe_pickle.loads(value, source=source), source)
    except pickle.UnpicklingError as error:
        return {"error": str(error)}


def open_feature_lmdb(path: Path):
    """An LMDB (folder or file) opened read-only, without locks.

    Raises:
        FileNotFoundError: a missing path. UserError: a path that is not an LMDB.
    """
    import lmdb

    if not path.exists():
        raise FileNotFoundError(f"LMDB {path} does not exist")
    try:
        return lmdb.open(
            str(path), readonly=True, lock=False, readahead=False, meminit=False, subdir=path.is_dir()
        )
    except lmdb.Error as error:
        raise UserError(f"{path} is not an LMDB ({error})") from error


def read_feature_lmdb(paths: list[Path]) -> Iterator[tuple[str, Mapping]]:
    """Rows of ViLBERT-style LMDBs (either flavour), in the order of each one's pickled ``keys`` entry."""
    for path in paths:
        env = open_feature_lmdb(path)
        try:
            with env.begin(write=False) as txn:
                for key in _lmdb_keys(txn, path):
                    key_bytes = key if isinstance(key, bytes) else str(key).encode()
                    value = txn.get(key_bytes)
                    record_id = key_bytes.decode(errors="replace")
                    if value is None:
                        yield record_id, {"error": "listed in 'keys' but absent"}
                        continue
                    yield record_id, lmdb_row(value, source=f"LMDB {path} record {record_id}")
        finally:
            env.close()


def _npy_record(file: Path) -> Mapping:
    """The dict in a per-image ``.npy`` file (a 0-d object array), or an error record for the report."""
    try:
        array = safe_pickle.load_npy(file)
    except pickle.UnpicklingError as error:  # names the file already
        return {"error": str(error)}
    except (OSError, ValueError, EOFError) as error:  # not a .npy, or one cut short
        return {"error": f"cannot read {file.name} ({error})"}
    if array.shape != ():
        return {"error": f"{file} holds a {array.dtype} array of shape {array.shape}, not a dict"}
    return _feature_dict(array.item(), str(file))


def _npz_record(file: Path) -> Mapping:
    """The arrays in a ``.npz`` archive by name, or an error record for the report."""
    try:
        with np.load(file, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:  # a cut or corrupt archive
        return {"error": f"cannot read {file.name} ({error})"}


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
        yield file.stem, _npz_record(file)


def _field(raw: Mapping, name: str):
    for key in _ALIASES.get(name, (name,)):
        if key in raw:
            return raw[key]
    raise ValueError(f"missing field {name!r} (looked for {', '.join(_ALIASES.get(name, (name,)))})")


def _number(raw: Mapping, name: str) -> int:
    """An integer field, given as a number, a numeric string or a size-1 array."""
    value = _field(raw, name)
    try:
        return int(float(value.decode() if isinstance(value, bytes) else np.asarray(value).item()))
    except (TypeError, ValueError, OverflowError, UnicodeDecodeError) as error:
        raise ValueError(f"{name} is not a number ({str(value)[:40]!r})") from error


def _base64_matrix(value: bytes | str, width: int, num_boxes: int, name: str) -> np.ndarray:
    """(num_boxes, width) from a base64 string of float32 (or float64) values."""
    try:
        buffer = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"{name} is not valid base64 ({error})") from error
    if len(buffer) not in (num_boxes * width * 4, num_boxes * width * 8):
        raise ValueError(
            f"{name} has {len(buffer)} bytes, expected num_boxes x {width} float32 = {num_boxes * width * 4}"
        )
    array = np.frombuffer(buffer, dtype=np.float64 if len(buffer) == num_boxes * width * 8 else np.float32)
    return array.reshape(num_boxes, width)  # (num_boxes, width)


def _array_matrix(value, width: int, name: str, num_boxes: int | None = None) -> np.ndarray:
    """(rows, width) from a numpy array (or nested lists) of numbers; ``num_boxes`` rows when given."""
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} is not an array of numbers ({error})") from error
    if array.size % width or (num_boxes is not None and array.size != num_boxes * width):
        expected = f"{num_boxes} x {width}" if num_boxes is not None else f"a multiple of {width}"
        raise ValueError(f"{name} has {array.size} values, expected {expected}")
    return array.reshape(-1, width)  # (rows, width)


def _region_arrays(raw: Mapping) -> dict[str, np.ndarray]:
    """``boxes`` (R, 4), ``features`` (R, 2048) and, when present, ``cls_prob`` (R, 1601) of a raw row.

    Base64 strings have ``num_boxes`` rows. numpy arrays have the rows they hold, as vilbert-multi-task's
    reader takes them: its ``num_boxes`` counts only the confident boxes (see the module docstring).
    """
    features = _field(raw, "features")
    if isinstance(features, (bytes, str)):
        num_boxes = _number(raw, "num_boxes")
        if num_boxes < 1:
            raise ValueError(f"no boxes (num_boxes={num_boxes})")

        def matrix(value, width: int, name: str) -> np.ndarray:
            if isinstance(value, (bytes, str)):
                return _base64_matrix(value, width, num_boxes, name)
            return _array_matrix(value, width, name, num_boxes)

    else:
        num_boxes = len(_array_matrix(features, FEATURE_DIM, "features"))

        def matrix(value, width: int, name: str) -> np.ndarray:
            return _array_matrix(value, width, name, num_boxes)

    arrays = {
        "boxes": matrix(_field(raw, "boxes"), 4, "boxes"),
        "features": matrix(features, FEATURE_DIM, "features"),
    }
    if raw.get("cls_prob") is not None:
        arrays["cls_prob"] = matrix(raw["cls_prob"], NUM_DETECTOR_CLASSES, "cls_prob")
    return arrays


def decode_region_record(raw: Mapping) -> dict:
    """An image record (``image_id``, ``width``, ``height``, ``boxes``, ``features``, ``cls_prob`` or absent)
    from any format's raw row.

    Raises:
        ValueError: naming the missing or inconsistent field.
    """
    if "error" in raw:
        raise ValueError(raw["error"])
    image_id = _field(raw, "image_id")
    try:
        image_id = image_id.decode() if isinstance(image_id, bytes) else str(np.asarray(image_id).item())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"image_id is not one value ({error})") from error
    width, height = _number(raw, "width"), _number(raw, "height")
    arrays = _region_arrays(raw)
    if not len(arrays["features"]) or width < 1 or height < 1:
        raise ValueError(f"no boxes or empty image (boxes={len(arrays['features'])}, {width}x{height})")
    record = {"image_id": image_id, "width": width, "height": height}
    record["boxes"] = arrays["boxes"].astype(np.float32)
    record["features"] = arrays["features"].astype(np.float16)
    if "cls_prob" in arrays:
        record["cls_prob"] = arrays["cls_prob"].astype(np.float16)
    return record


_NPY_MAGIC, _ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


def feature_input_kind(path: Path) -> str:
    """What a feature input is, from its first bytes or its folder's files: "lmdb" (an LMDB folder or
    file), "npy" (a ``.npy``/``.npz`` file or a folder holding some), "tsv" (text), "empty", or "other"."""
    if path.is_dir():
        if (path / "data.mdb").is_file():
            return "lmdb"
        return "npy" if any(p.suffix in (".npy", ".npz") for p in path.iterdir()) else "empty"
    with path.open("rb") as file:
        head = file.read(4096)
    if not head.strip():
        return "empty"
    if head.startswith((_NPY_MAGIC, _ZIP_MAGIC)):
        return "npy"
    if b"\0" not in head and b"\t" in head:
        return "tsv"
    return "other"  # an LMDB file has no fixed first bytes: lmdb itself tells


_FEATURE_KIND_NAMES = {
    "lmdb": "an LMDB",
    "npy": ".npy/.npz features",
    "tsv": "a feature TSV",
    "empty": "empty (no .npy or .npz file in a folder, no bytes in a file)",
}
_FEATURE_FORMAT_KINDS = {"tsv": ("tsv", "other"), "lmdb": ("lmdb", "other"), "npy": ("npy",)}


def check_feature_input(format: str, path: Path) -> None:
    """Refuse ``path`` at its start when it is not an input of ``format`` (a key of ``FEATURE_READERS``).

    Raises:
        FileNotFoundError: a missing path. UserError: what was expected, what was found, the flag to use.
    """
    if not path.exists():
        raise FileNotFoundError(f"feature input {path} does not exist")
    kind = feature_input_kind(path)
    if kind in _FEATURE_FORMAT_KINDS[format]:
        return
    hint = f": use --format {kind}" if kind in FEATURE_READERS else ""
    found = _FEATURE_KIND_NAMES.get(kind, "a file of unknown layout")
    raise UserError(f"{path} is {found}, not {_FEATURE_KIND_NAMES[format]}{hint}")


#: Formats of ``prepare_data.py features --format``.
FEATURE_READERS = {"tsv": read_feature_tsv, "lmdb": read_feature_lmdb, "npy": read_feature_files}
