"""The encoder's gradient per synth_qa question type in a fine-tuned VQA model: its norm and the cosines
between types. Do the types pull the shared weights apart, or does one simply take the larger share?

    python experiments/type_gradients.py --model runs/sgp_transfer/finetune-<recipe hash>/sgp-p0-f0/hf_model

Each type's gradient is that of the model's loss over the first ``--questions`` training questions of the
type (the fine-tuning seed's training scenes, as ``launchers/finetune.py --task synth_qa`` draws them), with
respect to every encoder weight (``ernievil.*``), the model in eval mode (no dropout).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ernievil_ds.finetuning.modeling import ErnieVilForVisualQuestionAnswering
from ernievil_ds.finetuning.synth_qa import QUESTION_TYPES, collate_questions, split_examples


def type_gradients(
    model: ErnieVilForVisualQuestionAnswering, examples: list[dict], questions: int
) -> dict[str, torch.Tensor]:
    """Per question type with examples, the gradient (P,) of the loss over its first ``questions`` examples
    with respect to the encoder's P trainable weights, flattened in ``named_parameters`` order."""
    encoder = [p for name, p in model.named_parameters() if name.startswith("ernievil.") and p.requires_grad]
    gradients = {}
    for index, kind in enumerate(QUESTION_TYPES):
        of_kind = [example for example in examples if example["kind"] == index][:questions]
        if not of_kind:
            continue
        batch = collate_questions(of_kind)
        batch.pop("meta_kinds")
        batch = {name: t.to(model.dtype) if t.is_floating_point() else t for name, t in batch.items()}
        loss = model(**batch).loss
        grads = torch.autograd.grad(loss, encoder, allow_unused=True, materialize_grads=True)  # unused: zeros
        gradients[kind] = torch.cat([g.flatten() for g in grads])
    return gradients


def gradient_table(gradients: dict[str, torch.Tensor]) -> str:
    """A markdown table: each type's gradient norm and its cosine with every type."""
    kinds = list(gradients)
    lines = ["| type | norm | " + " | ".join(f"cos {k}" for k in kinds) + " |"]
    lines.append("| --- | ---: | " + " | ".join("---:" for _ in kinds) + " |")
    for a in kinds:
        cosines = [
            torch.nn.functional.cosine_similarity(gradients[a].double(), gradients[b].double(), dim=0)
            for b in kinds
        ]
        cells = " | ".join(f"{c.item():+.3f}" for c in cosines)
        lines.append(f"| {a} | {gradients[a].norm().item():.3f} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="a synth_qa fine-tuning run's hf_model/")
    parser.add_argument(
        "--seed", type=int, default=0, help="the fine-tuning seed whose training scenes to use"
    )
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--questions", type=int, default=64, help="questions of each type")
    args = parser.parse_args(argv)
    from ernievil_ds.data import load_tokenizer

    model = ErnieVilForVisualQuestionAnswering.from_pretrained(args.model).eval()
    examples = split_examples("train", args.train_images, args.seed, load_tokenizer())
    print(gradient_table(type_gradients(model, examples, args.questions)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
