"""The pretraining job's argument errors, checked before any DeepSpeed engine is built."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import deepspeed
import pytest
from huggingface_hub.errors import StrictDataclassClassValidationError

from ernievil_ds import ErnieVilConfig
from ernievil_ds.data.prepare import import_captions
from ernievil_ds.errors import UserError
from ernievil_ds.pretraining.arguments import add_pretrain_arguments, parse_pretrain_arguments
from ernievil_ds.pretraining.pretrain import PretrainingRun, build_config
from ernievil_ds.runs import PRETRAINING, read_settings
from tests.data.word_parser import WordParser

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "ds_configs"
RECIPES = REPO / "launchers" / "recipes"


def parse(*argv: str) -> argparse.Namespace:
    return add_pretrain_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def cpu_run(output_dir: Path, *extra: str) -> argparse.Namespace:
    """Arguments of a 2-step run with the CPU config, plus ``extra``."""
    return parse(
        "--deepspeed",
        str(CONFIGS / "cpu_fp32.json"),
        "--output-dir",
        str(output_dir),
        "--max-steps",
        "2",
        *extra,
    )


def test_batch_sizes_that_do_not_fit_the_world_size(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    args = parse(
        "--deepspeed", str(CONFIGS / "v100_8.json"), "--output-dir", str(tmp_path), "--max-steps", "2"
    )
    with pytest.raises(
        ValueError, match=r"do not fit this world of 3 processes.*= 192, but train_batch_size=512"
    ):
        PretrainingRun.prepare(args)


def test_unknown_preset(tmp_path):
    args = cpu_run(tmp_path, "--preset", "xl")
    with pytest.raises(ValueError, match=r"Unknown ERNIE-ViL preset 'xl'"):
        PretrainingRun.prepare(args)


def test_missing_data_directory(tmp_path):
    missing = tmp_path / "no_such_data"
    args = cpu_run(tmp_path, "--preset", "tiny", "--data-dir", str(missing))
    with pytest.raises(FileNotFoundError, match=r"--data-dir .*no_such_data does not exist"):
        PretrainingRun.prepare(args)


def test_an_empty_or_partial_data_directory_names_what_is_missing(tmp_path, marked_data_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        UserError, match=r"not ready for pretraining: pairs/train is missing; pairs/eval is missing"
    ):
        PretrainingRun.prepare(cpu_run(tmp_path, "--preset", "tiny", "--data-dir", str(empty)))
    (marked_data_dir / "images" / "manifest.json").unlink()  # an interrupted feature import
    with pytest.raises(UserError, match=r"pretraining: images is unfinished \(no manifest.json\)\. Import"):
        PretrainingRun.prepare(cpu_run(tmp_path, "--preset", "tiny", "--data-dir", str(marked_data_dir)))


def test_an_evaluation_split_without_images_stops_the_run_at_its_start(tmp_path, small_data_dir):
    data = shutil.copytree(small_data_dir, tmp_path / "data")
    shutil.rmtree(data / "pairs" / "eval")
    (tmp_path / "eval.jsonl").write_text(
        json.dumps({"image_id": "not-an-image", "caption": "a red cube"}) + "\n"
    )
    import_captions("jsonl", [tmp_path / "eval.jsonl"], data, split="eval", parser_factory=WordParser)
    with pytest.raises(
        UserError,
        match=r"none of the 1 pairs of .*pairs/eval has its image in .*data/images \(first image ids: not-an-image\)",
    ):
        PretrainingRun.prepare(cpu_run(tmp_path / "run", "--preset", "tiny", "--data-dir", str(data)))


def test_resume_without_a_complete_checkpoint_is_refused(tmp_path):
    (tmp_path / "checkpoints" / "step_00000002").mkdir(parents=True)  # a save killed before COMPLETE
    with pytest.raises(UserError, match=r"--resume: .*checkpoints holds no complete checkpoint"):
        PretrainingRun.prepare(cpu_run(tmp_path, "--preset", "tiny", "--resume"))


@pytest.mark.parametrize(
    ("block", "key", "value", "message"),
    [
        (None, "zero_optimisation", {"stage": 2}, "'zero_optimisation': did you mean 'zero_optimization'"),
        (
            "zero_optimization",
            "reduce_bucket_sise",
            10,
            "'zero_optimization.reduce_bucket_sise': did you mean 'reduce_bucket_size'",
        ),
        (
            "zero_optimization",
            "offload_optimizer",
            {"devise": "cpu"},
            "'zero_optimization.offload_optimizer.devise': did you mean 'device'",
        ),
        ("optimizer", "parms", {}, "'optimizer.parms': did you mean 'params'"),
        (
            "activation_checkpointing",
            "partition_activation",
            True,
            "'activation_checkpointing.partition_activation': did you mean 'partition_activations'",
        ),
    ],
)
def test_a_misspelled_deepspeed_key_is_refused_with_the_closest_name(tmp_path, block, key, value, message):
    config = json.loads((CONFIGS / "cpu_fp32.json").read_text())
    (config.setdefault(block, {}) if block else config)[key] = value
    (tmp_path / "ds.json").write_text(json.dumps(config))
    args = parse("--deepspeed", str(tmp_path / "ds.json"), "--output-dir", str(tmp_path), "--max-steps", "2")
    with pytest.raises(UserError, match=rf"ds.json: unknown key {re.escape(message)}\?"):
        PretrainingRun.prepare(args)


def test_missing_model_config_and_bad_max_steps(tmp_path):
    common = ("--deepspeed", str(CONFIGS / "cpu_fp32.json"), "--output-dir", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="--model-config"):
        PretrainingRun.prepare(parse(*common, "--max-steps", "2", "--model-config", str(tmp_path / "c.json")))
    with pytest.raises(ValueError, match="--max-steps must be at least 1"):
        PretrainingRun.prepare(parse(*common, "--max-steps", "0"))


def test_itm_negative_prob_outside_zero_one(tmp_path):
    args = cpu_run(tmp_path, "--itm-negative-prob", "1.5")
    with pytest.raises(ValueError, match=r"itm_negative_prob must be a probability in \[0, 1\], got 1.5"):
        PretrainingRun.prepare(args)


def test_node_mask_prob_by_type(tmp_path, capsys):
    assert cpu_run(tmp_path, "--node-mask-prob", '{"relation": 0.6}').node_mask_prob == {"relation": 0.6}
    assert cpu_run(tmp_path, "--node-mask-prob", "0.4").node_mask_prob == 0.4
    for bad, message in (
        ('{"relations": 0.6}', r"unknown node types \['relations'\]"),
        ("[0.3]", "expected a number or a JSON object"),
        ('{"relation": 2}', r"must be a probability in \[0, 1\], got 2"),
    ):
        with pytest.raises(SystemExit):
            cpu_run(tmp_path, "--node-mask-prob", bad)
        assert re.search(message, capsys.readouterr().err), bad


def test_grounding_needs_the_detectors_class_names(tmp_path, marked_data_dir):
    args = cpu_run(tmp_path, "--preset", "tiny-grounded", "--data-dir", str(marked_data_dir))
    with pytest.raises(
        ValueError, match=r"grounding loss .* needs the detector's class names, and .*data has none"
    ):
        PretrainingRun.prepare(args)


def test_a_recipe_sets_flags_and_the_command_line_overrides_them(tmp_path):
    common = ["--deepspeed", str(CONFIGS / "cpu_fp32.json"), "--output-dir", str(tmp_path)]
    args = parse_pretrain_arguments([*common, "--recipe", "demo_cpu"], recipes_dir=RECIPES)
    recipe = json.loads((RECIPES / "demo_cpu.json").read_text())
    assert (args.preset, args.init_text_from, args.max_steps, args.eval_every) == (
        "small",
        "minilm",
        700,
        350,
    )
    assert args.freeze_word_embeddings and args.group_by_length and args.sgp
    assert args.node_mask_prob == recipe["node-mask-prob"] and args.loss_weights == recipe["loss-weights"]
    assert args.itm_negative_prob == 0.2

    overridden = parse_pretrain_arguments(
        [*common, "--recipe", "demo_cpu", "--no-sgp", "--max-steps", "5", "--no-freeze-word-embeddings"],
        recipes_dir=RECIPES,
    )
    assert (overridden.sgp, overridden.max_steps, overridden.freeze_word_embeddings) == (False, 5, False)
    assert overridden.preset == "small"  # the rest of the recipe stays

    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"preset": "tiny", "max-steps": 3, "group-by-length": True}))
    from_path = parse_pretrain_arguments([*common, "--recipe", str(path)], recipes_dir=RECIPES)
    assert (from_path.preset, from_path.max_steps, from_path.group_by_length) == ("tiny", 3, True)


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ({"presett": "tiny"}, "names 'presett', which is not a pretraining flag"),
        ({"resume": False}, "'resume' is a flag that cannot be turned off"),
        ({"node-mask-prob": {"relations": 1.0}}, r"unknown node types \['relations'\]"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_a_bad_recipe_is_refused_with_its_file_and_key(tmp_path, recipe, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(recipe))
    argv = ["--deepspeed", "x.json", "--output-dir", str(tmp_path), "--max-steps", "1", "--recipe", str(path)]
    with pytest.raises(UserError, match=message):
        parse_pretrain_arguments(argv)


def test_an_unknown_recipe_name_lists_the_known_ones(tmp_path):
    argv = ["--deepspeed", "x.json", "--output-dir", str(tmp_path), "--recipe", "demo_gpu"]
    with pytest.raises(UserError, match=r"No recipe 'demo_gpu'.*'demo_cpu'"):
        parse_pretrain_arguments(argv, recipes_dir=RECIPES)


def test_a_bad_flag_is_a_user_error_for_the_commands_error_path(tmp_path):
    with pytest.raises(UserError, match="the following arguments are required: --max-steps"):
        parse_pretrain_arguments(["--deepspeed", "x.json", "--output-dir", str(tmp_path)])


def test_model_config_and_loss_weights_merge_and_validate_as_a_preset_does(tmp_path):
    """--loss-weights over a --model-config: merged over the file's weights and the defaults, and checked."""
    path = tmp_path / "config.json"
    ErnieVilConfig.from_preset("small", task_loss_weights={"itm": 0.5}).save_pretrained(tmp_path)
    args = cpu_run(tmp_path, "--model-config", str(path), "--loss-weights", '{"sgp_relation": 2.0}')
    config = build_config(args)
    assert type(config).__name__ == "ErnieVilGroundedConfig" and config.hidden_size == 384
    assert config.task_loss_weights == {
        "mlm": 1.0,
        "sgp_object": 1.0,
        "sgp_attribute": 1.0,
        "sgp_relation": 2.0,
        "mrc": 1.0,
        "itm": 0.5,
        "grounding": 1.0,
    }
    preset = build_config(cpu_run(tmp_path, "--preset", "small", "--loss-weights", '{"sgp_relation": 2.0}'))
    assert preset.task_loss_weights == {**config.task_loss_weights, "itm": 1.0}
    with pytest.raises(StrictDataclassClassValidationError, match=r"unknown tasks \['relation'\]"):
        build_config(cpu_run(tmp_path, "--model-config", str(path), "--loss-weights", '{"relation": 2.0}'))


def test_the_resolved_settings_are_written_beside_the_run(tmp_path, small_data_dir):
    args = cpu_run(tmp_path / "run", "--preset", "tiny", "--no-sgp", "--data-dir", str(small_data_dir))
    PretrainingRun.prepare(args)
    written = read_settings(tmp_path / "run")
    assert written.kind == PRETRAINING and written.world_size == 1
    assert written.arguments["sgp"] is False and written.arguments["preset"] == "tiny"
    assert written.arguments["data_dir"] == str(small_data_dir)
    assert written.model_config["model_type"] == "ernievil"
    assert written.versions["deepspeed"] == deepspeed.__version__ and written.command == sys.orig_argv


def test_pad_to_multiple_of_reaches_the_training_and_evaluation_batches(tmp_path, small_data_dir, capsys):
    assert cpu_run(tmp_path).pad_to_multiple_of == 1
    for bad in ("0", "-8", "eight"):
        with pytest.raises(SystemExit):
            cpu_run(tmp_path, "--pad-to-multiple-of", bad)
        assert f"expected an integer >= 1, got '{bad}'" in capsys.readouterr().err
    args = cpu_run(
        tmp_path / "run", "--preset", "tiny", "--data-dir", str(small_data_dir), "--pad-to-multiple-of", "16"
    )
    run = PretrainingRun.prepare(args)
    for batch in (next(iter(run.train_loader[0])), next(iter(run.eval_loader))):
        assert batch["input_ids"].shape[1] % 16 == 0 and batch["region_mask"].shape[1] % 16 == 0


def test_pad_to_multiple_of_past_the_position_embeddings_is_refused(tmp_path, small_data_dir):
    args = cpu_run(
        tmp_path, "--preset", "tiny", "--data-dir", str(small_data_dir), "--pad-to-multiple-of", "96"
    )
    with pytest.raises(UserError, match="pads captions of up to 40 tokens to 96, more than the model's 64"):
        PretrainingRun.prepare(args)
