"""A training step never makes the host wait for the device: one step (forward, losses, backward) of the
test-size presets dispatches no operator that reads a value on the host or has a data-dependent shape,
and the audit that proves it catches each such operator by name."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForPreTraining

from ernievil_ds import ErnieVilConfig
from ernievil_ds.data.collator import add_scored_positions
from ernievil_ds.host_syncs import HostSyncAudit, HostSyncError
from tests.conftest import make_batch


@pytest.mark.parametrize("preset", ["tiny", "tiny-grounded"])
@pytest.mark.parametrize("positions", [True, False], ids=["scored positions", "every position"])
def test_a_training_step_dispatches_no_operator_that_syncs_the_host(preset, positions):
    """The preset as trained (dropout on), on a batch in the collator's format; without the collator's
    scored positions the heads score every position, still without a sync."""
    config = ErnieVilConfig.from_preset(preset)
    torch.manual_seed(0)
    model = AutoModelForPreTraining.from_config(config).train()
    batch = make_batch(config)
    if positions:
        batch = add_scored_positions(batch, 0.25, 0.15)
    with HostSyncAudit(strict=True) as audit:
        outputs = model(**batch)
        outputs.loss.backward()
    assert audit.syncs == [] and audit.num_operators > 1000  # forward and backward were both seen
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    ("step", "operator"),
    [
        (lambda x: x.nonzero(), "nonzero"),
        (lambda x: x[x > 0], "index.Tensor"),  # boolean-mask indexing
        (lambda x: x.masked_select(x > 0), "masked_select"),
        (lambda x: torch.unique(x), "_unique2"),
        (lambda x: x.sum().item(), "_local_scalar_dense"),
        (lambda x: bool(x.max() > 0), "_local_scalar_dense"),
        (lambda x: x.repeat_interleave(torch.tensor([1, 2, 1, 0])), "repeat_interleave.Tensor"),
    ],
    ids=["nonzero", "mask indexing", "masked_select", "unique", "item", "bool", "repeat_interleave"],
)
def test_the_audit_names_each_operator_that_syncs(step, operator):
    x = torch.tensor([1.0, -2.0, 3.0, 0.5], requires_grad=True)
    with pytest.raises(HostSyncError, match=rf"aten\.{operator} syncs the host"), HostSyncAudit(strict=True):
        step(x)
    with HostSyncAudit() as audit:
        step(x)
    assert audit.syncs == [operator]


def test_the_audit_lets_fixed_shape_gathers_and_device_assertions_pass():
    x = torch.randn(4, 3, requires_grad=True)
    with HostSyncAudit(strict=True) as audit:
        rows = x.index_select(0, torch.tensor([2, 0, 0]))
        torch._assert_async((rows.abs() >= 0).all())
        torch.where(x > 0, x, 0.0)[torch.tensor([1, 3])].sum().backward()
    assert audit.syncs == [] and audit.operators["index_select"] == 1
