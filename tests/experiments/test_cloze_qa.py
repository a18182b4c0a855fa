"""experiments/cloze_qa.py: the cloze texts of hand-written questions, the yes/no decision, and the batched
scores against the same model run on each cloze alone (no padding), scoring every position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ernievil_ds.data import load_tokenizer
from ernievil_ds.finetuning.synth_qa import QUESTION_TYPES, collate_questions, sample_examples
from ernievil_ds.modeling_ernievil import ErnieVilForPreTraining
from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "cloze_qa.py"


@pytest.fixture(scope="module")
def cloze_qa():
    return load_script(SCRIPT, "cloze_qa")


@pytest.mark.parametrize(
    ("question", "kind", "cloze"),
    [
        ("what colour is the cube?", "colour", "the cube is [MASK]."),
        ("what is on the vase?", "relation", "a [MASK] is on a vase."),
        ("is the lamp beside the cup?", "yes_no", "a lamp is [MASK] a cup."),
    ],
)
def test_cloze_text_puts_the_mask_where_the_answer_goes(cloze_qa, question, kind, cloze):
    assert cloze_qa.cloze_text(question, kind) == cloze


def test_a_question_of_another_type_is_refused_by_name(cloze_qa):
    with pytest.raises(ValueError, match="not a synth_qa colour question: 'how many red objects"):
        cloze_qa.cloze_text("how many red objects are there?", "colour")


def test_yes_no_is_yes_only_when_the_cloze_gives_the_stated_relation(cloze_qa):
    question = "is the lamp under the cup?"
    assert cloze_qa.answer_from_word(question, "yes_no", "under") == "yes"
    assert cloze_qa.answer_from_word(question, "yes_no", "on") == "no"
    assert cloze_qa.answer_from_word("what colour is the cube?", "colour", "red") == "red"


def test_batched_scores_equal_each_cloze_scored_alone(cloze_qa, tiny_config):
    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    model = ErnieVilForPreTraining(tiny_config).eval()
    examples = sample_examples(8, 0, tokenizer)
    for kind in cloze_qa.CLOZES:
        of_kind = [e for e in examples if QUESTION_TYPES[e["kind"]] == kind]
        word_ids = tokenizer.convert_tokens_to_ids(list(cloze_qa.CLOZES[kind][2]))
        expected = []
        for example in of_kind:
            question = tokenizer.decode(example["input_ids"], skip_special_tokens=True)
            ids = tokenizer(cloze_qa.cloze_text(question, kind))["input_ids"]
            batch = collate_questions([dict(example, input_ids=np.array(ids))])
            del batch["labels"], batch["meta_kinds"]
            mask = ids.index(tokenizer.mask_token_id)
            labels = torch.full((1, len(ids)), -100)
            labels[0, mask] = 0
            with torch.no_grad():  # no scored positions given: the head scores every position
                logits = model(**batch, labels=labels).masked_token_logits.view(len(ids), -1)
            expected.append(logits[mask, word_ids])
        assert len(of_kind) > 2
        torch.testing.assert_close(
            cloze_qa.cloze_scores(model, tokenizer, of_kind, kind), torch.stack(expected)
        )
