"""Read Paddle's per-variable LoDTensor files with numpy alone.

A Paddle 1.x ``save_vars``/``save_params`` directory holds one file per variable, named after it. Each file
is, little-endian throughout:

    uint32   LoDTensor version (0)
    uint64   number of LoD levels; per level a uint64 byte count and that many bytes of size_t offsets
    uint32   Tensor version (0)
    int32    byte length of the TensorDesc protobuf that follows
    bytes    TensorDesc: field 1 ``data_type`` (a VarType.Type enum, varint), field 2 ``dims`` (int64, repeated)
    bytes    the data, C order, prod(dims) * itemsize bytes, and nothing after it

(``paddle/fluid/framework/lod_tensor.cc``, ``tensor_util.cc`` and ``framework.proto`` in Paddle's source.)
Every field is checked, and a file that does not follow this layout raises ``ValueError`` naming it.

bfloat16 tensors (``VarType.BF16``), which numpy has no dtype for, are read as their 16-bit patterns and
widened to float32 exactly (a bfloat16 is the upper half of the float32 of the same value).
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: Paddle's ``VarType.Type`` values for the tensor data types (``framework.proto``).
PADDLE_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("bool"),
    1: np.dtype("<i2"),
    2: np.dtype("<i4"),
    3: np.dtype("<i8"),
    4: np.dtype("<f2"),
    5: np.dtype("<f4"),
    6: np.dtype("<f8"),
    20: np.dtype("u1"),
    21: np.dtype("i1"),
}
#: ``VarType.BF16``: stored as 16-bit patterns, read as float32 (``read_lod_tensor``).
PADDLE_BFLOAT16 = 22

#: More LoD levels or dims than any variable has; a larger count means the file is not a LoDTensor.
_MAX_LOD_LEVELS = 16
_MAX_DIMS = 16


class _Cursor:
    """Reads fixed-size fields from a file's bytes, raising ``ValueError`` (naming the file) past its end."""

    def __init__(self, data: bytes, path: Path):
        self.data = data
        self.path = path
        self.offset = 0

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self.offset + size > len(self.data):
            raise ValueError(
                f"{self.path}: truncated Paddle tensor file: {what} needs {size} bytes at offset {self.offset}, "
                f"but the file has {len(self.data)} bytes"
            )
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def unpack(self, fmt: str, what: str) -> int:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]


def _read_varint(buffer: bytes, offset: int, path: Path) -> tuple[int, int]:
    """A protobuf base-128 varint at ``offset`` -> (value as a signed 64-bit int, offset after it)."""
    value = shift = 0
    while True:
        if offset >= len(buffer) or shift > 63:
            raise ValueError(f"{path}: malformed TensorDesc protobuf (a varint runs past its end)")
        byte = buffer[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    if value >= 1 << 63:  # int64 fields store negative numbers as two's complement
        value -= 1 << 64
    return value, offset


def parse_tensor_desc(buffer: bytes, path: Path) -> tuple[int, list[int]]:
    """Decode a TensorDesc protobuf -> (data type enum, dims). Accepts packed and unpacked ``dims``."""
    data_type = None
    dims: list[int] = []
    offset = 0
    while offset < len(buffer):
        key, offset = _read_varint(buffer, offset, path)
        field, wire_type = key >> 3, key & 7
        if field == 1 and wire_type == 0:
            data_type, offset = _read_varint(buffer, offset, path)
        elif field == 2 and wire_type == 0:
            dim, offset = _read_varint(buffer, offset, path)
            dims.append(dim)
        elif field == 2 and wire_type == 2:
            length, offset = _read_varint(buffer, offset, path)
            end = offset + length
            if length < 0 or end > len(buffer):
                raise ValueError(f"{path}: malformed TensorDesc protobuf (packed dims run past its end)")
            while offset < end:
                dim, offset = _read_varint(buffer, offset, path)
                dims.append(dim)
        else:
            raise ValueError(
                f"{path}: not a Paddle TensorDesc: unexpected protobuf field {field} (wire type {wire_type})"
            )
    if data_type is None:
        raise ValueError(f"{path}: the TensorDesc has no data_type")
    if len(dims) > _MAX_DIMS or any(d < 0 for d in dims):
        raise ValueError(f"{path}: the TensorDesc has invalid dims {dims}")
    return data_type, dims


def read_lod_tensor(path: str | Path) -> np.ndarray:
    """Read one variable file written by Paddle's ``save_vars`` (or 1.x ``save_params``) -> its array.

    The LoD (sequence offsets; parameters have none) is checked and dropped.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: naming the file, when it is truncated, has bytes after the data, an unknown version or
            data type, or a malformed description.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No Paddle tensor file at {path}")
    cursor = _Cursor(path.read_bytes(), path)

    version = cursor.unpack("<I", "the LoDTensor version")
    if version != 0:
        raise ValueError(f"{path}: not a Paddle LoDTensor file (version {version}, expected 0)")
    lod_levels = cursor.unpack("<Q", "the LoD level count")
    if lod_levels > _MAX_LOD_LEVELS:
        raise ValueError(f"{path}: not a Paddle LoDTensor file ({lod_levels} LoD levels)")
    for level in range(lod_levels):
        size = cursor.unpack("<Q", f"the byte count of LoD level {level}")
        if size % 8:
            raise ValueError(
                f"{path}: LoD level {level} has {size} bytes, not a whole number of uint64 offsets"
            )
        cursor.take(size, f"LoD level {level}")

    tensor_version = cursor.unpack("<I", "the Tensor version")
    if tensor_version != 0:
        raise ValueError(f"{path}: unsupported Paddle Tensor version {tensor_version} (expected 0)")
    desc_size = cursor.unpack("<i", "the TensorDesc length")
    if desc_size <= 0:
        raise ValueError(f"{path}: invalid TensorDesc length {desc_size}")
    data_type, dims = parse_tensor_desc(cursor.take(desc_size, "the TensorDesc"), path)
    if data_type not in PADDLE_DTYPES and data_type != PADDLE_BFLOAT16:
        raise ValueError(
            f"{path}: unsupported Paddle data type {data_type} (known: "
            f"{', '.join(f'{k}={v.name}' for k, v in PADDLE_DTYPES.items())}, {PADDLE_BFLOAT16}=bfloat16)"
        )
    dtype = np.dtype("<u2") if data_type == PADDLE_BFLOAT16 else PADDLE_DTYPES[data_type]
    nbytes = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    data = cursor.take(nbytes, f"the data of a {dtype.name} tensor of shape {dims}")
    if cursor.offset != len(cursor.data):
        raise ValueError(
            f"{path}: {len(cursor.data) - cursor.offset} unexpected bytes after the data of a {dtype.name} "
            f"tensor of shape {dims}"
        )
    array = np.frombuffer(data, dtype=dtype).reshape(dims)
    if data_type == PADDLE_BFLOAT16:
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.copy()


def is_lod_tensor_file(path: Path) -> bool:
    """Whether ``path`` starts as a LoDTensor file does (version 0, a plausible LoD level count), from its
    first 12 bytes: a README, a pickled ``.pdparams`` or an archive does not."""
    with path.open("rb") as file:
        head = file.read(12)
    return (
        len(head) == 12
        and struct.unpack("<I", head[:4])[0] == 0
        and struct.unpack("<Q", head[4:])[0] <= _MAX_LOD_LEVELS
    )


def read_variables(params_dir: str | Path) -> dict[str, np.ndarray]:
    """Read every variable file in a ``params/`` directory -> {variable name: array}.

    Hidden files and files that do not start as a LoDTensor file (``is_lod_tensor_file``: a README, a
    ``.pdparams`` pickle, an archive) are skipped, never parsed or unpickled, and named in one log line.

    Raises:
        FileNotFoundError: when ``params_dir`` is not a directory or holds no variable file.
        ValueError: as ``read_lod_tensor``, naming the first bad file.
    """
    params_dir = Path(params_dir)
    if not params_dir.is_dir():
        raise FileNotFoundError(f"No Paddle params directory at {params_dir}")
    files = sorted(p for p in params_dir.iterdir() if p.is_file())
    skipped = [p.name for p in files if p.name.startswith(".") or not is_lod_tensor_file(p)]
    if skipped:
        logger.warning(
            "Skipped %d files in %s that are not Paddle tensor files: %s", len(skipped), params_dir, skipped
        )
    files = [p for p in files if p.name not in skipped]
    if not files:
        raise FileNotFoundError(f"{params_dir} holds no variable files")
    return {path.name: read_lod_tensor(path) for path in files}


__all__ = [
    "PADDLE_BFLOAT16",
    "PADDLE_DTYPES",
    "is_lod_tensor_file",
    "parse_tensor_desc",
    "read_lod_tensor",
    "read_variables",
]
