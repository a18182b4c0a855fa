"""Where relation prediction breaks down: linear probes on the text stream of an exported SynthScenes model.

    python benchmarks/probe_relations.py runs/demo/hf_model                 # data: the default SynthScenes
    python benchmarks/probe_relations.py runs/demo/hf_model --data DIR --train-pairs 3000

On captions with a relation, the relation masked as in the cloze, two ridge probes per block of the text
stream (embeddings, then each text layer and co-layer in order):

- noun -> box: from a noun's hidden state to its region's box centre (x, y): does the noun carry its box?
- relation -> offset: from the masked relation's hidden state to the subject's centre minus the object's
  (dx, dy): has the relation token gathered the two boxes it must compare?

Fitted on training pairs, scored (R^2) on the evaluation split. A noun's region is the one whose detector
class distribution peaks at the noun's class (nouns are unique within a SynthScenes image); the subject
and object are the nouns just before and just after the relation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ernievil_ds.data import TASK_IDS, collate_cloze, load_pretraining_split, load_tokenizer
from ernievil_ds.data.synth import NOUN_CLASSES, NOUNS
from ernievil_ds.modeling_ernievil import ErnieVilForPreTraining
from ernievil_ds.training.pretrain import default_synth_dir

ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "region_features", "region_mask")
ENCODER_INPUTS += ("region_boxes", "image_sizes")
NOUN_CLASS = dict(zip(NOUNS, NOUN_CLASSES))


def noun_regions(example: dict) -> dict[str, int]:
    """The region of each noun of the image (the one whose class distribution peaks at the noun's class)."""
    peaks = np.asarray(example["cls_prob"], dtype=np.float32).argmax(1)  # (R,)
    return {
        noun: int(np.flatnonzero(peaks == cls)[0]) for noun, cls in NOUN_CLASS.items() if (peaks == cls).any()
    }


def region_centres(example: dict) -> dict[str, np.ndarray]:
    """Each noun's region centre as (x / width, y / height), keyed by noun."""
    boxes = np.asarray(example["boxes"], dtype=np.float64)  # (R, 4)
    size = np.array([example["width"], example["height"]], dtype=np.float64)
    centres = np.stack([boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]], axis=1) / 2 / size  # (R, 2)
    return {noun: centres[region] for noun, region in noun_regions(example).items()}


@torch.no_grad()
def collect(model, tokenizer, data: Path, split: str, limit: int | None) -> dict[str, tuple]:
    """{"noun": (X per block, y), "relation": (X per block, y)}: hidden states (N, C) and targets (N, 2)."""
    dataset = load_pretraining_split(data, split)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    items = []  # (example index, relation node index)
    for i in range(count):
        relations = [k for k, t in enumerate(dataset[i]["node_types"]) if t == TASK_IDS["relation"]]
        if relations:
            items.append((i, relations[0]))
    features = {"noun": ([], []), "relation": ([], [])}
    for start in range(0, len(items), 64):
        chunk = items[start : start + 64]
        examples = [dataset[i] for i, _ in chunk]
        batch, _ = collate_cloze(examples, [k for _, k in chunk], tokenizer)
        inputs = {name: batch[name] for name in ENCODER_INPUTS}
        blocks = model.ernievil(**inputs, output_hidden_states=True).all_text_hidden_states  # (B, T, C) each
        for b, (example, (_, k)) in enumerate(zip(examples, chunk)):
            centres = region_centres(example)
            nouns = [
                (int(example["node_wordpieces"][j][0]), example["node_names"][j])
                for j, t in enumerate(example["node_types"])
                if t == TASK_IDS["object"] and example["node_names"][j] in centres
            ]
            for position, noun in nouns:
                features["noun"][0].append([h[b, position].numpy() for h in blocks])
                features["noun"][1].append(centres[noun])
            relation = int(example["node_wordpieces"][k][0])
            before = [n for p, n in nouns if p < relation]
            after = [n for p, n in nouns if p > relation]
            if before and after:
                features["relation"][0].append([h[b, relation].numpy() for h in blocks])
                features["relation"][1].append(centres[before[-1]] - centres[after[0]])
    return {name: (np.array(x).transpose(1, 0, 2), np.array(y)) for name, (x, y) in features.items()}


def ridge_r2(x_train, y_train, x_test, y_test, penalty: float = 10.0) -> np.ndarray:
    """R^2 per target column of a ridge fit on standardised features (N, C) -> (N, 2)."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a = np.c_[(x_train - mean) / std, np.ones(len(x_train))]
    b = np.c_[(x_test - mean) / std, np.ones(len(x_test))]
    weights = np.linalg.solve(a.T @ a + penalty * np.eye(a.shape[1]), a.T @ y_train)
    residual = ((b @ weights - y_test) ** 2).sum(0)
    return 1 - residual / ((y_test - y_test.mean(0)) ** 2).sum(0)


def block_names(config) -> list[str]:
    """The text stream's blocks in the order ``all_text_hidden_states`` holds them."""
    names, text_start = ["embeddings"], 0
    for i, text_end in enumerate(config.text_co_layer_ids):
        names += [f"text layer {j}" for j in range(text_start, text_end)] + [f"co-layer {i}"]
        text_start = text_end
    return names + [f"text layer {j}" for j in range(text_start, config.num_hidden_layers)]


def probe_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every probe takes: an exported model directory and its data directory."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("model", type=Path, help="an exported model directory (hf_model/)")
    parser.add_argument("--data", type=Path, help="the run's data directory (default: SynthScenes)")
    return parser


def load_probed(args: argparse.Namespace) -> tuple[ErnieVilForPreTraining, object, Path]:
    """The model (in eval mode), its tokenizer and the data directory named by ``probe_parser``'s arguments."""
    model = ErnieVilForPreTraining.from_pretrained(args.model).eval()
    return model, load_tokenizer(args.model), args.data or default_synth_dir()


def main() -> None:
    parser = probe_parser(__doc__.splitlines()[0])
    parser.add_argument("--train-pairs", type=int, default=3000, help="training pairs to fit the probes on")
    args = parser.parse_args()

    model, tokenizer, data = load_probed(args)
    train = collect(model, tokenizer, data, "train", args.train_pairs)
    test = collect(model, tokenizer, data, "eval", None)

    print(
        f"R^2 on the evaluation split of {args.model}: {len(test['noun'][1])} nouns, "
        f"{len(test['relation'][1])} relations (fitted on {len(train['noun'][1])} / {len(train['relation'][1])})"
    )
    print("| block | noun -> x | noun -> y | relation -> dx | relation -> dy |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for i, name in enumerate(block_names(model.config)):
        noun = ridge_r2(train["noun"][0][i], train["noun"][1], test["noun"][0][i], test["noun"][1])
        relation = ridge_r2(
            train["relation"][0][i], train["relation"][1], test["relation"][0][i], test["relation"][1]
        )
        print(f"| {name} | {noun[0]:+.2f} | {noun[1]:+.2f} | {relation[0]:+.2f} | {relation[1]:+.2f} |")


if __name__ == "__main__":
    main()
