"""synth_qa answered by a pretrained model with no fine-tuning, through the pretraining's cloze: does the
pretrained encoder already hold the answers that fine-tuning fails to read out?

    python experiments/cloze_qa.py runs/sgp_transfer/pretrain/sgp-s0/hf_model runs/sgp_transfer/pretrain/no_sgp-s0/hf_model

Each question of the evaluation scenes (those ``launchers/finetune.py --task synth_qa --seed F`` scores)
is rewritten in a caption form of SynthScenes with one [MASK] in the place of the answer, and answered by
the type's word that the masked-token head scores highest, given the question's image:

- colour, "what colour is the cube?": "the cube is [MASK]." (the captions' colour-only form), among the
  8 colours;
- relation, "what is on the cube?": "a [MASK] is on a cube." (the commonest form, "a red cube is beside a
  ball."), among the 10 nouns;
- yes/no, "is the lamp on the cube?": "a lamp is [MASK] a cube.", among the 5 relations; "yes" when the
  best is the relation the question states.

Count has no cloze form (no caption counts), so it is left out.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForPreTraining

from ernievil_ds.data import load_tokenizer
from ernievil_ds.data.synth import COLOURS, NOUNS, RELATIONS
from ernievil_ds.finetuning.synth_qa import ANSWERS, QUESTION_TYPES, collate_questions, split_examples

#: Per question type: the question's pattern, the cloze text made from its groups, the words the [MASK]
#: is chosen among.
CLOZES = {
    "colour": (r"what colour is the (\w+)\s?\?", "the {0} is [MASK].", COLOURS),
    "relation": (r"what is (\w+) the (\w+)\s?\?", "a [MASK] is {0} a {1}.", NOUNS),
    "yes_no": (r"is the (\w+) (\w+) the (\w+)\s?\?", "a {0} is [MASK] a {2}.", RELATIONS),
}


def question_text(tokenizer, example: dict) -> str:
    """A synth_qa example's question, as its WordPieces decode."""
    return tokenizer.decode(example["input_ids"], skip_special_tokens=True)


def cloze_text(question: str, kind: str) -> str:
    """The cloze of a synth_qa question of type ``kind`` (a key of ``CLOZES``), as decoded WordPieces."""
    pattern, template, _ = CLOZES[kind]
    match = re.fullmatch(pattern, question)
    if match is None:
        raise ValueError(f"not a synth_qa {kind} question: {question!r}")
    return template.format(*match.groups())


def answer_from_word(question: str, kind: str, word: str) -> str:
    """The synth_qa answer that the cloze's word gives: the word itself, or yes/no for yes/no questions."""
    if kind != "yes_no":
        return word
    stated = re.fullmatch(CLOZES["yes_no"][0], question).group(2)
    return "yes" if word == stated else "no"


@torch.no_grad()
def cloze_scores(model, tokenizer, examples: list[dict], kind: str) -> torch.Tensor:
    """The masked-token head's logits (B, W) at the [MASK] of each of ``examples``' clozes (synth_qa
    questions of type ``kind``), for the W words of the type in ``CLOZES`` order."""
    clozed = [
        dict(e, input_ids=np.array(tokenizer(cloze_text(question_text(tokenizer, e), kind))["input_ids"]))
        for e in examples
    ]
    batch = collate_questions(clozed, tokenizer.pad_token_id)
    del batch["labels"], batch["meta_kinds"]
    masked = batch["input_ids"] == tokenizer.mask_token_id  # (B, T), one [MASK] per row
    positions = masked.flatten().nonzero().squeeze(-1)  # (B,) flat indices b * T + t, in row order
    labels = torch.where(masked, batch["input_ids"], -100)  # any id: it only marks the rows to score
    logits = model(
        **batch,
        labels=labels,
        masked_token_positions=positions,
        masked_token_weights=torch.ones(positions.shape),
    ).masked_token_logits  # (B, vocab)
    return logits[:, tokenizer.convert_tokens_to_ids(list(CLOZES[kind][2]))]


def cloze_accuracy(model, tokenizer, examples: list[dict]) -> dict[str, float]:
    """Per question type of ``CLOZES``: the share of ``examples`` of that type the cloze answers right."""
    accuracy = {}
    for kind in CLOZES:
        of_kind = [e for e in examples if QUESTION_TYPES[e["kind"]] == kind]
        best = cloze_scores(model, tokenizer, of_kind, kind).argmax(-1).tolist()  # (B,)
        answers = [
            answer_from_word(question_text(tokenizer, e), kind, CLOZES[kind][2][i])
            for e, i in zip(of_kind, best)
        ]
        right = [answer == ANSWERS[int(e["labels"].argmax())] for answer, e in zip(answers, of_kind)]
        accuracy[kind] = sum(right) / len(right)
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+", help="exported pretraining models (hf_model/)")
    parser.add_argument("--seed", type=int, default=0, help="the fine-tuning seed whose evaluation scenes")
    parser.add_argument("--eval-images", type=int, default=200, help="evaluation scenes (the launcher's)")
    args = parser.parse_args()
    tokenizer = load_tokenizer()
    examples = split_examples("eval", args.eval_images, args.seed, tokenizer)
    print(
        f"synth_qa through the cloze, no fine-tuning ({args.eval_images} evaluation scenes, seed {args.seed})\n"
    )
    print("| model | " + " | ".join(CLOZES) + " |")
    print("| --- |" + " ---: |" * len(CLOZES))
    for path in args.models:
        model = AutoModelForPreTraining.from_pretrained(path).eval()
        accuracy = cloze_accuracy(model, tokenizer, examples)
        print(f"| {path} | " + " | ".join(f"{accuracy[kind]:.3f}" for kind in CLOZES) + " |")


if __name__ == "__main__":
    main()
