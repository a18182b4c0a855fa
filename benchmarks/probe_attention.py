"""Which way does the model ground words in regions? Attention mass on the right partner in every co-layer.

    python benchmarks/probe_attention.py runs/demo/hf_model            # data: the default SynthScenes
    python benchmarks/probe_attention.py runs/demo/hf_model --data DIR --pairs 300

On evaluation captions with one scene-graph node masked as in the cloze, the co-layers' attention
probabilities (per head, averaged over cases) that land on:

- text→image, masked relation → its subject's region and → its object's region;
- text→image, masked attribute → its object's region;
- text→image, noun → its own region;
- image→text, region → its noun (the regions of nouns the caption mentions);

next to what a uniform attention would give. A word's region is the one whose detector class distribution
peaks at the noun's class; a relation's subject and object are the nouns just before and just after it, an
attribute's object the noun just after it.
"""

from __future__ import annotations

import numpy as np
import torch
from probe_relations import ENCODER_INPUTS, load_probed, noun_regions, probe_parser

from ernievil_ds.data import TASK_IDS, collate_cloze, load_pretraining_split

MEASURES = (
    "relation → subject region",
    "relation → object region",
    "attribute → its object's region",
    "noun → its region",
    "region → its noun",
)


@torch.no_grad()
def measure(model, tokenizer, dataset, node_type: str, pairs: int) -> dict[str, tuple[np.ndarray, float]]:
    """{measure: (mass per co-layer and head (L, H), uniform mass)} on captions with a ``node_type`` masked."""
    cases = []  # (example index, node index): the first node of the type in each caption
    for i in range(min(pairs, len(dataset))):
        nodes = [k for k, t in enumerate(dataset[i]["node_types"]) if t == TASK_IDS[node_type]]
        if nodes:
            cases.append((i, nodes[0]))
    sums: dict[str, list] = {}
    for start in range(0, len(cases), 64):
        chunk = cases[start : start + 64]
        examples = [dataset[i] for i, _ in chunk]
        batch, _ = collate_cloze(examples, [k for _, k in chunk], tokenizer)
        inputs = {name: batch[name] for name in ENCODER_INPUTS}
        attentions = model.ernievil(**inputs, output_attentions=True).co_attentions
        text_to_image = torch.stack([t for t, _ in attentions], 1)  # (B, L, H, T, R + 1), [IMG] first
        image_to_text = torch.stack([i for _, i in attentions], 1)  # (B, L, H, R + 1, T)
        for b, (example, (_, k)) in enumerate(zip(examples, chunk)):
            regions = {noun: r + 1 for noun, r in noun_regions(example).items()}  # + 1: after [IMG]
            num_regions, num_tokens = len(example["boxes"]) + 1, int(batch["attention_mask"][b].sum())
            nouns = [
                (int(example["node_wordpieces"][j][0]), example["node_names"][j])
                for j, t in enumerate(example["node_types"])
                if t == TASK_IDS["object"] and example["node_names"][j] in regions
            ]
            position = int(example["node_wordpieces"][k][0])
            before = [n for p, n in nouns if p < position]
            after = [n for p, n in nouns if p > position]

            def add(name, mass, uniform):
                entry = sums.setdefault(name, [0.0, 0.0, 0])
                entry[0] += mass.numpy()
                entry[1] += uniform
                entry[2] += 1

            if node_type == "relation" and before and after:
                add(MEASURES[0], text_to_image[b, :, :, position, regions[before[-1]]], 1 / num_regions)
                add(MEASURES[1], text_to_image[b, :, :, position, regions[after[0]]], 1 / num_regions)
            if node_type == "attribute" and after:
                add(MEASURES[2], text_to_image[b, :, :, position, regions[after[0]]], 1 / num_regions)
            if node_type == "relation":
                for noun_position, noun in nouns:
                    add(MEASURES[3], text_to_image[b, :, :, noun_position, regions[noun]], 1 / num_regions)
                    add(MEASURES[4], image_to_text[b, :, :, regions[noun], noun_position], 1 / num_tokens)
    return {name: (total / count, uniform / count) for name, (total, uniform, count) in sums.items()}


def main() -> None:
    parser = probe_parser(__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=300, help="evaluation pairs to look at")
    args = parser.parse_args()

    model, tokenizer, data = load_probed(args)
    dataset = load_pretraining_split(data, "eval")
    results = {}
    for node_type in ("relation", "attribute"):
        results |= measure(model, tokenizer, dataset, node_type, args.pairs)
    print(f"Attention mass on the right partner, {args.model}; per co-layer, the heads' range")
    print("| measure | uniform | " + " | ".join(f"C{i}" for i in range(model.config.num_co_layers)) + " |")
    print("| --- | ---: |" + " ---: |" * model.config.num_co_layers)
    for name in MEASURES:
        mass, uniform = results[name]
        cells = " | ".join(f"{layer.min():.2f}-{layer.max():.2f}" for layer in mass)
        print(f"| {name} | {uniform:.3f} | {cells} |")


if __name__ == "__main__":
    main()
