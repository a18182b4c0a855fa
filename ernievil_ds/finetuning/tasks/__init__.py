"""The downstream tasks the fine-tuning loop runs, by ``--task`` name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ernievil_ds.errors import UserError
from ernievil_ds.finetuning.tasks.base import METADATA_PREFIX, DownstreamTask
from ernievil_ds.finetuning.tasks.vqa import SynthQaTask, VisualQuestionAnsweringTask

if TYPE_CHECKING:
    from ernievil_ds.finetuning.loop import FinetuneSettings

#: ``--task`` name -> the task; the official tasks' data come from ``ernievil-ds import-finetune``.
TASK_CLASSES: dict[str, type[DownstreamTask]] = {"synth_qa": SynthQaTask}
#: Every task the launcher knows, with or without a data reader.
TASKS = ("vqa", "vcr", "refcoco", "retrieval", "synth_qa")


def build_task(settings: FinetuneSettings) -> DownstreamTask:
    """The task that ``settings.task`` names; ``UserError`` for a task without a data reader."""
    if settings.task not in TASKS:
        raise UserError(f"unknown task {settings.task!r}; expected one of {TASKS}")
    if settings.task not in TASK_CLASSES:
        raise UserError(
            f"task {settings.task!r} has its head, loss and metric (ernievil_ds.finetuning) but no importer "
            f"for its official data files yet; the tasks that run end to end: {sorted(TASK_CLASSES)}"
        )
    return TASK_CLASSES[settings.task](settings)


__all__ = [
    "METADATA_PREFIX",
    "TASKS",
    "TASK_CLASSES",
    "DownstreamTask",
    "SynthQaTask",
    "VisualQuestionAnsweringTask",
    "build_task",
]
