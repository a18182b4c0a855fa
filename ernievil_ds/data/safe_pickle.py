"""Unpickling of downloaded feature files, restricted to the globals those files hold, so that they cannot
run code.

What the public writers put in the pickled feature files:

- vilbert-multi-task ``script/extract_features.py`` (and ``extract_features_from_gt.py``): one ``.npy``
  per image, ``np.save`` of a dict with ``bbox``, ``features``, ``cls_prob`` (float32 arrays),
  ``objects`` (int64 array), ``num_boxes``, ``image_width``, ``image_height`` (ints) and ``image_id``
  (str). ``np.save`` writes such a dict as a 0-d object array whose data is a pickle (protocol 3 in
  numpy 1, 4 in numpy 2).
- vilbert-multi-task ``script/convert_to_lmdb.py``: each row is ``pickle.dumps`` of a dict with
  ``image_id``, ``image_h``, ``image_w``, ``num_boxes``, ``boxes`` and ``features`` copied from those
  dicts; the ``keys`` entry is ``pickle.dumps`` of the list of row keys (bytes).
- vilbert_beta ``script/convert_*lmdb*.py``: each row is ``pickle.dumps`` of a ``csv.DictReader`` row of
  strings, the arrays base64, which is a ``collections.OrderedDict`` before Python 3.8; ``keys`` as above.

Unpickling those, under any pickle protocol (0-5) and by numpy 1 or 2, takes only the globals in
``ALLOWED_GLOBALS``: numpy's array, dtype and scalar reconstruction, ``OrderedDict``, and the two calls
with which pickle protocols 0-2 spell bytes. ``dict``, ``list``, ``tuple``, ``str``, ``int``, ``float``,
``bool`` and ``None`` have opcodes of their own. Any other global (``os.system``, ``builtins.eval``,
``subprocess.Popen``...) is refused before it is looked up, with an error naming the file, the record and
the global. With ``allowed_globals=PLAIN_DATA_GLOBALS`` no global is resolved at all, for pickles of plain
builtins (the official VQA answer list).
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path

import numpy as np

try:  # numpy >= 2
    from numpy._core import multiarray, numeric
except ImportError:  # numpy 1
    from numpy.core import multiarray, numeric


class RefusedGlobalError(pickle.UnpicklingError):
    """A pickle refers to a global outside ``ALLOWED_GLOBALS``: unpickling it could run code."""


def _bytes_from_latin1(text: str, encoding: str) -> bytes:
    """``codecs.encode`` as pickle protocols 0-2 call it for non-empty bytes, and for nothing else."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode called with {type(text).__name__}, {encoding!r}")
    return text.encode("latin1")


def _empty_bytes() -> bytes:
    """``bytes()`` as pickle protocols 0-2 call it for ``b""``; any argument is refused (``bytes(n)``
    would allocate n bytes)."""
    return b""


#: (module, name) as written in the pickle -> the object it stands for.
ALLOWED_GLOBALS = {
    # numpy arrays: ndarray.__reduce__ (every protocol; numpy 1 and numpy 2 module names).
    ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Contiguous arrays under protocol 5: ndarray.__reduce_ex__.
    ("numpy.core.numeric", "_frombuffer"): numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): numeric._frombuffer,
    # numpy scalars (an np.int64 num_boxes, an np.float32 value).
    ("numpy.core.multiarray", "scalar"): multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): multiarray.scalar,
    # csv.DictReader rows before Python 3.8 (vilbert_beta LMDB rows).
    ("collections", "OrderedDict"): collections.OrderedDict,
    # bytes under protocols 0-2, which Python 3 writes as codecs.encode(text, "latin1"), or bytes() for
    # b"", under their Python 2 module names.
    ("_codecs", "encode"): _bytes_from_latin1,
    ("__builtin__", "bytes"): _empty_bytes,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that resolves only the globals of ``allowed``."""

    def __init__(self, file, *, source: str, allowed: dict, holds: str):
        super().__init__(file)
        self.source = source
        self.allowed = allowed
        self.holds = holds

    def find_class(self, module: str, name: str):
        allowed = self.allowed.get((module, name))
        if allowed is None:
            raise RefusedGlobalError(
                f"{self.source}: refused to unpickle {module}.{name} (this file may hold only {self.holds})"
            )
        return allowed


#: What a feature file may hold, for ``loads``'s error message.
FEATURE_FILE_CONTENTS = "numpy arrays, numpy scalars and Python builtins"
#: No global at all: ``dict``, ``list``, ``tuple``, ``str``, ``int``, ``float``, ``bool`` and ``None`` only.
PLAIN_DATA_GLOBALS: dict = {}


def loads(
    data: bytes,
    *,
    source: str,
    allowed_globals: dict = ALLOWED_GLOBALS,
    holds: str = FEATURE_FILE_CONTENTS,
):
    """The object pickled in ``data``, built from builtins and ``allowed_globals`` only.

    Args:
        data: a pickle (any protocol).
        source: names the file and record in error messages, e.g. ``"LMDB features.lmdb record 42"``.
        allowed_globals: (module, name) -> object, the only globals resolved: ``ALLOWED_GLOBALS`` (feature
            files) or ``PLAIN_DATA_GLOBALS`` (builtins only).
        holds: what the file may hold, in words, for the refusal's message.

    Raises:
        RefusedGlobalError: the pickle refers to another global; nothing of it has run.
        pickle.UnpicklingError: any other failure (a truncated or corrupt pickle), naming ``source``.
    """
    unpickler = _RestrictedUnpickler(io.BytesIO(data), source=source, allowed=allowed_globals, holds=holds)
    try:
        return unpickler.load()
    except RefusedGlobalError:
        raise
    # A corrupt pickle fails with whatever its opcodes provoke (EOFError, TypeError, KeyError...): one
    # error type lets the importers count it as a malformed record.
    except Exception as error:
        raise pickle.UnpicklingError(
            f"{source}: cannot unpickle ({type(error).__name__}: {error})"
        ) from error


_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def load_npy(path: Path) -> np.ndarray:
    """The array saved in a ``.npy`` file, like ``np.load(path, allow_pickle=True)`` but with an object
    array (``np.save`` of a dict or list) unpickled by ``loads``; any other array is read without pickle.

    Raises:
        ValueError: not a ``.npy`` file, or a format version other than 1.0 and 2.0 (numpy writes 3.0 only
            for structured dtypes with non-latin-1 field names).
        RefusedGlobalError, pickle.UnpicklingError: as ``loads``.
    """
    with open(path, "rb") as file:
        version = np.lib.format.read_magic(file)
        read_header = _NPY_HEADER_READERS.get(version)
        if read_header is None:
            raise ValueError(f"{path}: .npy format version {version[0]}.{version[1]} is not supported")
        shape, _, dtype = read_header(file)
        if not dtype.hasobject:
            file.seek(0)
            return np.lib.format.read_array(file, allow_pickle=False)
        array = loads(file.read(), source=str(path))
    if not isinstance(array, np.ndarray) or array.shape != shape:
        raise ValueError(f"{path}: the pickled data is not the {shape} object array its header announces")
    return array
