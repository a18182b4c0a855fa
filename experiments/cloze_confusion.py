"""What a SynthScenes model confuses in the relation or attribute cloze: gold words by top-1 prediction.

    python experiments/cloze_confusion.py runs/demo/hf_model                    # relations, default SynthScenes
    python experiments/cloze_confusion.py runs/demo/hf_model --node attribute   # attributes, by kind
    python experiments/cloze_confusion.py runs/demo/hf_model --data DIR

Every node of the type in the evaluation split is masked alone, as in ``ernievil-ds eval-cloze``, with the
true image. Relations: a row is the gold relation, a column the model's top-1 WordPiece. The five relations
split along three decisions: horizontal or vertical ("beside" or not), which object is higher (above/on
against below/under) and whether the boxes touch (on/under against above/below). A model that reads only
the first decision fills the vertical rows evenly. Attributes: rows and columns are kinds (colour, size,
material), so the diagonal counts answers of the right kind and the top-1 column the exact word; answers of
another kind mean the model could not tell from the caption which attribute the [MASK] stands for.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForPreTraining

from ernievil_ds.data import collate_cloze, default_synth_dir, load_pretraining_split, load_tokenizer
from ernievil_ds.data.synth import COLOURS, MATERIALS, RELATIONS, SIZES
from ernievil_ds.data.transfer import batch_to_device
from ernievil_ds.objectives import NODE_TYPE_IDS

BATCH_SIZE = 128
#: The rows and columns of each node type's table: (name, the words it covers).
GROUPS = {
    "relation": [(relation, (relation,)) for relation in RELATIONS],
    "attribute": [("colour", COLOURS), ("size", SIZES), ("material", MATERIALS)],
}


def nodes_of_type(dataset, node_type: str) -> list[tuple[int, int]]:
    """(example index, node index) of every node of one type ("object", "attribute" or "relation")."""
    return [
        (i, k)
        for i in range(len(dataset))
        for k, type_id in enumerate(dataset[i]["node_types"])
        if type_id == NODE_TYPE_IDS[node_type]
    ]


@torch.no_grad()
def cloze_confusion(model, tokenizer, dataset, node_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 answers of every one-WordPiece node of ``node_type`` masked alone.

    Returns:
        counts (num_groups, num_groups + 1): gold group by predicted group, the last column any other
        WordPiece; and exact (num_groups,): how many of each row's answers are the gold word itself.
    """
    groups = GROUPS[node_type]
    group_of = {tokenizer.convert_tokens_to_ids(w): g for g, (_, words) in enumerate(groups) for w in words}
    nodes = nodes_of_type(dataset, node_type)
    counts = np.zeros((len(groups), len(groups) + 1), dtype=np.int64)
    exact = np.zeros(len(groups), dtype=np.int64)
    for start in range(0, len(nodes), BATCH_SIZE):
        chunk = nodes[start : start + BATCH_SIZE]
        batch, targets = collate_cloze([dataset[i] for i, _ in chunk], [k for _, k in chunk], tokenizer)
        batch = batch_to_device(batch, model.device, model.dtype)
        predicted = model(**batch).masked_token_logits.argmax(-1).tolist()  # one WordPiece per node
        for target, token_id in zip(targets, predicted):
            gold_id = tokenizer.convert_tokens_to_ids(target["text"])
            counts[group_of[gold_id], group_of.get(token_id, len(groups))] += 1
            exact[group_of[gold_id]] += token_id == gold_id
    return counts, exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="an exported model directory (hf_model/)")
    parser.add_argument("--data", type=Path, help="the run's data directory (default: SynthScenes)")
    parser.add_argument(
        "--node", choices=sorted(GROUPS), default="relation", help="the node type (default: relation)"
    )
    args = parser.parse_args()
    model = AutoModelForPreTraining.from_pretrained(args.model).eval()
    tokenizer, data = load_tokenizer(args.model), args.data or default_synth_dir()
    counts, exact = cloze_confusion(model, tokenizer, load_pretraining_split(data, "eval"), args.node)
    names = [name for name, _ in GROUPS[args.node]]
    print(
        f"{args.node} cloze of {args.model} with the true image: gold (rows) by top-1 prediction (columns)\n"
    )
    print(f"| gold \\ predicted | {' | '.join(names)} | other | top-1 |")
    print("| --- |" + " ---: |" * (len(names) + 2))
    for row, name in enumerate(names):
        cells = " | ".join(str(n) for n in counts[row])
        print(f"| {name} | {cells} | {exact[row] / max(counts[row].sum(), 1):.2f} |")
    print(f"\ntop-1 over all {counts.sum()} {args.node}s: {exact.sum() / max(counts.sum(), 1):.3f}")


if __name__ == "__main__":
    main()
