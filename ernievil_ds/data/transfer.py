"""The one move of a collated batch from the loader to the model's device.

Batches leave the loader with region features and class distributions in the float16 they are stored in
(pinned when CUDA is there: ``loader_pins_memory``); each tensor is copied as it is, asynchronously, and
floating tensors are cast to the model's dtype after the copy, on the device. Casting first would widen
on the host and send twice the bytes; a single ``tensor.to(device, dtype)`` would also widen on the host
for a blocking copy.
"""

from __future__ import annotations

import torch

#: Pixel geometry, which the model turns into locations in float32 itself: in bfloat16 a coordinate near
#: 640 would round to a multiple of 4 pixels.
FLOAT32_INPUTS = frozenset({"region_boxes", "image_sizes"})


def loader_pins_memory() -> bool:
    """Whether DataLoaders should pin their batches: only when there is a CUDA device to copy them to."""
    return torch.cuda.is_available()


def batch_to_device(
    batch: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """Move a collated batch to ``device``; floating tensors take ``dtype`` there (fp16/bf16 DeepSpeed
    engines do not cast inputs themselves) but for the pixel geometry (``FLOAT32_INPUTS``), which stays
    float32; integer and boolean tensors keep theirs."""
    moved = {}
    for key, value in batch.items():
        value = value.to(device, non_blocking=True)
        if value.is_floating_point():
            value = value.float() if key in FLOAT32_INPUTS else value.to(dtype)
        moved[key] = value
    return moved
