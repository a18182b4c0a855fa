"""The synth_qa fine-tuning step (forward, backward, clipping, AdamW) per AdamW implementation: the fused
kernel that ``build_optimizer`` uses against torch's two others, side by side in one run.

    python benchmarks/bench_finetune_step.py                   # the small preset, batch 32, 3 rounds of 30 steps
    python benchmarks/bench_finetune_step.py --rounds 5 --steps 50
    python benchmarks/bench_finetune_step.py --smoke           # the tiny preset, a few steps: checks that it runs

Each implementation trains its own copy of one fresh model (the step's cost does not depend on the weights)
on the same synth_qa batches, with ``SYNTH_QA_RECIPE``'s settings; the rounds interleave the implementations
so that a busy spell of a shared machine falls on all of them. ``for-loop`` is torch's default on the CPU (one
operation per parameter, each with a temporary), ``foreach`` its default on a GPU (one operation per list of
parameters), ``fused`` one kernel per parameter group.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import torch
from machine import cpu_name, print_table

from ernievil_ds.finetuning.arguments import SYNTH_QA_RECIPE, FinetuneSettings
from ernievil_ds.finetuning.loop import build_loaders
from ernievil_ds.finetuning.optimization import (
    ADAM_BETAS,
    ADAM_EPS,
    build_optimizer,
    finetuning_parameter_groups,
)
from ernievil_ds.finetuning.tasks import build_task

#: Baseline row name -> the keyword that selects torch's implementation in ``torch.optim.AdamW``; the
#: ``fused`` row is ``build_optimizer``'s own.
BASELINES = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}}
IMPLEMENTATIONS = (*BASELINES, "fused")


def adamw(name: str, model: torch.nn.Module, settings: FinetuneSettings) -> torch.optim.AdamW:
    """The AdamW of row ``name`` over ``model``'s fine-tuning parameter groups, at ``settings``' rates."""
    if name == "fused":
        return build_optimizer(model, settings.learning_rate, head_lr_scale=settings.head_lr_scale)
    groups = finetuning_parameter_groups(model, settings.learning_rate, head_lr_scale=settings.head_lr_scale)
    return torch.optim.AdamW(
        groups, lr=settings.learning_rate, betas=ADAM_BETAS, eps=ADAM_EPS, **BASELINES[name]
    )


def seconds_per_step(model, optimizer, task, batches, steps: int, max_grad_norm: float) -> float:
    """Mean wall seconds of ``steps`` training steps of ``model`` on the next ``steps`` of ``batches``."""
    started = time.perf_counter()
    for batch in itertools.islice(batches, steps):
        loss = task.training_loss(model, batch, torch.float32)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
    return (time.perf_counter() - started) / steps


def measure(preset: str, rounds: int, steps: int) -> dict[str, list[float]]:
    """Seconds per step of each implementation, one figure per round (after one warm-up round)."""
    with tempfile.TemporaryDirectory() as scratch:
        settings = FinetuneSettings(
            task="synth_qa", output_dir=Path(scratch), preset=preset, train_images=200, **SYNTH_QA_RECIPE
        )
        task = build_task(settings)
        train_loader, _ = build_loaders(task, settings)
        batches = list(train_loader)  # collated once, replayed by every implementation
        torch.manual_seed(0)
        fresh = task.build_model().train()
    runs = {}
    for name in IMPLEMENTATIONS:
        model = copy.deepcopy(fresh)
        runs[name] = (model, adamw(name, model, settings), itertools.cycle(batches))
    figures = {name: [] for name in IMPLEMENTATIONS}
    for round_index in range(rounds + 1):
        for name, (model, optimizer, batches) in runs.items():
            seconds = seconds_per_step(model, optimizer, task, batches, steps, settings.max_grad_norm)
            if round_index:  # the first round warms up the allocator and the kernels
                figures[name].append(seconds)
    return figures


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", help="the model preset (default: small, the demo's)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (after one warm-up round)")
    parser.add_argument("--steps", type=int, default=30, help="steps per implementation per round")
    parser.add_argument("--smoke", action="store_true", help="seconds on the CPU: tiny preset, 1 round of 2")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_arguments(argv)
    if args.smoke:
        args.preset, args.rounds, args.steps = "tiny", 1, 2
    figures = measure(args.preset, args.rounds, args.steps)
    print(
        f"device: {cpu_name()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}; "
        f"{args.preset} preset, batch {SYNTH_QA_RECIPE['batch_size']}, {args.rounds} rounds of {args.steps} "
        f"steps{' (smoke)' if args.smoke else ''}"
    )
    baseline = statistics.median(figures["for-loop"])
    rows = []
    for name, seconds in figures.items():
        median = statistics.median(seconds)
        rows.append([name, f"{median * 1000:.0f}", f"{min(seconds) * 1000:.0f}", f"{baseline / median:.2f}x"])
    print_table(["AdamW", "ms/step (median)", "ms/step (min)", "speed-up over for-loop"], rows)


if __name__ == "__main__":
    main()
