"""What the fine-tuning loop needs of a downstream task: its model, its data, its loss and its metric.

A task turns the loop's settings into a model (a saved encoder plus a fresh head, or a fresh preset), a
training and an evaluation set with their collate function, and says how a batch becomes the model's
inputs and how evaluation batches become metrics. The loop (``ernievil_ds.finetuning.loop``) owns
everything else: the accelerator, the optimiser and schedule, checkpoints, logging.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar

import torch
from transformers import AutoConfig

from ernievil_ds.configuration_ernievil import ErnieVilConfig
from ernievil_ds.errors import UserError
from ernievil_ds.finetuning.modeling import ErnieVilForFineTuning

if TYPE_CHECKING:
    from ernievil_ds.finetuning.arguments import FinetuneSettings

#: Batch entries that the metrics read and the model does not take.
METADATA_PREFIX = "meta_"

T = TypeVar("T")


class DownstreamTask(ABC):
    """One downstream task for the loop. Subclasses name their model class and fill in the data and the
    metric; the defaults build the model and the inputs the same way for every task."""

    #: The fine-tuning model the task trains.
    model_class: ClassVar[type[ErnieVilForFineTuning]]

    def __init__(self, settings: FinetuneSettings) -> None:
        self.settings = settings

    def config_updates(self) -> dict:
        """Changes to the encoder's config for this task's head (the VQA answers, say)."""
        return {}

    def build_model(self) -> ErnieVilForFineTuning:
        """The task's model over the saved encoder of ``--model`` or a fresh ``--preset`` one."""
        settings = self.settings
        if settings.model is not None:
            if not (settings.model / "config.json").is_file():
                raise UserError(
                    f"--model {settings.model} holds no config.json: give a saved model directory"
                )
            config = AutoConfig.from_pretrained(settings.model)
            config.update(self.config_updates())
            return self.model_class.from_pretrained(settings.model, config=config)
        return self.model_class(ErnieVilConfig.from_preset(settings.preset, **self.config_updates()))

    def splits(self, load: Callable[[Path], T]) -> tuple[T, T]:
        """The training split of ``--data-dir`` and the evaluation split of ``--eval-data-dir``, each read
        by ``load`` (an imported directory of ``ernievil-ds import-finetune``)."""
        settings = self.settings
        for flag, directory in (
            ("--data-dir", settings.data_dir),
            ("--eval-data-dir", settings.eval_data_dir),
        ):
            if directory is None:
                raise UserError(
                    f"task {settings.task!r} needs {flag}: a split imported with ernievil-ds import-finetune"
                )
        return load(settings.data_dir), load(settings.eval_data_dir)

    @abstractmethod
    def datasets(self) -> tuple[Sequence, Sequence]:
        """The training and the evaluation examples, each a sequence that ``collate`` batches."""

    @abstractmethod
    def collate(self, examples: list) -> dict[str, torch.Tensor]:
        """A batch: the model's keyword inputs (targets included), plus ``meta_*`` entries for the metric."""

    def model_inputs(self, batch: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The model's keyword inputs of a batch: the ``meta_*`` entries dropped, region (and [IMG])
        features in the model's dtype (a DeepSpeed fp16 or bf16 engine holds half-precision weights and
        casts no inputs), and zeroed for the question-only baseline."""
        inputs = {name: value for name, value in batch.items() if not name.startswith(METADATA_PREFIX)}
        for name in ("region_features", "img_features"):
            if name in inputs:
                features = inputs[name].to(dtype)
                inputs[name] = torch.zeros_like(features) if self.settings.zero_image_features else features
        return inputs

    def training_loss(self, model, batch: dict[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        """The loss of one training batch."""
        return model(**self.model_inputs(batch, dtype)).loss

    @abstractmethod
    def eval_step(self, model, batch: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Per-example results of one evaluation batch, each a tensor with the batch as first axis, which the
        loop gathers across processes."""

    @abstractmethod
    def summarize(self, results: dict[str, torch.Tensor]) -> dict[str, float]:
        """The metrics from the gathered per-example results of the whole evaluation set."""


__all__ = ["METADATA_PREFIX", "DownstreamTask"]
