"""Can the `small` model learn spatial relations at all? Train it on masked relations alone, with and without
the co-layers' box embeddings, and follow the relation cloze.

    python benchmarks/relation_learnability.py                       # 400 steps each, cloze every 100
    python benchmarks/relation_learnability.py --steps 700 --eval-every 100 --data DIR
    python benchmarks/relation_learnability.py --arms boxes marked-regions   # the diagnostic arm below

Each run starts from the same place as the main job (the `small` preset, MiniLM's text stream, frozen word
embeddings) and trains one process on batches of 64 captions with one relation [MASK]ed each and no other
target (AdamW lr 3e-4, 50 warmup steps then linear decay, clipping 1.0): every step teaches relations, about
five times as many as a step of the main job does. The cloze (``ernievil-ds eval-cloze``'s) scores every
masked relation of the evaluation split with the true and with a mismatched image; a model that reads the
boxes pulls the two apart, one that guesses from the words stays near 1/5 with both.

The ``marked-regions`` arm is a diagnostic, not a model: it tells the model which regions the masked
relation is about. A learned role embedding is added to the image embeddings of the subject's region and
of the object's region, found from SynthScenes' grammar (the subject is the last noun before the relation,
the object the first after it) and the regions' detector classes. If that arm learns relations and the
``boxes`` arm does not, comparing two boxes is easy and finding the two regions is what is hard.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from machine import cpu_name
from torch import nn

from ernievil_ds.assets import minilm_dir
from ernievil_ds.configuration_ernievil import ErnieVilConfig
from ernievil_ds.data import TASK_IDS, collate_cloze, load_pretraining_split, load_tokenizer
from ernievil_ds.data.synth import NOUN_CLASSES, NOUNS
from ernievil_ds.modeling_ernievil import ErnieVilForPreTraining
from ernievil_ds.text_init import init_text_stream_from_bert
from ernievil_ds.training.cloze import cloze_accuracy
from ernievil_ds.training.pretrain import default_synth_dir

WARMUP_STEPS = 50
ARMS = ("no-boxes", "boxes", "marked-regions")


def nodes_of_type(dataset, task: str) -> list[tuple[int, int]]:
    """(example index, node index) of every node of one type ("object", "attribute" or "relation") of a split."""
    return [
        (i, k)
        for i in range(len(dataset))
        for k, node_type in enumerate(dataset[i]["node_types"])
        if node_type == TASK_IDS[task]
    ]


def relation_region_roles(
    input_ids: torch.Tensor, task_ids: torch.Tensor, region_classes: torch.Tensor, noun_ids: torch.Tensor
) -> torch.Tensor:
    """Which regions a SynthScenes caption's masked relation is about.

    Args:
        input_ids, task_ids: (B, T) the batch's WordPieces and task ids (the relation's [MASK] has task 3).
        region_classes: (B, R) each region's most likely detector class.
        noun_ids: (len(NOUNS),) the WordPiece id of each noun.

    Returns:
        (B, R + 1) role ids, the [IMG] region first: 1 on the subject's region, 2 on the object's, else 0
        (also 0 where the noun has no region, as with a mismatched image).
    """
    classes = torch.tensor(NOUN_CLASSES)
    roles = torch.zeros(region_classes.shape[0], region_classes.shape[1] + 1, dtype=torch.long)
    for i, relation in enumerate(task_ids == TASK_IDS["relation"]):
        if not relation.any():
            continue
        position = int(relation.nonzero()[0])
        nouns = torch.isin(input_ids[i], noun_ids).nonzero().flatten()
        for role, noun in ((1, nouns[nouns < position][-1:]), (2, nouns[nouns > position][:1])):
            for n in noun:
                region = (region_classes[i] == classes[noun_ids == input_ids[i, n]]).nonzero().flatten()
                roles[i, region[:1] + 1] = role
    return roles


def mark_relation_regions(model: ErnieVilForPreTraining, tokenizer) -> None:
    """Add a learned role embedding (subject, object) to the image embeddings of the masked relation's two
    regions, at every forward: the ``marked-regions`` diagnostic arm."""
    noun_ids = torch.tensor(tokenizer.convert_tokens_to_ids(list(NOUNS)))
    model.region_role_embedding = nn.Embedding(3, model.config.v_hidden_size, padding_idx=0)
    roles = {}

    def find_roles(module, args, kwargs):
        region_classes = kwargs["region_class_targets"].argmax(-1)
        roles["ids"] = relation_region_roles(
            kwargs["input_ids"], kwargs["task_ids"], region_classes, noun_ids
        )

    model.register_forward_pre_hook(find_roles, with_kwargs=True)
    model.ernievil.image_embeddings.register_forward_hook(
        lambda module, args, output: output + model.region_role_embedding(roles["ids"])
    )


def train_on_relations(arm: str, train, evaluation, tokenizer, steps: int, eval_every: int, batch_size: int):
    """Yield (step, training seconds so far, relation top-1 with the true image, with a mismatched image)."""
    torch.manual_seed(0)
    config = ErnieVilConfig.from_preset("small", co_layer_box_embeddings=arm != "no-boxes")
    model = ErnieVilForPreTraining(config)
    init_text_stream_from_bert(model, minilm_dir())
    if arm == "marked-regions":
        mark_relation_regions(model, tokenizer)
    model.get_input_embeddings().weight.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.optimizer_groups(0.01), lr=3e-4, eps=1e-6, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / WARMUP_STEPS, (steps - s) / (steps - WARMUP_STEPS))
    )
    nodes = nodes_of_type(train, "relation")
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
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS[:2]), help="what to train")
    args = parser.parse_args()
    if args.steps <= WARMUP_STEPS:
        parser.error(f"--steps must exceed the {WARMUP_STEPS} warmup steps")
    data = args.data or default_synth_dir()
    tokenizer = load_tokenizer()
    train, evaluation = (load_pretraining_split(data, split) for split in ("train", "eval"))
    print(f"relation-only training of `small`, {cpu_name()}, torch threads {torch.get_num_threads()}")
    print(f"{len(nodes_of_type(evaluation, 'relation'))} masked relations scored; chance is 1/5\n")
    print("| arm | step | training seconds | relation top-1 | mismatched image | gap |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for arm in args.arms:
        for step, seconds, true_top1, mismatched_top1 in train_on_relations(
            arm, train, evaluation, tokenizer, args.steps, args.eval_every, args.batch_size
        ):
            print(
                f"| {arm} | {step} | {seconds:.0f} | {true_top1:.3f} | "
                f"{mismatched_top1:.3f} | {true_top1 - mismatched_top1:+.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
