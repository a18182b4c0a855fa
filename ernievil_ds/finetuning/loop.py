"""The fine-tuning loop on ``accelerate``: mixed precision, gradient accumulation, global-norm clipping,
checkpoints with ``save_state``/``load_state`` and exact resume, ``metrics.jsonl``/``eval.jsonl`` and
TensorBoard, and a progress bar on the main process.

What is particular to a task (its model, data, loss and metric) comes from its
``ernievil_ds.finetuning.tasks.DownstreamTask``; the loop is the same for all of them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from ernievil_ds.distributed import get_logger
from ernievil_ds.errors import UserError
from ernievil_ds.finetuning.optimization import build_optimizer, manual_warmup_decay
from ernievil_ds.finetuning.tasks import TASKS, DownstreamTask, build_task
from ernievil_ds.training.metrics import MetricsWriter

CHECKPOINTS_DIR, STATE_FILE, SETTINGS_FILE = "checkpoints", "trainer_state.json", "finetune_args.json"

logger = get_logger(__name__)


@dataclass
class FinetuneSettings:
    """Everything one fine-tuning run reads; the launcher's flags, one to one."""

    task: str
    output_dir: Path
    model: Path | None = None  # a saved model directory (a pretraining run's hf_model/)
    preset: str | None = None  # or a fresh model of this preset (no ERNIE-ViL pretraining)
    data_dir: Path | None = None  # the official tasks' training split (synth_qa generates its own)
    eval_data_dir: Path | None = None  # and their evaluation split
    steps: int = 300
    batch_size: int = 32
    learning_rate: float = 1e-4
    warmup_steps: int = 30
    decay_steps: tuple[int, ...] = ()
    decay_ratio: float = 0.1
    layer_decay: float | None = None
    weight_decay: float = 0.01
    head_lr_scale: float = 1.0
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    mixed_precision: str | None = None  # None: what ``accelerate launch`` or its config says
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0  # 0: only at the end
    save_every: int = 0  # 0: only at the end
    resume: bool = False
    train_images: int = 2000
    eval_images: int = 200
    zero_image_features: bool = False  # the question-only baseline
    tokenizer: str | None = None  # None: the offline BERT uncased WordPiece vocabulary


class EpochPermutationSampler(Sampler[int]):
    """A fresh permutation of the examples each epoch, a function of (seed, epoch) only, so that a resumed
    run sees the batches the uninterrupted run would have seen."""

    def __init__(self, num_examples: int, seed: int) -> None:
        self.num_examples, self.seed, self.epoch = num_examples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_examples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num_examples, generator=generator).tolist())


def check_model_source(settings: FinetuneSettings) -> None:
    if (settings.model is None) == (settings.preset is None):
        raise UserError("give exactly one of --model DIR (a saved model) and --preset NAME (a fresh model)")


def check_numbers(settings: FinetuneSettings) -> None:
    """Counts must be positive and the learning rate a positive number."""
    for flag, value in (
        ("--steps", settings.steps),
        ("--batch-size", settings.batch_size),
        ("--gradient-accumulation-steps", settings.gradient_accumulation_steps),
        ("--log-every", settings.log_every),
    ):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    if not math.isfinite(settings.learning_rate) or settings.learning_rate <= 0:
        raise UserError(f"--learning-rate must be a positive number, got {settings.learning_rate}")


def build_loaders(task: DownstreamTask, settings: FinetuneSettings) -> tuple[DataLoader, DataLoader]:
    """The task's training loader (a fresh permutation each epoch, whole batches) and evaluation loader."""
    train, evaluation = task.datasets()
    # Starting an iterator draws a seed from the loader's generator; a generator of its own keeps that
    # draw out of the global random state, which dropout reads, so a run resumed inside an epoch (whose
    # loader starts where the uninterrupted run's did not) draws the same dropout masks.
    train_loader = DataLoader(
        train,
        batch_size=settings.batch_size,
        sampler=EpochPermutationSampler(len(train), settings.seed),
        collate_fn=task.collate,
        drop_last=True,
        generator=torch.Generator().manual_seed(settings.seed),
    )
    if len(train_loader) == 0:
        raise UserError(
            f"{len(train)} training examples make no batch of {settings.batch_size}: use more training data "
            "or lower --batch-size"
        )
    eval_loader = DataLoader(evaluation, batch_size=settings.batch_size, collate_fn=task.collate)
    return train_loader, eval_loader


@torch.no_grad()
def evaluate(accelerator: Accelerator, model, task: DownstreamTask, loader: DataLoader) -> dict[str, float]:
    """The task's metrics over the evaluation set, from every process's share, with a progress bar."""
    dtype = accelerator.unwrap_model(model).dtype
    model.eval()
    gathered: dict[str, list[torch.Tensor]] = {}
    for batch in tqdm(loader, desc="evaluating", leave=False, disable=not accelerator.is_local_main_process):
        results = accelerator.gather_for_metrics(task.eval_step(model, batch, dtype))
        for name, value in results.items():
            gathered.setdefault(name, []).append(value.cpu())
    model.train()
    return task.summarize({name: torch.cat(values) for name, values in gathered.items()})


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / CHECKPOINTS_DIR / f"step_{step:08d}"


def latest_checkpoint(output_dir: Path) -> tuple[Path, int]:
    """The newest complete checkpoint under ``output_dir`` and its step; ``UserError`` when there is none."""
    states = sorted((output_dir / CHECKPOINTS_DIR).glob(f"step_*/{STATE_FILE}"))
    if not states:
        raise UserError(f"--resume: no checkpoint under {output_dir / CHECKPOINTS_DIR}")
    return states[-1].parent, json.loads(states[-1].read_text())["step"]


class FinetuningRun:
    """One run: the prepared model, optimiser, schedule and loaders, and the loop over optimiser steps."""

    def __init__(self, settings: FinetuneSettings) -> None:
        from accelerate.utils import GradientAccumulationPlugin

        check_model_source(settings)
        self.settings = settings
        self.task = build_task(settings)
        # The schedule counts optimiser steps (as the official global step), so it is stepped by hand once
        # per synchronised step; accumulation follows the step count alone, so that a resumed run
        # accumulates exactly the micro-batches the uninterrupted run did.
        self.accelerator = Accelerator(
            mixed_precision=settings.mixed_precision,
            gradient_accumulation_plugin=GradientAccumulationPlugin(
                num_steps=settings.gradient_accumulation_steps, sync_with_dataloader=False
            ),
            step_scheduler_with_optimizer=False,
        )
        set_seed(settings.seed)
        # The data first: a VQA task's answer vocabulary, which sizes the head, comes with it.
        train_loader, eval_loader = build_loaders(self.task, settings)
        model = self.task.build_model()
        optimizer = build_optimizer(
            model,
            settings.learning_rate,
            weight_decay=settings.weight_decay,
            layer_decay=settings.layer_decay,
            head_lr_scale=settings.head_lr_scale,
        )
        scheduler = manual_warmup_decay(
            optimizer, settings.warmup_steps, settings.decay_steps, settings.decay_ratio
        )
        self.model, self.optimizer, self.train_loader, self.eval_loader, self.scheduler = (
            self.accelerator.prepare(model, optimizer, train_loader, eval_loader, scheduler)
        )
        self.writer = MetricsWriter(settings.output_dir, enabled=self.accelerator.is_main_process)
        self.model_dtype = self.accelerator.unwrap_model(self.model).dtype

    def train_batches(self, micro_batch: int) -> Iterator[dict[str, torch.Tensor]]:
        """The training batches from global micro-batch ``micro_batch`` on, epoch after epoch."""
        epoch, offset = divmod(micro_batch, len(self.train_loader))
        while True:
            loader = (
                self.accelerator.skip_first_batches(self.train_loader, offset)
                if offset
                else self.train_loader
            )
            loader.set_epoch(epoch)
            yield from loader
            epoch, offset = epoch + 1, 0

    def save(self, step: int) -> None:
        path = checkpoint_dir(self.settings.output_dir, step)
        self.accelerator.save_state(str(path))
        if self.accelerator.is_main_process:
            (path / STATE_FILE).write_text(json.dumps({"step": step}))
        self.accelerator.wait_for_everyone()

    def resume(self) -> int:
        path, step = latest_checkpoint(self.settings.output_dir)
        self.accelerator.load_state(str(path))
        self.writer.drop_after(step)
        return step

    def log(self, step: int, loss_sum: torch.Tensor, count: int) -> None:
        mean_loss = self.accelerator.reduce(loss_sum, reduction="mean").item() / max(count, 1)
        self.writer.write({"step": step, "loss": mean_loss, "lr": self.scheduler.get_last_lr()[0]})

    def evaluate(self, step: int) -> dict[str, float]:
        """Evaluate without moving the random state (starting a loader draws from it), so that a run
        resumed from a checkpoint taken after an evaluation draws what the uninterrupted run drew."""
        device = self.accelerator.device
        # The CPU generator is always forked; an accelerator's only when named.
        accelerators = [] if device.type == "cpu" else [device]
        with torch.random.fork_rng(devices=accelerators, device_type=device.type):
            result = evaluate(self.accelerator, self.model, self.task, self.eval_loader)
        self.writer.write_eval({"step": step, **result})
        return result

    def step_once(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, bool]:
        """Forward and backward of one micro-batch, and the optimiser step when it closes an accumulation;
        returns the micro-batch's loss and whether a step was taken."""
        with self.accelerator.accumulate(self.model):
            loss = self.task.training_loss(self.model, batch, self.model_dtype)
            self.accelerator.backward(loss)
            if self.accelerator.sync_gradients:
                self.accelerator.clip_grad_norm_(self.model.parameters(), self.settings.max_grad_norm)
            self.optimizer.step()  # a no-op inside an accumulation
            self.optimizer.zero_grad()
        stepped = self.accelerator.sync_gradients
        if stepped:
            self.scheduler.step()
        return loss.detach().float(), stepped

    def train(self) -> dict[str, float]:
        """Run to ``settings.steps`` optimiser steps (from the last checkpoint with ``resume``), evaluate,
        save the last checkpoint and the model (``hf_model/``); returns the final evaluation."""
        settings = self.settings
        step = self.resume() if settings.resume else 0
        self.model.train()  # from_pretrained returns a model in eval mode: its dropout would stay off
        progress = tqdm(
            total=settings.steps,
            initial=step,
            desc="fine-tuning",
            disable=not self.accelerator.is_local_main_process,
        )
        loss_sum, count = torch.zeros((), device=self.accelerator.device), 0
        batches = self.train_batches(step * settings.gradient_accumulation_steps)
        while step < settings.steps:
            loss, stepped = self.step_once(next(batches))
            loss_sum, count = loss_sum + loss, count + 1
            if not stepped:
                continue
            step += 1
            progress.update(1)
            if step % settings.log_every == 0 or step == settings.steps:
                self.log(step, loss_sum, count)
                progress.set_postfix(loss=f"{loss_sum.item() / count:.4f}")
                loss_sum, count = torch.zeros_like(loss_sum), 0
            if settings.eval_every and step % settings.eval_every == 0 and step < settings.steps:
                self.evaluate(step)
            if settings.save_every and step % settings.save_every == 0 and step < settings.steps:
                self.save(step)
        progress.close()
        result = self.evaluate(step)
        self.save(step)
        self.save_model()
        return result

    def save_model(self) -> None:
        """The fine-tuned model as ``hf_model/`` (config.json, model.safetensors and the tokenizer files of
        ``--tokenizer``, which the model's inputs were built with), from the main process."""
        from ernievil_ds.data import load_tokenizer

        if self.accelerator.is_main_process:
            model_dir = self.settings.output_dir / "hf_model"
            self.accelerator.unwrap_model(self.model).save_pretrained(model_dir)
            load_tokenizer(self.settings.tokenizer).save_pretrained(model_dir)
        self.accelerator.wait_for_everyone()

    def close(self) -> None:
        self.writer.close()
        self.accelerator.end_training()


def finetune(settings: FinetuneSettings) -> dict[str, float]:
    """Fine-tune as ``settings`` say; returns the final evaluation (also the last line of ``eval.jsonl``)."""
    check_numbers(settings)
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    run = FinetuningRun(settings)
    state = run.accelerator.state
    logger.info(
        "fine-tuning %s on %d process(es), %s, mixed precision %s",
        settings.task,
        state.num_processes,
        state.distributed_type.value,
        state.mixed_precision,
    )
    if run.accelerator.is_main_process:
        record = {
            name: str(value) if isinstance(value, Path) else value for name, value in asdict(settings).items()
        }
        record["accelerate"] = {
            "distributed_type": state.distributed_type.value,
            "num_processes": state.num_processes,
        }
        (settings.output_dir / SETTINGS_FILE).write_text(json.dumps(record, indent=2) + "\n")
    try:
        return run.train()
    finally:
        run.close()


__all__ = [
    "TASKS",
    "EpochPermutationSampler",
    "FinetuneSettings",
    "FinetuningRun",
    "finetune",
    "latest_checkpoint",
]
