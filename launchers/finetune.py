"""Fine-tune ERNIE-ViL on a downstream task with ``accelerate``.

    accelerate launch [--config_file accelerate_configs/cpu_2proc.yaml] launchers/finetune.py \
        --task synth_qa --model runs/demo/hf_model --output-dir runs/synth_qa

Writes the run folder of ``ernievil_ds.runs`` under --output-dir: run.json (the settings record),
metrics.jsonl (loss and learning rate per logged step), eval.jsonl (accuracies), TensorBoard logs,
accelerate checkpoints under checkpoints/ (``--resume`` continues from the last complete one) and the
fine-tuned model with its model card under hf_model/; --push-to-hub NAME then publishes it on the Hugging
Face Hub. The flags and their defaults are ``ernievil_ds.finetuning.arguments``. An error in the input
ends with one line on stderr and exit status 2; --debug (or ERNIEVIL_DS_DEBUG=1) shows its traceback.
"""

import sys

from ernievil_ds.errors import run_command
from ernievil_ds.finetuning.loop import main

if __name__ == "__main__":
    sys.exit(run_command(main, prog="finetune.py"))
