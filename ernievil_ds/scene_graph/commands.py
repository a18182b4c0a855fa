"""Subcommands ``parse-scene-graphs`` and ``eval-scene-graphs``."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ernievil_ds.distributed import get_logger
from ernievil_ds.errors import UserError

logger = get_logger(__name__)

#: Input files read as JSON lines (a ``caption`` field per line) whatever their first line looks like.
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")


def register(subparsers: argparse._SubParsersAction) -> None:
    parse = subparsers.add_parser(
        "parse-scene-graphs",
        help="parse captions (one per line, or JSONL with a caption field) into scene graphs (JSONL)",
    )
    parse.add_argument("--input", required=True, type=Path, help="text file, one caption per line, or JSONL")
    parse.add_argument("--output", required=True, type=Path, help="JSONL file, one graph per input line")
    _add_pipeline_arguments(parse)
    parse.set_defaults(func=run_parse)

    evaluate = subparsers.add_parser(
        "eval-scene-graphs", help="precision / recall / F1 of the parser against gold scene graphs"
    )
    evaluate.add_argument(
        "--gold", required=True, type=Path, help="JSONL gold graphs (scene_graphs_dev.jsonl format)"
    )
    evaluate.add_argument("--json", action="store_true", help="print the scores as one JSON object instead")
    _add_pipeline_arguments(evaluate)
    evaluate.set_defaults(func=run_eval)


def _add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spacy-model", default=None, help="spaCy pipeline name or path (default: small English)"
    )
    parser.add_argument("--num-proc", type=int, default=1, help="worker processes (default: 1)")
    parser.add_argument("--batch-size", type=int, default=256, help="captions per batch (default: 256)")


def read_captions(path: Path) -> Iterator[object]:
    """One value per line of ``path``: the line's text, or its ``caption`` field in JSONL.

    Lines that are not UTF-8, not JSON objects in a JSONL file, or have no ``caption`` come back
    as None (the parser gives them an empty graph). The file is read lazily.
    """
    jsonl = path.suffix.lower() in JSONL_SUFFIXES or _first_line_is_json_object(path)
    with path.open("rb") as f:
        for raw in f:
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                yield None
                continue
            yield _caption_field(line) if jsonl else line


def _first_line_is_json_object(path: Path) -> bool:
    with path.open("rb") as f:
        first = next((line for line in f if line.strip()), b"")
    try:
        return isinstance(json.loads(first), dict)
    except ValueError:
        return False


def _caption_field(line: str) -> object:
    """The ``caption`` of a JSON-object line; "" for a blank line; None when there is none."""
    if not line.strip():
        return ""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record.get("caption") if isinstance(record, dict) else None


def count_lines(path: Path) -> int:
    """Number of lines in a file, read in blocks (for the progress bar's total)."""
    with path.open("rb") as f:
        lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
        f.seek(0, 2)
        if f.tell():
            f.seek(-1, 2)
            lines += f.read(1) != b"\n"
    return lines


def _make_parser(args: argparse.Namespace):
    """The parser the arguments ask for; a missing pipeline stops here, before any input is read."""
    from ernievil_ds.scene_graph.parser import SceneGraphParser

    return SceneGraphParser(args.spacy_model, n_process=args.num_proc, batch_size=args.batch_size)


def read_gold_graphs(path: Path) -> list[dict]:
    """The gold scene graphs of a JSONL file, one JSON object with a ``caption`` per non-blank line.

    Raises:
        UserError: a missing file, or the first line that is not UTF-8 JSON holding an object.
    """
    if not path.is_file():
        raise UserError(f"gold file {path} does not exist")
    gold = []
    with path.open("rb") as f:
        for line_number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except ValueError as error:  # UnicodeDecodeError and JSONDecodeError alike
                raise UserError(f"{path} line {line_number} is not a JSON line ({error})") from error
            if not isinstance(record, dict):
                raise UserError(f"{path} line {line_number} holds a {type(record).__name__}, not an object")
            gold.append(record)
    return gold


def run_parse(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ernievil_ds.scene_graph.parser import caption_problem

    if not args.input.is_file():
        raise UserError(f"input file {args.input} does not exist")
    parser = _make_parser(args)
    problems: Counter = Counter()
    first_bad_line: dict[str, int] = {}

    def checked(values: Iterator[object]) -> Iterator[object]:
        for line_number, value in enumerate(values, start=1):
            problem = caption_problem(value, parser.max_caption_chars)
            if problem is not None:
                problems[problem] += 1
                first_bad_line.setdefault(problem, line_number)
            yield value

    logger.info("parsing %s with %s (%d process(es))", args.input, parser.spacy_model, parser.n_process)
    total = count_lines(args.input)
    written = 0
    with args.output.open("w", encoding="utf-8") as out:
        graphs = parser.parse_stream(checked(read_captions(args.input)))
        for graph in tqdm(graphs, total=total, unit="caption", smoothing=0.05):
            out.write(json.dumps(graph, ensure_ascii=False) + "\n")
            written += 1
    logger.info("wrote %d scene graphs to %s", written, args.output)
    if problems:
        details = ", ".join(
            f"{n} {kind} (first at line {first_bad_line[kind]})" for kind, n in problems.items()
        )
        logger.warning("%d of %d lines gave an empty graph: %s", sum(problems.values()), written, details)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ernievil_ds.scene_graph.scoring import score_graphs

    gold = read_gold_graphs(args.gold)
    parser = _make_parser(args)
    scores = score_graphs(parser.parse_stream(g.get("caption") for g in gold), gold)
    if args.json:
        print(json.dumps(scores.to_dict()))
    else:
        print(f"{args.gold}: {scores.captions} captions, spaCy pipeline {parser.spacy_model}")
        print(scores.table())
    return 0
