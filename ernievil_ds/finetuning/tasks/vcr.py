"""``vcr``: Visual Commonsense Reasoning, Q->A and QA->R as four-way multiple choice, one scorer per task
on the shared encoder; the metrics are Q->A, QA->R (asked with the right answer) and Q->AR (both right).

The official joint reader alternates Q->A and QA->R batches, one optimiser step each; here each batch holds
both tasks for the same items and the step follows the sum of their losses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ernievil_ds.errors import UserError
from ernievil_ds.finetuning.data import FineTuningDataset, collate_vcr, load_vcr
from ernievil_ds.finetuning.metrics import choice_correct
from ernievil_ds.finetuning.modeling import VCR_TASKS, ErnieVilForMultipleChoice
from ernievil_ds.finetuning.tasks.base import DownstreamTask


def check_labelled(split: FineTuningDataset, flag: str, directory) -> None:
    """VCR's test split has no labels (-1): it can be neither trained on nor scored."""
    if min([*split.examples["answer_label"], *split.examples["rationale_label"]]) < 0:
        raise UserError(
            f"{flag} {directory} has VCR items without labels (the test split?): use train or val"
        )


class VisualCommonsenseReasoningTask(DownstreamTask):
    """Batches are ``{"q2a": inputs, "qa2r": inputs}``, each the multiple-choice model's inputs (B, 4, ...)
    with ``labels`` (B,)."""

    model_class = ErnieVilForMultipleChoice

    def datasets(self) -> tuple[Sequence, Sequence]:
        train, evaluation = self.splits(load_vcr)
        check_labelled(train, "--data-dir", self.settings.data_dir)
        check_labelled(evaluation, "--eval-data-dir", self.settings.eval_data_dir)
        return train, evaluation

    def collate(self, examples: list) -> dict[str, dict[str, torch.Tensor]]:
        return {task: collate_vcr(examples, task) for task in VCR_TASKS}

    def training_loss(self, model, batch: dict, dtype: torch.dtype) -> torch.Tensor:
        return sum(model(**self.model_inputs(batch[task], dtype), task=task).loss for task in VCR_TASKS)

    def eval_step(self, model, batch: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        results = {}
        for task in VCR_TASKS:
            logits = model(**self.model_inputs(batch[task], dtype), task=task).logits  # (B, 4)
            results[task] = choice_correct(logits, batch[task]["labels"])  # (B,)
        return results

    def summarize(self, results: dict[str, torch.Tensor]) -> dict[str, float]:
        """``eval_q2a``, ``eval_qa2r`` and ``eval_q2ar`` (both right), as fractions of the items."""
        both = results["q2a"] & results["qa2r"]
        return {
            "eval_q2a": results["q2a"].float().mean().item(),
            "eval_qa2r": results["qa2r"].float().mean().item(),
            "eval_q2ar": both.float().mean().item(),
        }


__all__ = ["VisualCommonsenseReasoningTask"]
