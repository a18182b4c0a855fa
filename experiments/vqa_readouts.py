"""synth_qa fine-tuning with another input to the VQA head, or with the encoder frozen: does the head's
input decide which question types a model learns?

    python experiments/vqa_readouts.py --readout concat -- --model M --output-dir OUT --train-question-types count,relation
    python experiments/vqa_readouts.py --freeze-encoder -- --model M --output-dir OUT --train-question-types count

Everything after ``--`` is the fine-tuning launcher's command line; ``--task synth_qa --recipe synth_qa``
come first, so a flag given there overrides the recipe. The head's input (the paper's is the fused vector
h_CLS * h_IMG, Co wide) is one of:

- ``fused``: the paper's;
- ``concat``: [h_CLS, h_IMG, h_CLS * h_IMG], 3 Co wide;
- ``region-sum``: [h_CLS * h_IMG, sum_r g_r k_r], 2 Co wide, where k_r = ReLU(Linear(v_r)) is region r's
  final image state taken to Co and g_r = sigmoid(w . (h_CLS * k_r)) gates it by the question: a sum, so
  the number of regions a question picks out can be read from it, which a softmax average cannot give.

``--freeze-encoder`` trains the poolers (h_CLS, h_IMG) and the head only. The run folder is the
launcher's. Its ``hf_model/`` is saved under the paper's class name (the export's model code knows only
the package's classes) with the readout's weights: load it with ``readout_model(...).from_pretrained``; the
paper's class refuses a wider head's weights.
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch
from torch import nn

from ernievil_ds.distributed import setup_logging
from ernievil_ds.finetuning.arguments import parse_finetune_arguments
from ernievil_ds.finetuning.loop import finetune
from ernievil_ds.finetuning.modeling import VQA_CLASSIFIER_HIDDEN, ErnieVilForVisualQuestionAnswering
from ernievil_ds.finetuning.tasks.vqa import SynthQaTask
from ernievil_ds.modeling_ernievil import ErnieVilModelOutput

logger = logging.getLogger(__name__)

#: The head's input width of each readout, in multiples of the co-attention width Co.
READOUT_WIDTHS = {"fused": 1, "concat": 3, "region-sum": 2}


def readout_model(readout: str, freeze_encoder: bool) -> type[ErnieVilForVisualQuestionAnswering]:
    """The synth_qa model class whose head reads ``readout``, its encoder frozen or not (poolers trained)."""

    class ReadoutVqaModel(ErnieVilForVisualQuestionAnswering):
        def __init__(self, config):
            super().__init__(config)
            co = config.co_hidden_size
            self.classifier[0] = nn.Linear(READOUT_WIDTHS[readout] * co, VQA_CLASSIFIER_HIDDEN)
            if readout == "region-sum":
                self.region_projection = nn.Linear(config.v_hidden_size, co)
                self.region_gate = nn.Linear(co, 1)
            self.post_init()
            self.freeze_encoder_weights()

        @classmethod
        def from_pretrained(cls, *args, **kwargs):
            # Loading marks every loaded weight trainable again.
            model = super().from_pretrained(*args, **kwargs)
            model.freeze_encoder_weights()
            return model

        def freeze_encoder_weights(self) -> None:
            """With ``freeze_encoder``, every encoder weight but the poolers' is left untrained."""
            if freeze_encoder:
                for name, parameter in self.ernievil.named_parameters():
                    parameter.requires_grad_(name.startswith(("text_pooler.", "image_pooler.")))

        def encode(self, input_ids, region_features, **encoder_inputs) -> ErnieVilModelOutput:
            """The encoder's outputs with ``pooled_output`` replaced by the readout, (B, width * Co)."""
            outputs = super().encode(input_ids, region_features, **encoder_inputs)
            if readout == "concat":
                outputs.pooled_output = torch.cat(
                    [outputs.pooled_text, outputs.pooled_image, outputs.pooled_output], dim=-1
                )
            elif readout == "region-sum":
                regions = torch.relu(self.region_projection(outputs.image_hidden_states[:, 1:]))  # (B, N, Co)
                gates = torch.sigmoid(self.region_gate(outputs.pooled_text[:, None] * regions))  # (B, N, 1)
                region_mask = encoder_inputs.get("region_mask")  # (B, N), 0 on padding
                if region_mask is not None:
                    gates = gates * region_mask[..., None].to(gates.dtype)
                outputs.pooled_output = torch.cat([outputs.pooled_output, (gates * regions).sum(1)], dim=-1)
            return outputs

    # The export names the architecture in the saved config and copies that class's code.
    ReadoutVqaModel.__name__ = ReadoutVqaModel.__qualname__ = ErnieVilForVisualQuestionAnswering.__name__
    return ReadoutVqaModel


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, launcher = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readout", choices=tuple(READOUT_WIDTHS), default="fused")
    parser.add_argument("--freeze-encoder", action="store_true", help="train the poolers and the head only")
    args = parser.parse_args(own)
    settings = parse_finetune_arguments(["--task", "synth_qa", "--recipe", "synth_qa", *launcher])
    if settings.task != "synth_qa":  # the class below is synth_qa's; another task would get the paper's head
        parser.error(f"--task {settings.task}: the readouts are built for synth_qa only")
    setup_logging()
    logger.info("readout %s, encoder %s", args.readout, "frozen" if args.freeze_encoder else "trained")
    # The synth_qa task builds its model from this class attribute; this process fine-tunes one model.
    SynthQaTask.model_class = readout_model(args.readout, args.freeze_encoder)
    result = finetune(settings)
    print(" ".join(f"{name}={value:.4f}" for name, value in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
