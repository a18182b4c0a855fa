"""Text-stream initialisation from the all-MiniLM-L6-v2 BERT checkpoint shipped in a registry package."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import AutoModelForPreTraining, BertModel

from ernievil_ds import ErnieVilConfig, ErnieVilForPreTraining
from ernievil_ds.assets import minilm_dir
from ernievil_ds.text_init import init_text_stream_from_bert


@pytest.fixture(scope="module")
def bert_dir():
    try:
        return minilm_dir()
    except FileNotFoundError as error:
        pytest.skip(str(error))


def test_text_stream_equals_bert_before_the_first_co_layer(bert_dir):
    torch.manual_seed(0)
    config = ErnieVilConfig.from_preset("small")
    model = AutoModelForPreTraining.from_config(config).eval()
    report = init_text_stream_from_bert(model, bert_dir)
    bert = BertModel.from_pretrained(bert_dir).eval()

    input_ids = torch.randint(1000, 29000, (2, 11))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 7:] = 0
    with torch.no_grad():
        ours = model.ernievil(
            input_ids,
            torch.randn(2, 5, 2048),
            attention_mask=attention_mask,
            region_locations=torch.rand(2, 5, 5),
            output_hidden_states=True,
        ).all_text_hidden_states
        theirs = bert(input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
    real = attention_mask.bool()
    first_co_layer = config.text_co_layer_ids[0]
    for i in range(first_co_layer + 1):  # embeddings, then text layers 0 .. first_co_layer - 1
        torch.testing.assert_close(ours[i][real], theirs[i][real], atol=1e-5, rtol=1e-5)

    assert "text_layers.2.output.LayerNorm.weight" in report.loaded
    # The checkpoint's layers 3-5 have no place in the three-layer text stream.
    assert "encoder.layer.5.output.LayerNorm.weight" in report.ignored
    assert f"and {len(report.ignored) - 4} more" in report.summary()  # 51 names, abbreviated
    assert "text_embeddings.word_embeddings.weight" in report.loaded
    assert any(name.startswith("co_layers.") for name in report.not_initialised)
    assert any(name.startswith("image_layers.") for name in report.not_initialised)
    assert "pooler.dense.weight" in report.ignored
    # The masked-token decoder is tied to the word embeddings, so it now holds BERT's vocabulary matrix.
    torch.testing.assert_close(model.token_head.decoder.weight, bert.embeddings.word_embeddings.weight)


def test_a_checkpoint_of_another_shape_is_refused_with_the_differences_named(bert_dir):
    model = ErnieVilForPreTraining(ErnieVilConfig.from_preset("tiny"))
    with pytest.raises(ValueError, match=r"hidden_size: checkpoint 384 vs model 32"):
        init_text_stream_from_bert(model, bert_dir)
    deeper = AutoModelForPreTraining.from_config(ErnieVilConfig.from_preset("small", num_hidden_layers=7))
    with pytest.raises(ValueError, match=r"num_hidden_layers: checkpoint 6 < model 7"):
        init_text_stream_from_bert(deeper, bert_dir)


def test_missing_checkpoint_files(tmp_path, bert_dir):
    model = AutoModelForPreTraining.from_config(ErnieVilConfig.from_preset("small"))
    with pytest.raises(FileNotFoundError, match=r"config\.json does not exist"):
        init_text_stream_from_bert(model, tmp_path)
    shutil.copy(bert_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match=r"neither model\.safetensors nor pytorch_model\.bin"):
        init_text_stream_from_bert(model, tmp_path)
