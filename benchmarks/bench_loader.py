"""Loader throughput: memory-mapped pairs + images, SGP masking on, batch 64, one process.

    python benchmarks/bench_loader.py                       # SynthScenes (2-4 regions per image)
    python benchmarks/bench_loader.py --boxes-per-image 36  # the same captions with detector-sized images
    python benchmarks/bench_loader.py --data-dir DATA --split train

Runs the DataLoader in this process (num_workers=0) with torch limited to one thread, as in a
DataLoader worker, and prints samples per second over the timed batches.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name

from ernievil_ds.data import (
    ResumableDistributedSampler,
    SGPCollator,
    build_synth_scenes,
    load_pretraining_split,
    load_tokenizer,
)
from ernievil_ds.data.schema import IMAGES_DIR, NUM_DETECTOR_CLASSES
from ernievil_ds.data.storage import images_dataset, load_table, write_manifest, write_shard


def detector_sized_copy(synth_dir: Path, boxes_per_image: int) -> Path:
    """``synth_dir`` with its images replaced by random ones of ``boxes_per_image`` regions (pairs linked)."""
    target = synth_dir.with_name(f"{synth_dir.name}-{boxes_per_image}boxes")
    if (target / IMAGES_DIR / "manifest.json").is_file():
        return target
    rng = np.random.default_rng(0)
    image_ids = load_table(synth_dir / IMAGES_DIR)["image_id"]

    def random_boxes() -> np.ndarray:  # (boxes_per_image, 4) x1 <= x2, y1 <= y2 inside 640 x 480
        corners = rng.random((boxes_per_image, 2, 2)) * np.array([640, 480])  # two (x, y) points each
        return np.concatenate([corners.min(1), corners.max(1)], axis=1).astype(np.float32)

    records = [
        {
            "image_id": image_id,
            "width": 640,
            "height": 480,
            "boxes": random_boxes(),
            "features": rng.random((boxes_per_image, 2048), dtype=np.float32),
            "cls_prob": rng.dirichlet(np.ones(NUM_DETECTOR_CLASSES), boxes_per_image),
        }
        for image_id in image_ids
    ]
    write_shard(images_dataset(records, with_class_distribution=True), target / IMAGES_DIR, 0)
    write_manifest(target / IMAGES_DIR, {"source": f"{synth_dir} with {boxes_per_image} random boxes"})
    (target / "pairs").symlink_to((synth_dir / "pairs").resolve())
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="a prepared data directory (default: SynthScenes)"
    )
    parser.add_argument("--split", default="train")
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "ernievil-bench-loader"
    )
    parser.add_argument(
        "--boxes-per-image", type=int, default=None, help="replace SynthScenes images by N-box ones"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=150, help="timed batches")
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()

    torch.set_num_threads(1)
    tokenizer = load_tokenizer()
    data_dir = args.data_dir
    if data_dir is None:
        data_dir = build_synth_scenes(
            args.cache_dir / "synth", num_train_images=4000, num_eval_images=400, seed=0, tokenizer=tokenizer
        )
        if args.boxes_per_image:
            data_dir = detector_sized_copy(data_dir, args.boxes_per_image)
    dataset = load_pretraining_split(data_dir, args.split)
    sampler = ResumableDistributedSampler(len(dataset), num_replicas=1, rank=0, seed=0)
    collator = SGPCollator(tokenizer, seed=0)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        collate_fn=collator,
        num_workers=0,
        drop_last=True,
    )

    def batches():
        epoch = 0
        while True:
            sampler.set_epoch(epoch)
            collator.set_epoch(epoch)
            yield from loader
            epoch += 1

    stream = batches()
    for _ in range(args.warmup):
        next(stream)
    start = time.perf_counter()
    regions = 0
    for _ in range(args.batches):
        regions += next(stream)["region_features"].shape[1]
    elapsed = time.perf_counter() - start
    print(f"cpu: {cpu_name()}, torch threads: {torch.get_num_threads()}")
    print(
        f"data: {data_dir} ({args.split}, {len(dataset)} pairs), padded regions per batch: {regions / args.batches:.1f}"
    )
    print(
        f"batch {args.batch_size}, {args.batches} batches: {args.batches * args.batch_size / elapsed:,.0f} samples/s"
    )


if __name__ == "__main__":
    main()
