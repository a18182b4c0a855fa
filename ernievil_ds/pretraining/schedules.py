"""Learning-rate schedules that DeepSpeed's JSON cannot name."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def noam_factor(step: int, warmup_steps: int) -> float:
    """The Noam schedule's multiple of the peak learning rate at ``step`` (0-based): linear warmup to 1 at
    ``warmup_steps``, then decay as 1/sqrt(step), continuous at the peak (Vaswani et al., 2017)."""
    step = step + 1
    return min(step / warmup_steps, math.sqrt(warmup_steps / step))


def noam_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int) -> LambdaLR:
    """ERNIE-ViL's schedule (the paper: Adam with Noam decay) on ``optimizer``, whose learning rate is the peak.

    Raises:
        ValueError: ``warmup_steps`` < 1.
    """
    if warmup_steps < 1:
        raise ValueError(f"--warmup-steps must be at least 1, got {warmup_steps}")
    return LambdaLR(optimizer, lambda step: noam_factor(step, warmup_steps))
