"""The downstream tasks the fine-tuning loop runs, by ``--task`` name."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ernievil_ds.errors import UserError
from ernievil_ds.finetuning.synth_qa import QUESTION_TYPES
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
        UserError: an unknown task, ``--vqa-loss`` for a task that is not VQA, or
            ``--train-question-types`` or ``--question-loss-weights`` for another task than synth_qa or
            naming an unknown type, or a question type's weight that is not a positive number.
    """
    if settings.task not in TASK_CLASSES:
        raise UserError(f"unknown task {settings.task!r}; expected one of {TASKS}")
    task_class = TASK_CLASSES[settings.task]
    if settings.vqa_loss is not None and not issubclass(task_class, VisualQuestionAnsweringTask):
        raise UserError(f"--vqa-loss applies to the VQA tasks (vqa, synth_qa), not to {settings.task!r}")
    for flag, kinds in (
        ("--train-question-types", settings.train_question_types),
        ("--question-loss-weights", settings.question_loss_weights),
    ):
        if kinds is None:
            continue
        if task_class is not SynthQaTask:
            raise UserError(f"{flag} applies to synth_qa, not to {settings.task!r}")
        unknown = sorted(set(kinds) - set(QUESTION_TYPES))
        if unknown or not kinds:
            raise UserError(f"{flag} takes some of {QUESTION_TYPES}, got {unknown or 'none'}")
    for kind, weight in (settings.question_loss_weights or {}).items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < math.inf:
            raise UserError(
                f"--question-loss-weights: the weight of {kind} must be a positive number, got {weight!r}"
            )
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
