"""LossAverager: per-task means over the micro-batches where the task was present."""

import math

import torch

from ernievil_ds.pretraining.metrics import LossAverager


def test_loss_averager_means_each_task_over_the_batches_that_have_it():
    averager = LossAverager(torch.device("cpu"))
    nan = torch.tensor(math.nan)  # a task whose targets were passed but mark nothing in this batch
    averager.update(
        {"loss": torch.tensor(4.0), "mlm_loss": torch.tensor(1.0), "itm_loss": None, "sgp_relation_loss": nan}
    )
    averager.update({"loss": torch.tensor(2.0, dtype=torch.float16), "itm_loss": torch.tensor(0.5)})
    averager.update({"loss": torch.tensor(3.0), "mlm_loss": torch.tensor(2.0)})

    means = averager.compute()

    assert means == {"loss": 3.0, "mlm_loss": 1.5, "itm_loss": 0.5}  # no entry for the absent tasks
    assert averager.sums.dtype == torch.float64  # fp16 losses are summed in double
    averager.reset()
    averager.update({"loss": torch.tensor(math.pi, dtype=torch.float64)})
    assert averager.compute() == {"loss": math.pi}  # the reset dropped the earlier sums; no float32 rounding
