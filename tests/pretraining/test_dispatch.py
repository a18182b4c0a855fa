"""The kernel choice of --attn-implementation / --masked-token-loss on described devices (no GPU needed)."""

from __future__ import annotations

import argparse

import pytest

from ernievil_ds.errors import UserError
from ernievil_ds.pretraining.dispatch import DeviceInfo, choose_implementation, resolve_kernel_arguments

H100 = DeviceInfo("cuda", (9, 0), "NVIDIA H100")
A100 = DeviceInfo("cuda", (8, 0), "NVIDIA A100")
V100 = DeviceInfo("cuda", (7, 0), "Tesla V100")
CPU = DeviceInfo("cpu", None, "the CPU")
CPU_INTERPRETED = DeviceInfo("cpu", None, "the CPU", interpreted=True)
NO_TRITON = DeviceInfo("cuda", (9, 0), "NVIDIA H100", kernels_error="no Triton attention is registered")


@pytest.mark.parametrize("flag", ["attn-implementation", "masked-token-loss"])
@pytest.mark.parametrize(
    ("device", "expected", "reason"),
    [
        (H100, "triton", "runs the Triton kernels"),
        (A100, "triton", "runs the Triton kernels"),
        (V100, None, "sm_70, below sm_80"),
        (CPU, None, "not a CUDA GPU"),
        (CPU_INTERPRETED, None, "not a CUDA GPU"),  # the interpreter is for tests, never picked
        (NO_TRITON, None, "no Triton attention is registered"),
    ],
)
def test_auto_picks_triton_on_sm80_gpus_only_and_says_why(flag, device, expected, reason):
    alternative = {"attn-implementation": "sdpa", "masked-token-loss": "torch"}[flag]
    choice, why = choose_implementation(flag, "auto", device)
    assert choice == (expected or alternative)
    assert reason in why


@pytest.mark.parametrize("device", [H100, V100, CPU_INTERPRETED])
def test_triton_asked_for_runs_on_any_cuda_gpu_and_under_the_interpreter(device):
    assert choose_implementation("attn-implementation", "triton", device) == ("triton", "asked for")


@pytest.mark.parametrize(
    ("device", "named"), [(CPU, "the CPU is not a CUDA GPU"), (NO_TRITON, "no Triton attention")]
)
def test_triton_asked_for_where_it_cannot_run_is_a_user_error_naming_device_and_alternative(device, named):
    with pytest.raises(
        UserError,
        match=f"--masked-token-loss triton cannot run here: .*{named}.*use --masked-token-loss torch",
    ):
        choose_implementation("masked-token-loss", "triton", device)


@pytest.mark.parametrize("requested", ["eager", "sdpa"])
def test_a_pytorch_choice_is_kept_everywhere(requested):
    assert choose_implementation("attn-implementation", requested, CPU) == (requested, "asked for")


def test_resolve_replaces_auto_in_the_arguments_and_logs_each_choice(caplog):
    args = argparse.Namespace(attn_implementation="auto", masked_token_loss="auto")
    with caplog.at_level("INFO"):
        resolve_kernel_arguments(args, V100, log=True)
    assert (args.attn_implementation, args.masked_token_loss) == ("sdpa", "torch")
    assert [record.getMessage().split(":")[0] for record in caplog.records] == [
        "--attn-implementation",
        "--masked-token-loss",
    ]
