"""Which relations a SynthScenes model tells apart: the confusion matrix of the relation cloze.

    python benchmarks/relation_confusion.py runs/demo/hf_model              # data: the default SynthScenes
    python benchmarks/relation_confusion.py runs/demo/hf_model --data DIR

Every relation of the evaluation split is masked alone, as in ``ernievil-ds eval-cloze``, with the true
image; a row is the gold relation, a column the model's top-1 WordPiece. The five relations split along
three decisions: horizontal or vertical ("beside" or not), which object is higher (above/on against
below/under) and whether the boxes touch (on/under against above/below). A model that reads only the first
decision fills the vertical rows evenly.
"""

from __future__ import annotations

import numpy as np
import torch
from probe_relations import load_probed, probe_parser
from relation_learnability import relation_nodes

from ernievil_ds.data import collate_cloze, load_pretraining_split
from ernievil_ds.data.synth import RELATIONS

BATCH_SIZE = 128


@torch.no_grad()
def relation_confusion(model, tokenizer, dataset) -> np.ndarray:
    """(len(RELATIONS), len(RELATIONS) + 1) counts: gold relation by predicted relation, last column any
    other WordPiece."""
    relation_ids = tokenizer.convert_tokens_to_ids(list(RELATIONS))
    nodes = relation_nodes(dataset)
    counts = np.zeros((len(RELATIONS), len(RELATIONS) + 1), dtype=np.int64)
    for start in range(0, len(nodes), BATCH_SIZE):
        chunk = nodes[start : start + BATCH_SIZE]
        batch, targets = collate_cloze([dataset[i] for i, _ in chunk], [k for _, k in chunk], tokenizer)
        predicted = model(**batch).masked_token_logits.argmax(-1).tolist()  # one WordPiece per relation
        for target, token_id in zip(targets, predicted):
            column = relation_ids.index(token_id) if token_id in relation_ids else len(RELATIONS)
            counts[RELATIONS.index(target["text"]), column] += 1
    return counts


def main() -> None:
    args = probe_parser(__doc__.splitlines()[0]).parse_args()
    model, tokenizer, data = load_probed(args)
    counts = relation_confusion(model, tokenizer, load_pretraining_split(data, "eval"))
    print(f"relation cloze of {args.model} with the true image: gold (rows) by top-1 prediction (columns)\n")
    print("| gold \\ predicted | " + " | ".join(RELATIONS) + " | other | top-1 |")
    print("| --- |" + " ---: |" * (len(RELATIONS) + 2))
    for row, relation in enumerate(RELATIONS):
        cells = " | ".join(str(n) for n in counts[row])
        print(f"| {relation} | {cells} | {counts[row, row] / max(counts[row].sum(), 1):.2f} |")
    print(f"\ntop-1 over all {counts.sum()} relations: {np.trace(counts) / max(counts.sum(), 1):.3f}")


if __name__ == "__main__":
    main()
