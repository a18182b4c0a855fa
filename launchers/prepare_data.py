"""Prepare pretraining data: import captions and region features, or generate SynthScenes.

    python launchers/prepare_data.py synth --output data/synth
    python launchers/prepare_data.py captions --format coco --input captions_train2017.json --output data/coco --split train
    python launchers/prepare_data.py features --format tsv --input trainval/*.tsv --output data/coco

Every subcommand is resumable: rerun the same command after an interruption. An error in the input ends
with one line on stderr and exit status 2; --debug (or ERNIEVIL_DS_DEBUG=1) shows its traceback.
"""

import sys

from ernievil_ds.data.prepare_cli import main
from ernievil_ds.errors import run_command

if __name__ == "__main__":
    sys.exit(run_command(main, prog="prepare_data.py"))
