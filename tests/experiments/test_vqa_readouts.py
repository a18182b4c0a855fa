"""experiments/vqa_readouts.py: each readout's head input against one built by hand from the encoder's
outputs in float64 (the region sum region by region, padding skipped), and what a frozen encoder trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "vqa_readouts.py"


@pytest.fixture(scope="module")
def vqa_readouts():
    return load_script(SCRIPT, "vqa_readouts")


@pytest.fixture
def inputs(tiny_config, batch_factory, encoder_inputs):
    """Fine-tuning inputs of three examples, the third with two padded regions."""
    tiny_config.id2label = {i: f"answer {i}" for i in range(5)}
    batch = encoder_inputs(batch_factory(tiny_config))
    batch.pop("masked_regions")  # fine-tuning masks no region
    assert batch["region_mask"][2].tolist().count(0) == 2
    return batch


def readout_by_hand(model, readout: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The head's input from the plain encoder's outputs: (B, width * Co)."""
    outputs = model.ernievil(**inputs)
    fused = outputs.pooled_text * outputs.pooled_image
    if readout == "concat":
        return torch.cat([outputs.pooled_text, outputs.pooled_image, fused], dim=-1)
    sums = []
    for b in range(fused.shape[0]):
        total = torch.zeros_like(fused[b])
        for r in torch.nonzero(inputs["region_mask"][b]).flatten().tolist():
            region = torch.relu(model.region_projection(outputs.image_hidden_states[b, r + 1]))  # after [IMG]
            gate = torch.sigmoid(model.region_gate(outputs.pooled_text[b] * region))
            total = total + gate * region
        sums.append(total)
    return torch.cat([fused, torch.stack(sums)], dim=-1)


@pytest.mark.parametrize("readout", ["concat", "region-sum"])
def test_the_head_reads_the_readout_built_by_hand(vqa_readouts, tiny_config, inputs, readout):
    torch.manual_seed(0)
    model = vqa_readouts.readout_model(readout, freeze_encoder=False)(tiny_config).double().eval()
    width = vqa_readouts.READOUT_WIDTHS[readout] * tiny_config.co_hidden_size
    assert model.classifier[0].in_features == width
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    with torch.no_grad():
        expected = model.classifier(readout_by_hand(model, readout, inputs))  # (B, A)
        logits = model(**inputs).logits
    assert logits.shape == (3, 5)
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("loaded", [False, True], ids=["built", "loaded"])
def test_a_frozen_encoder_trains_the_poolers_and_the_head_only(
    vqa_readouts, tiny_config, inputs, tmp_path, loaded
):
    model_class = vqa_readouts.readout_model("fused", freeze_encoder=True)
    model = model_class(tiny_config)
    if loaded:  # from_pretrained marks what it loads trainable
        model.save_pretrained(tmp_path)
        model = model_class.from_pretrained(tmp_path)
    labels = torch.zeros(3, 5)
    labels[:, 1] = 1.0
    model(**inputs, labels=labels).loss.backward()
    trained = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert {name.split(".")[1] for name in trained if name.startswith("ernievil.")} == {
        "text_pooler",
        "image_pooler",
    }
    assert any(name.startswith("classifier.") for name in trained)
    assert "ernievil.text_embeddings.word_embeddings.weight" in frozen and not frozen & trained


def test_another_task_is_refused(vqa_readouts, tmp_path, capsys):
    with pytest.raises(SystemExit):
        vqa_readouts.main(
            ["--readout", "concat", "--", "--task", "vqa", "--output-dir", str(tmp_path / "run")]
        )
    assert "synth_qa only" in capsys.readouterr().err
