"""transformers save/load round trips, in this process and in a fresh one with no network."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file
from transformers import AutoModelForPreTraining


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
    batch = batch_factory(config)
    with torch.no_grad():
        expected = model.ernievil(
            **{
                k: batch[k]
                for k in ("input_ids", "attention_mask", "region_features", "region_boxes", "image_sizes")
            }
        ).pooled_output
    torch.save({k: batch[k] for k in batch}, tmp_path / "batch.pt")
    torch.save(expected, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import torch
        import ernievil_ds  # registers the Auto classes
        from transformers import AutoModel, AutoModelForPreTraining
        path = {str(tmp_path)!r}
        batch = torch.load(path + "/batch.pt", weights_only=True)
        model = AutoModel.from_pretrained(path).eval()
        assert type(model).__name__ == {type(model.ernievil).__name__!r}, type(model)
        keys = ("input_ids", "attention_mask", "region_features", "region_boxes", "image_sizes")
        with torch.no_grad():
            pooled = model(**{{k: batch[k] for k in keys}}).pooled_output
        assert torch.equal(pooled, torch.load(path + "/expected.pt", weights_only=True))
        full = AutoModelForPreTraining.from_pretrained(path)
        assert type(full).__name__ == {type(model).__name__!r}, type(full)
        print("OK")
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
