"""The downstream tasks the fine-tuning loop runs, by ``--task`` name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ernievil_ds.errors import UserError
from ernievil_ds.finetuning.tasks.base import METADATA_PREFIX, DownstreamTask
from ernievil_ds.finetuning.tasks.refcoco import ReferringExpressionsTask
from ernievil_ds.finetuning.tasks.retrieval import ImageTextRetrievalTask
from ernievil_ds.finetuning.tasks.vcr import VisualCommonsenseReasoningTask
from ernievil_ds.finetuning.tasks.vqa import OfficialVqaTask, SynthQaTask, VisualQuestionAnsweringTask

if TYPE_CHECKING:
    from ernievil_ds.finetuning.arguments import FinetuneSettings

#: ``--task`` name -> the task; the official tasks' data come from ``ernievil-ds import-finetune``.
TASK_CLASSES: dict[str, type[DownstreamTask]] = {
    "vqa": OfficialVqaTask,
    "vcr": VisualCommonsenseReasoningTask,
    "refcoco": ReferringExpressionsTask,
    "retrieval": ImageTextRetrievalTask,
    "synth_qa": SynthQaTask,
}
TASKS = tuple(TASK_CLASSES)


def build_task(settings: FinetuneSettings) -> DownstreamTask:
    """The task that ``settings.task`` names."""
    if settings.task not in TASK_CLASSES:
        raise UserError(f"unknown task {settings.task!r}; expected one of {TASKS}")
    return TASK_CLASSES[settings.task](settings)


__all__ = [
    "METADATA_PREFIX",
    "TASKS",
    "TASK_CLASSES",
    "DownstreamTask",
    "ImageTextRetrievalTask",
    "OfficialVqaTask",
    "ReferringExpressionsTask",
    "SynthQaTask",
    "VisualCommonsenseReasoningTask",
    "VisualQuestionAnsweringTask",
    "build_task",
]
