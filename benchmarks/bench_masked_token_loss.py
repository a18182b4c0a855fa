"""Fused masked-token loss against PyTorch's linear + cross-entropy: forward+backward time and peak memory.

    python benchmarks/bench_masked_token_loss.py [--dtype bf16|fp16|fp32] [--width 768] [--save-path DIR]
    python benchmarks/bench_masked_token_loss.py --smoke   # the CPU, seconds: runs every provider once

Needs a CUDA GPU, except ``--smoke``: tiny shapes on the CPU, the Triton kernel under its interpreter
(checked against PyTorch, its speed not measured), the PyTorch provider timed once.
The mean loss of N masked positions from hidden states (N, C) after the token head's
transform, the tied embedding matrix (30522, C) and the decoder bias, and its backward. Providers,
measured in the same run on the same inputs:
  - ``triton``: ``ernievil_ds_kernels.masked_token_loss.masked_token_loss`` (chunks of positions, no
    (N, V) logits, the gradient formed in the forward);
  - ``torch``: ``F.cross_entropy(F.linear(h, W, b).float(), labels)``, the model's path;
  - ``liger`` (when ``liger-kernel`` is installed): ``LigerFusedLinearCrossEntropyLoss()``.
N is 512 to 16384 positions (the ``base`` recipe's 512 pairs x ~40 tokens x 15 % is about 3,000).

Throughput is TFLOP/s of the model's matmuls, 6 * N * V * C (forward 2NVC, backward 4NVC; the fused
kernel runs the same three matmuls, all in its forward), over the median of ``triton.testing.do_bench``.
Memory is the peak of ``torch.cuda.max_memory_allocated`` during one forward+backward above what the
inputs and their gradients hold.
"""

from __future__ import annotations

import argparse
import sys

import torch
from machine import NOT_MEASURED, device_name, milliseconds_once, print_table, rerun_under_the_interpreter
from torch.nn import functional as F

VOCAB = 30522
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def providers() -> list[str]:
    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        return ["triton", "torch"]
    return ["triton", "torch", "liger"]


def make_inputs(num_positions: int, width: int, dtype: torch.dtype, device="cuda", vocab: int = VOCAB):
    hidden = torch.randn(num_positions, width, device=device, dtype=dtype, requires_grad=True)
    weight = (torch.randn(vocab, width, device=device) * width**-0.5).to(dtype).requires_grad_()
    bias = torch.zeros(vocab, device=device, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, vocab, (num_positions,), device=device)
    return hidden, weight, bias, labels


def loss_call(provider: str, hidden, weight, bias, labels):
    """A closure returning the mean loss over the N positions (a scalar) with ``provider``."""
    if provider == "triton":
        from ernievil_ds_kernels.masked_token_loss import masked_token_loss

        return lambda: masked_token_loss(hidden, weight, bias, labels)[0]
    if provider == "torch":
        return lambda: F.cross_entropy(F.linear(hidden, weight, bias).float(), labels)
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    liger = LigerFusedLinearCrossEntropyLoss()
    return lambda: liger(weight, hidden, labels, bias)


def check_against_torch(hidden, weight, bias, labels) -> None:
    """Refuse to time a kernel that is wrong: losses within tolerance of PyTorch's in float32."""
    from ernievil_ds_kernels.masked_token_loss import masked_token_loss

    with torch.no_grad():
        _, ours = masked_token_loss(hidden, weight, bias, labels)  # (N,)
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

        def step():
            call().backward()

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


def smoke() -> None:
    """Every provider once, forward+backward, at two tiny shapes on the CPU; the table has the same
    providers as a GPU run, with the Triton kernel's (and Liger's) time marked not measured."""
    import triton

    print(
        f"device: {device_name('cpu')} (smoke: Triton interpreted, one repetition); torch {torch.__version__}"
    )
    names, rows = providers(), []
    for num_positions, width, vocab in ((7, 16, 300), (37, 24, 1000)):
        hidden, weight, bias, labels = make_inputs(num_positions, width, torch.float32, "cpu", vocab)
        check_against_torch(hidden, weight, bias, labels)
        cells = []
        for provider in names:
            call = loss_call(provider, hidden, weight, bias, labels)
            ms = milliseconds_once(lambda call=call: call().backward())
            cells.append(f"{ms:.2f} ms (CPU)" if provider == "torch" else NOT_MEASURED)
        rows.append([f"fwd+bwd N{num_positions} C{width} V{vocab}", *cells])
    print_table(["shape", *names], rows)
    print(f"triton {triton.__version__} ran under its interpreter and matched PyTorch")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--width", type=int, default=768, help="hidden width C (768 base, 1024 large)")
    parser.add_argument("--save-path", default="", help="also write each table as CSV (and a plot) here")
    parser.add_argument("--smoke", action="store_true", help="seconds on the CPU: each provider runs once")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.smoke:
        rerun_under_the_interpreter()
        smoke()
        return
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
