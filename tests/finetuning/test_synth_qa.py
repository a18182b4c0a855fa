"""The synth_qa questions: each asked from its scene (colour, relation, yes/no, count) and balanced."""

from __future__ import annotations

import numpy as np

from ernievil_ds.data.synth import COLOURS, NOUNS, RELATIONS, SynthObject, spatial_relation
from ernievil_ds.finetuning.synth_qa import (
    ANSWERS,
    COUNTS,
    QUESTION_TYPES,
    SynthQuestion,
    balanced_count_questions,
    colour_questions,
    count_questions,
    relation_questions,
    sample_examples,
    yes_no_questions,
)


def scene_object(noun: str, colour: str, box: tuple) -> SynthObject:
    return SynthObject(NOUNS.index(noun), COLOURS.index(colour), 0, 0, box)


def test_synth_questions_are_answered_from_the_scene():
    image = (600, 480)
    cube = scene_object("cube", "red", (100, 300, 200, 400))
    lamp = scene_object("lamp", "blue", (110, 150, 190, 298))  # just on top of the cube: touching
    ball = scene_object("ball", "green", (400, 310, 480, 390))  # beside the cube
    assert spatial_relation(lamp.box, cube.box, image) == "on"
    assert [(q.question, q.answer) for q in colour_questions([cube, lamp])] == [
        ("what colour is the cube?", "red"),
        ("what colour is the lamp?", "blue"),
    ]
    asked = {q.question: q.answer for q in relation_questions([cube, lamp, ball], image)}
    assert asked["what is on the cube?"] == "lamp"
    assert asked["what is under the lamp?"] == "cube"
    assert asked["what is beside the cube?"] == "ball"  # the lamp is on the cube, not beside it
    assert "what is beside the ball?" not in asked  # the cube and the lamp both are: no single answer


def test_yes_no_questions_ask_each_pair_once_true_and_once_false():
    image = (600, 480)
    cube = scene_object("cube", "red", (100, 300, 200, 400))
    lamp = scene_object("lamp", "blue", (110, 150, 190, 298))
    questions = yes_no_questions([cube, lamp], image, np.random.default_rng(0))
    assert [q.answer for q in questions] == ["yes", "no", "yes", "no"]
    assert questions[0].question == "is the cube under the lamp?"
    assert questions[2].question == "is the lamp on the cube?"
    for false, holds in ((questions[1], "under"), (questions[3], "on")):
        relation = false.question.split()[3]
        assert relation in RELATIONS and relation != holds


def test_count_questions_draw_one_colour_per_count():
    objects = [
        scene_object("cube", "red", (0, 0, 10, 10)),
        scene_object("ball", "red", (20, 0, 30, 10)),
        scene_object("cup", "blue", (40, 0, 50, 10)),
    ]
    questions = count_questions(objects, np.random.default_rng(0))
    assert [q.answer for q in questions] == ["0", "1", "2"]
    assert questions[1].question == "how many blue objects are there?"
    assert questions[2].question == "how many red objects are there?"
    absent = questions[0].question.split()[2]
    assert absent in COLOURS and absent not in ("red", "blue")


def test_count_questions_leave_out_counts_beyond_the_answers():
    objects = [scene_object(noun, "red", (10 * k, 0, 10 * k + 5, 10)) for k, noun in enumerate(NOUNS[:3])]
    assert [q.answer for q in count_questions(objects, np.random.default_rng(0))] == ["0"]


def test_balanced_count_questions_give_every_answer_equally_often():
    def offers(*answers):
        return [SynthQuestion(f"how many {answer}?", answer, "count") for answer in answers]

    # Only the first scene offers "2": each answer goes to one scene, and "2" to that one.
    candidates = [offers("0", "1", "2"), offers("0", "1"), offers("0", "1"), offers("0")]
    chosen = balanced_count_questions(candidates, np.random.default_rng(0))
    assert chosen[0].answer == "2"
    asked = [q for q in chosen if q is not None]
    assert sorted(q.answer for q in asked) == list(COUNTS)
    assert all(q is None or q in offered for q, offered in zip(chosen, candidates))
    # No scene offers "2": the other answers are still asked, equally often.
    chosen = balanced_count_questions(candidates[1:], np.random.default_rng(0))
    assert sorted(q.answer for q in chosen if q is not None) == ["0", "1"]
    # Two scenes that both offer "0" and "1": one of each, not both "0" and then no "1" left.
    chosen = balanced_count_questions([offers("0", "1"), offers("0", "1")], np.random.default_rng(0))
    assert sorted(q.answer for q in chosen) == ["0", "1"]


def test_synth_qa_count_answers_are_balanced():
    from ernievil_ds.data import load_tokenizer

    examples = sample_examples(60, 0, load_tokenizer())
    answers = [ANSWERS[int(e["labels"].argmax())] for e in examples if QUESTION_TYPES[e["kind"]] == "count"]
    assert sorted(set(answers)) == list(COUNTS)
    assert len(answers) == len(COUNTS) * answers.count("2") > 0


def test_train_question_types_keep_those_training_questions_and_every_evaluation_question(tmp_path):
    """The kept questions are the whole run's questions of those types, drawn from the same scenes."""
    from ernievil_ds.finetuning.arguments import FinetuneSettings
    from ernievil_ds.finetuning.tasks import build_task

    def split(**overrides):
        settings = FinetuneSettings(
            task="synth_qa", output_dir=tmp_path, preset="tiny", train_images=30, eval_images=10, **overrides
        )
        return build_task(settings).datasets()

    (all_train, all_eval), (train, evaluation) = split(), split(train_question_types=("count", "colour"))
    kept = [e for e in all_train if QUESTION_TYPES[e["kind"]] in ("count", "colour")]
    assert len(train) == len(kept) and len(train) < len(all_train)
    for example, expected in zip(train, kept):
        np.testing.assert_array_equal(example["input_ids"], expected["input_ids"])
        np.testing.assert_array_equal(example["labels"], expected["labels"])
    assert {QUESTION_TYPES[e["kind"]] for e in evaluation} == set(QUESTION_TYPES)
    assert len(evaluation) == len(all_eval)


def test_question_loss_weights_give_each_question_its_types_weight(tmp_path):
    """count=4, yes_no=0.5: each collated question's weight is its type's, 1 for the unnamed types."""
    from ernievil_ds.finetuning.arguments import FinetuneSettings
    from ernievil_ds.finetuning.tasks import build_task

    def task(**overrides):
        settings = FinetuneSettings(
            task="synth_qa", output_dir=tmp_path, preset="tiny", train_images=20, eval_images=4, **overrides
        )
        return build_task(settings)

    weighted = task(question_loss_weights={"count": 4.0, "yes_no": 0.5})
    train, _ = weighted.datasets()
    batch = weighted.collate(train)
    expected = [{"count": 4.0, "yes_no": 0.5}.get(QUESTION_TYPES[e["kind"]], 1.0) for e in train]
    assert batch["question_weights"].tolist() == expected
    assert {4.0, 0.5, 1.0} <= set(expected)
    assert "question_weights" not in task().collate(train)
