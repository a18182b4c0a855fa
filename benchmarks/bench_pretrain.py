"""Pretraining throughput through the real launcher: samples/s, model TFLOP/s and peak GPU memory for each
DeepSpeed config and attention implementation, side by side in one run.

    python benchmarks/bench_pretrain.py                  # base; v100_8 (fp16) and h100_8 (bf16); sdpa and eager
    python benchmarks/bench_pretrain.py --num-gpus 8 --steps 20
    python benchmarks/bench_pretrain.py --preset tiny --configs ds_configs/cpu_fp32.json --num-gpus 2  # CPU

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
from machine import device_name

from ernievil_ds.data import build_synth_scenes, load_tokenizer
from ernievil_ds.training.ds_config import load_ds_config

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


def run_one(config: dict, attn: str, args: argparse.Namespace, data_dir: Path, work: Path) -> dict:
    """One launcher run; the last record of its metrics.jsonl, or {"error": ...} (the log's end printed)."""
    config_file, run_dir, log = work / "ds_config.json", work / "run", work / "log.txt"
    config_file.write_text(json.dumps(config))
    command = ["deepspeed", "--num_gpus", str(args.num_gpus), str(ROOT / "launchers" / "pretrain.py")]
    command += ["--deepspeed", str(config_file), "--preset", args.preset, "--attn-implementation", attn]
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


def table_row(name: str, config: dict, attn: str, record: dict, num_processes: int) -> str:
    batch = (
        f"{config['train_micro_batch_size_per_gpu']} x {config.get('gradient_accumulation_steps', 1)} "
        f"x {num_processes}"
    )
    if "error" in record:
        return f"| {name} | {precision(config)} | {attn} | {batch} | {record['error']} | | | |"
    peak = record.get("gpu_peak_memory_gb")  # absent on a CPU
    return (
        f"| {name} | {precision(config)} | {attn} | {batch} | {record['samples_per_sec']:.1f} "
        f"| {record['model_tflops_per_sec']:.2f} | {'-' if peak is None else f'{peak:.1f}'} "
        f"| {record['skipped_steps']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs",
        type=Path,
        nargs="+",
        default=[ROOT / "ds_configs" / "v100_8.json", ROOT / "ds_configs" / "h100_8.json"],
    )
    parser.add_argument("--attn", nargs="+", default=["sdpa", "eager"], choices=["sdpa", "eager"])
    parser.add_argument("--preset", default="base")
    parser.add_argument("--num-gpus", type=int, default=1, help="processes (CPU processes on a CPU machine)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    parser.add_argument("--boxes-per-image", type=int, default=36)
    parser.add_argument("--images", type=int, default=600, help="SynthScenes images (3 captions each)")
    parser.add_argument("--num-workers", type=int, default=4, help="DataLoader workers per process")
    parser.add_argument("--tokenizer", help="a tokenizer directory (default: packaged BERT uncased)")
    parser.add_argument("--work-dir", type=Path, help="keep runs and logs here (default: a temporary one)")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"{args.preset} preset, {args.boxes_per_image} regions per image, {args.num_gpus} process(es), "
        f"{args.num_workers} loader workers per process, {args.steps} steps per run, on {device_name(device)}"
    )
    print(
        "| config | precision | attention | micro x accumulation x processes | samples/s | model TFLOP/s "
        "| peak GPU GB | skipped steps |"
    )
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: |", flush=True)
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
            for attn in args.attn:
                work = work_root / f"{path.stem}-{attn}"
                work.mkdir(parents=True, exist_ok=True)
                record = run_one(config, attn, args, data_dir, work)
                # Each row as soon as it is measured: a run cut short still leaves the rows before it.
                print(table_row(path.name, config, attn, record, args.num_gpus), flush=True)


if __name__ == "__main__":
    main()
