"""Shared fixtures: the default tokenizer and one small SynthScenes directory per test session."""

from __future__ import annotations

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
