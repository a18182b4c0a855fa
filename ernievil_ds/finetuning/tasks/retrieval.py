"""``retrieval``: Flickr30K image-text retrieval. Training scores groups of a caption with its image and
with negative images under the circle loss; evaluation scores every caption of the split against every
image and reports recall@1/5/10 both ways.

Shape legend: P caption-image pairs, Nc captions, Ni images, K negatives per caption.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ernievil_ds.finetuning.data import (
    FineTuningDataset,
    collate_retrieval,
    collate_retrieval_groups,
    load_retrieval,
    negative_image_groups,
)
from ernievil_ds.finetuning.data.retrieval import NUM_NEGATIVES
from ernievil_ds.finetuning.metrics import retrieval_recalls
from ernievil_ds.finetuning.modeling import ErnieVilForImageTextRetrieval
from ernievil_ds.finetuning.tasks.base import DownstreamTask


class NegativeImageGroups(Dataset):
    """Each caption with its image, then with K other images of the split (the official conf's ``"ei"``
    negatives). A caption's negatives are drawn from (seed, caption index), so that a resumed run sees the
    groups the uninterrupted run saw; the official reader draws new ones each epoch."""

    def __init__(self, captions: FineTuningDataset, num_negatives: int, seed: int) -> None:
        self.captions, self.num_negatives, self.seed = captions, num_negatives, seed

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> list[dict]:
        rng = np.random.default_rng((self.seed, index))
        return negative_image_groups(self.captions, [index], rng, self.num_negatives)[0]


class AllPairs(Dataset):
    """Every caption with every image of the split, caption-major: pair p is caption p // Ni with image
    row p % Ni, tagged with both indices for the score matrix."""

    def __init__(self, captions: FineTuningDataset) -> None:
        self.captions = captions

    def __len__(self) -> int:
        return len(self.captions) * self.captions.num_images

    def __getitem__(self, pair: int) -> dict:
        caption, image = divmod(pair, self.captions.num_images)
        example = self.captions.example_row(caption)  # the caption's own image is not the pair's
        return example | {
            "image": self.captions.image_at(image),
            "caption_index": caption,
            "image_row": image,
        }


class ImageTextRetrievalTask(DownstreamTask):
    """Training batches are groups (B, 1 + K, ...), the matched pair first; evaluation batches are pairs
    (P, ...) with ``meta_caption`` and ``meta_image`` (P,), their place in the (Nc, Ni) score matrix."""

    model_class = ErnieVilForImageTextRetrieval

    def datasets(self) -> tuple[Sequence, Sequence]:
        train, evaluation = self.splits(load_retrieval)
        self.caption_images = torch.from_numpy(evaluation.example_image_rows)  # (Nc,)
        self.num_images = evaluation.num_images
        return NegativeImageGroups(train, NUM_NEGATIVES, self.settings.seed), AllPairs(evaluation)

    def collate(self, examples: list) -> dict[str, torch.Tensor]:
        if isinstance(examples[0], list):  # training groups
            return collate_retrieval_groups(examples)
        batch = collate_retrieval(examples)
        batch["meta_caption"] = torch.tensor([e["caption_index"] for e in examples])
        batch["meta_image"] = torch.tensor([e["image_row"] for e in examples])
        return batch

    def training_loss(self, model, batch: dict[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        return model(**self.model_inputs(batch, dtype), return_loss=True).loss

    def eval_step(self, model, batch: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
        scores = model(**self.model_inputs(batch, dtype)).logits.float()  # (P,)
        return {"score": scores, "caption": batch["meta_caption"], "image": batch["meta_image"]}

    def summarize(self, results: dict[str, torch.Tensor]) -> dict[str, float]:
        """Recall@1/5/10 for image and text retrieval (``eval_image_r@k``, ``eval_text_r@k``)."""
        scores = torch.full((len(self.caption_images), self.num_images), float("nan"))  # (Nc, Ni)
        scores[results["caption"], results["image"]] = results["score"]
        recalls = retrieval_recalls(scores, self.caption_images)
        return {f"eval_{name}": value for name, value in recalls.items()}


__all__ = ["AllPairs", "ImageTextRetrievalTask", "NegativeImageGroups"]
