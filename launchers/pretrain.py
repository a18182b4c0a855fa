"""Pretrain ERNIE-ViL under DeepSpeed (ZeRO-2; fp16, bf16 or fp32 as the JSON config says).

    deepspeed --num_gpus 2 launchers/pretrain.py --deepspeed ds_configs/cpu_fp32.json --recipe demo_cpu \
        --output-dir runs/demo
    deepspeed launchers/pretrain.py --deepspeed ds_configs/v100_8.json --recipe paper_base \
        --data-dir DATA --output-dir runs/base

The library holds the logic (ernievil_ds.pretraining); this file is the DeepSpeed program. An error in the
input stops every rank with exit status 2 and one line from rank 0; --debug (or ERNIEVIL_DS_DEBUG=1)
shows its traceback.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import deepspeed

from ernievil_ds.distributed import dist_info, setup_logging
from ernievil_ds.errors import run_command
from ernievil_ds.pretraining.arguments import parse_pretrain_arguments
from ernievil_ds.pretraining.dispatch import compile_engine
from ernievil_ds.pretraining.pretrain import PretrainingRun

RECIPES = Path(__file__).resolve().parent / "recipes"

# DeepSpeed 0.19's ZeRO-2 calls a torch.distributed function that torch 2.13 deprecates, once per step.
warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.*", category=FutureWarning)


def import_kernels() -> None:
    """Register the Triton kernels as attention and loss "triton" (the library never imports them);
    without Triton or its driver the run goes on with PyTorch's, and says why."""
    try:
        import ernievil_ds_kernels  # noqa: F401
    except Exception as error:  # any failure means: no Triton kernels in this run
        if dist_info().is_main:
            print(
                f"pretrain.py: the Triton kernels do not import ({type(error).__name__}: {error})", flush=True
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_pretrain_arguments(argv, recipes_dir=RECIPES)
    setup_logging()
    deepspeed.init_distributed()  # NCCL on GPUs, gloo on the CPU accelerator
    import_kernels()
    run = PretrainingRun.prepare(args)
    engine, _, _, _ = deepspeed.initialize(
        model=run.model,
        model_parameters=run.optimizer_groups(),
        lr_scheduler=run.lr_scheduler(),
        config=run.ds_config,
    )
    if args.compile:
        compile_engine(engine, args.compile_backend)
    run.train(engine)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main, prog="pretrain.py"))
