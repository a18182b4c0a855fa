"""transformers save/load round trips, in this process and in a fresh one with no network."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from transformers import AutoModelForPreTraining

from tests.conftest import assert_loads_in_fresh_process


def test_safetensors_round_trip_reproduces_outputs_exactly(
    tmp_path, config, batch_factory, pretraining_model
):
    model = pretraining_model(config).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert "token_head.decoder.weight" not in load_file(tmp_path / "model.safetensors")  # tied, stored once
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    batch = batch_factory(config)
    with torch.no_grad():
        a, b = model(**batch), loaded(**batch)
    for name in ("loss", "masked_token_logits", "masked_region_logits", "itm_logits"):
        assert torch.equal(a[name], b[name]), name
    assert loaded.token_head.decoder.weight is loaded.ernievil.text_embeddings.word_embeddings.weight


def test_automodel_loads_a_saved_model_in_a_fresh_process(tmp_path, config, batch_factory, pretraining_model):
    model = pretraining_model(config).eval()
    model.save_pretrained(tmp_path)
    assert_loads_in_fresh_process(tmp_path, model, batch_factory(config))
