"""experiments/type_gradients.py: each question type's encoder gradient against the mean of its questions'
gradients taken one question at a time (no padding) in float64, and the table it prints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ernievil_ds.finetuning.modeling import ErnieVilForVisualQuestionAnswering
from ernievil_ds.finetuning.synth_qa import ANSWERS, QUESTION_TYPES, collate_questions, sample_examples
from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "type_gradients.py"


@pytest.fixture(scope="module")
def type_gradients():
    return load_script(SCRIPT, "type_gradients")


def test_each_types_gradient_is_the_mean_of_its_questions_gradients(type_gradients, tiny_config):
    from ernievil_ds.data import load_tokenizer

    tiny_config.id2label = dict(enumerate(ANSWERS))
    tiny_config.problem_type = "single_label_classification"
    torch.manual_seed(0)
    model = ErnieVilForVisualQuestionAnswering(tiny_config).double().eval()
    examples = sample_examples(12, 0, load_tokenizer())
    gradients = type_gradients.type_gradients(model, examples, questions=3)
    assert list(gradients) == list(QUESTION_TYPES)
    encoder = [p for name, p in model.named_parameters() if name.startswith("ernievil.")]
    for index, kind in enumerate(QUESTION_TYPES):
        of_kind = [e for e in examples if e["kind"] == index][:3]
        expected = torch.zeros_like(gradients[kind])
        for example in of_kind:  # one question, so no padding
            batch = collate_questions([example])
            batch.pop("meta_kinds")
            model.zero_grad()
            model(**{k: v.double() if v.is_floating_point() else v for k, v in batch.items()}).loss.backward()
            expected += torch.cat(
                [torch.zeros(p.numel()) if p.grad is None else p.grad.flatten() for p in encoder]
            )
        torch.testing.assert_close(gradients[kind], expected / len(of_kind))
    table = type_gradients.gradient_table(gradients)
    assert table.splitlines()[2].startswith(f"| colour | {gradients['colour'].norm().item():.3f} | +1.000 |")
