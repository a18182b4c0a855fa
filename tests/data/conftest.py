"""Shared fixtures: the default tokenizer, one small SynthScenes directory per test session, and the
payloads of hostile pickles."""

from __future__ import annotations

import os
import subprocess

import pytest

from ernievil_ds.data import build_synth_scenes, load_tokenizer


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
