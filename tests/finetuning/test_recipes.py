"""``--recipe``: a recipe's settings replace the dataclass defaults, a flag given replaces the recipe's, and
the synth_qa demo command of the docs trains with ``SYNTH_QA_RECIPE``."""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict
from pathlib import Path

import pytest

from ernievil_ds.finetuning.arguments import SYNTH_QA_RECIPE, FinetuneSettings, parse_finetune_arguments

DOCS = Path(__file__).resolve().parents[2] / "docs" / "finetuning.md"


def parse(tmp_path, *flags: str) -> FinetuneSettings:
    return parse_finetune_arguments(["--task", "synth_qa", "--output-dir", str(tmp_path), *flags])


def test_the_synth_qa_recipe_replaces_the_defaults_and_a_flag_given_replaces_the_recipe(tmp_path):
    plain = parse(tmp_path)
    assert (plain.steps, plain.warmup_steps, plain.head_lr_scale) == (300, 30, 1.0)  # the dataclass's
    recipe = parse(tmp_path, "--recipe", "synth_qa")
    assert (recipe.steps, recipe.batch_size, recipe.learning_rate) == (900, 32, 1e-4)
    assert (recipe.warmup_steps, recipe.head_lr_scale, recipe.vqa_loss) == (20, 30.0, "softmax")
    assert plain.vqa_loss is None  # the model's loss, else the paper's sigmoids
    both = parse(tmp_path, "--steps", "50", "--recipe", "synth_qa", "--head-lr-scale", "2")
    assert (both.steps, both.head_lr_scale, both.warmup_steps) == (50, 2.0, 20)


def test_train_question_types_are_comma_separated(tmp_path):
    assert parse(tmp_path).train_question_types is None
    assert parse(tmp_path, "--train-question-types", "count, colour").train_question_types == (
        "count",
        "colour",
    )


def test_question_loss_weights_are_a_json_object(tmp_path, capsys):
    assert parse(tmp_path).question_loss_weights is None
    weights = parse(tmp_path, "--question-loss-weights", '{"count": 4, "yes_no": 0.5}').question_loss_weights
    assert weights == {"count": 4, "yes_no": 0.5}
    for bad in ("count=4", "[4]", "{count: 4}"):
        with pytest.raises(SystemExit):
            parse(tmp_path, "--question-loss-weights", bad)
        assert "expected a JSON object of weights by name" in capsys.readouterr().err


def test_an_unknown_recipe_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse(tmp_path, "--recipe", "vqa_demo")
    assert "invalid choice: 'vqa_demo'" in capsys.readouterr().err


def test_the_docs_demo_command_is_the_recipe_with_nothing_added(tmp_path):
    """The command in docs/finetuning.md trains what ``FinetuneSettings`` built in code from the recipe does."""
    line = re.search(
        r"^python launchers/finetune\.py --task synth_qa --recipe synth_qa .*$", DOCS.read_text(), re.M
    )
    assert line is not None, "docs/finetuning.md shows no `--task synth_qa --recipe synth_qa` demo command"
    argv = shlex.split(line.group(0))[2:]
    argv[argv.index("--output-dir") + 1] = str(tmp_path)
    in_code = FinetuneSettings(
        task="synth_qa", output_dir=tmp_path, model=Path("runs/demo/hf_model"), **SYNTH_QA_RECIPE
    )
    assert asdict(parse_finetune_arguments(argv)) == asdict(in_code)
