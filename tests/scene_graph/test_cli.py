"""``SceneGraphParser`` streaming and bad input, and the two CLI subcommands end to end."""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys

import pytest

from ernievil_ds.cli import main
from ernievil_ds.scene_graph import SceneGraphParser, score_graphs
from ernievil_ds.scene_graph.parser import MAX_CAPTION_CHARS

EMPTY = {"objects": [], "attributes": [], "relations": []}
CAPTIONS = ["a man sitting on a bench", "two dogs on the grass", "the boat is white"]


def test_bad_values_get_empty_graphs(parser):
    assert parser.parse("") == {"caption": "", **EMPTY}
    assert parser.parse(17) == {"caption": "", **EMPTY}
    long = "a dog " * (MAX_CAPTION_CHARS // 6 + 1)
    assert parser.parse(long) == {"caption": long, **EMPTY}
    graphs = list(parser.parse_stream(["a dog", None, "   ", "a cat"]))
    assert [len(g["objects"]) for g in graphs] == [1, 0, 0, 1]


def test_settings_are_checked():
    with pytest.raises(ValueError, match="n_process must be >= 1, got 0"):
        SceneGraphParser(n_process=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got -4"):
        SceneGraphParser(batch_size=-4)


def test_missing_pipeline_names_the_install_command():
    with pytest.raises(OSError, match="python -m spacy download en_core_web_nonexistent"):
        SceneGraphParser("en_core_web_nonexistent")


def test_two_processes_give_the_same_graphs_in_order(parser, dev_set):
    captions = [example["caption"] for example in dev_set[:200]] + ["", "a cat"]
    two = SceneGraphParser(parser.spacy_model, n_process=2, batch_size=16)
    assert list(two.parse_stream(captions)) == list(parser.parse_stream(captions))
    # Streaming: an endless input is read only as far as the graphs taken (plus a few chunks).
    endless = itertools.cycle(captions)
    assert len(list(itertools.islice(two.parse_stream(endless), 50))) == 50
    assert len(list(itertools.islice(parser.parse_stream(endless), 50))) == 50


def test_parse_command_round_trip_in_a_subprocess(parser, tmp_path):
    source = tmp_path / "captions.txt"
    lines = [CAPTIONS[0], "", "x" * (MAX_CAPTION_CHARS + 1), CAPTIONS[1], CAPTIONS[2]]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "graphs.jsonl"
    command = [sys.executable, "-m", "ernievil_ds.cli", "parse-scene-graphs", "--input", str(source)]
    command += ["--output", str(output), "--batch-size", "2", "--spacy-model", parser.spacy_model]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    graphs = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [g["caption"] for g in graphs] == lines
    assert graphs == [parser.parse(line) for line in lines]
    assert set(graphs[0]) == {"caption", "objects", "attributes", "relations"}
    assert (
        "2 of 5 lines gave an empty graph: 1 empty (first at line 2), 1 too long (first at line 3)"
        in done.stderr
    )


def test_parse_command_reads_jsonl_and_counts_bad_lines(parser, tmp_path, caplog):
    source = tmp_path / "captions.jsonl"
    source.write_bytes(
        b'{"caption": "a man sitting on a bench"}\n'
        b'{"caption": 5}\n'
        b"not json\n"
        b'{"caption": "caf\xc3\xa9 table"}\n'
        b"\xff\xfe broken bytes\n"
        b'{"caption": "the boat is white"}\n'
    )
    output = tmp_path / "graphs.jsonl"
    with caplog.at_level(logging.WARNING):
        assert main(["parse-scene-graphs", "--input", str(source), "--output", str(output)]) == 0
    graphs = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [g["caption"] for g in graphs] == [CAPTIONS[0], "", "", "café table", "", CAPTIONS[2]]
    assert "3 of 6 lines gave an empty graph: 3 not text (first at line 2)" in caplog.text


def test_parse_command_fails_at_start_on_a_missing_pipeline(tmp_path, capsys):
    source = tmp_path / "captions.txt"
    source.write_text("a dog\n", encoding="utf-8")
    args = ["parse-scene-graphs", "--input", str(source), "--output", str(tmp_path / "out.jsonl")]
    assert main([*args, "--spacy-model", "en_core_web_nonexistent"]) == 2
    assert "Install it with: python -m spacy download en_core_web_nonexistent" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_eval_command_refuses_a_file_that_is_not_jsonl_naming_the_line(tmp_path, capsys):
    gold = tmp_path / "gold.txt"
    gold.write_text('{"caption": "a dog"}\na dog on a bench\n', encoding="utf-8")
    assert main(["eval-scene-graphs", "--gold", str(gold)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ernievil-ds: error: {gold} line 2 is not a JSON line") and err.count("\n") == 1


def test_eval_command_prints_the_library_scores(parser, dev_set, tmp_path, capsys):
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps(example) + "\n" for example in dev_set[:50]), encoding="utf-8")
    assert main(["eval-scene-graphs", "--gold", str(gold), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = score_graphs(parser.parse_stream(e["caption"] for e in dev_set[:50]), dev_set[:50]).to_dict()
    assert printed == expected
    assert main(["eval-scene-graphs", "--gold", str(gold)]) == 0
    table = capsys.readouterr().out
    assert "overall" in table and "precision" in table
