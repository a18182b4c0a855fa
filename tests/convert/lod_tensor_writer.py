"""An independent writer of Paddle's per-variable LoDTensor files, from the format's description, for tests
that need such files without Paddle (Paddle's own ``save_vars`` is exercised by the equivalence test)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

#: numpy dtype -> Paddle VarType.Type (framework.proto).
VAR_TYPES = {"bool": 0, "int16": 1, "int32": 2, "int64": 3, "float16": 4, "float32": 5, "float64": 6}
#: VarType.BF16, which numpy has no dtype for: pass its 16-bit patterns with ``data_type=BFLOAT16``.
BFLOAT16 = 22


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def tensor_desc(data_type: int, dims: list[int], packed: bool = False) -> bytes:
    """TensorDesc protobuf: field 1 (varint) data_type, field 2 dims, unpacked (proto2's default) or packed."""
    desc = b"\x08" + _varint(data_type)
    if packed:
        body = b"".join(_varint(d) for d in dims)
        return desc + b"\x12" + _varint(len(body)) + body
    return desc + b"".join(b"\x10" + _varint(d) for d in dims)


def lod_tensor_bytes(
    array: np.ndarray, lod: list[list[int]] = (), packed: bool = False, data_type: int | None = None
) -> bytes:
    array = np.ascontiguousarray(array)
    data_type = VAR_TYPES[array.dtype.name] if data_type is None else data_type
    out = struct.pack("<I", 0) + struct.pack("<Q", len(lod))
    for level in lod:
        offsets = np.asarray(level, dtype="<u8").tobytes()
        out += struct.pack("<Q", len(offsets)) + offsets
    desc = tensor_desc(data_type, list(array.shape), packed)
    out += struct.pack("<I", 0) + struct.pack("<i", len(desc)) + desc
    return out + array.astype(array.dtype.newbyteorder("<")).tobytes()


def write_lod_tensor(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.write_bytes(lod_tensor_bytes(array, **kwargs))
    return path
