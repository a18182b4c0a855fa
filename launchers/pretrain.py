"""Pretrain ERNIE-ViL under DeepSpeed (ZeRO-2; fp16, bf16 or fp32 as the JSON config says).

    deepspeed launchers/pretrain.py --deepspeed ds_configs/v100_8.json --preset base \
        --data-dir DATA --output-dir runs/base --max-steps 700000 --save-every 5000

The library holds the logic (ernievil_ds.training.pretrain); this file is the DeepSpeed program.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import deepspeed

from ernievil_ds.distributed import setup_logging
from ernievil_ds.training.pretrain import PretrainingRun, add_pretrain_arguments

# DeepSpeed 0.19's ZeRO-2 calls a torch.distributed function that torch 2.13 deprecates, once per step.
warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.*", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    parser = add_pretrain_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    setup_logging()
    deepspeed.init_distributed()  # NCCL on GPUs, gloo on the CPU accelerator
    run = PretrainingRun.prepare(args)
    engine, _, _, _ = deepspeed.initialize(
        model=run.model,
        model_parameters=run.model.optimizer_groups(
            run.ds_config["optimizer"]["params"].get("weight_decay", 0.0)
        ),
        config=run.ds_config,
    )
    run.train(engine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
