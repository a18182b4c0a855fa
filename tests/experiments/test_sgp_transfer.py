"""experiments/sgp_transfer.py: its table and acceptance checks against hand-computed values, and which
runs it reuses, resumes or starts, with the child process and the fine-tuning loop stood in for."""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import pytest

from ernievil_ds.finetuning.arguments import SYNTH_QA_RECIPE
from tests.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "sgp_transfer.py"


@pytest.fixture(scope="module")
def sgp_transfer():
    return load_script(SCRIPT, "sgp_transfer")


def row(arm: str, colour: float, relation: float, seed: int = 0) -> dict:
    return {
        "arm": arm,
        "finetune_seed": seed,
        "colour": colour,
        "relation": relation,
        "yes_no": 0.5,
        "count": 0.33,
        "all": 0.6,
    }


def test_summary_is_mean_sample_sd_min_max_n(sgp_transfer):
    summary = sgp_transfer.summarize([0.9, 0.8, 1.0])
    # sd: deviations 0, -0.1, 0.1; sqrt(0.02 / (3 - 1)) = 0.1
    assert (summary.mean, summary.sd) == (pytest.approx(0.9), pytest.approx(0.1))
    assert (summary.min, summary.max, summary.n) == (0.8, 1.0, 3)
    assert math.isnan(sgp_transfer.summarize([0.7]).sd)


def test_the_table_has_a_row_per_arm_and_question_type(sgp_transfer):
    rows = [row("sgp", 0.96, 0.9), row("sgp", 0.94, 0.8), row("sgp", 0.95, 1.0), row("minilm_only", 0.1, 0.2)]
    table = sgp_transfer.markdown_table(rows)
    assert "| sgp | relation | 0.900 | 0.100 | 0.800 | 1.000 | 3 |" in table
    assert "| sgp | colour | 0.950 | 0.010 | 0.940 | 0.960 | 3 |" in table
    assert "| minilm_only | relation | 0.200 | - | 0.200 | 0.200 | 1 |" in table
    assert len(table.splitlines()) == 2 + 2 * 5  # header, rule; two arms with runs x 4 types and all
    assert "no_sgp" not in table


def test_the_acceptance_checks_by_hand(sgp_transfer):
    rows = [
        row("sgp", 0.96, 0.90),  # both targets
        row("sgp", 0.95, 0.86),  # both, colour exactly on its target
        row("sgp", 0.90, 0.88),  # colour short
        row("no_sgp", 0.99, 0.70),
        row("no_sgp", 0.98, 0.72),
        row("no_sgp", 0.97, 0.74),
    ]
    checks = sgp_transfer.acceptance_checks(rows)
    assert [passed for passed, _ in checks] == [False, True, True, False]
    lines = [line for _, line in checks]
    assert lines[0] == (
        "SGP runs with colour >= 0.95 and relation >= 0.85: 2 of 3 (colour 2, relation 3; at least 8 of every 9 "
        "needed)"
    )
    assert lines[1] == "SGP mean relation 0.880 >= no-SGP mean 0.720 + 0.15"  # 0.88 >= 0.87
    assert lines[2] == "SGP min relation 0.860 > no-SGP max 0.740"
    assert lines[3] == "SGP mean colour 0.937 >= no-SGP mean 0.980 - 0.02"  # 0.9367 < 0.96

    rows[5] = row("no_sgp", 0.94, 0.86)  # no-SGP's best equals SGP's worst; colour mean 0.97
    checks = sgp_transfer.acceptance_checks(rows)
    assert [passed for passed, _ in checks] == [False, False, False, False]  # 0.88 < 0.76 + 0.15


@pytest.mark.parametrize(("meeting", "passed"), [(9, True), (8, True), (7, False)])
def test_eight_of_nine_sgp_runs_must_meet_both_targets(sgp_transfer, meeting, passed):
    rows = [row("sgp", 0.99, 0.90)] * meeting + [row("sgp", 0.99, 0.80)] * (9 - meeting)
    rows += [row("no_sgp", 0.99, 0.70)]
    assert sgp_transfer.acceptance_checks(rows)[0][0] is passed


def test_the_report_files(sgp_transfer, tmp_path):
    rows = [row("sgp", 0.96, 0.9, seed) for seed in range(2)] + [row("no_sgp", 0.96, 0.6)]
    text = sgp_transfer.write_report(tmp_path, rows, SYNTH_QA_RECIPE)
    assert (tmp_path / "summary.md").read_text() == text
    assert [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()] == rows
    assert (tmp_path / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert text.count("- PASS: ") == 4


def finish(run_dir: Path) -> None:
    """What a finished run leaves last: the model card in hf_model/."""
    (run_dir / "hf_model").mkdir(parents=True, exist_ok=True)
    (run_dir / "hf_model" / "README.md").write_text("card")


class Recorder:
    """A stand-in for the child process: records each command and leaves a finished run behind."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def __call__(self, command: list[str], log: Path) -> None:
        self.commands.append(command)
        run_dir = Path(command[command.index("--output-dir") + 1])
        assert not (run_dir / "metrics.jsonl").exists(), "a start must not append to an old run's metrics"
        finish(run_dir)


def test_a_finished_pretraining_is_reused_a_checkpointed_one_resumed_another_started(sgp_transfer, tmp_path):
    pretrain = tmp_path / "pretrain"
    finish(pretrain / "sgp-s0")
    marker = pretrain / "sgp-s1" / "checkpoints" / "step_00000700" / "COMPLETE"
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"step": 700, "world_size": 2, "sampler": {"epoch": 0, "position": 0}}))
    (pretrain / "no_sgp-s1").mkdir()
    (pretrain / "no_sgp-s1" / "metrics.jsonl").write_text('{"step": 10}\n')  # killed before a checkpoint
    run = Recorder()
    actions = {
        (arm, seed): sgp_transfer.ensure_pretrained(arm, seed, tmp_path, run)
        for arm, seed in [("sgp", 0), ("sgp", 1), ("no_sgp", 1)]
    }
    assert {key: action for key, (_, action) in actions.items()} == {
        ("sgp", 0): "reuse",
        ("sgp", 1): "resume",
        ("no_sgp", 1): "start",
    }
    assert actions["sgp", 0][0] == pretrain / "sgp-s0" / "hf_model"
    resumed, started = run.commands
    assert resumed[-1] == "--resume" and "--no-sgp" not in resumed
    assert started[-1] == "--no-sgp" and started[started.index("--seed") + 1] == "1"


def test_the_pretraining_command_is_the_readmes_main_job(sgp_transfer, tmp_path):
    readme = (REPO / "README.md").read_text()
    main_job = shlex.split(
        re.search(r"deepspeed --num_gpus 2 launchers/pretrain\.py [^\n]*", readme).group(0)
    )
    command = sgp_transfer.pretrain_command(tmp_path / "run", seed=3, sgp=True, resume=False)
    assert command[1:3] == ["-m", "deepspeed.launcher.runner"]  # the `deepspeed` command of this interpreter
    ours, theirs = command[3:], main_job[1:]
    output = theirs.index("--output-dir")
    assert ours[: output + 1] == theirs[: output + 1]
    assert ours[output + 2 :] == ["--seed", "3", "--deterministic"]


def test_a_finished_finetune_is_read_back_an_unfinished_one_run_afresh(sgp_transfer, tmp_path):
    recipe = sgp_transfer.finetune_recipe()
    folder = sgp_transfer.recipe_dir(tmp_path, recipe)
    job = sgp_transfer.FinetuneJob("question_only", 0, 2, tmp_path / "model")
    settings = sgp_transfer.job_settings(job, folder, recipe)
    assert settings.output_dir == folder / "question_only-p0-f2"
    assert (settings.zero_image_features, settings.seed, settings.steps) == (
        True,
        2,
        SYNTH_QA_RECIPE["steps"],
    )
    trained = []

    def train(given):
        trained.append(given)
        assert not (given.output_dir / "eval.jsonl").exists()
        return {"eval_accuracy": 0.5}

    settings.output_dir.mkdir()
    (settings.output_dir / "eval.jsonl").write_text('{"step": 300, "eval_accuracy": 0.1}\n')  # unfinished
    assert sgp_transfer.ensure_finetuned(settings, train) == ({"eval_accuracy": 0.5}, False)
    finish(settings.output_dir)
    (settings.output_dir / "eval.jsonl").write_text(
        '{"step": 300, "eval_accuracy": 0.1}\n{"step": 600, "eval_accuracy": 0.7}\n'
    )
    assert sgp_transfer.ensure_finetuned(settings, train) == ({"eval_accuracy": 0.7}, True)
    assert len(trained) == 1


def test_other_fine_tuning_settings_get_another_folder(sgp_transfer, tmp_path):
    default = sgp_transfer.recipe_dir(tmp_path, sgp_transfer.finetune_recipe())
    assert default == sgp_transfer.recipe_dir(tmp_path, dict(SYNTH_QA_RECIPE))
    shorter = sgp_transfer.recipe_dir(tmp_path, sgp_transfer.finetune_recipe(steps=50))
    assert shorter != default
    assert json.loads((shorter / "recipe.json").read_text()) == {**SYNTH_QA_RECIPE, "steps": 50}


def test_the_plan_has_k_by_m_runs_per_pretrained_arm_and_m_per_baseline(sgp_transfer, tmp_path):
    models = {(arm, p): tmp_path / f"{arm}{p}" for arm in ("sgp", "no_sgp") for p in (4, 5)}
    jobs = sgp_transfer.plan_finetunes(models, tmp_path / "minilm", [4, 5], [0, 1, 2])
    counts = {arm: sum(job.arm == arm for job in jobs) for arm in sgp_transfer.ARMS}
    assert counts == {"sgp": 6, "no_sgp": 6, "minilm_only": 3, "question_only": 3}
    assert {job.model for job in jobs if job.arm == "question_only"} == {tmp_path / "sgp4"}
    assert len({job.name for job in jobs}) == len(jobs)


@pytest.mark.slow
def test_the_command_runs_every_stage_then_reuses_everything(sgp_transfer, tmp_path, capsys):
    """``main`` with the child process and the loop stood in for (the MiniLM-only model is built for real):
    pretraining leaves a small preset's config, each fine-tune a finished folder with accuracies by arm."""
    from ernievil_ds import ErnieVilConfig

    def pretrain(command, log):
        run_dir = Path(command[command.index("--output-dir") + 1])
        finish(run_dir)
        ErnieVilConfig.from_preset("small").save_pretrained(run_dir / "hf_model")

    relation = {"sgp": 0.9, "no_sgp": 0.6, "minilm_only": 0.1, "question_only": 0.1}

    def train(settings):
        arm = settings.output_dir.name.split("-")[0]
        result = {"eval_accuracy": 0.5, "eval_accuracy_relation": relation[arm] + 0.01 * settings.seed}
        result |= {f"eval_accuracy_{kind}": 0.96 for kind in ("colour", "yes_no", "count")}
        (settings.output_dir / "eval.jsonl").parent.mkdir(parents=True)
        (settings.output_dir / "eval.jsonl").write_text(json.dumps({"step": settings.steps, **result}) + "\n")
        finish(settings.output_dir)
        return result

    argv = ["--pretrain-seeds", "3", "4", "--finetune-seeds", "0", "1", "--output-dir", str(tmp_path)]
    text = sgp_transfer.main(argv, run=pretrain, train=train)
    assert text.count("- PASS: ") == 4
    assert "| sgp | relation | 0.905 | 0.006 | 0.900 | 0.910 | 4 |" in text  # 0.90, 0.91 for each model
    rows = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 2 + 2 + 2
    printed = capsys.readouterr().out
    assert "[pretrain 3/4] sgp seed 4: start" in printed and "[pretrain 4/4] no_sgp seed 4: start" in printed
    assert "[finetune 5/12] minilm_only-f0" in printed and "[finetune 12/12] question_only-p3-f1" in printed
    assert re.search(r"Wall time: pretraining \d+ s, MiniLM-only model \d+ s, fine-tuning \d+ s", printed)

    def refuse(*args):
        raise AssertionError("a finished run was run again")

    assert sgp_transfer.main(argv, run=refuse, train=refuse) == text
