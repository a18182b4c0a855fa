"""``refcoco``: RefCOCO+ referring expressions, a score per region trained against soft IoU targets; the
metric is the accuracy of the best-scored region (IoU >= 0.5 with the referred box, [IMG] excluded)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ernievil_ds.finetuning.data import collate_refcoco, load_refcoco
from ernievil_ds.finetuning.metrics import referring_expression_correct
from ernievil_ds.finetuning.modeling import ErnieVilForReferringExpressions
from ernievil_ds.finetuning.tasks.base import DownstreamTask


class ReferringExpressionsTask(DownstreamTask):
    """Batches carry ``labels`` (B, R + 1), the training targets with [IMG] first, and ``meta_ious``
    (B, R), each region's IoU as imported."""

    model_class = ErnieVilForReferringExpressions

    def datasets(self) -> tuple[Sequence, Sequence]:
        return self.splits(load_refcoco)

    def collate(self, examples: list) -> dict[str, torch.Tensor]:
        batch = collate_refcoco(examples)
        batch["meta_ious"] = batch.pop("ious")
        return batch

    def eval_step(self, model, batch: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
        logits = model(**self.model_inputs(batch, dtype)).logits  # (B, R + 1)
        return {"correct": referring_expression_correct(logits, batch["meta_ious"], batch["region_mask"])}

    def summarize(self, results: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"eval_accuracy": results["correct"].float().mean().item()}


__all__ = ["ReferringExpressionsTask"]
