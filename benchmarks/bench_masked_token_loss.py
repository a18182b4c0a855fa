"""Fused masked-token loss against PyTorch's linear + cross-entropy: forward+backward time and peak memory.

    python benchmarks/bench_masked_token_loss.py [--dtype bf16|fp16|fp32] [--width 768] [--save-path DIR]

Needs a CUDA GPU. The loss of N masked positions from hidden states (N, C) after the token head's
transform, the tied embedding matrix (30522, C) and the decoder bias, per position (reduction "none",
as the model averages each task separately), backward with a random per-position gradient. Providers,
measured in the same run on the same inputs:
  - ``triton``: ``ernievil_ds_kernels.masked_token_loss.masked_token_loss`` (chunked, no (N, V) logits);
  - ``torch``: ``F.cross_entropy(F.linear(h, W, b).float(), labels, reduction="none")``, the model's path;
  - ``liger`` (when ``liger-kernel`` is installed): ``LigerFusedLinearCrossEntropyLoss(reduction="none")``.
N is 512 to 16384 positions (the ``base`` recipe's 512 pairs x ~40 tokens x 15 % is about 3,000).

Throughput is TFLOP/s of the model's matmuls, 6 * N * V * C (forward 2NVC, backward 4NVC; the fused
kernel's recomputed logits are not counted), over the median of ``triton.testing.do_bench``. Memory is
the peak of ``torch.cuda.max_memory_allocated`` during one forward+backward above what the inputs and
their gradients hold.
"""

from __future__ import annotations

import argparse
import sys

import torch
from machine import device_name
from torch.nn import functional as F

VOCAB = 30522
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def providers() -> list[str]:
    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        return ["triton", "torch"]
    return ["triton", "torch", "liger"]


def make_inputs(num_positions: int, width: int, dtype: torch.dtype):
    hidden = torch.randn(num_positions, width, device="cuda", dtype=dtype, requires_grad=True)
    weight = (torch.randn(VOCAB, width, device="cuda") * width**-0.5).to(dtype).requires_grad_()
    bias = torch.zeros(VOCAB, device="cuda", dtype=dtype, requires_grad=True)
    labels = torch.randint(0, VOCAB, (num_positions,), device="cuda")
    return hidden, weight, bias, labels


def loss_call(provider: str, hidden, weight, bias, labels):
    """A closure returning the per-position losses (N,) with ``provider``."""
    if provider == "triton":
        from ernievil_ds_kernels.masked_token_loss import masked_token_loss

        return lambda: masked_token_loss(hidden, weight, bias, labels)
    if provider == "torch":
        return lambda: F.cross_entropy(F.linear(hidden, weight, bias).float(), labels, reduction="none")
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    liger = LigerFusedLinearCrossEntropyLoss(reduction="none")
    return lambda: liger(weight, hidden, labels, bias)


def check_against_torch(hidden, weight, bias, labels) -> None:
    """Refuse to time a kernel that is wrong: losses within tolerance of PyTorch's in float32."""
    from ernievil_ds_kernels.masked_token_loss import masked_token_loss

    with torch.no_grad():
        ours = masked_token_loss(hidden, weight, bias, labels)
        reference = F.cross_entropy(
            F.linear(hidden.float(), weight.float(), bias.float()), labels, reduction="none"
        )
    torch.testing.assert_close(ours, reference, atol=5e-2, rtol=1e-2)


def build_benchmark(args):
    import triton
    import triton.testing

    names = providers()
    configs = [
        triton.testing.Benchmark(
            x_names=["num_positions"],
            x_vals=[512, 2048, 4096, 16384],
            line_arg="provider",
            line_vals=names,
            line_names=names,
            plot_name=f"masked-token loss fwd+bwd {metric} C{args.width} V{VOCAB} {args.dtype}",
            args={"metric": metric},
            xlabel="masked positions N",
            ylabel=metric,
        )
        for metric in ("TFLOP/s", "peak MiB")
    ]

    @triton.testing.perf_report(configs)
    def bench(num_positions, provider, metric):
        hidden, weight, bias, labels = make_inputs(num_positions, args.width, DTYPES[args.dtype])
        if provider == "triton":
            check_against_torch(hidden, weight, bias, labels)
        call = loss_call(provider, hidden, weight, bias, labels)
        grad = torch.randn(num_positions, device="cuda")

        def step():
            torch.autograd.backward(call(), grad)

        if metric == "peak MiB":
            step()  # the gradients exist before the baseline, as in training
            torch.cuda.synchronize()
            baseline = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            step()
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - baseline) / 2**20
        ms = triton.testing.do_bench(step, grad_to_none=[hidden, weight, bias], return_mode="median")
        return 6.0 * num_positions * VOCAB * args.width / (ms * 1e-3) / 1e12

    return bench


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--width", type=int, default=768, help="hidden width C (768 base, 1024 large)")
    parser.add_argument("--save-path", default="", help="also write each table as CSV (and a plot) here")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_masked_token_loss: needs a CUDA GPU (found none); the CPU tests are tests/kernels/")
    import triton

    print(f"device: {device_name('cuda')}; torch {torch.__version__}, triton {triton.__version__}")
    print(
        f"TFLOP/s = 6*N*V*C with V={VOCAB}, C={args.width}, over the median time; peak MiB above the inputs"
    )
    build_benchmark(args).run(print_data=True, save_path=args.save_path)


if __name__ == "__main__":
    main()
