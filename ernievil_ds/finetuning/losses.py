"""The fine-tuning losses of the four ERNIE-ViL tasks, as the official ``finetune.py`` computed them.

Every loss is computed in float32 (float64 when its inputs are), never in half precision. Shape legend:
B batch, A answers, C choices, R regions including the leading [IMG] region, P positives, K negatives.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ernievil_ds.modeling_ernievil import at_least_float32

#: RefCOCO+ regions whose IoU with the referred box is below this are negatives (targets 0) in training,
#: and an argmax region at or above it is a hit in evaluation.
IOU_THRESHOLD = 0.5
#: Circle-loss relaxation margin and scale of the official Flickr30K conf (``model_conf_flickr``).
CIRCLE_MARGIN = 0.3
CIRCLE_SCALE = 32.0


def _question_mean(per_question: torch.Tensor, question_weights: torch.Tensor | None) -> torch.Tensor:
    """The batch mean of each question's loss times its weight: (B,) and (B,) or None (every weight 1) to a
    scalar. A weight above 1 gives a question type a larger share of the gradient that the types share
    (``docs/design-notes.md``, "What does weighting count's loss do?")."""
    if question_weights is None:
        return per_question.mean()
    return (per_question * question_weights.to(per_question.dtype)).mean()


def vqa_loss(
    logits: torch.Tensor, soft_scores: torch.Tensor, question_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Sigmoid cross-entropy against the VQA soft scores, summed over answers and averaged over the batch
    (each question's sum times its weight, when ``question_weights`` is given).

    Args:
        logits: (B, A) answer scores; soft_scores: (B, A) each answer's VQA accuracy in [0, 1];
        question_weights: (B,) or None.
    """
    per_answer = F.binary_cross_entropy_with_logits(
        at_least_float32(logits), at_least_float32(soft_scores), reduction="none"
    )  # (B, A)
    return _question_mean(per_answer.sum(-1), question_weights)


def vqa_softmax_loss(
    logits: torch.Tensor, soft_scores: torch.Tensor, question_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Softmax cross-entropy against the VQA soft scores made a distribution per question, averaged over
    the batch (each question's times its weight, when ``question_weights`` is given); a question that
    scores no answer of the vocabulary adds zero.

    One softmax over the answers makes them compete: raising the right answer lowers every other. The
    per-answer sigmoids of [`vqa_loss`] learn each answer on its own, and on some pretrained models leave a
    question type at its prior (``docs/design-notes.md``, "Why a softmax loss for synth_qa?").

    Args:
        logits: (B, A) answer scores; soft_scores: (B, A) each answer's VQA accuracy in [0, 1];
        question_weights: (B,) or None.
    """
    soft_scores = at_least_float32(soft_scores)
    targets = soft_scores / soft_scores.sum(-1, keepdim=True).clamp(min=torch.finfo(soft_scores.dtype).tiny)
    per_question = F.cross_entropy(at_least_float32(logits), targets, reduction="none")  # (B,)
    return _question_mean(per_question, question_weights)


def multiple_choice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """VCR's training loss: an independent sigmoid cross-entropy per choice (1 for the right one), averaged
    over all B * C choices.

    Args:
        logits: (B, C) choice scores; labels: (B,) index of the right choice.
    """
    logits = at_least_float32(logits)
    targets = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)  # (B, C)
    return F.binary_cross_entropy_with_logits(logits, targets)


def soft_iou_targets(ious: torch.Tensor, threshold: float = IOU_THRESHOLD) -> torch.Tensor:
    """RefCOCO+ training targets: each region's IoU with the referred box, zeroed below ``threshold``."""
    return torch.where(ious >= threshold, ious, torch.zeros_like(ious))


def referring_expression_loss(
    logits: torch.Tensor, targets: torch.Tensor, region_mask: torch.Tensor
) -> torch.Tensor:
    """Sigmoid cross-entropy of every region's score against its soft IoU target, summed over the real
    regions of the batch and divided by their number.

    Args:
        logits: (B, R) region scores, [IMG] first; targets: (B, R) soft IoU targets ([IMG]'s is the referred
            box's IoU with the whole image); region_mask: (B, R), 1 for real regions ([IMG] included).
    """
    logits = at_least_float32(logits)
    mask = region_mask.to(logits.dtype)
    per_region = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return (per_region * mask).sum() / mask.sum().clamp(min=1.0)


def circle_loss(
    positive: torch.Tensor,
    negative: torch.Tensor,
    margin: float = CIRCLE_MARGIN,
    scale: float = CIRCLE_SCALE,
) -> torch.Tensor:
    """Circle loss (Sun et al., 2020) of similarity scores in [0, 1], averaged over the batch:

        mean_b log(1 + sum_k exp(s * a_n (s_n - m)) * sum_p exp(-s * a_p (s_p - 1 + m)))

    with the weights a_p = relu(1 + m - s_p) and a_n = relu(s_n + m) held constant (no gradient), as the
    official ``utils/loss.py``. Computed as softplus of two log-sum-exps, which is the same value without
    overflow at scale 32.

    Args:
        positive: (B, P) and negative: (B, K) scores.
    """
    positive, negative = at_least_float32(positive), at_least_float32(negative)
    weight_p = F.relu(1.0 + margin - positive).detach()  # (B, P)
    weight_n = F.relu(negative + margin).detach()  # (B, K)
    logit_p = -scale * weight_p * (positive - (1.0 - margin))  # (B, P)
    logit_n = scale * weight_n * (negative - margin)  # (B, K)
    return F.softplus(torch.logsumexp(logit_p, -1) + torch.logsumexp(logit_n, -1)).mean()


def retrieval_loss(
    group_logits: torch.Tensor, margin: float = CIRCLE_MARGIN, scale: float = CIRCLE_SCALE
) -> torch.Tensor:
    """Flickr30K's training loss on groups of one matched pair and 2K mismatched ones.

    The scores are the sigmoids of the logits; the matched pair (column 0) is held against the first K
    negatives and against the last K by two circle losses, which are averaged, as the official
    ``create_flickr_model`` (one half replaces the caption, the other the image).

    Args:
        group_logits: (B, 1 + 2K) match logits, the matched pair first.
    """
    num_negatives = group_logits.shape[-1] - 1
    if num_negatives < 2 or num_negatives % 2:
        raise ValueError(
            f"a retrieval group holds one matched pair and an even number of negatives; got "
            f"{group_logits.shape[-1]} pairs per group"
        )
    scores = torch.sigmoid(at_least_float32(group_logits))  # (B, 1 + 2K)
    positive, half = scores[:, :1], 1 + num_negatives // 2
    first = circle_loss(positive, scores[:, 1:half], margin, scale)
    second = circle_loss(positive, scores[:, half:], margin, scale)
    return (first + second) / 2


__all__ = [
    "CIRCLE_MARGIN",
    "CIRCLE_SCALE",
    "IOU_THRESHOLD",
    "circle_loss",
    "multiple_choice_loss",
    "referring_expression_loss",
    "retrieval_loss",
    "soft_iou_targets",
    "vqa_loss",
    "vqa_softmax_loss",
]
