"""Fine-tuning ERNIE-ViL on the paper's downstream tasks: the task heads, their losses and metrics, the
official optimiser policy, and the ``accelerate`` training loop."""

from ernievil_ds.finetuning.modeling import (
    ErnieVilFineTuningOutput,
    ErnieVilForFineTuning,
    ErnieVilForImageTextRetrieval,
    ErnieVilForMultipleChoice,
    ErnieVilForReferringExpressions,
    ErnieVilForVisualQuestionAnswering,
)

__all__ = [
    "ErnieVilFineTuningOutput",
    "ErnieVilForFineTuning",
    "ErnieVilForImageTextRetrieval",
    "ErnieVilForMultipleChoice",
    "ErnieVilForReferringExpressions",
    "ErnieVilForVisualQuestionAnswering",
]
