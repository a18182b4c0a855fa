"""The fine-tuning loop on ``accelerate``: mixed precision, gradient accumulation, global-norm clipping,
checkpoints with ``save_state``/``load_state`` and exact resume, ``metrics.jsonl``/``eval.jsonl`` and
TensorBoard, and a progress bar on the main process. The run folder, its settings record, checkpoint
completion, the resumable data stream, the loss averager and the end of the run are
``ernievil_ds.runs``, shared with pretraining.

What is particular to a task (its model, data, loss and metric) comes from its
``ernievil_ds.finetuning.tasks.DownstreamTask``; the loop is the same for all of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict

import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ernievil_ds.data.sampler import ResumableDistributedSampler
from ernievil_ds.distributed import dist_info, get_logger
from ernievil_ds.errors import UserError
from ernievil_ds.finetuning.arguments import FinetuneSettings, parse_finetune_arguments, resolve_batch_sizes
from ernievil_ds.finetuning.optimization import build_optimizer, manual_warmup_decay
from ernievil_ds.finetuning.tasks import TASKS, DownstreamTask, build_task
from ernievil_ds.runs import (
    FINETUNING,
    LossAverager,
    MetricsWriter,
    RunFolder,
    SamplePosition,
    checkpoint_record,
    complete_checkpoint,
    finish_run,
    preserved_rng,
    require_latest_checkpoint,
    resumed_batches,
    write_settings,
)

logger = get_logger(__name__)


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
    """The task's training loader (this process's share of a fresh permutation each epoch, whole batches,
    resumable inside an epoch) and evaluation loader."""
    train, evaluation = task.datasets()
    info = dist_info()
    # Whole batches only: a split smaller than one batch on every process would leave each an empty loader.
    global_micro_batch = settings.batch_size * info.world_size
    if len(train) < global_micro_batch:
        raise UserError(
            f"the training split has {len(train)} examples, fewer than one batch of {global_micro_batch} "
            f"({settings.batch_size} on each of {info.world_size} processes): use more training data or "
            "lower --batch-size"
        )
    sampler = ResumableDistributedSampler(
        len(train), num_replicas=info.world_size, rank=info.rank, seed=settings.seed
    )
    # Starting an iterator draws a seed from the loader's generator; a generator of its own keeps that
    # draw out of the global random state, which dropout reads, so a run resumed inside an epoch (whose
    # loader starts where the uninterrupted run's did not) draws the same dropout masks.
    train_loader = DataLoader(
        train,
        batch_size=settings.batch_size,
        sampler=sampler,
        collate_fn=task.collate,
        drop_last=True,
        generator=torch.Generator().manual_seed(settings.seed),
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


class FinetuningRun:
    """One run: the prepared model, optimiser, schedule and loaders, and the loop over optimiser steps."""

    def __init__(self, settings: FinetuneSettings) -> None:
        from accelerate.utils import GradientAccumulationPlugin

        check_model_source(settings)
        settings = resolve_batch_sizes(settings, dist_info().world_size)
        self.settings, self.folder = settings, RunFolder(settings.output_dir)
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
        # The data first: a VQA task's answer vocabulary, which sizes the head, comes with it. The training
        # loader is sharded by its own sampler (``runs.resumed_batches`` resumes it), not by accelerate.
        self.train_loader, eval_loader = build_loaders(self.task, settings)
        model = self.task.build_model()
        optimizer = build_optimizer(
            model,
            settings.learning_rate,
            weight_decay=settings.weight_decay,
            layer_decay=settings.layer_decay,
            layer_decay_table=settings.layer_decay_table,
            head_lr_scale=settings.head_lr_scale,
        )
        scheduler = manual_warmup_decay(
            optimizer, settings.warmup_steps, settings.decay_steps, settings.decay_ratio
        )
        self.model, self.optimizer, self.eval_loader, self.scheduler = self.accelerator.prepare(
            model, optimizer, eval_loader, scheduler
        )
        self.writer = MetricsWriter(self.folder, enabled=self.accelerator.is_main_process)
        self.averager = LossAverager(("loss",), self.accelerator.device)
        self.model_dtype = self.accelerator.unwrap_model(self.model).dtype
        self.position = SamplePosition()

    def train_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """The training batches from ``self.position`` on, epoch after epoch, on this process's device."""
        for batch in resumed_batches(self.train_loader, self.position):
            yield send_to_device(batch, self.accelerator.device)

    def save(self, step: int) -> None:
        """Collective: accelerate's state (model, optimiser, schedule, RNG) and the sample position."""
        path = self.folder.checkpoint_dir(step)
        self.accelerator.save_state(str(path))
        complete_checkpoint(path, step, self.position.state_dict())

    def resume(self) -> int:
        """Restore the newest complete checkpoint; returns its step.

        Raises:
            UserError: no complete checkpoint, or one written by another number of processes.
        """
        step, path = require_latest_checkpoint(self.folder.checkpoints_dir)
        record = checkpoint_record(path)
        if record["world_size"] != dist_info().world_size:
            raise UserError(
                f"--resume: {path} was written by {record['world_size']} processes, this run has "
                f"{dist_info().world_size}: resume with {record['world_size']}"
            )
        self.accelerator.load_state(str(path))
        self.position = SamplePosition.from_state_dict(record["sampler"])
        self.writer.drop_after(step)
        return step

    def log(self, step: int) -> float:
        """Write the mean loss since the last log (over micro-batches and processes); returns it."""
        losses = self.averager.compute()
        self.averager.reset()
        self.writer.write({"step": step, **losses, "lr": self.scheduler.get_last_lr()[0]})
        return losses.get("loss", math.nan)

    def evaluate(self, step: int) -> dict[str, float]:
        """Evaluate without moving the random state (starting a loader draws from it), so that a run
        resumed from a checkpoint taken after an evaluation draws what the uninterrupted run drew."""
        with preserved_rng(self.accelerator.device):
            result = evaluate(self.accelerator, self.model, self.task, self.eval_loader)
        self.writer.write_eval({"step": step, **result})
        return result

    def step_once(self, batch: dict[str, torch.Tensor]) -> bool:
        """Forward and backward of one micro-batch, and the optimiser step when it closes an accumulation;
        returns whether a step was taken."""
        with self.accelerator.accumulate(self.model):
            loss = self.task.training_loss(self.model, batch, self.model_dtype)
            self.accelerator.backward(loss)
            if self.accelerator.sync_gradients:
                self.accelerator.clip_grad_norm_(self.model.parameters(), self.settings.max_grad_norm)
            self.optimizer.step()  # a no-op inside an accumulation
            self.optimizer.zero_grad()
        self.averager.update({"loss": loss})
        stepped = self.accelerator.sync_gradients
        if stepped:
            self.scheduler.step()
        return stepped

    def train(self) -> dict[str, float]:
        """Run to ``settings.steps`` optimiser steps (from the last checkpoint with ``resume``), evaluate,
        save the last checkpoint and finish the run (``runs.finish_run``); returns the final evaluation."""
        settings = self.settings
        step = self.resume() if settings.resume else 0
        self.model.train()  # from_pretrained returns a model in eval mode: its dropout would stay off
        progress = tqdm(
            total=settings.steps,
            initial=step,
            desc="fine-tuning",
            disable=not self.accelerator.is_local_main_process,
        )
        batches = self.train_batches()
        while step < settings.steps:
            if not self.step_once(next(batches)):
                continue
            step += 1
            progress.update(1)
            if step % settings.log_every == 0 or step == settings.steps:
                progress.set_postfix(loss=f"{self.log(step):.4f}")
            if settings.eval_every and step % settings.eval_every == 0 and step < settings.steps:
                self.evaluate(step)
            if settings.save_every and step % settings.save_every == 0 and step < settings.steps:
                self.save(step)
        progress.close()
        result = self.evaluate(step)
        self.save(step)
        self.finish()
        return result

    def finish(self) -> None:
        """The model into ``hf_model/`` with its card and, with ``--push-to-hub``, on the Hub."""
        from ernievil_ds.hub.push import HubPublisher

        settings = self.settings
        publisher = HubPublisher(
            settings.push_to_hub, private=settings.hub_private, revision=settings.hub_revision
        )
        finish_run(self.folder, self.export, publisher)

    def export(self, folder: RunFolder) -> None:
        """``hf_model/``: config.json, model.safetensors, the model's code and the tokenizer files of
        ``--tokenizer``, which the model's inputs were built with."""
        from ernievil_ds.data import load_tokenizer
        from ernievil_ds.hub.model_code import write_model_code

        self.accelerator.unwrap_model(self.model).save_pretrained(folder.model_dir)
        write_model_code(folder.model_dir)
        load_tokenizer(self.settings.tokenizer).save_pretrained(folder.model_dir)

    def write_settings(self) -> None:
        """``run.json`` (main process): the settings, the model's config, the command and the world size."""
        if self.accelerator.is_main_process:
            config = self.accelerator.unwrap_model(self.model).config.to_dict()
            write_settings(self.folder, FINETUNING, asdict(self.settings), config)

    def close(self) -> None:
        self.writer.close()
        self.accelerator.end_training()


def finetune(settings: FinetuneSettings) -> dict[str, float]:
    """Fine-tune as ``settings`` say; returns the final evaluation (also the last line of ``eval.jsonl``)."""
    settings = resolve_batch_sizes(settings, dist_info().world_size)
    check_numbers(settings)
    if settings.push_to_hub:  # on every process, so that all stop together before training
        from ernievil_ds.hub.push import check_push_ready

        check_push_ready(settings.push_to_hub)
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
    run.write_settings()
    try:
        return run.train()
    finally:
        run.close()


def main(argv: list[str] | None = None) -> int:
    """The fine-tuning command (``launchers/finetune.py``): parse, train, print the final evaluation."""
    from ernievil_ds.distributed import setup_logging

    settings = parse_finetune_arguments(argv, description="Fine-tune ERNIE-ViL on a downstream task")
    setup_logging()
    result = finetune(settings)
    if dist_info().is_main:
        print(" ".join(f"{name}={value:.4f}" for name, value in result.items()))
    return 0


__all__ = ["TASKS", "FinetuningRun", "finetune", "main"]
