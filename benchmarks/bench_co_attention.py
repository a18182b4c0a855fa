"""Fused Triton co-attention against PyTorch's attention at ERNIE-ViL's shapes, forward and forward+backward.

    python benchmarks/bench_co_attention.py [--dtype bf16|fp16] [--mode fwd fwd+bwd] [--batch 64 512]
                                            [--dropout 0.1] [--compile] [--save-path DIR]
    python benchmarks/bench_co_attention.py --smoke   # the CPU, seconds: runs every provider once

Needs a CUDA GPU, except ``--smoke``: tiny shapes on the CPU, the Triton kernel under its interpreter
(checked against SDPA, its speed not measured), the PyTorch providers timed once.
Providers, measured in the same run on the same inputs:
  - ``triton``: ``ernievil_ds_kernels.co_attention.co_attention`` with the key padding mask as a key bias;
  - ``torch-sdpa``: ``F.scaled_dot_product_attention`` with the additive (B, 1, 1, Lk) mask;
  - ``torch-eager``: the model's ``eager_attention_forward`` (matmul, softmax in float32, matmul);
  - ``torch-compile`` (with ``--compile``): ``torch.compile`` of the eager function.
Shapes: text length 16/40/80 (x axis) against 37 and 101 regions, both directions (text queries on
region keys, region queries on text keys); heads x head dim 8 x 128 (base co-attention) and 12 x 64
(base text self-attention). Each example pads its last tenth of keys.

Throughput is TFLOP/s of the attention's matmuls, from the tutorial's formula: forward
4 * B * H * Lq * Lk * D (QK^T and PV); forward+backward 3.5 times that (the backward's four matmuls
plus the recomputed QK^T counted as half). The median of ``triton.testing.do_bench``.
"""

from __future__ import annotations

import argparse
import sys

import torch
from machine import NOT_MEASURED, device_name, milliseconds_once, print_table, rerun_under_the_interpreter
from torch.nn import functional as F

PROVIDERS = ["triton", "torch-sdpa", "torch-eager"]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def attention_flops(batch: int, heads: int, lq: int, lk: int, head_dim: int, mode: str) -> float:
    forward = 4.0 * batch * heads * lq * lk * head_dim
    return forward if mode == "fwd" else 3.5 * forward


def make_inputs(batch, heads, lq, lk, head_dim, dtype, requires_grad, device="cuda"):
    q, k, v = (
        torch.randn(batch, length, heads, head_dim, device=device, dtype=dtype).transpose(
            1, 2
        )  # (B, H, L, D)
        for length in (lq, lk, lk)
    )
    keep = torch.ones(batch, lk, device=device)
    keep[:, lk - max(1, lk // 10) :] = 0.0  # every example pads its last tenth of keys
    mask = (1.0 - keep[:, None, None, :].to(dtype)) * torch.finfo(dtype).min  # (B, 1, 1, Lk)
    return [x.requires_grad_(requires_grad) for x in (q, k, v)], mask


def attention_call(provider: str, q, k, v, mask, dropout: float, compiled):
    """A closure computing the (B, H, Lq, D) output with ``provider``."""
    from ernievil_ds.modeling_ernievil import eager_attention_forward
    from ernievil_ds_kernels.co_attention import co_attention

    module = torch.nn.Module().train(dropout > 0.0)
    scale = q.shape[-1] ** -0.5
    if provider == "triton":
        key_bias = mask[:, 0, 0, :]  # (B, Lk)
        return lambda: co_attention(q, k, v, None, key_bias, scale, dropout, None)
    if provider == "torch-sdpa":
        return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)
    function = compiled if provider == "torch-compile" else eager_attention_forward
    return lambda: function(module, q, k, v, mask, scale, dropout)[0].transpose(1, 2)  # (B, H, Lq, D) view


def check_against_sdpa(q, k, v, mask) -> None:
    """Refuse to time a kernel that is wrong: forward outputs within half-precision tolerance of SDPA."""
    from ernievil_ds_kernels.co_attention import co_attention

    with torch.no_grad():
        ours = co_attention(q, k, v, None, mask[:, 0, 0, :])
        reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask.float())
    torch.testing.assert_close(ours.float(), reference, atol=2e-2, rtol=2e-2)


def build_benchmark(args):
    import triton
    import triton.testing

    providers = [*PROVIDERS, "torch-compile"] if args.compile else PROVIDERS
    compiled = None
    if args.compile:
        from ernievil_ds.modeling_ernievil import eager_attention_forward

        compiled = torch.compile(eager_attention_forward, dynamic=False)
    configs = []
    for mode in args.mode:
        for batch in args.batch:
            for heads, head_dim in ((8, 128), (12, 64)):
                for regions in (37, 101):
                    for direction in ("text->image", "image->text"):
                        configs.append(
                            triton.testing.Benchmark(
                                x_names=["text_len"],
                                x_vals=[16, 40, 80],
                                line_arg="provider",
                                line_vals=providers,
                                line_names=providers,
                                plot_name=(
                                    f"co-attention {mode} {direction} B{batch} H{heads} D{head_dim} "
                                    f"R{regions} {args.dtype} dropout{args.dropout}"
                                ),
                                args={
                                    "mode": mode,
                                    "batch": batch,
                                    "heads": heads,
                                    "head_dim": head_dim,
                                    "regions": regions,
                                    "direction": direction,
                                },
                                xlabel="text length",
                                ylabel="TFLOP/s",
                            )
                        )

    @triton.testing.perf_report(configs)
    def bench(text_len, provider, mode, batch, heads, head_dim, regions, direction):
        lq, lk = (text_len, regions) if direction == "text->image" else (regions, text_len)
        (q, k, v), mask = make_inputs(batch, heads, lq, lk, head_dim, DTYPES[args.dtype], mode != "fwd")
        if provider == "triton":
            check_against_sdpa(q, k, v, mask)
        call = attention_call(provider, q, k, v, mask, args.dropout, compiled)
        if mode == "fwd":
            with torch.no_grad():
                ms = triton.testing.do_bench(call, return_mode="median")
        else:
            grad = torch.randn(q.shape, device="cuda", dtype=q.dtype)

            def step():
                torch.autograd.backward(call(), grad)

            ms = triton.testing.do_bench(step, grad_to_none=[q, k, v], return_mode="median")
        return attention_flops(batch, heads, lq, lk, head_dim, mode) / (ms * 1e-3) / 1e12

    return bench


def smoke() -> None:
    """Every provider once, forward+backward, at two tiny shapes on the CPU; the table has the same
    providers as a GPU run, with the Triton kernel's time marked not measured."""
    import triton

    print(
        f"device: {device_name('cpu')} (smoke: Triton interpreted, one repetition); torch {torch.__version__}"
    )
    rows = []
    for direction, (lq, lk) in (("text->image", (8, 5)), ("image->text", (5, 8))):
        (q, k, v), mask = make_inputs(2, 2, lq, lk, 16, torch.float32, True, device="cpu")
        check_against_sdpa(q, k, v, mask)
        cells = []
        for provider in PROVIDERS:
            call = attention_call(provider, q, k, v, mask, 0.0, None)
            grad = torch.ones_like(q)
            ms = milliseconds_once(lambda call=call, grad=grad: torch.autograd.backward(call(), grad))
            cells.append(NOT_MEASURED if provider == "triton" else f"{ms:.2f} ms (CPU)")
        rows.append([f"fwd+bwd {direction} B2 H2 D16 Lq{lq} Lk{lk}", *cells])
    print_table(["shape", *PROVIDERS], rows)
    print(f"triton {triton.__version__} ran under its interpreter and matched SDPA")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--mode", nargs="+", choices=["fwd", "fwd+bwd"], default=["fwd", "fwd+bwd"])
    parser.add_argument("--batch", nargs="+", type=int, default=[64, 512])
    parser.add_argument("--dropout", type=float, default=0.0, help="attention dropout for every provider")
    parser.add_argument("--compile", action="store_true", help="add torch.compile of the eager function")
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
        sys.exit("bench_co_attention: needs a CUDA GPU (found none); the CPU tests are tests/kernels/")
    import triton

    print(f"device: {device_name('cuda')}; torch {torch.__version__}, triton {triton.__version__}")
    print("TFLOP/s = 4*B*H*Lq*Lk*D (fwd), x3.5 (fwd+bwd), over the median time")
    build_benchmark(args).run(print_data=True, save_path=args.save_path)


if __name__ == "__main__":
    main()
