"""Cloze accuracy at every complete checkpoint of a pretraining run: when along training do objects,
attributes and relations start to use the image?

    python benchmarks/cloze_curve.py runs/demo                  # data: the default SynthScenes
    python benchmarks/cloze_curve.py runs/demo --data DIR --device cuda --json curve.json

Train with ``--save-every N --keep-checkpoints K`` to keep the points. Each checkpoint is exported to a
temporary Hugging Face directory with DeepSpeed's ``zero_to_fp32`` (as ``ernievil-ds export`` does) and
scored by the same cloze as ``ernievil-ds eval-cloze``; the table gives top-1 with the true image and the
gap to a mismatched image per node type.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from machine import device_name

from ernievil_ds.training.checkpoint import complete_checkpoints
from ernievil_ds.training.cloze import NODE_TYPES, run_cloze
from ernievil_ds.training.export import export_checkpoint
from ernievil_ds.training.pretrain import default_synth_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a pretraining --output-dir with checkpoints/")
    parser.add_argument("--data", type=Path, help="the run's data directory (default: SynthScenes)")
    parser.add_argument("--device", help="default: the GPU when there is one")
    parser.add_argument("--json", type=Path, help="also write {step: cloze results} here")
    args = parser.parse_args()

    checkpoints = complete_checkpoints(args.run_dir / "checkpoints")
    if not checkpoints:
        raise SystemExit(f"{args.run_dir}/checkpoints holds no complete checkpoint")
    data = args.data or default_synth_dir()
    if not data.is_dir():
        raise SystemExit(f"No data at {data}: pass --data DIR")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    curve = {}
    with tempfile.TemporaryDirectory() as tmp:
        for step, tag_dir in checkpoints:
            hf_dir = export_checkpoint(tag_dir, Path(tmp) / tag_dir.name)
            curve[step] = run_cloze(hf_dir, data, device=device)

    types = list(NODE_TYPES.values())
    print(
        f"Cloze per checkpoint of {args.run_dir} on {data.name} ({device_name(device)}): top-1 true image (gap)"
    )
    print("| step | " + " | ".join(types) + " |")
    print("| ---: |" + " ---: |" * len(types))
    for step, results in curve.items():
        cells = [f"{results['true_image'][t]['top1']:.3f} ({results['gap_top1'][t]:+.3f})" for t in types]
        print(f"| {step} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(curve, indent=2))


if __name__ == "__main__":
    main()
