"""The one error path of every command: a user error is one line on stderr and exit status 2, a bug keeps
its traceback, and --debug / ERNIEVIL_DS_DEBUG show the traceback of user errors too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub.errors import StrictDataclassClassValidationError

from ernievil_ds import ErnieVilConfig
from ernievil_ds.cli import main as ernievil_ds
from ernievil_ds.errors import UserError, run_command

REPO = Path(__file__).resolve().parents[1]


def _raising(error: BaseException):
    def main(argv):
        raise error

    return main


def _invalid_config_error() -> StrictDataclassClassValidationError:
    try:
        ErnieVilConfig(hidden_size=100, num_attention_heads=12)
    except StrictDataclassClassValidationError as error:
        return error
    raise AssertionError("the config was accepted")


@pytest.mark.parametrize(
    "error",
    [
        UserError("data.json is empty"),
        FileNotFoundError("caption file a.tsv does not exist"),
        NotADirectoryError(20, "Not a directory", "out/pairs"),
        json.JSONDecodeError("Expecting value", "{", 1),
        _invalid_config_error(),
    ],
    ids=type,
)
def test_a_user_error_is_one_line_and_status_2(error, capsys):
    assert run_command(_raising(error), [], prog="tool") == 2
    err = capsys.readouterr().err
    assert err.startswith("tool: error: ") and err.count("\n") == 1 and "Traceback" not in err
    if isinstance(error, NotADirectoryError):
        assert "out/pairs" in err  # the file an OSError names is in the line


def test_a_bug_keeps_its_traceback(capsys):
    with pytest.raises(KeyError):
        run_command(_raising(KeyError("num_boxes")), [], prog="tool")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_shows_the_traceback_of_a_user_error(how, monkeypatch):
    seen = []

    def main(argv):
        seen.append(argv)
        raise UserError("bad input")

    argv = ["--x", "1"]
    if how == "flag":
        argv.append("--debug")
    else:
        monkeypatch.setenv("ERNIEVIL_DS_DEBUG", "1")
    with pytest.raises(UserError, match="bad input"):
        run_command(main, argv)
    assert seen == [["--x", "1"]]  # the command never sees --debug


def test_only_rank_0_prints_but_every_rank_stops(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    assert run_command(_raising(UserError("bad input")), [], prog="tool") == 2
    assert capsys.readouterr().err == ""


def test_eval_cloze_on_a_missing_model_folder_says_it_does_not_exist(tmp_path, capsys):
    assert ernievil_ds(["eval-cloze", "--model", "/nonexistent", "--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "ernievil-ds: error: model folder /nonexistent does not exist\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plot", "/nonexistent"], "run directory /nonexistent does not exist"),
        (["export", "--checkpoint", "/nonexistent"], "checkpoint /nonexistent does not exist"),
        (["eval-cloze", "--every-checkpoint", "/nonexistent"], "run directory /nonexistent does not exist"),
        (
            ["eval-scene-graphs", "--gold", "/nonexistent.jsonl"],
            "gold file /nonexistent.jsonl does not exist",
        ),
    ],
)
def test_subcommands_on_missing_paths(argv, message, capsys):
    assert ernievil_ds(argv) == 2
    assert capsys.readouterr().err == f"ernievil-ds: error: {message}\n"


def test_convert_paddle_into_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "model").write_text("a file where the model folder should go")
    argv = ["convert-paddle", "--params", str(tmp_path), "--config", "c.json", "--vocab", "vocab.txt"]
    assert ernievil_ds([*argv, "--output", str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"ernievil-ds: error: output {tmp_path / 'model'} is a file, not a folder: choose another path\n"
    )


def test_plot_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert ernievil_ds(["plot", str(tmp_path)]) == 2
    assert "has no metrics.jsonl: is it a pretraining run?" in capsys.readouterr().err


@pytest.mark.slow
def test_prepare_data_on_bad_input_in_a_subprocess(tmp_path):
    (tmp_path / "out").write_text("a file where the data directory should be")
    (tmp_path / "cc.tsv").write_text("a dog\thttp://a/0.jpg\n")
    command = [sys.executable, str(REPO / "launchers" / "prepare_data.py"), "captions", "--format", "cc"]
    command += ["--input", str(tmp_path / "cc.tsv"), "--output", str(tmp_path / "out"), "--split", "train"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.endswith(
        f"prepare_data.py: error: output {tmp_path / 'out'} is a file, not a folder: choose another path\n"
    )
    assert "Traceback" not in result.stderr
    debug = subprocess.run([*command, "--debug"], capture_output=True, text=True, cwd=REPO)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "UserError" in debug.stderr
