"""The kernel choice of --attn-implementation / --masked-token-loss on described devices and dtypes,
decided by a table of GPU measurements (no GPU needed)."""

from __future__ import annotations

import argparse

import pytest
import torch

from ernievil_ds.errors import UserError
from ernievil_ds.pretraining.dispatch import (
    DeviceInfo,
    choose_implementation,
    resolve_kernel_arguments,
    training_dtype,
)
from ernievil_ds.pretraining.kernel_measurements import MEASUREMENTS, KernelMeasurement

H100 = DeviceInfo("cuda", (9, 0), "NVIDIA H100")
A100 = DeviceInfo("cuda", (8, 0), "NVIDIA A100")
V100 = DeviceInfo("cuda", (7, 0), "Tesla V100")
CPU = DeviceInfo("cpu", None, "the CPU")
CPU_INTERPRETED = DeviceInfo("cpu", None, "the CPU", interpreted=True)
NO_TRITON = DeviceInfo("cuda", (9, 0), "NVIDIA H100", kernels_error="no Triton attention is registered")
ALTERNATIVE = {"attn-implementation": "sdpa", "masked-token-loss": "torch"}

#: A described table: on sm_90 bf16 Triton won both kernels, on sm_80 bf16 it lost the attention.
TABLE = (
    KernelMeasurement("attention", (9, 0), "bfloat16", 1.0, 2.0, "H100, test"),
    KernelMeasurement("masked-token-loss", (9, 0), "bfloat16", 3.0, 4.0, "H100, test"),
    KernelMeasurement("attention", (8, 0), "bfloat16", 2.5, 2.0, "A100, test"),
)


def test_every_checked_in_row_is_a_gpu_measurement_of_a_known_kernel_in_half_precision():
    for row in MEASUREMENTS:
        assert row.kernel in ("attention", "masked-token-loss") and row.dtype in ("bfloat16", "float16")
        assert row.triton_ms > 0 and row.pytorch_ms > 0 and "gpu_check" in row.source


@pytest.mark.parametrize("flag", ["attn-implementation", "masked-token-loss"])
@pytest.mark.parametrize("device", [H100, A100, V100, CPU, CPU_INTERPRETED, NO_TRITON])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_auto_with_the_checked_in_table_is_pytorch_everywhere_until_measured(flag, device, dtype):
    if MEASUREMENTS:
        pytest.skip("the table holds GPU measurements now")
    choice, why = choose_implementation(flag, "auto", device, dtype)
    assert choice == ALTERNATIVE[flag] and why.startswith("auto: ")


@pytest.mark.parametrize(
    ("flag", "device", "dtype", "expected", "reason"),
    [
        (
            "attn-implementation",
            H100,
            torch.bfloat16,
            "triton",
            "measured attention sm_90 bfloat16: triton 1.000",
        ),
        ("masked-token-loss", H100, torch.bfloat16, "triton", "measured masked-token-loss sm_90 bfloat16"),
        (
            "attn-implementation",
            A100,
            torch.bfloat16,
            "sdpa",
            "measured attention sm_80 bfloat16: triton 2.500",
        ),
        ("masked-token-loss", A100, torch.bfloat16, "torch", "no measured row for masked-token-loss sm_80"),
        ("attn-implementation", H100, torch.float16, "sdpa", "no measured row for attention sm_90 float16"),
        ("attn-implementation", H100, torch.float32, "sdpa", "float32 never runs the Triton kernels"),
        ("attn-implementation", V100, torch.bfloat16, "sdpa", "no measured row for attention sm_70"),
        ("attn-implementation", CPU, torch.bfloat16, "sdpa", "not a CUDA GPU"),
        ("attn-implementation", CPU_INTERPRETED, torch.bfloat16, "sdpa", "not a CUDA GPU"),
        ("attn-implementation", NO_TRITON, torch.bfloat16, "sdpa", "no Triton attention is registered"),
    ],
)
def test_auto_picks_triton_only_where_a_table_row_says_it_won_and_names_the_row(
    flag, device, dtype, expected, reason
):
    choice, why = choose_implementation(flag, "auto", device, dtype, TABLE)
    assert choice == expected
    assert reason in why


@pytest.mark.parametrize("device", [H100, V100, CPU_INTERPRETED])
def test_triton_asked_for_runs_on_any_cuda_gpu_and_under_the_interpreter(device):
    assert choose_implementation("attn-implementation", "triton", device, torch.float32) == (
        "triton",
        "asked for",
    )


@pytest.mark.parametrize(
    ("device", "named"), [(CPU, "the CPU is not a CUDA GPU"), (NO_TRITON, "no Triton attention")]
)
def test_triton_asked_for_where_it_cannot_run_is_a_user_error_naming_device_and_alternative(device, named):
    with pytest.raises(
        UserError,
        match=f"--masked-token-loss triton cannot run here: .*{named}.*use --masked-token-loss torch",
    ):
        choose_implementation("masked-token-loss", "triton", device, torch.bfloat16)


@pytest.mark.parametrize("requested", ["eager", "sdpa"])
def test_a_pytorch_choice_is_kept_everywhere(requested):
    assert choose_implementation("attn-implementation", requested, CPU, torch.bfloat16) == (
        requested,
        "asked for",
    )


@pytest.mark.parametrize(
    ("ds_config", "dtype"),
    [
        ({"bf16": {"enabled": True}}, torch.bfloat16),
        ({"fp16": {"enabled": True}, "bf16": {"enabled": False}}, torch.float16),
        ({}, torch.float32),
    ],
)
def test_the_training_dtype_comes_from_the_deepspeed_config(ds_config, dtype):
    assert training_dtype(ds_config) == dtype


def test_resolve_replaces_auto_in_the_arguments_and_logs_each_choice_with_its_reason(caplog):
    args = argparse.Namespace(attn_implementation="auto", masked_token_loss="auto")
    with caplog.at_level("INFO"):
        resolve_kernel_arguments(args, V100, torch.bfloat16, log=True)
    assert (args.attn_implementation, args.masked_token_loss) == ("sdpa", "torch")
    messages = [record.getMessage() for record in caplog.records]
    assert [message.split(":")[0] for message in messages] == ["--attn-implementation", "--masked-token-loss"]
    assert all("sm_70 bfloat16" in message or "measured" in message for message in messages)
