"""The fine-tuning models on both encoders: output shapes, losses wired to the heads, loading the encoder
of a saved pretraining model, and save/load through the Auto classes."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForMultipleChoice, AutoModelForVisualQuestionAnswering

from ernievil_ds.finetuning import (
    ErnieVilForImageTextRetrieval,
    ErnieVilForMultipleChoice,
    ErnieVilForReferringExpressions,
    ErnieVilForVisualQuestionAnswering,
)
from ernievil_ds.finetuning.losses import referring_expression_loss, vqa_loss, vqa_softmax_loss


def with_group_axis(inputs: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """Every input repeated ``size`` times along a new second axis: (B, ...) -> (B, size, ...)."""
    return {name: t[:, None].expand(-1, size, *t.shape[1:]).contiguous() for name, t in inputs.items()}


def test_vqa_head_shapes_and_loss(config, pair_inputs):
    config.id2label = {i: f"answer {i}" for i in range(7)}
    model = ErnieVilForVisualQuestionAnswering(config).eval()
    labels = torch.zeros(3, 7)
    labels[0, 2], labels[1, 5] = 1.0, 0.3
    outputs = model(**pair_inputs(config), labels=labels)
    assert outputs.logits.shape == (3, 7)
    assert outputs.loss.shape == () and torch.isfinite(outputs.loss)
    outputs.loss.backward()
    assert model.ernievil.text_embeddings.word_embeddings.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("problem_type", "loss"),
    [
        (None, vqa_loss),
        ("multi_label_classification", vqa_loss),
        ("single_label_classification", vqa_softmax_loss),
    ],
)
def test_the_vqa_loss_follows_the_configs_problem_type_through_save_and_load(
    tiny_config, pair_inputs, tmp_path, problem_type, loss
):
    tiny_config.id2label = {i: f"answer {i}" for i in range(4)}
    tiny_config.problem_type = problem_type
    labels = torch.tensor([[1.0, 0, 0, 0], [0, 0.3, 0.6, 0], [0, 0, 0, 1.0]])
    ErnieVilForVisualQuestionAnswering(tiny_config).save_pretrained(tmp_path)
    reloaded = ErnieVilForVisualQuestionAnswering.from_pretrained(tmp_path).eval()
    assert reloaded.config.problem_type == problem_type
    outputs = reloaded(**pair_inputs(tiny_config), labels=labels)
    torch.testing.assert_close(outputs.loss, loss(outputs.logits, labels))
    weights = torch.tensor([4.0, 1.0, 0.5])
    weighted = reloaded(**pair_inputs(tiny_config), labels=labels, question_weights=weights)
    torch.testing.assert_close(weighted.loss, loss(weighted.logits, labels, weights))


def test_a_vqa_model_refuses_a_problem_type_without_a_vqa_loss(tiny_config):
    tiny_config.id2label = {0: "yes", 1: "no"}
    tiny_config.problem_type = "regression"
    with pytest.raises(ValueError, match="problem_type"):
        ErnieVilForVisualQuestionAnswering(tiny_config)


def test_multiple_choice_scores_each_choice_as_its_own_pair(config, pair_inputs):
    """Choice c of question b scores as the pair (b, c) alone would: the choices axis is flattened right."""
    model = ErnieVilForMultipleChoice(config).eval()
    inputs = with_group_axis(pair_inputs(config), 4)
    inputs["input_ids"][:, 1:, 1] = 1999  # the choices differ in one token
    outputs = model(**inputs, labels=torch.tensor([0, 3, 1]), task="qa2r")
    assert outputs.logits.shape == (3, 4) and torch.isfinite(outputs.loss)
    alone = model(**{name: t[2:3, 1:2] for name, t in inputs.items()}, task="qa2r").logits
    torch.testing.assert_close(alone[0, 0], outputs.logits[2, 1])
    with pytest.raises(ValueError, match="unknown"):
        model(**inputs, task="q2r")


def test_referring_expression_head_scores_every_region(config, pair_inputs):
    model = ErnieVilForReferringExpressions(config).eval()
    inputs = pair_inputs(config)  # example 2 has two padded regions
    labels = torch.rand(3, 7)
    outputs = model(**inputs, labels=labels)
    assert outputs.logits.shape == (3, 7)  # 6 regions and [IMG]
    keep = torch.cat([torch.ones(3, 1, dtype=torch.long), inputs["region_mask"]], dim=1)
    torch.testing.assert_close(outputs.loss, referring_expression_loss(outputs.logits, labels, keep))


def test_retrieval_groups_score_as_their_pairs(config, pair_inputs):
    model = ErnieVilForImageTextRetrieval(config).eval()
    inputs = pair_inputs(config)
    pair_logits = model(**inputs).logits
    assert pair_logits.shape == (3,)
    groups = {name: t.view(1, 3, *t.shape[1:]) for name, t in inputs.items()}  # one group of 1 + 2 pairs
    grouped = model(**groups, return_loss=True)
    assert grouped.logits.shape == (1, 3) and torch.isfinite(grouped.loss)
    torch.testing.assert_close(grouped.logits[0], pair_logits)
    with pytest.raises(ValueError, match="needs groups"):
        model(**inputs, return_loss=True)


@pytest.mark.parametrize(
    "model_class",
    [ErnieVilForVisualQuestionAnswering, ErnieVilForMultipleChoice, ErnieVilForReferringExpressions],
)
def test_from_pretrained_loads_the_pretrained_encoder(config, saved_pretraining_model, model_class):
    pretrained, directory = saved_pretraining_model(config)
    model = model_class.from_pretrained(directory)
    assert type(model.ernievil) is type(pretrained.ernievil)  # the grounded encoder for a grounded config
    expected = pretrained.ernievil.state_dict()
    loaded = model.ernievil.state_dict()
    assert loaded.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize(
    ("auto_class", "model_class"),
    [
        (AutoModelForVisualQuestionAnswering, ErnieVilForVisualQuestionAnswering),
        (AutoModelForMultipleChoice, ErnieVilForMultipleChoice),
    ],
)
def test_save_load_round_trip_through_the_auto_classes(
    tiny_config, pair_inputs, tmp_path, auto_class, model_class
):
    tiny_config.id2label = {0: "red", 1: "blue"}
    model = model_class(tiny_config).eval()
    model.save_pretrained(tmp_path)
    reloaded = auto_class.from_pretrained(tmp_path).eval()
    assert type(reloaded) is model_class and reloaded.config.id2label == {0: "red", 1: "blue"}
    inputs = pair_inputs(tiny_config)
    if model_class is ErnieVilForMultipleChoice:
        inputs = with_group_axis(inputs, 2)
    torch.testing.assert_close(reloaded(**inputs).logits, model(**inputs).logits)


def test_fused_vector_dropout_is_the_configs_attention_dropout_for_vqa_and_vcr_only(config, pair_inputs):
    """The official ``get_match_score`` drops the fused vector at ``attention_probs_dropout_prob`` for VQA
    and VCR and not for retrieval: at rate 1 the VQA classifier and the VCR scorer see a zero vector (only
    the fused-vector dropout is put in training mode), and retrieval has no dropout outside the encoder."""
    config.attention_probs_dropout_prob = 1.0
    config.id2label = {i: f"answer {i}" for i in range(7)}
    inputs = pair_inputs(config)
    vqa = ErnieVilForVisualQuestionAnswering(config).eval()
    vqa.fused_dropout.train()
    zero = torch.zeros(3, config.co_hidden_size)
    torch.testing.assert_close(vqa(**inputs).logits, vqa.classifier(zero))

    vcr = ErnieVilForMultipleChoice(config).eval()
    vcr.fused_dropout.train()
    scores = vcr(**with_group_axis(inputs, 4), task="q2a").logits  # (3, 4)
    torch.testing.assert_close(scores, vcr.choice_scorers["q2a"].bias.expand(3, 4))

    retrieval = ErnieVilForImageTextRetrieval(config)
    head_dropouts = [
        name
        for name, module in retrieval.named_modules()
        if isinstance(module, torch.nn.Dropout) and not name.startswith("ernievil.")
    ]
    assert head_dropouts == []
