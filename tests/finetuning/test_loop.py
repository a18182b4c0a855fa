"""The accelerate fine-tuning loop on synth_qa with the tiny preset: a run, exact resume, the launcher
under ``accelerate launch`` with two CPU processes, and the questions themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ernievil_ds.configuration_ernievil import ErnieVilConfig
from ernievil_ds.data.synth import COLOURS, NOUNS, RELATIONS, SynthObject, spatial_relation
from ernievil_ds.errors import UserError
from ernievil_ds.finetuning import ErnieVilForVisualQuestionAnswering
from ernievil_ds.finetuning.loop import FinetuneSettings, FinetuningRun, finetune
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
from ernievil_ds.training.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]


def tiny_settings(output_dir: Path, **overrides) -> FinetuneSettings:
    values = {
        "task": "synth_qa",
        "output_dir": output_dir,
        "preset": "tiny",
        "steps": 6,
        "batch_size": 8,
        "gradient_accumulation_steps": 2,
        "learning_rate": 1e-3,
        "warmup_steps": 0,
        "log_every": 2,
        "train_images": 24,
        "eval_images": 8,
    }
    return FinetuneSettings(**{**values, **overrides})


def test_a_run_writes_metrics_checkpoints_and_a_loadable_model(tmp_path):
    result = finetune(tiny_settings(tmp_path, steps=12, log_every=4))
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [4, 8, 12]
    losses = [r["loss"] for r in records]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert read_metrics(tmp_path / "eval.jsonl")[-1] == {"step": 12, **result}
    assert set(result) == {"eval_accuracy", *(f"eval_accuracy_{kind}" for kind in QUESTION_TYPES)}
    assert (tmp_path / "checkpoints" / "step_00000012" / "trainer_state.json").is_file()
    assert (tmp_path / "hf_model" / "tokenizer_config.json").is_file()  # the inputs' tokenizer, beside it
    model = ErnieVilForVisualQuestionAnswering.from_pretrained(tmp_path / "hf_model")
    assert model.config.id2label == dict(enumerate(ANSWERS))


@pytest.mark.parametrize("first_steps", [2, 3])
def test_resume_continues_exactly(tmp_path, first_steps):
    """``first_steps``, then a resumed run to 6, end with the weights of 6 steps in one go. 24 scenes make
    6 batches of 8 an epoch, 3 steps of 2 micro-batches: resuming after 2 steps starts inside an epoch,
    after 3 at its end; dropout and the shuffling cross the checkpoint."""
    finetune(tiny_settings(tmp_path / "straight"))
    finetune(tiny_settings(tmp_path / "resumed", steps=first_steps))
    finetune(tiny_settings(tmp_path / "resumed", resume=True))
    straight = load_file(tmp_path / "straight" / "hf_model" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "hf_model" / "model.safetensors")
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)
    # The short run logged its last step; the resumed run logs on the schedule and, at step 6, the loss
    # of the same micro-batches as the uninterrupted run.
    records = read_metrics(tmp_path / "resumed" / "metrics.jsonl")
    assert [r["step"] for r in records] == sorted({2, first_steps, 4, 6})
    assert records[-1]["loss"] == read_metrics(tmp_path / "straight" / "metrics.jsonl")[-1]["loss"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"task": "vqa"}, "needs --data-dir"),
        ({"steps": 0}, "--steps must be at least 1"),
        ({"learning_rate": float("nan")}, "--learning-rate must be a positive number"),
        ({"train_images": 1, "batch_size": 8}, "examples make no batch of 8"),  # at most 4 questions a scene
        ({"preset": None}, "exactly one of --model"),
    ],
)
def test_bad_settings_are_user_errors(tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        finetune(tiny_settings(tmp_path, **overrides))


@pytest.mark.slow
def test_two_processes_under_accelerate_launch(tmp_path):
    command = [
        *(sys.executable, "-m", "accelerate.commands.launch"),
        *("--config_file", str(REPO / "accelerate_configs" / "cpu_2proc.yaml")),
        str(REPO / "launchers" / "finetune.py"),
        *("--task", "synth_qa", "--preset", "tiny", "--output-dir", str(tmp_path)),
        *(
            "--steps",
            "4",
            "--batch-size",
            "4",
            "--train-images",
            "16",
            "--eval-images",
            "4",
            "--log-every",
            "2",
        ),
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    settings = json.loads((tmp_path / "finetune_args.json").read_text())
    assert settings["accelerate"] == {"distributed_type": "MULTI_CPU", "num_processes": 2}
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [2, 4]
    assert done.stdout.count("eval_accuracy=") == 1  # printed by the main process only


def test_a_saved_model_trains_in_training_mode(tmp_path):
    """``from_pretrained`` returns a model in eval mode; the loop must switch dropout on for training."""
    labels = {"id2label": dict(enumerate(ANSWERS)), "label2id": {a: i for i, a in enumerate(ANSWERS)}}
    ErnieVilForVisualQuestionAnswering(ErnieVilConfig.from_preset("tiny", **labels)).save_pretrained(
        tmp_path / "saved"
    )
    run = FinetuningRun(tiny_settings(tmp_path / "run", model=tmp_path / "saved", preset=None, steps=2))
    modes = []
    run.accelerator.unwrap_model(run.model).classifier.register_forward_pre_hook(
        lambda module, args: modes.append(module.training)
    )
    try:
        run.train()
    finally:
        run.close()
    assert modes[: 2 * run.settings.gradient_accumulation_steps] == [True] * 4  # the training forwards
    assert modes[-1] is False  # the final evaluation


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
