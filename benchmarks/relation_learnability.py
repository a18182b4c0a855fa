"""Can the `small` model learn spatial relations at all? Train it on masked relations alone, with and without
the co-layers' box embeddings, and follow the relation cloze.

    python benchmarks/relation_learnability.py                       # 400 steps each, cloze every 100
    python benchmarks/relation_learnability.py --steps 700 --eval-every 100 --data DIR

Each run starts from the same place as the main job (the `small` preset, MiniLM's text stream, frozen word
embeddings) and trains one process on batches of 64 captions with one relation [MASK]ed each and no other
target (AdamW lr 3e-4, 50 warmup steps then linear decay, clipping 1.0): every step teaches relations, about
five times as many as a step of the main job does. The cloze (``ernievil-ds eval-cloze``'s) scores every
masked relation of the evaluation split with the true and with a mismatched image; a model that reads the
boxes pulls the two apart, one that guesses from the words stays near 1/5 with both.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from machine import cpu_name

from ernievil_ds.assets import minilm_dir
from ernievil_ds.configuration_ernievil import ErnieVilConfig
from ernievil_ds.data import TASK_IDS, collate_cloze, load_pretraining_split, load_tokenizer
from ernievil_ds.modeling_ernievil import ErnieVilForPreTraining
from ernievil_ds.text_init import init_text_stream_from_bert
from ernievil_ds.training.cloze import cloze_accuracy
from ernievil_ds.training.pretrain import default_synth_dir

WARMUP_STEPS = 50


def relation_nodes(dataset) -> list[tuple[int, int]]:
    """(example index, node index) of every relation node of a split."""
    return [
        (i, k)
        for i in range(len(dataset))
        for k, node_type in enumerate(dataset[i]["node_types"])
        if node_type == TASK_IDS["relation"]
    ]


def train_on_relations(
    box_embeddings: bool, train, evaluation, tokenizer, steps: int, eval_every: int, batch_size: int
):
    """Yield (step, training seconds so far, relation top-1 with the true image, with a mismatched image)."""
    torch.manual_seed(0)
    config = ErnieVilConfig.from_preset("small", co_layer_box_embeddings=box_embeddings)
    model = ErnieVilForPreTraining(config)
    init_text_stream_from_bert(model, minilm_dir())
    model.get_input_embeddings().weight.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.optimizer_groups(0.01), lr=3e-4, eps=1e-6, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / WARMUP_STEPS, (steps - s) / (steps - WARMUP_STEPS))
    )
    nodes = relation_nodes(train)
    rng = np.random.default_rng(0)
    seconds = 0.0
    for step in range(1, steps + 1):
        start = time.perf_counter()
        chosen = [nodes[j] for j in rng.choice(len(nodes), batch_size, replace=False)]
        batch, _ = collate_cloze([train[i] for i, _ in chosen], [k for _, k in chosen], tokenizer)
        loss = model(**batch).sgp_relation_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        seconds += time.perf_counter() - start
        if step % eval_every == 0 or step == steps:
            cloze = cloze_accuracy(model, tokenizer, evaluation, node_types=("relation",))
            yield (
                step,
                seconds,
                cloze["true_image"]["relation"]["top1"],
                cloze["mismatched_image"]["relation"]["top1"],
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=None, help="prepared SynthScenes directory (default: the main job's)"
    )
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    if args.steps <= WARMUP_STEPS:
        parser.error(f"--steps must exceed the {WARMUP_STEPS} warmup steps")
    data = args.data or default_synth_dir()
    tokenizer = load_tokenizer()
    train, evaluation = (load_pretraining_split(data, split) for split in ("train", "eval"))
    print(f"relation-only training of `small`, {cpu_name()}, torch threads {torch.get_num_threads()}")
    print(f"{len(relation_nodes(evaluation))} masked relations scored; chance is 1/5\n")
    print("| co-layer box embeddings | step | training seconds | relation top-1 | mismatched image | gap |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for box_embeddings in (False, True):
        for step, seconds, true_top1, mismatched_top1 in train_on_relations(
            box_embeddings, train, evaluation, tokenizer, args.steps, args.eval_every, args.batch_size
        ):
            print(
                f"| {'yes' if box_embeddings else 'no'} | {step} | {seconds:.0f} | {true_top1:.3f} | "
                f"{mismatched_top1:.3f} | {true_top1 - mismatched_top1:+.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
