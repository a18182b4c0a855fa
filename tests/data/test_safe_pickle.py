"""The restricted unpickler: what the feature files hold round-trips under every protocol, anything else is
refused before it runs."""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import pickle
import re

import numpy as np
import pytest

from ernievil_ds.data import safe_pickle
from ernievil_ds.data.safe_pickle import RefusedGlobalError

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


def _feature_row() -> dict:
    """Every kind of value the upstream writers put in a row, and numpy layouts pickled differently."""
    rng = np.random.default_rng(0)
    return {
        "image_id": "COCO_val2014_000000000042",
        "image_h": 480,
        "image_w": 640.0,
        "num_boxes": np.int64(3),
        "boxes": rng.random((3, 4)).astype(np.float32),
        "features": rng.random((3, 2048)).astype(np.float32),
        "cls_prob": rng.random((3, 1601)).astype(np.float32),
        "objects": np.arange(3, dtype=np.int64),
        "mask": np.array([1, 0, 1], np.uint8),
        "keys": np.array([b"101", b"102"]),
        "names": np.array(["dog", "cat"]),
        "score": np.float32(0.5),
        "empty": np.zeros((0, 4), np.float32),
        "fortran": np.asfortranarray(rng.random((3, 2))),
        "strided": rng.random((4, 6))[:, ::2],
        "base64": b"AAAA",
        "no_bytes": b"",
        "ids": [b"101", b"102", None, True, (1, 2.5)],
        "row": collections.OrderedDict(image_id="101", boxes="AAAA"),
    }


def _assert_same(restored, expected):
    assert type(restored) is type(expected)
    if isinstance(expected, np.ndarray | np.generic):
        assert restored.dtype == expected.dtype and restored.shape == expected.shape
        np.testing.assert_array_equal(restored, expected)
    elif isinstance(expected, dict):
        assert list(restored) == list(expected)
        for key, value in expected.items():
            _assert_same(restored[key], value)
    elif isinstance(expected, list | tuple):
        assert len(restored) == len(expected)
        for item, value in zip(restored, expected):
            _assert_same(item, value)
    else:
        assert restored == expected


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_feature_rows_round_trip(protocol):
    row = _feature_row()
    _assert_same(safe_pickle.loads(pickle.dumps(row, protocol=protocol), source="row"), row)


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_numpy_1_module_names_are_allowed(protocol):
    # numpy 1 pickles name numpy.core where numpy 2 names numpy._core; protocols 0-2 write module names
    # as text lines, so the renaming leaves a valid pickle.
    row = _feature_row()
    data = pickle.dumps(row, protocol=protocol)
    assert b"numpy._core" in data
    _assert_same(safe_pickle.loads(data.replace(b"numpy._core", b"numpy.core"), source="row"), row)


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_refused_global_names_source_and_global(tmp_path, hostile_call, protocol):
    data = pickle.dumps({"image_id": "7", "features": hostile_call}, protocol=protocol)
    module, name = hostile_call.global_name.split(".")
    if protocol < 3:  # Python 3 writes Python 2 names there (builtins -> __builtin__, subprocess -> commands)
        default = (_compat_pickle.REVERSE_IMPORT_MAPPING.get(module, module), name)
        module, name = _compat_pickle.REVERSE_NAME_MAPPING.get((module, name), default)
    written = f"{module}.{name}"
    with pytest.raises(
        RefusedGlobalError, match=re.escape(f"rows.lmdb record 7: refused to unpickle {written} ")
    ):
        safe_pickle.loads(data, source="rows.lmdb record 7")
    assert not (tmp_path / "marker").exists()


def test_hostile_calls_run_under_the_stock_unpickler(tmp_path, hostile_call):
    # The payloads are real: what the restricted unpickler refuses would have run.
    pickle.loads(pickle.dumps(hostile_call))
    assert (tmp_path / "marker").exists()


def test_refused_global_inside_an_object_array(tmp_path, hostile_call):
    array = np.empty((), dtype=object)
    array[()] = {"features": hostile_call}
    with pytest.raises(RefusedGlobalError, match=re.escape(hostile_call.global_name)):
        safe_pickle.loads(pickle.dumps(array), source="102.npy")
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize(
    "call",
    [(codecs.encode, ("abc", "rot13")), (bytes, (10**12,))],
    ids=["codecs.encode(rot13)", "bytes(10**12)"],
)
def test_allowed_bytes_globals_take_only_the_pickler_arguments(call):
    class Reduced:
        def __reduce__(self):
            return call

    with pytest.raises(pickle.UnpicklingError, match=r"^row 3: cannot unpickle") as raised:
        safe_pickle.loads(pickle.dumps(Reduced(), protocol=2), source="row 3")
    assert not isinstance(raised.value, RefusedGlobalError)


def test_corrupt_pickle_is_an_unpickling_error():
    data = pickle.dumps(_feature_row())
    with pytest.raises(pickle.UnpicklingError, match=r"^row 9: cannot unpickle \(") as raised:
        safe_pickle.loads(data[: len(data) // 2], source="row 9")
    assert not isinstance(raised.value, RefusedGlobalError)


def test_load_npy_reads_dicts_and_numeric_arrays(tmp_path):
    row = _feature_row()
    np.save(tmp_path / "row.npy", row)
    restored = safe_pickle.load_npy(tmp_path / "row.npy")
    assert restored.shape == () and restored.dtype == object
    _assert_same(restored.item(), row)

    np.save(tmp_path / "features.npy", row["features"])
    _assert_same(safe_pickle.load_npy(tmp_path / "features.npy"), row["features"])


def test_load_npy_reads_numpy_1_files(tmp_path):
    # numpy 1's np.save: a version 1.0 header, then the array pickled with protocol 3 and numpy.core names.
    row = _feature_row()
    array = np.empty((), dtype=object)
    array[()] = row
    data = pickle.dumps(array, protocol=3)
    assert b"numpy._core" in data
    with open(tmp_path / "row.npy", "wb") as file:
        np.lib.format.write_array_header_1_0(file, np.lib.format.header_data_from_array_1_0(array))
        file.write(data.replace(b"numpy._core", b"numpy.core"))
    _assert_same(safe_pickle.load_npy(tmp_path / "row.npy").item(), row)


def test_load_npy_refuses_a_hostile_dict(tmp_path, hostile_call):
    np.save(tmp_path / "102.npy", {"image_id": "102", "features": hostile_call})
    with pytest.raises(
        RefusedGlobalError, match=re.escape(f"102.npy: refused to unpickle {hostile_call.global_name} ")
    ):
        safe_pickle.load_npy(tmp_path / "102.npy")
    assert not (tmp_path / "marker").exists()


def test_load_npy_rejects_other_files(tmp_path):
    (tmp_path / "features.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match="magic string"):
        safe_pickle.load_npy(tmp_path / "features.npy")
