"""Pretraining throughput through the real launcher: samples/s, model TFLOP/s, MFU and peak GPU memory for
each DeepSpeed config, kernel set (eager / sdpa attention with the PyTorch loss, or both Triton kernels)
and torch.compile off / on, side by side in one run.

    python benchmarks/bench_pretrain.py                  # base; v100_8 (fp16) and h100_8 (bf16); every row
    python benchmarks/bench_pretrain.py --num-gpus 8 --steps 20
    python benchmarks/bench_pretrain.py --preset tiny --configs ds_configs/cpu_fp32.json --num-gpus 2  # CPU
    python benchmarks/bench_pretrain.py --smoke          # the CPU: tiny, 2 steps, the CPU-runnable rows

``triton`` rows pass ``--attn-implementation triton --masked-token-loss triton``, the others the named
attention and ``--masked-token-loss torch``; ``compile`` rows add ``--compile`` (inductor). MFU is the
model TFLOP/s over the GPU's dense peak for the precision (``machine.peak_tflops``). Rows a device cannot
run (the Triton kernels and inductor's compile off a GPU) are marked not measured.

Each row is one ``deepspeed --num_gpus N launchers/pretrain.py`` run on SynthScenes captions paired with
detector-sized images (36 regions, 2048 features and a 1601-class distribution each, as bench_loader.py
makes them). A config's global batch is kept on N processes by setting gradient_accumulation_steps to
train_batch_size / (micro batch x N), so one GPU does the work per GPU of the 8-GPU recipe, N times over.
The figures are those of the last logged interval: the first holds the warm-up (and, in fp16, the loss
scale search).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from bench_loader import detector_sized_copy
from machine import NOT_MEASURED, device_name, peak_tflops, print_table

from ernievil_ds.data import build_synth_scenes, load_tokenizer
from ernievil_ds.distributed import free_port
from ernievil_ds.pretraining.ds_config import load_ds_config

ROOT = Path(__file__).resolve().parents[1]


def config_for_world_size(path: Path, num_processes: int) -> dict:
    """``path``'s config with the accumulation steps that keep its global batch on ``num_processes``.

    Raises:
        ValueError: when the global batch is not a multiple of micro batch x ``num_processes``.
    """
    config = load_ds_config(path)
    total, micro = config.get("train_batch_size"), config["train_micro_batch_size_per_gpu"]
    if total is None:  # no fixed global batch: micro batch x accumulation per process, as written
        return config
    if total % (micro * num_processes):
        raise ValueError(f"{path}: train_batch_size {total} is not a multiple of {micro} x {num_processes}")
    config["gradient_accumulation_steps"] = total // (micro * num_processes)
    return config


def precision(config: dict) -> str:
    for name in ("bf16", "fp16"):
        if config.get(name, {}).get("enabled"):
            return name
    return "fp32"


def run_one(
    config: dict, row: tuple[str, bool], args: argparse.Namespace, data_dir: Path, work: Path
) -> dict:
    """One launcher run; the last record of its metrics.jsonl, or {"error": ...} (the log's end printed)."""
    attn, compiled = row
    config_file, run_dir, log = work / "ds_config.json", work / "run", work / "log.txt"
    config_file.write_text(json.dumps(config))
    # This interpreter's launcher (``deepspeed`` on PATH may be another environment's), on a free port.
    command = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(args.num_gpus)]
    command += ["--master_port", str(free_port())]
    command += [str(ROOT / "launchers" / "pretrain.py")]
    command += ["--deepspeed", str(config_file), "--preset", args.preset, "--attn-implementation", attn]
    command += ["--masked-token-loss", "triton" if attn == "triton" else "torch"]
    command += ["--compile"] if compiled else []
    command += ["--data-dir", str(data_dir), "--max-steps", str(args.steps)]
    command += ["--log-every", str(max(1, args.steps // 2)), "--output-dir", str(run_dir)]
    command += [
        "--no-export",
        "--no-cloze",
        "--keep-checkpoints",
        "1",
        "--num-workers",
        str(args.num_workers),
    ]
    if args.tokenizer:
        command += ["--tokenizer", args.tokenizer]
    with log.open("w") as f:
        finished = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, check=False)
    metrics = run_dir / "metrics.jsonl"
    if finished.returncode != 0 or not metrics.is_file():
        tail = log.read_text().splitlines()[-30:]
        print(f"--- {work.name} failed; the end of its log:", *tail, sep="\n", file=sys.stderr)
        return {"error": f"failed (exit {finished.returncode})"}
    return json.loads(metrics.read_text().splitlines()[-1])


def table_row(
    name: str, config: dict, row: tuple[str, bool], record: dict, args: argparse.Namespace
) -> list[str]:
    attn, compiled = row
    batch = (
        f"{config['train_micro_batch_size_per_gpu']} x {config.get('gradient_accumulation_steps', 1)} "
        f"x {args.num_gpus}"
    )
    cells = [name, precision(config), attn, "on" if compiled else "off", batch]
    if "error" in record or "skipped" in record:
        return [*cells, record.get("error") or NOT_MEASURED, "", "", "", ""]
    peak = record.get("gpu_peak_memory_gb")  # absent on a CPU
    tflops = record["model_tflops_per_sec"]
    device_peak = peak_tflops(device_name(DEVICE), precision(config)) if DEVICE == "cuda" else None
    mfu = "-" if device_peak is None else f"{100 * tflops / device_peak:.1f} %"
    return [
        *cells,
        f"{record['samples_per_sec']:.1f}",
        f"{tflops:.2f}",
        mfu,
        "-" if peak is None else f"{peak:.1f}",
        str(record["skipped_steps"]),
    ]


#: Every row: (attention, compile), the loss following the attention (Triton with Triton).
ROWS = [(attn, compiled) for attn in ("eager", "sdpa", "triton") for compiled in (False, True)]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def runnable(row: tuple[str, bool]) -> bool:
    """Off a GPU the Triton kernels (interpreted) and inductor's compile (minutes) are not measured."""
    attn, compiled = row
    return DEVICE == "cuda" or (attn != "triton" and not compiled)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs",
        type=Path,
        nargs="+",
        default=[ROOT / "ds_configs" / "v100_8.json", ROOT / "ds_configs" / "h100_8.json"],
    )
    parser.add_argument(
        "--attn", nargs="+", default=["eager", "sdpa", "triton"], choices=["eager", "sdpa", "triton"]
    )
    parser.add_argument("--compile", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--preset", default="base")
    parser.add_argument("--num-gpus", type=int, default=1, help="processes (CPU processes on a CPU machine)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    parser.add_argument("--boxes-per-image", type=int, default=36)
    parser.add_argument("--images", type=int, default=600, help="SynthScenes images (3 captions each)")
    parser.add_argument("--num-workers", type=int, default=4, help="DataLoader workers per process")
    parser.add_argument("--tokenizer", help="a tokenizer directory (default: packaged BERT uncased)")
    parser.add_argument("--work-dir", type=Path, help="keep runs and logs here (default: a temporary one)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the CPU in about a minute: tiny preset, cpu_fp32.json, 1 process, 2 steps, 40 images, 10 boxes",
    )
    args = parser.parse_args()
    if args.smoke:
        args.preset, args.configs, args.num_gpus, args.steps = (
            "tiny",
            [ROOT / "ds_configs" / "cpu_fp32.json"],
            1,
            2,
        )
        args.images, args.boxes_per_image, args.num_workers = 40, 10, 0
    return args


def main() -> None:
    args = parse_args()
    rows = [row for row in ROWS if row[0] in args.attn and ("on" if row[1] else "off") in args.compile]
    print(
        f"{args.preset} preset, {args.boxes_per_image} regions per image, {args.num_gpus} process(es), "
        f"{args.num_workers} loader workers per process, {args.steps} steps per run, on {device_name(DEVICE)}"
    )
    header = ["config", "precision", "attention", "compile", "micro x accumulation x processes", "samples/s"]
    header += ["model TFLOP/s", "MFU", "peak GPU GB", "skipped steps"]
    print_table(header, [])
    with tempfile.TemporaryDirectory() as tmp:
        work_root = args.work_dir or Path(tmp)
        synth = build_synth_scenes(
            work_root / "synth",
            num_train_images=args.images,
            num_eval_images=8,
            seed=0,
            tokenizer=load_tokenizer(args.tokenizer),
        )
        data_dir = detector_sized_copy(synth, args.boxes_per_image)
        for path in args.configs:
            config = config_for_world_size(path, args.num_gpus)
            for row in rows:
                record = {"skipped": True}
                if runnable(row):
                    work = work_root / f"{path.stem}-{row[0]}-{'compile' if row[1] else 'eager'}"
                    work.mkdir(parents=True, exist_ok=True)
                    record = run_one(config, row, args, data_dir, work)
                # Each row as soon as it is measured: a run cut short still leaves the rows before it.
                print("| " + " | ".join(table_row(path.name, config, row, record, args)) + " |", flush=True)


if __name__ == "__main__":
    main()
