"""The accelerate fine-tuning loop on synth_qa with the tiny preset: a run and its run folder, exact
resume, and the fine-tuning command under ``accelerate launch`` with two CPU processes."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ernievil_ds.configuration_ernievil import ErnieVilConfig
from ernievil_ds.distributed import free_port
from ernievil_ds.errors import UserError
from ernievil_ds.finetuning import ErnieVilForVisualQuestionAnswering
from ernievil_ds.finetuning.arguments import FinetuneSettings
from ernievil_ds.finetuning.data import import_official_vqa
from ernievil_ds.finetuning.loop import FinetuningRun, finetune
from ernievil_ds.finetuning.synth_qa import ANSWERS, QUESTION_TYPES
from ernievil_ds.runs import FINETUNING, read_metrics, read_settings
from tests.finetuning.official_files import regions, vqa_row, write_lines

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
    complete = json.loads((tmp_path / "checkpoints" / "step_00000012" / "COMPLETE").read_text())
    assert complete["step"] == 12 and complete["world_size"] == 1  # the sampler's place: the resume tests
    settings = read_settings(tmp_path)
    assert settings.kind == FINETUNING and settings.world_size == 1
    assert settings.arguments["steps"] == 12 and settings.arguments["output_dir"] == str(tmp_path)
    assert settings.model_config["id2label"] == {str(i): a for i, a in enumerate(ANSWERS)}
    assert settings.versions["torch"] == torch.__version__
    assert (tmp_path / "hf_model" / "README.md").read_text().startswith("---\n")  # the model card
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
        ({"train_images": 1, "batch_size": 8}, "fewer than one batch of 8"),  # at most 4 questions a scene
        ({"preset": None}, "exactly one of --model"),
        ({"task": "vcr", "vqa_loss": "softmax"}, "--vqa-loss applies to the VQA tasks"),
        ({"task": "vcr", "train_question_types": ("count",)}, "--train-question-types applies to synth_qa"),
        ({"train_question_types": ("count", "colours")}, r"takes some of .* got \['colours'\]"),
        ({"task": "vcr", "question_loss_weights": {"count": 4.0}}, "--question-loss-weights applies to"),
        ({"question_loss_weights": {"counts": 4.0}}, r"takes some of .* got \[.counts.\]"),
        ({"question_loss_weights": {"count": 0}}, "the weight of count must be a positive number, got 0"),
        ({"question_loss_weights": {"count": "4"}}, "the weight of count must be a positive number, got '4'"),
    ],
)
def test_bad_settings_are_user_errors(tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        finetune(tiny_settings(tmp_path, **overrides))


def three_question_split(root: Path) -> Path:
    """An imported official-format VQA split of 3 questions (smaller than many a batch)."""
    questions = [("is it red?", 0), ("is it blue?", 1), ("is it green?", 0)]
    rows = [
        vqa_row(i, q, [label], [1.0], 64, 48, *regions(2, seed=i)) for i, (q, label) in enumerate(questions)
    ]
    write_lines(root / "vqa.tsv", rows)
    (root / "answers.pkl").write_bytes(pickle.dumps(["yes", "no"]))
    import_official_vqa([root / "vqa.tsv"], root / "split", answers=root / "answers.pkl")
    return root / "split"


def test_a_split_smaller_than_a_batch_trains_on_nothing_and_is_refused(tmp_path):
    split = three_question_split(tmp_path)
    settings = tiny_settings(tmp_path / "run", task="vqa", data_dir=split, eval_data_dir=split, batch_size=4)
    with pytest.raises(UserError, match="the training split has 3 examples, fewer than one batch of 4"):
        finetune(settings)


def test_an_evaluation_split_smaller_than_a_batch_is_evaluated_whole(tmp_path):
    """Evaluation keeps its last, short batch: 3 questions in batches of 2 are all scored."""
    split = three_question_split(tmp_path)
    settings = tiny_settings(
        tmp_path / "run", task="vqa", data_dir=split, eval_data_dir=split, batch_size=2, steps=2
    )
    run = FinetuningRun(settings)
    try:
        assert [len(batch["labels"]) for batch in run.eval_loader] == [2, 1]
        assert all(0.0 <= value <= 1.0 for value in run.train().values())
    finally:
        run.close()


def launch_two_processes(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    """``launchers/finetune.py`` under ``accelerate launch`` with two gloo processes on the CPU."""
    command = [
        *(sys.executable, "-m", "accelerate.commands.launch"),
        *("--config_file", str(REPO / "accelerate_configs" / "cpu_2proc.yaml")),
        *("--main_process_port", str(free_port())),
        str(REPO / "launchers" / "finetune.py"),
        *flags,
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_a_small_split_on_two_processes(tmp_path):
    """3 questions on 2 processes: micro-batches of 2 (4 over both) are refused in one line naming both
    sizes; a global batch of 4 in micro-batches of 1 (2 accumulated on each process) trains and evaluates."""
    split = three_question_split(tmp_path)
    common = ("--task", "vqa", "--preset", "tiny", "--data-dir", str(split), "--eval-data-dir", str(split))
    refused = launch_two_processes(
        tmp_path, *common, "--output-dir", str(tmp_path / "a"), "--batch-size", "2"
    )
    assert refused.returncode != 0
    expected = "the training split has 3 examples, fewer than one batch of 4 (2 on each of 2 processes)"
    assert expected in refused.stderr
    assert 'finetune.py", line' not in refused.stderr  # no traceback through the launcher
    flags = ("--global-batch-size", "4", "--batch-size", "1", "--steps", "2")
    done = launch_two_processes(tmp_path, *common, "--output-dir", str(tmp_path / "b"), *flags)
    assert done.returncode == 0, done.stderr[-3000:]
    arguments = read_settings(tmp_path / "b").arguments
    resolved = (
        arguments["global_batch_size"],
        arguments["batch_size"],
        arguments["gradient_accumulation_steps"],
    )
    assert resolved == (4, 1, 2)
    assert [line.startswith("eval_") for line in done.stdout.splitlines()].count(
        True
    ) == 1  # the main process


@pytest.mark.slow
def test_two_processes_under_accelerate_launch(tmp_path):
    done = launch_two_processes(
        tmp_path,
        *("--task", "synth_qa", "--preset", "tiny", "--output-dir", str(tmp_path)),
        *("--steps", "4", "--batch-size", "4", "--train-images", "16", "--eval-images", "4"),
        *("--log-every", "2"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_settings(tmp_path).world_size == 2
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


def test_vqa_loss_sets_the_problem_type_and_a_saved_model_keeps_its_own_without_it(tmp_path):
    """``--vqa-loss`` writes the loss into the model's config (``problem_type``, saved with it); without the
    flag a saved model trains on with the loss its config names."""
    labels = {"id2label": dict(enumerate(ANSWERS)), "label2id": {a: i for i, a in enumerate(ANSWERS)}}
    config = ErnieVilConfig.from_preset("tiny", problem_type="single_label_classification", **labels)
    ErnieVilForVisualQuestionAnswering(config).save_pretrained(tmp_path / "saved")
    problem_types = []
    for vqa_loss in (None, "sigmoid"):
        run = FinetuningRun(
            tiny_settings(tmp_path / str(vqa_loss), model=tmp_path / "saved", preset=None, vqa_loss=vqa_loss)
        )
        problem_types.append(run.accelerator.unwrap_model(run.model).config.problem_type)
        run.close()
    assert problem_types == ["single_label_classification", "multi_label_classification"]
