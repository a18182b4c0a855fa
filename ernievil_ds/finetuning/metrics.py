"""Evaluation metrics of the four ERNIE-ViL tasks, on the heads' logits.

Shape legend: B batch, A answers, C choices, R regions including the leading [IMG] region, Nc captions,
Ni images.
"""

from __future__ import annotations

import torch

from ernievil_ds.finetuning.losses import IOU_THRESHOLD

RECALL_KS = (1, 5, 10)


def vqa_soft_accuracy(logits: torch.Tensor, soft_scores: torch.Tensor) -> torch.Tensor:
    """The VQA accuracy of each question's argmax answer: its soft score (B,), from logits and soft_scores
    (B, A)."""
    best = logits.argmax(-1, keepdim=True)  # (B, 1)
    return soft_scores.gather(-1, best).squeeze(-1)  # (B,)


def choice_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """VCR evaluation scores: the softmax over the choices of logits (B, C)."""
    return torch.softmax(logits.float(), dim=-1)


def choice_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Whether the best-scored choice is the right one: logits (B, C), labels (B,) -> (B,) bool."""
    return logits.argmax(-1) == labels


def vcr_accuracies(
    answer_logits: torch.Tensor,
    answer_labels: torch.Tensor,
    rationale_logits: torch.Tensor,
    rationale_labels: torch.Tensor,
) -> dict[str, float]:
    """VCR's three accuracies over the same B questions: ``q2a`` (the answer), ``qa2r`` (the rationale,
    given the right answer) and ``q2ar`` (both right).

    Args:
        answer_logits, rationale_logits: (B, C); answer_labels, rationale_labels: (B,).
    """
    answer_right = choice_correct(answer_logits, answer_labels)  # (B,)
    rationale_right = choice_correct(rationale_logits, rationale_labels)  # (B,)
    return {
        "q2a": answer_right.float().mean().item(),
        "qa2r": rationale_right.float().mean().item(),
        "q2ar": (answer_right & rationale_right).float().mean().item(),
    }


def referring_expression_correct(
    logits: torch.Tensor, ious: torch.Tensor, region_mask: torch.Tensor, threshold: float = IOU_THRESHOLD
) -> torch.Tensor:
    """RefCOCO+ accuracy per expression: the best-scored real region, [IMG] excluded, has IoU >= threshold
    with the referred box.

    Args:
        logits: (B, R) region scores, [IMG] first; ious: (B, R - 1) each input region's IoU with the
            referred box; region_mask: (B, R - 1), 1 for real regions.

    Returns:
        (B,) bool.
    """
    region_logits = logits[:, 1:].float().masked_fill(~region_mask.bool(), float("-inf"))  # (B, R - 1)
    best = region_logits.argmax(-1, keepdim=True)  # (B, 1)
    return ious.gather(-1, best).squeeze(-1) >= threshold


def _first_hit_rank(scores: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Per row of scores (N, M) and correct (N, M) bool: how many wrong candidates score at least as high
    as the best correct one, i.e. its 0-based rank when ties are resolved against the model."""
    best_correct = scores.masked_fill(~correct, float("-inf")).max(-1, keepdim=True).values  # (N, 1)
    return ((scores >= best_correct) & ~correct).sum(-1)  # (N,)


def retrieval_recalls(
    scores: torch.Tensor, caption_images: torch.Tensor, ks: tuple[int, ...] = RECALL_KS
) -> dict[str, float]:
    """Recall@K both ways from a (Nc, Ni) matrix of match scores of every caption with every image.

    ``image_r@k``: the fraction of captions whose image is among the k best-scored images (image
    retrieval); ``text_r@k``: the fraction of images with one of their captions among the k best-scored
    captions (text retrieval), as the official ``tools/get_recall.py``. A wrong candidate tied with the
    right one counts as ranked above it (``get_recall.py`` orders ties by id), so a constant scorer has
    recall k / Ni, not 1.

    Args:
        scores: (Nc, Ni); caption_images: (Nc,) the column of each caption's image. Every image needs a
            caption for text retrieval.
    """
    num_images = scores.shape[1]
    correct = caption_images[:, None] == torch.arange(num_images, device=scores.device)  # (Nc, Ni)
    if not correct.any(0).all():
        missing = (~correct.any(0)).nonzero()[0].item()
        raise ValueError(f"image column {missing} has no caption; text retrieval needs one for every image")
    image_rank = _first_hit_rank(scores, correct)  # (Nc,)
    text_rank = _first_hit_rank(scores.T, correct.T)  # (Ni,)
    recalls = {}
    for k in ks:
        recalls[f"image_r@{k}"] = (image_rank < k).float().mean().item()
        recalls[f"text_r@{k}"] = (text_rank < k).float().mean().item()
    return recalls


__all__ = [
    "RECALL_KS",
    "choice_correct",
    "choice_probabilities",
    "referring_expression_correct",
    "retrieval_recalls",
    "vcr_accuracies",
    "vqa_soft_accuracy",
]
