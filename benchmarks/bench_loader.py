"""Loader throughput per DataLoader worker count: float16 region inputs against the float32 widening.

    python benchmarks/bench_loader.py                    # SynthScenes and detector-sized images, 0-2 workers
    python benchmarks/bench_loader.py --workers 0 1 2 4 8
    python benchmarks/bench_loader.py --data-dir DATA --split train
    python benchmarks/bench_loader.py --smoke            # a few small batches: checks that it runs

Memory-mapped pairs + images, SGP masking on, batch 64. Each data set is read twice per worker count,
interleaved: by the collator as it is (region features and class distributions float16, as stored) and
with both widened to float32 after collation: the baseline of casting on the host (a collator that widens
while it copies saves one pass, so that row slightly overstates its cost). Torch runs one thread per
process, as in a DataLoader worker; batches are pinned when CUDA is available, as in training. GB/s
counts the bytes of region features and region class (or feature) targets that reach the training
process.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name
from tqdm.auto import tqdm

from ernievil_ds.data import SGPCollator, build_synth_scenes, load_pretraining_split, load_tokenizer
from ernievil_ds.data.schema import FEATURE_DIM, IMAGES_DIR, NUM_DETECTOR_CLASSES
from ernievil_ds.data.storage import images_dataset, load_table, write_manifest, write_shard
from ernievil_ds.data.transfer import loader_pins_memory

#: The batch keys whose bytes the GB/s column counts.
REGION_KEYS = ("region_features", "region_class_targets", "region_feature_targets")
#: Images per shard of the detector-sized copy (bounds the memory used to write it).
IMAGES_PER_SHARD = 500


def detector_sized_copy(synth_dir: Path, boxes_per_image: int) -> Path:
    """``synth_dir`` with its images replaced by random ones of ``boxes_per_image`` regions (pairs linked)."""
    target = synth_dir.with_name(f"{synth_dir.name}-{boxes_per_image}boxes")
    if (target / IMAGES_DIR / "manifest.json").is_file():
        return target
    rng = np.random.default_rng(0)
    image_ids = load_table(synth_dir / IMAGES_DIR)["image_id"]

    def random_image(image_id: str) -> dict:
        corners = rng.random((boxes_per_image, 2, 2)) * np.array([640, 480])  # two (x, y) points per box
        return {
            "image_id": image_id,
            "width": 640,
            "height": 480,
            "boxes": np.concatenate([corners.min(1), corners.max(1)], axis=1).astype(np.float32),  # (N, 4)
            "features": rng.random((boxes_per_image, FEATURE_DIM), dtype=np.float32),
            "cls_prob": rng.dirichlet(np.ones(NUM_DETECTOR_CLASSES), boxes_per_image),
        }

    for shard, start in enumerate(range(0, len(image_ids), IMAGES_PER_SHARD)):
        records = [random_image(i) for i in image_ids[start : start + IMAGES_PER_SHARD]]
        write_shard(images_dataset(records, with_class_distribution=True), target / IMAGES_DIR, shard)
    write_manifest(target / IMAGES_DIR, {"source": f"{synth_dir} with {boxes_per_image} random boxes"})
    (target / "pairs").symlink_to((synth_dir / "pairs").resolve())
    return target


class WideningCollator:
    """The float32 baseline: the collator's batch with region features and targets widened on the host."""

    def __init__(self, collator: SGPCollator) -> None:
        self.collator = collator

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.collator(examples)
        return {key: value.float() if key in REGION_KEYS else value for key, value in batch.items()}


def _init_worker(worker_id: int) -> None:
    torch.set_num_threads(1)


def measure(
    dataset, collate, workers: int, batch_size: int, warmup: int, batches: int
) -> tuple[float, float]:
    """Samples per second and region-input bytes per sample delivered by a DataLoader over ``dataset``.

    Returns:
        (samples/s over the timed batches, bytes of ``REGION_KEYS`` per sample).
    """
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=itertools.cycle(order),
        collate_fn=collate,
        num_workers=workers,
        pin_memory=loader_pins_memory(),
        worker_init_fn=_init_worker,
        prefetch_factor=4 if workers else None,
    )
    stream = iter(loader)
    for _ in range(warmup):  # worker start-up, page cache
        next(stream)
    num_bytes = 0
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(stream)
        num_bytes += sum(batch[k].numel() * batch[k].element_size() for k in REGION_KEYS if k in batch)
    elapsed = time.perf_counter() - start
    del stream  # stops the workers
    return batches * batch_size / elapsed, num_bytes / (batches * batch_size)


def data_sets(args: argparse.Namespace, tokenizer) -> dict[str, Path]:
    """The data directories to read, by the name their table rows carry."""
    if args.data_dir is not None:
        return {str(args.data_dir): args.data_dir}
    synth = build_synth_scenes(
        args.cache_dir / f"synth-{args.synth_images}",
        num_train_images=args.synth_images,
        num_eval_images=10,
        seed=0,
        tokenizer=tokenizer,
    )
    return {
        "SynthScenes (2-4 regions)": synth,
        f"detector-sized ({args.boxes_per_image} regions + {NUM_DETECTOR_CLASSES} classes)": (
            detector_sized_copy(synth, args.boxes_per_image)
        ),
    }


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="a prepared data directory (default: SynthScenes)")
    parser.add_argument("--split", default="train")
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "ernievil-bench-loader"
    )
    parser.add_argument("--synth-images", type=int, default=4000, help="SynthScenes training images")
    parser.add_argument("--boxes-per-image", type=int, default=36, help="regions of the detector-sized copy")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader workers")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=100, help="timed batches")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="a few small batches, 0 and 1 workers")
    args = parser.parse_args()
    if args.smoke:
        args.synth_images, args.workers, args.batch_size, args.batches, args.warmup = 40, [0, 1], 8, 3, 1
    return args


def main() -> None:
    args = parse_arguments()
    torch.set_num_threads(1)
    tokenizer = load_tokenizer()
    collators = {"float16": SGPCollator(tokenizer, seed=0)}
    collators["float32 (widened)"] = WideningCollator(collators["float16"])
    rows = []
    runs = [
        (name, directory, workers, precision)
        for name, directory in data_sets(args, tokenizer).items()
        for workers in args.workers
        for precision in collators
    ]
    datasets = {}
    for name, directory, workers, precision in tqdm(runs, desc="loader configurations"):
        dataset = datasets.setdefault(name, load_pretraining_split(directory, args.split))
        rate, per_sample = measure(
            dataset, collators[precision], workers, args.batch_size, args.warmup, args.batches
        )
        rows.append((name, workers, precision, rate, per_sample))
    print(f"cpu: {cpu_name()} ({os.cpu_count()} cores), {torch.get_num_threads()} torch thread per process")
    if torch.cuda.is_available():
        print(f"device: {torch.cuda.get_device_name()} (batches pinned)")
    print(
        f"batch {args.batch_size}, {args.batches} timed batches after {args.warmup}, split {args.split!r}\n"
    )
    print("| data | workers | region inputs | samples/s | region bytes/sample | GB/s |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for name, workers, precision, rate, per_sample in rows:
        print(
            f"| {name} | {workers} | {precision} | {rate:,.0f} | {per_sample:,.0f} | {rate * per_sample / 1e9:.3f} |"
        )


if __name__ == "__main__":
    main()
