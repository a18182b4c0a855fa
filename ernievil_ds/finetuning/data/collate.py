"""Padding shared by the tasks' collate functions: token lists and images to the encoder's batch tensors.

Shape legend: N sequences or images, T tokens, R regions (without [IMG], which the model prepends), B
groups, C members of a group.
"""

from __future__ import annotations

import numpy as np
import torch

from ernievil_ds.data.schema import FEATURE_DIM


def truncate_tokens(input_ids: list[int], max_length: int | None) -> list[int]:
    """``[CLS] ... [SEP]`` cut to ``max_length`` keeping the final [SEP], as the official readers cut it
    (``token_ids[:max_seq_len - 1] + [token_ids[-1]]``)."""
    if max_length is None or len(input_ids) <= max_length:
        return list(input_ids)
    return [*input_ids[: max_length - 1], input_ids[-1]]


def pad_tokens(
    sequences: list[list[int]], pad_token_id: int, segments: list[list[int]] | None = None
) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``token_type_ids`` (N, T) from N token lists (and their
    segment ids, zeros when not given), padded on the right."""
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(len(sequences), length, dtype=torch.long)
    token_type_ids = torch.zeros(len(sequences), length, dtype=torch.long)
    for i, tokens in enumerate(sequences):
        input_ids[i, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        attention_mask[i, : len(tokens)] = 1
        if segments is not None:
            token_type_ids[i, : len(tokens)] = torch.tensor(segments[i], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


def pad_images(images: list[dict]) -> dict[str, torch.Tensor]:
    """The encoder's image inputs from N images: ``region_features`` (N, R, 2048), ``region_boxes``
    (N, R, 4), ``region_mask`` (N, R) and ``image_sizes`` (N, 2) (width, height); R is the most regions of
    any image, the rest padding. The model prepends [IMG] itself, from ``img_features`` (N, 2048) when the
    images carry an ``img_feature``."""
    num_regions = max(len(image["boxes"]) for image in images)
    region_features = torch.zeros(len(images), num_regions, FEATURE_DIM)
    region_boxes = torch.zeros(len(images), num_regions, 4)
    region_mask = torch.zeros(len(images), num_regions, dtype=torch.long)
    for i, image in enumerate(images):
        regions = len(image["boxes"])
        region_features[i, :regions] = torch.as_tensor(np.asarray(image["features"], dtype=np.float32))
        region_boxes[i, :regions] = torch.as_tensor(np.asarray(image["boxes"], dtype=np.float32))
        region_mask[i, :regions] = 1
    sizes = torch.tensor([[image["width"], image["height"]] for image in images], dtype=torch.float32)
    padded = {
        "region_features": region_features,
        "region_boxes": region_boxes,
        "region_mask": region_mask,
        "image_sizes": sizes,
    }
    if "img_feature" in images[0]:
        img = np.stack([np.asarray(image["img_feature"], dtype=np.float32) for image in images])
        padded["img_features"] = torch.from_numpy(img)  # (N, 2048)
    return padded


def group(batch: dict[str, torch.Tensor], groups: int) -> dict[str, torch.Tensor]:
    """Tensors of B * C rows, (B * C, ...), as (B, C, ...): the choices or pairs of a group second."""
    return {name: t.view(groups, -1, *t.shape[1:]) for name, t in batch.items()}
