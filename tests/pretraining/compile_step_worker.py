"""One ZeRO-2 optimizer step of the tiny model on one CPU process, with the model compiled (``aot_eager``)
or not; prints the parameters' largest difference between the two engines and their largest update, as
JSON. Run by test_compile_zero2.py in a child process (DeepSpeed's process group stays out of pytest)."""

import copy
import json
import os

import deepspeed
import torch
from transformers import AutoModelForPreTraining

from ernievil_ds.pretraining.dispatch import compile_engine
from ernievil_ds.pretraining.ds_config import load_ds_config
from tests.conftest import make_batch, preset_config
from tests.pretraining.conftest import REPO

os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
deepspeed.init_distributed(dist_backend="gloo")
config = preset_config("tiny")
torch.manual_seed(0)
initial = AutoModelForPreTraining.from_config(config)
ds_config = load_ds_config(REPO / "ds_configs" / "cpu_fp32.json")
ds_config.pop("scheduler")  # its warmup starts at lr 0: a constant lr moves every parameter at step 1
ds_config["train_micro_batch_size_per_gpu"] = 3
batch = make_batch(config)
updated = {}
for compiled in (False, True):
    model = copy.deepcopy(initial)
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=model.optimizer_groups(0.01), config=ds_config
    )
    if compiled:
        compile_engine(engine, "aot_eager")
        assert engine.is_compiled
    loss = engine(**batch).loss
    engine.backward(loss)
    engine.step()
    updated[compiled] = {name: p.detach().clone() for name, p in engine.module.named_parameters()}
moved = max((updated[False][name] - p).abs().max().item() for name, p in initial.named_parameters())
difference = max((updated[True][name] - p).abs().max().item() for name, p in updated[False].items())
print(json.dumps({"largest_update": moved, "largest_difference": difference}))
