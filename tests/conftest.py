"""Shared fixtures: the test-size presets (the paper's architecture and the grounded variant), a random
batch in the collator's format, and the model built from a config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForPreTraining

from ernievil_ds import ErnieVilConfig

#: The encoder's own inputs among a batch's keys.
ENCODER_KEYS = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "region_features",
    "region_boxes",
    "image_sizes",
    "region_mask",
    "masked_regions",
)


@pytest.fixture(autouse=True, scope="session")
def private_data_cache(tmp_path_factory):
    """The built-in data cache (``$ERNIEVIL_DS_CACHE``) in a folder of the test run's own: what a user's
    ``~/.cache/ernievil_ds`` holds never changes an outcome, as on a machine that has never run the project."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ERNIEVIL_DS_CACHE", str(tmp_path_factory.mktemp("ernievil_ds_cache")))
        yield


def preset_config(preset: str) -> ErnieVilConfig:
    return ErnieVilConfig.from_preset(preset, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(params=["tiny", "tiny-grounded"])
def config(request) -> ErnieVilConfig:
    """Each test-size preset in turn, without dropout: the paper's architecture and the grounded variant."""
    return preset_config(request.param)


@pytest.fixture
def tiny_config() -> ErnieVilConfig:
    """The paper's architecture at test size, without dropout."""
    return preset_config("tiny")


@pytest.fixture
def grounded_config() -> ErnieVilConfig:
    """The grounded variant at test size, without dropout."""
    return preset_config("tiny-grounded")


def make_batch(
    config: ErnieVilConfig, batch: int = 3, text_len: int = 9, num_regions: int = 6, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A pretraining batch with padding on both streams and every task of ``config``'s model present.

    Example 1 has 3 padded text positions and example 2 has 2 padded regions. For a grounded config,
    regions 0 and 2 of example 0 and region 3 of example 2 have grounding targets.
    """
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1000, 2000, (batch, text_len), generator=g)
    attention_mask = torch.ones(batch, text_len, dtype=torch.long)
    attention_mask[1, -3:] = 0
    region_mask = torch.ones(batch, num_regions, dtype=torch.long)
    region_mask[2, -2:] = 0
    width, height = 640.0, 480.0
    xy = torch.rand(batch, num_regions, 2, generator=g) * torch.tensor([width, height]) * 0.5
    wh = torch.rand(batch, num_regions, 2, generator=g) * torch.tensor([width, height]) * 0.5
    labels = torch.full((batch, text_len), -100)
    task_ids = torch.full((batch, text_len), -100)
    for b, (pos, task) in enumerate([(1, 0), (2, 1), (3, 2)][:batch]):
        labels[b, pos], task_ids[b, pos] = input_ids[b, pos], task
        labels[b, 4], task_ids[b, 4] = input_ids[b, 4], 3
    masked_regions = torch.zeros(batch, num_regions, dtype=torch.bool)
    masked_regions[:, 1] = True
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "region_features": torch.randn(batch, num_regions, config.v_feature_size, generator=g),
        "region_boxes": torch.cat([xy, xy + wh], dim=-1),
        "image_sizes": torch.tensor([[width, height]] * batch),
        "region_mask": region_mask,
        "masked_regions": masked_regions,
        "region_class_targets": torch.softmax(
            torch.randn(batch, num_regions, config.num_region_classes, generator=g), -1
        ),
        "labels": labels,
        "task_ids": task_ids,
        "itm_labels": torch.tensor([1, 0, 1][:batch]),
    }
    if getattr(config, "grounding_co_layers", None):
        targets = torch.full((batch, num_regions), -100)
        for b, r, position in [(0, 0, 5), (0, 2, 2), (2, 3, 7)]:
            if b < batch:
                targets[b, r] = position
        inputs["region_word_targets"] = targets
    return inputs


@pytest.fixture
def batch_factory():
    return make_batch


@pytest.fixture
def encoder_inputs():
    """The encoder's inputs of a pretraining batch."""
    return lambda batch: {key: batch[key] for key in ENCODER_KEYS}


@pytest.fixture
def pretraining_model():
    """The pretraining model of a config (the grounded variant's class for a grounded config), seeded."""

    def build(config: ErnieVilConfig, seed: int = 0):
        torch.manual_seed(seed)
        return AutoModelForPreTraining.from_config(config)

    return build


def assert_loads_in_fresh_process(path: Path, model, batch: dict[str, torch.Tensor]) -> None:
    """A new Python, with no network, loads the model saved in ``path`` through the Auto classes (after
    ``import ernievil_ds``): ``AutoModel`` gives the encoder of ``model``, whose pooled output on ``batch``
    equals ``model``'s exactly, and ``AutoModelForPreTraining`` gives ``model``'s class."""
    keys = ("input_ids", "attention_mask", "region_features", "region_boxes", "image_sizes")
    with torch.no_grad():
        expected = model.eval().ernievil(**{k: batch[k] for k in keys}).pooled_output
    scratch = Path(tempfile.mkdtemp())  # beside, not inside, the model folder
    torch.save({k: batch[k] for k in keys}, scratch / "batch.pt")
    torch.save(expected, scratch / "expected.pt")
    script = textwrap.dedent(
        f"""
        import torch
        import ernievil_ds  # registers the Auto classes
        from transformers import AutoModel, AutoModelForPreTraining
        path, scratch = {str(path)!r}, {str(scratch)!r}
        batch = torch.load(scratch + "/batch.pt", weights_only=True)
        model = AutoModel.from_pretrained(path).eval()
        assert type(model).__name__ == {type(model.ernievil).__name__!r}, type(model)
        with torch.no_grad():
            pooled = model(**batch).pooled_output
        assert torch.equal(pooled, torch.load(scratch + "/expected.pt", weights_only=True))
        full = AutoModelForPreTraining.from_pretrained(path)
        assert type(full).__name__ == {type(model).__name__!r}, type(full)
        print("OK")
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    try:
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
        )
    finally:
        shutil.rmtree(scratch)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
