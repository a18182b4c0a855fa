"""The host's share of a pretraining step, counted on any machine: the operators one eager training step
(forward, losses, backward) dispatches, how many of them make the host wait for the device (a value read
or a data-dependent shape: ``ernievil_ds.host_syncs``), and the graphs and graph breaks of
``torch.compile`` with ``fullgraph`` semantics and ``capture_dynamic_output_shape_ops`` off.

    python benchmarks/count_step_ops.py                    # base and the test presets, micro-batch 8
    python benchmarks/count_step_ops.py --presets base --batch-size 64
    python benchmarks/count_step_ops.py --smoke            # tiny, micro-batch 2

The batch is the collator's (``SGPCollator``, scored positions padded to their capacities) on SynthScenes
captions paired with detector-sized images (36 regions, as bench_loader.py makes them). The model is built
on the meta device and given random weights (the operators do not depend on their values), in train mode
with its dropout. Counts are per micro-batch and independent of the device: every operator the host
launches on a GPU is dispatched here too.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from bench_loader import detector_sized_copy
from machine import cpu_name, print_table
from transformers import AutoModelForPreTraining

from ernievil_ds import ErnieVilConfig
from ernievil_ds.data import SGPCollator, build_synth_scenes, load_pretraining_split, load_tokenizer
from ernievil_ds.data.transfer import batch_to_device
from ernievil_ds.host_syncs import HostSyncAudit


def random_weights_model(preset: str):
    """The preset's pretraining model built on the meta device, then given random weights on the CPU (seconds
    for ``base``, where the official initialisation takes minutes), in train mode."""
    with torch.device("meta"):
        model = AutoModelForPreTraining.from_config(ErnieVilConfig.from_preset(preset))
    model.to_empty(device="cpu")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.02)
    return model.train()


def collated_batch(work: Path, batch_size: int, boxes_per_image: int) -> dict[str, torch.Tensor]:
    """One training batch of ``batch_size`` SynthScenes pairs with detector-sized images, as SGPCollator
    makes it and the training loop hands it to a float32 model."""
    tokenizer = load_tokenizer()
    synth = build_synth_scenes(
        work / "synth", num_train_images=batch_size, num_eval_images=1, seed=0, tokenizer=tokenizer
    )
    dataset = load_pretraining_split(detector_sized_copy(synth, boxes_per_image), "train")
    batch = SGPCollator(tokenizer, seed=0)(dataset.__getitems__(list(range(batch_size))))
    return batch_to_device(batch, torch.device("cpu"), torch.float32)


def count_step(model, batch: dict[str, torch.Tensor]) -> dict[str, int]:
    """The operators and host syncs of one eager step, forward (with the losses) and backward apart; and
    the graphs and graph breaks of dynamo's trace of the forward and losses."""
    with HostSyncAudit() as forward:
        loss = model(**batch).loss
    with HostSyncAudit() as backward:
        loss.backward()
    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=False):
        explanation = torch._dynamo.explain(lambda **inputs: model(**inputs).loss)(**batch)
    return {
        "forward": forward.num_operators,
        "backward": backward.num_operators,
        "syncs": len(forward.syncs) + len(backward.syncs),
        "graphs": explanation.graph_count,
        "breaks": explanation.graph_break_count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["base", "tiny", "tiny-grounded"])
    parser.add_argument("--batch-size", type=int, default=8, help="the micro-batch (default 8)")
    parser.add_argument("--boxes-per-image", type=int, default=36)
    parser.add_argument("--smoke", action="store_true", help="tiny, micro-batch 2")
    args = parser.parse_args()
    if args.smoke:
        args.presets, args.batch_size = ["tiny"], 2
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as work:
        batch = collated_batch(Path(work), args.batch_size, args.boxes_per_image)
    (batch_size, text_len), num_regions = batch["input_ids"].shape, batch["region_mask"].shape[1]
    print(
        f"device: {cpu_name()} (operators are counted as dispatched, whatever the device); micro-batch "
        f"{batch_size} x {text_len} tokens x {num_regions} regions, {torch.__version__}"
        + (" (smoke)" if args.smoke else "")
    )
    header = [
        "preset",
        "operators: forward + losses",
        "backward",
        "per step",
        "host syncs",
        "graphs",
        "breaks",
    ]
    rows = []
    for preset in args.presets:
        counts = count_step(random_weights_model(preset), batch)
        total = counts["forward"] + counts["backward"]
        rows.append(
            [preset, *(str(counts[k]) for k in ("forward", "backward")), str(total)]
            + [str(counts[k]) for k in ("syncs", "graphs", "breaks")]
        )
    print_table(header, rows)


if __name__ == "__main__":
    main()
