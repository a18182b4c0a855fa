"""Visual question answering: the VQA head, its loss and the VQA soft accuracy, overall and per question
type. ``vqa`` reads imported VQA splits; ``synth_qa`` asks questions generated from SynthScenes."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ernievil_ds.errors import UserError
from ernievil_ds.finetuning.data import collate_vqa, load_vqa
from ernievil_ds.finetuning.metrics import vqa_soft_accuracy
from ernievil_ds.finetuning.modeling import ErnieVilForVisualQuestionAnswering
from ernievil_ds.finetuning.synth_qa import ANSWERS, QUESTION_TYPES, collate_questions, split_examples
from ernievil_ds.finetuning.tasks.base import DownstreamTask

#: ``--vqa-loss`` -> the ``problem_type`` that makes the VQA model train with that loss (``VQA_LOSSES``).
VQA_LOSS_PROBLEM_TYPES = {
    "sigmoid": "multi_label_classification",
    "softmax": "single_label_classification",
}


class VisualQuestionAnsweringTask(DownstreamTask):
    """A VQA task over a fixed answer vocabulary. Batches carry ``labels`` (B, A), each answer's soft score,
    and optionally ``meta_kinds`` (B,), the index of each question's type in ``question_types``."""

    model_class = ErnieVilForVisualQuestionAnswering
    answers: tuple[str, ...] = ()
    question_types: tuple[str, ...] = ()

    def config_updates(self) -> dict:
        """The answers, and the loss's ``problem_type`` when ``--vqa-loss`` names one."""
        updates = {
            "id2label": dict(enumerate(self.answers)),
            "label2id": {answer: i for i, answer in enumerate(self.answers)},
        }
        if self.settings.vqa_loss is not None:
            updates["problem_type"] = VQA_LOSS_PROBLEM_TYPES[self.settings.vqa_loss]
        return updates

    def eval_step(self, model, batch: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
        logits = model(**self.model_inputs(batch, dtype)).logits  # (B, A)
        result = {"score": vqa_soft_accuracy(logits.float(), batch["labels"])}  # (B,)
        if "meta_kinds" in batch:
            result["kind"] = batch["meta_kinds"]  # (B,)
        return result

    def summarize(self, results: dict[str, torch.Tensor]) -> dict[str, float]:
        """``eval_accuracy`` over all questions and ``eval_accuracy_<type>`` per question type."""
        scores = results["score"]
        summary = {"eval_accuracy": scores.mean().item()}
        for index, kind in enumerate(self.question_types):
            of_kind = results["kind"] == index
            if of_kind.any():
                summary[f"eval_accuracy_{kind}"] = scores[of_kind].mean().item()
        return summary


class OfficialVqaTask(VisualQuestionAnsweringTask):
    """``vqa``: imported VQA splits (the official TSV or VQA v2 JSON); both splits must share one answer
    vocabulary, the training split's ``answers.json``."""

    def datasets(self) -> tuple[Sequence, Sequence]:
        (train, answers), (evaluation, eval_answers) = self.splits(load_vqa)
        if eval_answers != answers:
            raise UserError(
                f"--eval-data-dir {self.settings.eval_data_dir} has another answer vocabulary than --data-dir "
                f"{self.settings.data_dir}: import it with --answers {self.settings.data_dir}/answers.json"
            )
        self.answers = tuple(answers)
        return train, evaluation

    def collate(self, examples: list) -> dict[str, torch.Tensor]:
        return collate_vqa(examples, len(self.answers))


class SynthQaTask(VisualQuestionAnsweringTask):
    """``synth_qa``: questions about SynthScenes, generated in memory (``ernievil_ds.finetuning.synth_qa``);
    the training and evaluation scenes come from different seeds. ``--train-question-types`` keeps the
    training questions of those types (the same scenes and draws, the others left out);
    ``--question-loss-weights`` gives each batch ``question_weights`` (B,), the weight of each question's
    type in the loss."""

    answers = ANSWERS
    question_types = QUESTION_TYPES

    def datasets(self) -> tuple[Sequence, Sequence]:
        from ernievil_ds.data import load_tokenizer

        settings = self.settings
        tokenizer = load_tokenizer(settings.tokenizer)
        train = split_examples("train", settings.train_images, settings.seed, tokenizer)
        evaluation = split_examples("eval", settings.eval_images, settings.seed, tokenizer)
        if settings.train_question_types is not None:
            kinds = {QUESTION_TYPES.index(kind) for kind in settings.train_question_types}
            train = [example for example in train if example["kind"] in kinds]
        return train, evaluation

    def collate(self, examples: list) -> dict[str, torch.Tensor]:
        batch = collate_questions(examples)
        if self.settings.question_loss_weights is not None:
            weights = self.settings.question_loss_weights
            type_weights = torch.tensor([weights.get(kind, 1.0) for kind in QUESTION_TYPES])  # (types,)
            batch["question_weights"] = type_weights[batch["meta_kinds"]]  # (B,)
        return batch


__all__ = ["VQA_LOSS_PROBLEM_TYPES", "OfficialVqaTask", "SynthQaTask", "VisualQuestionAnsweringTask"]
