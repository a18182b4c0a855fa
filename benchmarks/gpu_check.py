"""The measurements of ``gpu_check.sh``, one step per call; each merges its results into OUT/summary.json
and rewrites OUT/summary.md from it.

    python3 benchmarks/gpu_check.py {attention,loss,cuda-graph,base-step} --out OUT [--cpu-smoke]

Needs torch, triton and transformers, and the project installed ``--no-deps`` (no DeepSpeed, no
``datasets``). ``--cpu-smoke``: the same steps at tiny shapes on the CPU, the Triton kernels under the
interpreter (restarted with ``TRITON_INTERPRET=1``), each timing taken once, nothing GPU-only measured.

- ``attention``: Triton against SDPA (efficient, cuDNN) and mask-free FLASH as a floor, forward and
  forward+backward, dropout 0 and 0.1, at ERNIE-ViL base's shapes (``ATTENTION_SHAPES``), B 64 and 512,
  bf16: ``do_bench`` median ms and, at B 64, the profiler's GPU-only ms (the kernels' own time, no
  launch gaps).
- ``loss``: the masked-token loss at N 512 and 3,000 (V 30,522, C 768), forward+backward: ms, peak
  memory above the inputs, kernel launches; Triton (gradient formed in the forward) against PyTorch's
  linear + cross-entropy and Liger-Kernel's fused linear cross-entropy when it is importable.
- ``cuda-graph``: the Triton attention with dropout under ``torch.compile(mode="reduce-overhead")``:
  replays of the captured graph draw different masks, and nothing was skipped from the CUDA graphs.
- ``base-step``: the ``base`` model without DeepSpeed, bf16 autocast, B 64, 10 steps of AdamW, for
  sdpa + the PyTorch loss, the Triton attention, the Triton loss, and sdpa compiled with
  ``mode="reduce-overhead"``: ms/step, peak memory, host (issuing) and device time per step, MFU.

``table_rows`` in summary.json are the rows of ``ernievil_ds.pretraining.kernel_measurements`` that the
attention and loss steps measured (forward+backward, dropout 0.1 for the attention, B 64), to be copied
there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from machine import peak_tflops, rerun_under_the_interpreter

#: (heads, head dim, Lq, Lk): the co-attention's 8 x 128 heads, text 40 on 37 regions and back, text 40
#: on 101 regions; the text self-attention's 12 x 64 heads at 40 tokens.
ATTENTION_SHAPES = [(8, 128, 40, 37), (8, 128, 37, 40), (8, 128, 40, 101), (12, 64, 40, 40)]
SMOKE_ATTENTION_SHAPES = [(2, 16, 9, 7), (2, 16, 7, 9)]
VOCAB, WIDTH = 30522, 768


def gpu_time_ms(call, repeats: int = 5) -> tuple[float, int]:
    """The profiler's GPU-only time of one ``call`` (the sum of its kernels' durations, in ms) and its
    number of kernel launches, averaged over ``repeats`` calls."""
    from torch.profiler import ProfilerActivity, profile

    call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            call()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return sum(e.device_time for e in kernels) / 1e3 / repeats, round(len(kernels) / repeats)


def time_ms(call, smoke: bool) -> float:
    """``do_bench``'s median on a GPU; one wall-clock call in a smoke run."""
    if smoke:
        start = time.perf_counter()
        call()
        return (time.perf_counter() - start) * 1e3
    import triton.testing

    return triton.testing.do_bench(call, warmup=10, rep=30, return_mode="median")


def attention_providers(smoke: bool) -> dict:
    """Provider name -> the SDPA backends it may use (None: the Triton kernel)."""
    if smoke:
        return {"triton": None, "sdpa": "default"}
    from torch.nn.attention import SDPBackend

    return {
        "triton": None,
        "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
        "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
        "flash-no-mask": SDPBackend.FLASH_ATTENTION,
    }


def attention_call(provider, backend, q, k, v, mask, dropout):
    """A closure computing (B, H, Lq, D) with ``provider``: Triton with the mask as a key bias, SDPA on
    ``backend`` with the additive (B, 1, 1, Lk) mask (none for the FLASH floor)."""
    from torch.nn import functional as F
    from torch.nn.attention import sdpa_kernel

    from ernievil_ds_kernels.co_attention import co_attention

    if backend is None:
        return lambda: co_attention(q, k, v, None, mask[:, 0, 0, :], None, dropout)
    attn_mask = None if provider == "flash-no-mask" else mask

    def call():
        if backend == "default":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)

    return call


def measure_attention_cell(call, mode, q, k, v, smoke, profiled) -> dict:
    """ms (do_bench) and, when ``profiled``, GPU-only ms of ``call``, forward under no_grad or
    forward+backward."""
    if mode == "fwd":

        def step():
            with torch.no_grad():
                call()
    else:
        grad = torch.randn_like(q)

        def step():
            torch.autograd.backward(call(), grad)
            for x in (q, k, v):
                x.grad = None

    cell = {"ms": time_ms(step, smoke)}
    if profiled:
        cell["gpu_ms"], cell["launches"] = gpu_time_ms(step)
    return cell


def attention_step(args) -> dict:
    """The rows of ``--batch`` (64 and 512; 2 in a smoke run), added to those of other batch sizes that
    an earlier call measured: gpu_check.sh runs each batch size under its own time limit."""
    from bench_co_attention import check_against_sdpa, make_inputs

    device, dtype = ("cpu", torch.float32) if args.cpu_smoke else ("cuda", torch.bfloat16)
    shapes = SMOKE_ATTENTION_SHAPES if args.cpu_smoke else ATTENTION_SHAPES
    batches = [2] if args.cpu_smoke else args.batch
    rows = [row for row in args.previous.get("rows", []) if row["batch"] not in batches]
    for batch in batches:
        for heads, head_dim, lq, lk in shapes:
            (q, k, v), mask = make_inputs(batch, heads, lq, lk, head_dim, dtype, True, device=device)
            check_against_sdpa(q, k, v, mask)  # no timing of a wrong kernel
            for mode in ("fwd", "fwd+bwd"):
                for dropout in (0.0, 0.1):
                    row = {"batch": batch, "heads": heads, "head_dim": head_dim, "lq": lq, "lk": lk}
                    row |= {"mode": mode, "dropout": dropout}
                    for provider, backend in attention_providers(args.cpu_smoke).items():
                        try:
                            call = attention_call(provider, backend, q, k, v, mask, dropout)
                            # The profiler's GPU-only time at B 64 only: its sessions cost time too.
                            profiled = not args.cpu_smoke and batch == 64
                            row[provider] = measure_attention_cell(
                                call, mode, q, k, v, args.cpu_smoke, profiled
                            )
                        except Exception as error:  # a backend that refuses the shape: say so, go on
                            row[provider] = {"error": f"{type(error).__name__}: {str(error)[:200]}"}
                    rows.append(row)
    return {"rows": rows}


def measure_loss_cell(call, params, smoke) -> dict:
    def step():
        call().backward()

    step()  # the gradients exist before the memory baseline, as in training
    cell = {"ms": time_ms(step, smoke)}
    if not smoke:
        torch.cuda.synchronize()
        baseline = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        cell["peak_mib"] = (torch.cuda.max_memory_allocated() - baseline) / 2**20
        cell["gpu_ms"], cell["launches"] = gpu_time_ms(step)
    for p in params:
        p.grad = None
    return cell


def loss_step(args) -> dict:
    from bench_masked_token_loss import check_against_torch, loss_call, make_inputs, providers

    device, dtype = ("cpu", torch.float32) if args.cpu_smoke else ("cuda", torch.bfloat16)
    sizes = [(7, 16, 300), (37, 24, 1000)] if args.cpu_smoke else [(512, WIDTH, VOCAB), (3000, WIDTH, VOCAB)]
    rows = []
    for num_positions, width, vocab in sizes:
        hidden, weight, bias, labels = make_inputs(num_positions, width, dtype, device, vocab)
        check_against_torch(hidden, weight, bias, labels)
        row = {"n": num_positions, "width": width, "vocab": vocab}
        for provider in providers():
            call = loss_call(provider, hidden, weight, bias, labels)
            row[provider] = measure_loss_cell(call, (hidden, weight, bias), args.cpu_smoke)
        rows.append(row)
    return {"rows": rows}


def cuda_graph_step(args) -> dict:
    """Four calls of the compiled attention with dropout 0.5 and V the identity (so the output's zeros
    are the dropped probabilities): every call's mask differs from the others."""
    from torch._dynamo.utils import counters

    from ernievil_ds_kernels.co_attention import co_attention

    device = "cpu" if args.cpu_smoke else "cuda"
    torch._dynamo.reset()
    counters.clear()
    q = torch.randn(4, 2, 9, 16, device=device, requires_grad=True)
    k = torch.randn(4, 2, 16, 16, device=device)
    v = torch.eye(16, device=device).expand(4, 2, 16, 16)
    options = {"backend": "aot_eager"} if args.cpu_smoke else {"mode": "reduce-overhead"}
    compiled = torch.compile(lambda q, k, v: co_attention(q, k, v, dropout_p=0.5), fullgraph=True, **options)
    masks = []
    for _ in range(4):
        out = compiled(q, k, v)
        out.sum().backward()
        masks.append((out != 0).cpu())
        q.grad = None
    distinct = len({tuple(mask.flatten().tolist()) for mask in masks})
    skips = dict(counters["inductor"]).get("cudagraph_skips", 0)
    return {
        "distinct_masks_of_4_calls": distinct,
        "keep_rates": [round(mask.float().mean().item(), 3) for mask in masks],
        "cudagraph_skips": skips,
        "passed": distinct == 4 and skips == 0,
    }


def synthetic_batch(config, batch: int, text_len: int, regions: int, device) -> dict:
    """A pretraining batch of ``base``'s shape: 15 % of the tokens masked (MLM task), 15 % of the regions
    masked, half the pairs mismatched, the last tenth of each stream padded."""
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000, 2000, (batch, text_len), generator=g)
    masked = torch.rand(batch, text_len, generator=g) < 0.15
    masked[:, 0] = True
    attention_mask = torch.ones(batch, text_len, dtype=torch.long)
    attention_mask[:, text_len - text_len // 10 :] = 0
    region_mask = torch.ones(batch, regions, dtype=torch.long)
    region_mask[:, regions - regions // 10 :] = 0
    xy = torch.rand(batch, regions, 2, generator=g) * 200
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "region_features": torch.randn(batch, regions, config.v_feature_size, generator=g),
        "region_boxes": torch.cat([xy, xy + 50], dim=-1),
        "image_sizes": torch.tensor([[640.0, 480.0]] * batch),
        "region_mask": region_mask,
        "masked_regions": torch.rand(batch, regions, generator=g) < 0.15,
        "region_class_targets": torch.softmax(
            torch.randn(batch, regions, config.num_region_classes, generator=g), -1
        ),
        "labels": torch.where(masked, input_ids, -100),
        "task_ids": torch.where(masked, 0, -100),
        "itm_labels": torch.arange(batch) % 2,
    }
    return {key: value.to(device) for key, value in inputs.items()}


#: base-step rows: (name, attention, loss, compiled).
STEP_ROWS = [
    ("sdpa + torch loss", "sdpa", "torch", False),
    ("triton attention + torch loss", "triton", "torch", False),
    ("sdpa + triton loss", "sdpa", "triton", False),
    ("sdpa + torch loss, compiled (reduce-overhead; aot_eager in a smoke run)", "sdpa", "torch", True),
]


def run_steps(model, batch, steps: int, smoke: bool) -> dict:
    """``steps`` training steps; ms/step, host and device ms per step, peak memory over the last half."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    device_type = "cpu" if smoke else "cuda"
    host, device_ms, wall = [], [], []
    for index in range(steps):
        start_event = end_event = None
        if not smoke:
            torch.cuda.synchronize()
            if index == steps // 2:
                torch.cuda.reset_peak_memory_stats()
            start_event, end_event = (
                torch.cuda.Event(enable_timing=True),
                torch.cuda.Event(enable_timing=True),
            )
            start_event.record()
        start = time.perf_counter()
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=not smoke):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        host.append((time.perf_counter() - start) * 1e3)
        if not smoke:
            end_event.record()
            torch.cuda.synchronize()
            device_ms.append(start_event.elapsed_time(end_event))
        wall.append((time.perf_counter() - start) * 1e3)
    half = slice(steps // 2, None)
    result = {"ms_per_step": sum(wall[half]) / len(wall[half]), "host_ms": sum(host[half]) / len(host[half])}
    if not smoke:
        result["device_ms"] = sum(device_ms[half]) / len(device_ms[half])
        result["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def base_step(args) -> dict:
    import ernievil_ds_kernels  # noqa: F401  registers "triton" for the attention and the loss
    from ernievil_ds import ErnieVilConfig, ErnieVilForPreTraining
    from ernievil_ds.modeling_ernievil import training_flops_per_sample

    smoke = args.cpu_smoke
    preset, batch_size, steps, text_len, regions = ("tiny", 2, 2, 9, 6) if smoke else ("base", 64, 10, 40, 36)
    device = "cpu" if smoke else "cuda"
    config = ErnieVilConfig.from_preset(preset)
    batch = synthetic_batch(config, batch_size, text_len, regions, device)
    flops = training_flops_per_sample(config, text_len, regions + 1) * batch_size
    peak = None if smoke else peak_tflops(torch.cuda.get_device_name(), "bf16")
    rows = []
    for name, attention, loss, compiled in STEP_ROWS:
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = ErnieVilForPreTraining(config).to(device).train()
        model.set_attn_implementation(attention)
        model.config.masked_token_loss_implementation = loss
        if compiled:
            model = torch.compile(
                model, **({"backend": "aot_eager"} if smoke else {"mode": "reduce-overhead"})
            )
        row = {"name": name}
        try:
            row |= run_steps(model, batch, steps, smoke)
            if peak:
                row["mfu"] = flops / (row["ms_per_step"] * 1e-3) / 1e12 / peak
        except Exception as error:
            row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
        rows.append(row)
        del model
    return {
        "preset": preset,
        "batch": batch_size,
        "steps": steps,
        "text_len": text_len,
        "regions": regions,
        "rows": rows,
    }


def table_rows(summary: dict, capability, source: str) -> list[dict]:
    """``KernelMeasurement`` rows from the attention (B 64, fwd+bwd, dropout 0.1: Triton against the
    faster SDPA backend, summed over the shapes) and the loss (N 3,000: Triton against PyTorch)."""
    rows = []
    attention = [
        r
        for r in summary.get("attention", {}).get("rows", [])
        if (r["batch"], r["mode"], r["dropout"]) == (64, "fwd+bwd", 0.1)
    ]
    if attention and all("ms" in r["triton"] for r in attention):
        triton_ms = sum(r["triton"]["ms"] for r in attention)
        sdpa = [min(r[p]["ms"] for p in ("sdpa-efficient", "sdpa-cudnn") if "ms" in r[p]) for r in attention]
        rows.append(("attention", triton_ms, sum(sdpa)))
    loss = [r for r in summary.get("loss", {}).get("rows", []) if r["n"] == 3000]
    if loss and "ms" in loss[0]["triton"]:
        rows.append(("masked-token-loss", loss[0]["triton"]["ms"], loss[0]["torch"]["ms"]))
    return [
        {
            "kernel": kernel,
            "capability": list(capability),
            "dtype": "bfloat16",
            "triton_ms": round(t, 4),
            "pytorch_ms": round(p, 4),
            "source": source,
        }
        for kernel, t, p in rows
    ]


def cell_text(cell: dict, keys=("ms", "gpu_ms", "peak_mib", "launches")) -> str:
    if "error" in cell:
        return f"error: {cell['error'][:60]}"
    units = {"ms": "ms", "gpu_ms": "GPU ms", "peak_mib": "MiB", "launches": "launches"}
    return ", ".join(f"{cell[key]:.3g} {units[key]}" for key in keys if key in cell)


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
        *("| " + " | ".join(str(c) for c in row) + " |" for row in rows),
    ]


def render_markdown(summary: dict) -> str:
    """summary.md: the machine, then one table per step that has run."""
    lines = [
        f"# gpu_check: {summary['machine']['device']}",
        "",
        "```",
        json.dumps(summary["machine"], indent=1),
        "```",
    ]
    if "status" in summary:
        lines += ["", "## Steps", "", *(f"- {name}: {text}" for name, text in summary["status"].items())]
    if "attention" in summary:
        providers = [
            p
            for p in summary["attention"]["rows"][0]
            if p not in ("batch", "heads", "head_dim", "lq", "lk", "mode", "dropout")
        ]
        rows = [
            [
                r["batch"],
                f"{r['heads']}x{r['head_dim']}",
                f"{r['lq']}/{r['lk']}",
                r["mode"],
                r["dropout"],
                *(cell_text(r[p]) for p in providers),
            ]
            for r in summary["attention"]["rows"]
        ]
        lines += [
            "",
            "## Attention",
            "",
            *markdown_table(["B", "HxD", "Lq/Lk", "mode", "dropout", *providers], rows),
        ]
    if "loss" in summary:
        providers = [p for p in summary["loss"]["rows"][0] if p not in ("n", "width", "vocab")]
        rows = [
            [r["n"], r["width"], r["vocab"], *(cell_text(r[p]) for p in providers)]
            for r in summary["loss"]["rows"]
        ]
        lines += [
            "",
            "## Masked-token loss (forward+backward)",
            "",
            *markdown_table(["N", "C", "V", *providers], rows),
        ]
    if "cuda-graph" in summary:
        lines += ["", "## CUDA-graph check", "", "```", json.dumps(summary["cuda-graph"]), "```"]
    if "base-step" in summary:
        step = summary["base-step"]
        keys = ("ms_per_step", "host_ms", "device_ms", "peak_mib", "mfu")
        rows = [
            [
                r["name"],
                *(
                    f"{r[k]:.4g}" if k in r else r.get("error", "")[:80] if k == "ms_per_step" else ""
                    for k in keys
                ),
            ]
            for r in step["rows"]
        ]
        lines += [
            "",
            f"## {step['preset']}, B {step['batch']}, {step['steps']} steps, text {step['text_len']}, regions {step['regions']}",
            "",
        ]
        lines += markdown_table(["row", *keys], rows)
    if summary.get("table_rows"):
        lines += [
            "",
            "## Rows for ernievil_ds.pretraining.kernel_measurements",
            "",
            "```",
            json.dumps(summary["table_rows"], indent=1),
            "```",
        ]
    return "\n".join(lines) + "\n"


def machine(smoke: bool) -> dict:
    import triton

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    )
    info = {
        "device": "CPU (smoke, Triton interpreted)" if smoke else torch.cuda.get_device_name(),
        "capability": None if smoke else list(torch.cuda.get_device_capability()),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "commit": commit.stdout.strip() or "unknown",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    return info


def status_step(args) -> dict:
    """How each step of gpu_check.sh ended, from ``--status NAME=TEXT ...``."""
    return dict(item.split("=", 1) for item in args.status)


STEPS = {
    "attention": attention_step,
    "loss": loss_step,
    "cuda-graph": cuda_graph_step,
    "base-step": base_step,
    "status": status_step,
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=sorted(STEPS))
    parser.add_argument("--out", type=Path, required=True, help="the folder of summary.json and summary.md")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU, Triton interpreted")
    parser.add_argument("--status", nargs="*", default=[], help="the status step's NAME=TEXT items")
    parser.add_argument("--batch", nargs="+", type=int, default=[64, 512], help="the attention step's")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        rerun_under_the_interpreter()
    elif not torch.cuda.is_available():
        sys.exit("gpu_check.py: needs a CUDA GPU (found none); --cpu-smoke runs the steps on the CPU")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {"machine": machine(args.cpu_smoke)}
    args.previous = summary.get(args.step, {})
    summary[args.step] = STEPS[args.step](args)
    info = summary["machine"]
    if info["capability"]:
        summary["table_rows"] = table_rows(
            summary, info["capability"], f"{info['device']}, {info['date']}, {info['commit']}, gpu_check"
        )
    path.write_text(json.dumps(summary, indent=1) + "\n")
    (args.out / "summary.md").write_text(render_markdown(summary))
    print(render_markdown({"machine": info, args.step: summary[args.step]}))
    print(f"{args.step}: done")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
