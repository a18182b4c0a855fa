"""ernievil-ds: ERNIE-ViL pretraining with Scene Graph Prediction, on transformers, datasets and DeepSpeed.

Importing the package registers the configs and models with the ``transformers`` Auto classes, so
``AutoModel.from_pretrained(dir)`` loads a saved ERNIE-ViL (``model_type`` ``ernievil``) or its grounded
variant (``ernievil_grounded``, ``ernievil_ds.grounding``) with no network.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMultipleChoice,
    AutoModelForPreTraining,
    AutoModelForVisualQuestionAnswering,
)

from ernievil_ds.configuration_ernievil import PRESETS, ErnieVilConfig, ErnieVilGroundedConfig
from ernievil_ds.finetuning.modeling import ErnieVilForMultipleChoice, ErnieVilForVisualQuestionAnswering
from ernievil_ds.grounding import ErnieVilGroundedForPreTraining, ErnieVilGroundedModel
from ernievil_ds.modeling_ernievil import (
    ErnieVilForPreTraining,
    ErnieVilForPreTrainingOutput,
    ErnieVilModel,
    ErnieVilModelOutput,
    ErnieVilPreTrainedModel,
)

for _config, _model, _pretraining in (
    (ErnieVilConfig, ErnieVilModel, ErnieVilForPreTraining),
    (ErnieVilGroundedConfig, ErnieVilGroundedModel, ErnieVilGroundedForPreTraining),
):
    AutoConfig.register(_config.model_type, _config)
    AutoModel.register(_config, _model)
    AutoModelForPreTraining.register(_config, _pretraining)
# The fine-tuning heads build either encoder from the config; the Auto classes map them from the paper's
# config (a grounded fine-tuned model loads through its class's own from_pretrained).
AutoModelForVisualQuestionAnswering.register(ErnieVilConfig, ErnieVilForVisualQuestionAnswering)
AutoModelForMultipleChoice.register(ErnieVilConfig, ErnieVilForMultipleChoice)

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "ErnieVilConfig",
    "ErnieVilForPreTraining",
    "ErnieVilForPreTrainingOutput",
    "ErnieVilGroundedConfig",
    "ErnieVilGroundedForPreTraining",
    "ErnieVilGroundedModel",
    "ErnieVilModel",
    "ErnieVilModelOutput",
    "ErnieVilPreTrainedModel",
]
