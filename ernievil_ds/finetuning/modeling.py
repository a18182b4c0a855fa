"""ERNIE-ViL with the fine-tuning heads of the paper's four tasks, as the official ``finetune.py`` built
them: VQA, VCR (Q->A and QA->R), RefCOCO+ and Flickr30K image-text retrieval.

Every model holds the encoder under ``ernievil`` (``AutoModel.from_config``: [`ErnieVilModel`], or the
grounded variant for a grounded config), so ``from_pretrained`` on a saved pretraining model loads its
encoder and initialises only the head. Every ``forward`` takes the encoder's inputs by keyword
(``attention_mask``, ``token_type_ids``, ``region_mask``, ``region_boxes``, ``image_sizes``,
``region_locations``; see [`ErnieVilModel.forward`]).

Shape legend: B batch, T text tokens, R regions including the leading [IMG] region, A answers, C choices
(or pairs of a retrieval group), Co co-attention width, Cv image width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModel
from transformers.utils import ModelOutput

from ernievil_ds.configuration_ernievil import ErnieVilConfig
from ernievil_ds.finetuning.losses import (
    multiple_choice_loss,
    referring_expression_loss,
    retrieval_loss,
    vqa_loss,
    vqa_softmax_loss,
)
from ernievil_ds.modeling_ernievil import ErnieVilModelOutput, ErnieVilPreTrainedModel

#: Width of the VQA classifier's hidden layer and its dropout (the official ``vqa_classifier_loss``).
VQA_CLASSIFIER_HIDDEN = 2048
VQA_CLASSIFIER_DROPOUT = 0.5
#: The VQA loss of each ``config.problem_type``: per-answer sigmoids (the paper's, and the default when the
#: config names none) or one softmax over the answers.
VQA_LOSSES = {
    None: vqa_loss,
    "multi_label_classification": vqa_loss,
    "single_label_classification": vqa_softmax_loss,
}
#: VCR's two tasks, each with its own choice scorer.
VCR_TASKS = ("q2a", "qa2r")
#: The ``from_pretrained`` arguments that say where the config is, passed on to ``AutoConfig``.
_CONFIG_LOCATION_KWARGS = ("cache_dir", "local_files_only", "revision", "subfolder", "token")


@dataclass
class ErnieVilFineTuningOutput(ModelOutput):
    r"""Outputs of the fine-tuning models.

    loss (`torch.FloatTensor` of shape `()`): the task's training loss, when its targets are given.
    logits (`torch.FloatTensor`): the head's scores, of shape
        `(batch_size, num_answers)` (VQA), `(batch_size, num_choices)` (VCR; retrieval groups),
        `(batch_size, num_regions + 1)` with [IMG] first (RefCOCO+), `(batch_size,)` (retrieval pairs).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None


class ErnieVilForFineTuning(ErnieVilPreTrainedModel):
    """The encoder under ``ernievil`` and nothing else; each task's model adds its head."""

    # A pretraining checkpoint's heads are not used by fine-tuning.
    _keys_to_ignore_on_load_unexpected = [r"^(token_head|region_head|itm_head)\."]

    def __init__(self, config: ErnieVilConfig):
        super().__init__(config)
        # A config that came with the model's code (trust_remote_code) names its encoder in auto_map.
        self.ernievil = AutoModel.from_config(config, trust_remote_code=True)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, config=None, **kwargs):
        """As ``PreTrainedModel.from_pretrained``, reading the saved config with ``AutoConfig`` so that a
        grounded model keeps its grounded encoder. Config changes (the VQA answers, say) go in ``config``."""
        if config is None:
            where = {key: kwargs[key] for key in _CONFIG_LOCATION_KWARGS if key in kwargs}
            config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **where)
        return super().from_pretrained(pretrained_model_name_or_path, *args, config=config, **kwargs)

    def encode(
        self, input_ids: torch.Tensor, region_features: torch.Tensor, **encoder_inputs
    ) -> ErnieVilModelOutput:
        """The encoder's outputs (text and image states, the fused vector) for the task head."""
        return self.ernievil(input_ids, region_features, **encoder_inputs)


def fused_vector_dropout(config: ErnieVilConfig) -> nn.Dropout:
    """Dropout on the fused vector h_CLS * h_IMG, as the official ``get_match_score`` applies it: at the
    config's ``attention_probs_dropout_prob`` whenever its caller asks for any dropout. The VQA model asks
    (its ``"mul"`` lands in the rate argument and ``"mul" > 0.0`` holds under the Python 2 the release
    targets); the VCR conf asks with ``dropout_rate`` 0.1; retrieval does not."""
    return nn.Dropout(config.attention_probs_dropout_prob)


def flatten_groups(tensors: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor | None]:
    """Inputs with a group axis, (B, C, ...) each, as a batch of B * C pairs, (B * C, ...)."""
    return {name: None if t is None else t.flatten(0, 1) for name, t in tensors.items()}


class ErnieVilForVisualQuestionAnswering(ErnieVilForFineTuning):
    """VQA: the fused vector h_CLS * h_IMG -> dropout (``fused_vector_dropout``) -> Linear(Co, 2048) + ReLU
    -> dropout 0.5 -> Linear(2048, num_answers). The answers are ``config.id2label`` (``config.num_labels``
    of them); ``config.problem_type`` picks the loss (``VQA_LOSSES``), so a saved model trains on with the
    loss it was fine-tuned with."""

    def __init__(self, config: ErnieVilConfig):
        super().__init__(config)
        if config.problem_type not in VQA_LOSSES:
            raise ValueError(
                f"a VQA model's problem_type is one of {tuple(VQA_LOSSES)}, not {config.problem_type!r}"
            )
        self.fused_dropout = fused_vector_dropout(config)
        self.classifier = nn.Sequential(
            nn.Linear(config.co_hidden_size, VQA_CLASSIFIER_HIDDEN),
            nn.ReLU(),
            nn.Dropout(VQA_CLASSIFIER_DROPOUT),
            nn.Linear(VQA_CLASSIFIER_HIDDEN, config.num_labels),
        )
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        region_features: torch.FloatTensor,
        labels: torch.FloatTensor | None = None,
        question_weights: torch.FloatTensor | None = None,
        **encoder_inputs,
    ) -> ErnieVilFineTuningOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, text_length)`): `[CLS] question [SEP]`.
        region_features (`torch.FloatTensor` of shape `(batch_size, num_regions, v_feature_size)`).
        labels (`torch.FloatTensor` of shape `(batch_size, num_answers)`): each answer's VQA soft score;
            the loss is [`vqa_loss`] or, for `problem_type="single_label_classification"`,
            [`vqa_softmax_loss`].
        question_weights (`torch.FloatTensor` of shape `(batch_size,)`, *optional*): each question's
            weight in the loss's batch mean (1 when not given).

        Returns logits of shape `(batch_size, num_answers)`.
        """
        pooled = self.encode(input_ids, region_features, **encoder_inputs).pooled_output  # (B, Co)
        logits = self.classifier(self.fused_dropout(pooled))  # (B, A)
        loss = None
        if labels is not None:
            loss = VQA_LOSSES[self.config.problem_type](logits, labels, question_weights)
        return ErnieVilFineTuningOutput(loss=loss, logits=logits)


class ErnieVilForMultipleChoice(ErnieVilForFineTuning):
    """VCR: one score per choice, dropout on the fused vector (``fused_vector_dropout``) then Linear(Co, 1),
    with one scorer per task (``q2a``, ``qa2r``), as the official model trains both in one network."""

    def __init__(self, config: ErnieVilConfig):
        super().__init__(config)
        self.fused_dropout = fused_vector_dropout(config)
        self.choice_scorers = nn.ModuleDict({task: nn.Linear(config.co_hidden_size, 1) for task in VCR_TASKS})
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        region_features: torch.FloatTensor,
        labels: torch.LongTensor | None = None,
        task: str = "q2a",
        **encoder_inputs,
    ) -> ErnieVilFineTuningOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, num_choices, text_length)`): per choice,
            `[CLS] q [SEP] a [SEP]` (Q->A) or `[CLS] q [SEP] a [SEP] r [SEP]` (QA->R).
        region_features (`torch.FloatTensor` of shape `(batch_size, num_choices, num_regions, v_feature_size)`),
            and every other encoder input, with the choices axis second.
        labels (`torch.LongTensor` of shape `(batch_size,)`): the right choice; the loss is the sigmoid per
            choice of [`multiple_choice_loss`] (evaluate with the softmax over choices).
        task: `"q2a"` or `"qa2r"`, the scorer to use.

        Returns logits of shape `(batch_size, num_choices)`.
        """
        if task not in self.choice_scorers:
            raise ValueError(f"VCR task {task!r} is unknown; expected one of {VCR_TASKS}")
        batch, num_choices = input_ids.shape[:2]
        pairs = flatten_groups({"input_ids": input_ids, "region_features": region_features, **encoder_inputs})
        pooled = self.encode(**pairs).pooled_output  # (B * C, Co)
        logits = self.choice_scorers[task](self.fused_dropout(pooled)).view(batch, num_choices)  # (B, C)
        loss = None if labels is None else multiple_choice_loss(logits, labels)
        return ErnieVilFineTuningOutput(loss=loss, logits=logits)


class ErnieVilForReferringExpressions(ErnieVilForFineTuning):
    """RefCOCO+: Linear(Cv, 1) on every final region state, [IMG] included."""

    def __init__(self, config: ErnieVilConfig):
        super().__init__(config)
        self.region_scorer = nn.Linear(config.v_hidden_size, 1)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        region_features: torch.FloatTensor,
        labels: torch.FloatTensor | None = None,
        region_mask: torch.LongTensor | None = None,
        **encoder_inputs,
    ) -> ErnieVilFineTuningOutput:
        r"""
        labels (`torch.FloatTensor` of shape `(batch_size, num_regions + 1)`): soft IoU targets
            ([`soft_iou_targets`]), [IMG] first (the referred box's IoU with the whole image); the loss is
            [`referring_expression_loss`] over the real regions.

        Returns logits of shape `(batch_size, num_regions + 1)`, [IMG] first.
        """
        batch, num_regions = region_features.shape[:2]
        if region_mask is None:
            region_mask = torch.ones(batch, num_regions, dtype=torch.long, device=region_features.device)
        outputs = self.encode(input_ids, region_features, region_mask=region_mask, **encoder_inputs)
        logits = self.region_scorer(outputs.image_hidden_states).squeeze(-1)  # (B, R)
        loss = None
        if labels is not None:
            keep = torch.cat([region_mask.new_ones(batch, 1), region_mask], dim=1)  # (B, R) with [IMG]
            loss = referring_expression_loss(logits, labels, keep)
        return ErnieVilFineTuningOutput(loss=loss, logits=logits)


class ErnieVilForImageTextRetrieval(ErnieVilForFineTuning):
    """Flickr30K retrieval: a match logit Linear(Co, 1) on the fused vector of each caption-image pair."""

    def __init__(self, config: ErnieVilConfig):
        super().__init__(config)
        self.match_scorer = nn.Linear(config.co_hidden_size, 1)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        region_features: torch.FloatTensor,
        return_loss: bool = False,
        **encoder_inputs,
    ) -> ErnieVilFineTuningOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(num_pairs, text_length)` or, for training groups,
            `(batch_size, 1 + 2 * num_negatives, text_length)`): the matched pair first in each group, then
            the negatives of one kind, then those of the other (20 in the official conf); every other input
            with the same leading axes.
        return_loss: compute [`retrieval_loss`] (circle loss) over the groups.

        Returns logits of shape `(num_pairs,)` or `(batch_size, 1 + 2 * num_negatives)`.
        """
        grouped = input_ids.dim() == 3
        if return_loss and not grouped:
            raise ValueError(
                "the retrieval loss needs groups: input_ids of shape (batch, 1 + 2K, text_length)"
            )
        inputs = {"input_ids": input_ids, "region_features": region_features, **encoder_inputs}
        pooled = self.encode(**(flatten_groups(inputs) if grouped else inputs)).pooled_output  # (N, Co)
        logits = self.match_scorer(pooled).squeeze(-1)  # (N,)
        if grouped:
            logits = logits.view(input_ids.shape[:2])  # (B, 1 + 2K)
        return ErnieVilFineTuningOutput(loss=retrieval_loss(logits) if return_loss else None, logits=logits)


__all__ = [
    "ErnieVilFineTuningOutput",
    "ErnieVilForFineTuning",
    "ErnieVilForImageTextRetrieval",
    "ErnieVilForMultipleChoice",
    "ErnieVilForReferringExpressions",
    "ErnieVilForVisualQuestionAnswering",
]
