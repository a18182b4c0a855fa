"""Runs launchers/pretrain.py under the `deepspeed` launcher with test-only fault injection.

- ERNIEVIL_TEST_FORCE_FP16=1: DeepSpeed's CPU accelerator refuses fp16 unless the processor has
  AVX512-FP16; PyTorch computes fp16 on any CPU, so the test tells the accelerator it is supported and
  exercises the real fp16 engine (loss scaler, fp16 ZeRO-2 optimizer) on the tiny model.
- ERNIEVIL_TEST_KILL_DURING_SAVE=N: SIGKILL this process in the middle of saving step N's checkpoint,
  after DeepSpeed has written its files and before the save is marked complete.
"""

import os
import runpy
import signal
import sys
from pathlib import Path

import deepspeed
from deepspeed.accelerator import get_accelerator

if os.environ.get("ERNIEVIL_TEST_FORCE_FP16") == "1":
    get_accelerator().is_fp16_supported = lambda: True

kill_step = os.environ.get("ERNIEVIL_TEST_KILL_DURING_SAVE")
if kill_step:
    original_save = deepspeed.DeepSpeedEngine.save_checkpoint

    def save_then_die(self, save_dir, tag=None, **kwargs):
        result = original_save(self, save_dir, tag=tag, **kwargs)
        if tag == f"step_{int(kill_step):08d}":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    deepspeed.DeepSpeedEngine.save_checkpoint = save_then_die

launcher = Path(__file__).resolve().parents[2] / "launchers" / "pretrain.py"
sys.argv = [str(launcher), *sys.argv[1:]]
runpy.run_path(str(launcher), run_name="__main__")
