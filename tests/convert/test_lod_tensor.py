"""The numpy reader of Paddle's per-variable LoDTensor files: round trips and clear errors on bad files."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import torch

from ernievil_ds.convert.lod_tensor import read_lod_tensor, read_variables
from tests.convert.lod_tensor_writer import BFLOAT16, lod_tensor_bytes, write_lod_tensor


def test_an_8x16_float32_weight_is_538_bytes_and_reads_back(tmp_path):
    weight = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    path = write_lod_tensor(tmp_path / "fc.w_0", weight)
    assert path.stat().st_size == 538  # 26 bytes of header + 512 of data, as Paddle writes it
    read = read_lod_tensor(path)
    assert read.dtype == np.float32 and read.shape == (8, 16)
    np.testing.assert_array_equal(read, weight)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32", "int64", "bool"])
@pytest.mark.parametrize("shape", [(), (7,), (3, 5), (2, 3, 4)])
def test_dtypes_and_ranks_read_back(tmp_path, dtype, shape):
    array = (np.random.default_rng(1).standard_normal(shape) * 10).astype(dtype)
    np.testing.assert_array_equal(read_lod_tensor(write_lod_tensor(tmp_path / "v", array)), array)


def test_a_bfloat16_tensor_reads_as_its_float_value(tmp_path):
    values = (torch.randn(3, 5, generator=torch.Generator().manual_seed(2)) * 100).to(torch.bfloat16)
    bits = values.view(torch.int16).numpy()
    read = read_lod_tensor(write_lod_tensor(tmp_path / "fc.w_0", bits, data_type=BFLOAT16))
    assert read.dtype == np.float32 and read.shape == (3, 5)
    np.testing.assert_array_equal(read, values.float().numpy())


def test_packed_dims_and_lod_levels_are_understood(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(4, 3)
    path = write_lod_tensor(tmp_path / "v", array, lod=[[0, 1, 4], [0, 2]], packed=True)
    np.testing.assert_array_equal(read_lod_tensor(path), array)


@pytest.mark.parametrize("keep", [0, 3, 10, 21, 25, 26, 100, 537])
def test_a_truncated_file_is_an_error_naming_it(tmp_path, keep):
    data = lod_tensor_bytes(np.ones((8, 16), np.float32))
    path = tmp_path / "encoder_layer_0_ffn_fc_0.w_0"
    path.write_bytes(data[:keep])
    with pytest.raises(ValueError, match=r"encoder_layer_0_ffn_fc_0\.w_0.*truncated"):
        read_lod_tensor(path)


def test_bytes_after_the_data_are_an_error(tmp_path):
    path = tmp_path / "v"
    path.write_bytes(lod_tensor_bytes(np.ones(4, np.float32)) + b"\0\0\0\0")
    with pytest.raises(ValueError, match=r"v: 4 unexpected bytes after the data"):
        read_lod_tensor(path)


def test_an_unknown_data_type_is_an_error(tmp_path):
    path = write_lod_tensor(tmp_path / "v", np.ones(4, np.float32), data_type=99)
    with pytest.raises(ValueError, match=r"v: unsupported Paddle data type 99"):
        read_lod_tensor(path)


@pytest.mark.parametrize(
    "content",
    [b'{"hidden_size": 768, "num_attention_heads": 12}', b"PK\x03\x04" + bytes(60), bytes(range(256)) * 3],
    ids=["json", "zip", "noise"],
)
def test_a_foreign_file_is_an_error_naming_it(tmp_path, content):
    path = tmp_path / "not_a_tensor.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"not_a_tensor\.bin"):
        read_lod_tensor(path)


def test_missing_paths_are_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_file"):
        read_lod_tensor(tmp_path / "no_such_file")
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        read_variables(tmp_path / "no_such_dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no variable files"):
        read_variables(tmp_path / "empty")


def test_read_variables_names_each_array_by_its_file(tmp_path):
    write_lod_tensor(tmp_path / "a.w_0", np.zeros((2, 3), np.float32))
    write_lod_tensor(tmp_path / "b_layer_norm_scale", np.ones(3, np.float32))
    variables = read_variables(tmp_path)
    assert {name: v.shape for name, v in variables.items()} == {"a.w_0": (2, 3), "b_layer_norm_scale": (3,)}


class _WouldWriteAMarker:
    """Unpickling this runs ``open(path, "w")``: a stray pickle that must never be unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_files_that_are_not_tensors_are_skipped_with_one_line_naming_them(tmp_path, caplog):
    write_lod_tensor(tmp_path / "a.w_0", np.zeros((2, 3), np.float32))
    (tmp_path / "README").write_text("# ERNIE-ViL base\nParameters of the pretrained model.\n")
    (tmp_path / "model.pdparams").write_bytes(
        pickle.dumps({"a.w_0": _WouldWriteAMarker(tmp_path / "marker")})
    )
    (tmp_path / ".DS_Store").write_bytes(bytes(64))
    with caplog.at_level(logging.WARNING, logger="ernievil_ds.convert.lod_tensor"):
        variables = read_variables(tmp_path)
    assert list(variables) == ["a.w_0"]
    assert not (tmp_path / "marker").exists()
    assert len(caplog.records) == 1
    assert "['.DS_Store', 'README', 'model.pdparams']" in caplog.records[0].getMessage()
