"""VQA answer normalisation and accuracy, and the task metrics, on hand-checked cases."""

from __future__ import annotations

import pytest
import torch

from ernievil_ds.finetuning.metrics import (
    choice_probabilities,
    referring_expression_correct,
    retrieval_recalls,
    vcr_accuracies,
    vqa_soft_accuracy,
)
from ernievil_ds.finetuning.vqa_answers import normalize_vqa_answer, vqa_answer_accuracy


@pytest.mark.parametrize(
    ("answer", "normalised"),
    [
        ("Two", "2"),
        ("the cat", "cat"),
        ("A Red Ball", "red ball"),
        ("dont", "don't"),
        ("yes.", "yes"),
        ("2.", "2"),
        ("1.5", "1.5"),
        ("a.m.", "am"),
        ("hello-world", "hello world"),
        ("red, blue", "red blue"),
        ("what?", "what"),
        ("1,000", "1000"),
        ("left / right", "left right"),
        ("  none\tat all\n", "0 at all"),
    ],
)
def test_normalize_vqa_answer(answer, normalised):
    assert normalize_vqa_answer(answer) == normalised


def test_vqa_answer_accuracy_averages_over_the_left_out_human():
    humans = ["two"] * 3 + ["three"] * 7
    # "2": three matches; leaving out one of them leaves 2 -> 2/3, leaving out another leaves 3 -> 1.
    assert vqa_answer_accuracy("2", humans) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    assert vqa_answer_accuracy("Three", humans) == pytest.approx(1.0)
    assert vqa_answer_accuracy("four", humans) == 0.0
    assert vqa_answer_accuracy("two", ["two"] + ["one"] * 9) == pytest.approx(9 * (1 / 3) / 10)


def test_vqa_soft_accuracy_scores_the_argmax_answer():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 1.0]])
    scores = torch.tensor([[1.0, 0.6, 0.0], [0.0, 1.0, 0.3]])
    assert vqa_soft_accuracy(logits, scores).tolist() == pytest.approx([0.6, 0.0])


def test_vcr_accuracies_count_both_right_for_q2ar():
    answer_logits = torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 3.0]])
    rationale_logits = torch.tensor([[0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 3.0]])
    result = vcr_accuracies(answer_logits, torch.tensor([0, 1, 2]), rationale_logits, torch.tensor([1, 0, 3]))
    assert result == pytest.approx({"q2a": 2 / 3, "qa2r": 2 / 3, "q2ar": 1 / 3})


def test_choice_probabilities_are_the_softmax_over_choices():
    probabilities = choice_probabilities(torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]))
    assert probabilities[0].tolist() == pytest.approx([0.25] * 4)
    e = 2.718281828459045
    assert probabilities[1].tolist() == pytest.approx([1 / (3 + e), e / (3 + e), 1 / (3 + e), 1 / (3 + e)])


def test_referring_expression_accuracy_excludes_img_and_padding():
    # Example 0: [IMG] scores highest but does not count; region 1 (IoU 0.7) is the best real one.
    # Example 1: padded region 2 scores highest but is padding; region 0 (IoU 0.3) is picked: a miss.
    # Example 2: region 2 has IoU exactly 0.5: a hit.
    logits = torch.tensor([[9.0, 0.0, 1.0, -1.0], [0.0, 2.0, 1.0, 5.0], [0.0, 0.0, 0.0, 1.0]])
    ious = torch.tensor([[0.1, 0.7, 0.9], [0.3, 0.8, 0.9], [0.9, 0.9, 0.5]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]])
    assert referring_expression_correct(logits, ious, mask).tolist() == [True, False, True]


def test_retrieval_recalls_with_ties_counted_against_the_model():
    scores = torch.tensor(
        [
            [0.9, 0.5, 0.1],  # caption 0 (image 0): rank 0
            [0.2, 0.8, 0.3],  # caption 1 (image 0): two wrong images above, rank 2
            [0.5, 0.5, 0.1],  # caption 2 (image 1): tied with a wrong image, rank 1
            [0.4, 0.4, 0.4],  # caption 3 (image 2): tied with two, rank 2
        ]
    )
    recalls = retrieval_recalls(scores, torch.tensor([0, 0, 1, 2]), ks=(1, 2, 3))
    # Text retrieval: image 0's best caption (0.9) leads; image 1's caption (0.5) has captions 0 (0.5, a
    # tie) and 1 (0.8) ahead; image 2's caption (0.4) leads its column.
    assert recalls == pytest.approx(
        {
            "image_r@1": 1 / 4,
            "image_r@2": 2 / 4,
            "image_r@3": 1.0,
            "text_r@1": 2 / 3,
            "text_r@2": 2 / 3,
            "text_r@3": 1.0,
        }
    )


def test_retrieval_recalls_need_a_caption_for_every_image():
    with pytest.raises(ValueError, match="image column 1 has no caption"):
        retrieval_recalls(torch.zeros(2, 2), torch.tensor([0, 0]))
