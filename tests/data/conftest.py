"""Shared fixtures: the default tokenizer, one small SynthScenes directory per test session, the payloads
of hostile pickles, a caption import with the fast stand-in parser, and writers of valid feature files."""

from __future__ import annotations

import base64
import os
import pickle
import subprocess

import lmdb
import numpy as np
import pytest

from ernievil_ds.data import build_synth_scenes, load_tokenizer
from ernievil_ds.data.prepare import import_captions
from tests.data.word_parser import WordParser


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory, tokenizer):
    return build_synth_scenes(
        tmp_path_factory.mktemp("synth"), num_train_images=60, num_eval_images=20, seed=0, tokenizer=tokenizer
    )


class HostileCall:
    """Pickles as ``function(*args)``, which the stock unpickler runs: the payload of a hostile file."""

    def __init__(self, function, args: tuple):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args

    @property
    def global_name(self) -> str:
        """The global as pickle names it, e.g. ``posix.system`` for ``os.system`` on Linux."""
        return f"{self.function.__module__}.{self.function.__name__}"


#: Calls that create the file ``marker`` (a path), each through another global.
_HOSTILE_CALLS = {
    "os.system": lambda marker: HostileCall(os.system, (f"touch {marker}",)),
    "builtins.eval": lambda marker: HostileCall(eval, (f"open({str(marker)!r}, 'w').close()",)),
    "subprocess.check_call": lambda marker: HostileCall(subprocess.check_call, (["touch", str(marker)],)),
}


@pytest.fixture(params=sorted(_HOSTILE_CALLS))
def hostile_call(request, tmp_path) -> HostileCall:
    """A ``HostileCall`` whose unpickling would create ``tmp_path / "marker"``."""
    return _HOSTILE_CALLS[request.param](tmp_path / "marker")


@pytest.fixture(scope="session")
def import_pairs():
    """``import_pairs(format, inputs, output_dir, **kwargs)``: ``import_captions`` into split "train" (unless
    given) with the fast ``WordParser`` instead of spaCy."""

    def run(format, inputs, output_dir, **kwargs):
        kwargs.setdefault("split", "train")
        return import_captions(format, inputs, output_dir, parser_factory=WordParser, **kwargs)

    return run


@pytest.fixture(scope="session")
def region_images() -> list[dict]:
    """Three images of 2, 1 and 3 regions: ``image_id``, ``width``, ``height``, float32 ``boxes`` (R, 4)
    and ``features`` (R, 2048)."""
    rng = np.random.default_rng(1)
    return [
        {
            "image_id": image_id,
            "width": 320 + n,
            "height": 240 - n,
            "boxes": (rng.random((regions, 4)) * 200).astype(np.float32),
            "features": rng.random((regions, 2048)).astype(np.float32),
        }
        for n, (image_id, regions) in enumerate((("201", 2), ("202", 1), ("203", 3)))
    ]


def _base64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array)).decode()


def _write_feature_tsv(path, images):
    """bottom-up attention's six-field TSV."""
    rows = (
        [i["image_id"], i["width"], i["height"], len(i["boxes"]), _base64(i["boxes"]), _base64(i["features"])]
        for i in images
    )
    path.write_text("".join("\t".join(map(str, row)) + "\n" for row in rows))
    return path


def _vilbert_multi_task_row(image) -> dict:
    return {
        "image_id": image["image_id"],
        "image_h": image["height"],
        "image_w": image["width"],
        "num_boxes": len(image["boxes"]),
        "boxes": image["boxes"],
        "features": image["features"],
    }


def _write_feature_lmdb(path, images, keys=True):
    """vilbert-multi-task's ``convert_to_lmdb.py`` layout: pickled rows and, unless ``keys`` is false, the
    pickled list of their keys under ``keys``."""
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for image in images:
            txn.put(image["image_id"].encode(), pickle.dumps(_vilbert_multi_task_row(image)))
        if keys:
            txn.put(b"keys", pickle.dumps([image["image_id"].encode() for image in images]))
    env.close()
    return path


def _write_feature_npy(path, images, num_boxes=None):
    """vilbert-multi-task's extractor layout: one ``np.save`` of a dict per image in the folder ``path``;
    ``num_boxes`` (image id -> count) overrides the saved ``num_boxes``."""
    path.mkdir(parents=True, exist_ok=True)
    for image in images:
        record = {
            "bbox": image["boxes"],
            "num_boxes": (num_boxes or {}).get(image["image_id"], len(image["boxes"])),
            "image_width": image["width"],
            "image_height": image["height"],
            "image_id": image["image_id"],
            "features": image["features"],
        }
        np.save(path / f"{image['image_id']}.npy", record)
    return path


@pytest.fixture(scope="session")
def feature_writers() -> dict:
    """Writers of valid feature inputs by ``--format``: ``writer(path, images, ...)`` returns the input path
    (a TSV file, an LMDB folder, or a folder of ``.npy`` files)."""
    return {"tsv": _write_feature_tsv, "lmdb": _write_feature_lmdb, "npy": _write_feature_npy}
