"""Each fine-tuning loss against a float64 computation written out element by element."""

from __future__ import annotations

import math

import pytest
import torch

from ernievil_ds.finetuning.losses import (
    circle_loss,
    multiple_choice_loss,
    referring_expression_loss,
    retrieval_loss,
    soft_iou_targets,
    vqa_loss,
    vqa_softmax_loss,
)


def bce(logit: float, target: float) -> float:
    p = 1.0 / (1.0 + math.exp(-logit))
    return -(target * math.log(p) + (1.0 - target) * math.log(1.0 - p))


def test_vqa_loss_sums_over_answers_and_averages_over_questions():
    logits = [[0.5, -1.0, 2.0], [0.0, 3.0, -0.5]]
    scores = [[1.0, 0.3, 0.0], [0.0, 0.6, 0.9]]
    expected = sum(sum(bce(x, y) for x, y in zip(row, t)) for row, t in zip(logits, scores)) / 2
    assert vqa_loss(torch.tensor(logits), torch.tensor(scores)).item() == pytest.approx(expected, rel=1e-6)


def test_question_weights_scale_each_questions_loss_in_the_batch_mean():
    """Weights 3 and 0.5: the mean of 3 x row 0's loss and 0.5 x row 1's, for both VQA losses."""
    logits = [[0.5, -1.0, 2.0], [0.0, 3.0, -0.5]]
    scores = [[1.0, 0.0, 0.0], [0.0, 0.6, 0.0]]
    weights = [3.0, 0.5]
    sigmoid_rows = [sum(bce(x, y) for x, y in zip(row, t)) for row, t in zip(logits, scores)]
    softmax_rows = [
        -(row[t.index(max(t))] - math.log(sum(math.exp(x) for x in row))) for row, t in zip(logits, scores)
    ]
    tensors = [torch.tensor(v, dtype=torch.float64) for v in (logits, scores, weights)]
    for loss, rows in ((vqa_loss, sigmoid_rows), (vqa_softmax_loss, softmax_rows)):
        expected = sum(w * r for w, r in zip(weights, rows)) / 2
        assert loss(*tensors).item() == pytest.approx(expected, rel=1e-12)
        assert loss(*tensors[:2]).item() == pytest.approx(sum(rows) / 2, rel=1e-12)


def test_vqa_softmax_loss_is_the_cross_entropy_against_the_scores_made_a_distribution():
    """Row 0 scores two answers (targets 1/1.3 and 0.3/1.3); row 1 scores none and adds zero to the mean."""
    logits = [[0.5, -1.0, 2.0], [0.0, 3.0, -0.5]]
    scores = [[1.0, 0.3, 0.0], [0.0, 0.0, 0.0]]
    log_z = math.log(sum(math.exp(x) for x in logits[0]))
    expected = -((1.0 / 1.3) * (0.5 - log_z) + (0.3 / 1.3) * (-1.0 - log_z)) / 2
    result = vqa_softmax_loss(
        torch.tensor(logits, dtype=torch.float64), torch.tensor(scores, dtype=torch.float64)
    )
    assert result.item() == pytest.approx(expected, rel=1e-12)


def test_multiple_choice_loss_is_a_sigmoid_per_choice():
    logits, labels = [[1.0, -0.5, 0.2, 0.0], [-2.0, 0.3, 0.1, 1.5]], [2, 3]
    terms = [bce(x, float(c == label)) for row, label in zip(logits, labels) for c, x in enumerate(row)]
    result = multiple_choice_loss(torch.tensor(logits), torch.tensor(labels))
    assert result.item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)


def test_soft_iou_targets_zero_below_one_half():
    ious = torch.tensor([0.0, 0.49, 0.5, 0.93])
    assert soft_iou_targets(ious).tolist() == pytest.approx([0.0, 0.0, 0.5, 0.93])


def test_referring_expression_loss_is_normalised_by_the_real_regions():
    logits = [[0.1, 2.0, -1.0, 5.0], [-0.3, 0.4, 1.2, 0.0]]
    targets = [[0.6, 0.9, 0.0, 0.0], [0.0, 0.0, 0.7, 0.0]]
    mask = [[1, 1, 1, 0], [1, 1, 1, 1]]  # the last region of the first example is padding
    terms = [bce(x, y) for lr, tr, mr in zip(logits, targets, mask) for x, y, m in zip(lr, tr, mr) if m]
    result = referring_expression_loss(torch.tensor(logits), torch.tensor(targets), torch.tensor(mask))
    assert result.item() == pytest.approx(sum(terms) / 7, rel=1e-6)


def circle_reference(positive: list[float], negative: list[float], margin: float, scale: float) -> float:
    """log(1 + sum_n exp(s a_n (s_n - m)) * sum_p exp(-s a_p (s_p - 1 + m))), as in the paper."""
    sum_p = sum(math.exp(-scale * max(1 + margin - sp, 0) * (sp - (1 - margin))) for sp in positive)
    sum_n = sum(math.exp(scale * max(sn + margin, 0) * (sn - margin)) for sn in negative)
    return math.log(1 + sum_n * sum_p)


@pytest.mark.parametrize("scale", [1.0, 32.0])
def test_circle_loss_matches_the_formula(scale):
    positive = [[0.8], [0.35]]
    negative = [[0.1, 0.6, 0.95], [0.2, 0.05, 0.4]]
    expected = sum(circle_reference(p, n, 0.3, scale) for p, n in zip(positive, negative)) / 2
    result = circle_loss(
        torch.tensor(positive, dtype=torch.float64), torch.tensor(negative, dtype=torch.float64), 0.3, scale
    )
    assert result.item() == pytest.approx(expected, rel=1e-10)


def test_circle_loss_weights_carry_no_gradient():
    """d/ds_p of the loss holds a_p constant: it is -s a_p * sigmoid(z) for one positive and one negative."""
    positive = torch.tensor([[0.4]], dtype=torch.float64, requires_grad=True)
    negative = torch.tensor([[0.5]], dtype=torch.float64)
    circle_loss(positive, negative, 0.3, 2.0).backward()
    a_p, a_n = 1 + 0.3 - 0.4, 0.5 + 0.3
    z = -2.0 * a_p * (0.4 - 0.7) + 2.0 * a_n * (0.5 - 0.3)
    assert positive.grad.item() == pytest.approx(-2.0 * a_p / (1 + math.exp(-z)), rel=1e-10)


def test_retrieval_loss_averages_the_two_halves_of_the_negatives():
    logits = torch.tensor([[1.5, -0.5, 0.3, 2.0, -1.0]], dtype=torch.float64)
    scores = [1 / (1 + math.exp(-x)) for x in logits[0].tolist()]
    expected = (
        circle_reference(scores[:1], scores[1:3], 0.3, 32.0)
        + circle_reference(scores[:1], scores[3:], 0.3, 32.0)
    ) / 2
    assert retrieval_loss(logits).item() == pytest.approx(expected, rel=1e-10)


def test_retrieval_loss_refuses_an_odd_number_of_negatives():
    with pytest.raises(ValueError, match="even number of negatives"):
        retrieval_loss(torch.zeros(2, 4))
