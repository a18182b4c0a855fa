"""Fixtures of the fine-tuning tests: a saved pretraining model and a batch of encoder inputs."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def pair_inputs(batch_factory, encoder_inputs):
    """The encoder inputs of a test batch (padding on both streams), without pretraining targets."""

    def build(config, batch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
        full = batch_factory(config, batch=batch, seed=seed)
        inputs = encoder_inputs(full)
        inputs.pop("masked_regions")  # fine-tuning masks no region
        return inputs

    return build


@pytest.fixture
def saved_pretraining_model(pretraining_model, tmp_path):
    """A pretraining model of a config, saved with ``save_pretrained``: (model, directory)."""

    def save(config):
        model = pretraining_model(config)
        model.save_pretrained(tmp_path / "hf_model")
        return model, tmp_path / "hf_model"

    return save


@pytest.fixture(scope="session")
def tokenizer():
    """The default offline BERT uncased tokenizer the importers use."""
    from ernievil_ds.data import load_tokenizer

    return load_tokenizer()
