"""The downstream tasks the fine-tuning loop runs, by ``--task`` name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ernievil_ds.errors import UserError
from ernievil_ds.finetuning.tasks.base import METADATA_PREFIX, DownstreamTask
from ernievil_ds.finetuning.tasks.refcoco import ReferringExpressionsTask
from ernievil_ds.finetuning.tasks.retrieval import ImageTextRetrievalTask
from ernievil_ds.finetuning.tasks.vcr import VisualCommonsenseReasoningTask
from ernievil_ds.finetuning.tasks.vqa import (
    VQA_LOSS_PROBLEM_TYPES,
    OfficialVqaTask,
    SynthQaTask,
    VisualQuestionAnsweringTask,
)

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
    """The task that ``settings.task`` names.

    Raises:
        UserError: an unknown task, or ``--vqa-loss`` for a task that is not VQA.
    """
    if settings.task not in TASK_CLASSES:
        raise UserError(f"unknown task {settings.task!r}; expected one of {TASKS}")
    task_class = TASK_CLASSES[settings.task]
    if settings.vqa_loss is not None and not issubclass(task_class, VisualQuestionAnsweringTask):
        raise UserError(f"--vqa-loss applies to the VQA tasks (vqa, synth_qa), not to {settings.task!r}")
    return task_class(settings)


__all__ = [
    "METADATA_PREFIX",
    "TASKS",
    "TASK_CLASSES",
    "VQA_LOSS_PROBLEM_TYPES",
    "DownstreamTask",
    "ImageTextRetrievalTask",
    "OfficialVqaTask",
    "ReferringExpressionsTask",
    "SynthQaTask",
    "VisualCommonsenseReasoningTask",
    "VisualQuestionAnsweringTask",
    "build_task",
]
