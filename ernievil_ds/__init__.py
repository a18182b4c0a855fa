"""ernievil-ds: ERNIE-ViL pretraining with Scene Graph Prediction, on transformers, datasets and DeepSpeed.

Importing the package registers ``ErnieVilConfig`` and the models with the ``transformers`` Auto classes,
so ``AutoModel.from_pretrained(dir)`` loads a saved ERNIE-ViL with no network.
"""

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from ernievil_ds.configuration_ernievil import PRESETS, ErnieVilConfig
from ernievil_ds.modeling_ernievil import (
    ErnieVilForPreTraining,
    ErnieVilForPreTrainingOutput,
    ErnieVilModel,
    ErnieVilModelOutput,
    ErnieVilPreTrainedModel,
)

AutoConfig.register(ErnieVilConfig.model_type, ErnieVilConfig)
AutoModel.register(ErnieVilConfig, ErnieVilModel)
AutoModelForPreTraining.register(ErnieVilConfig, ErnieVilForPreTraining)

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "ErnieVilConfig",
    "ErnieVilForPreTraining",
    "ErnieVilForPreTrainingOutput",
    "ErnieVilModel",
    "ErnieVilModelOutput",
    "ErnieVilPreTrainedModel",
]
