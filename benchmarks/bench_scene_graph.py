"""Captions per second of the scene-graph parser, at 1 and more processes, beside SceneGraphParser.

    python benchmarks/bench_scene_graph.py [--num-captions 20000] [--processes 1 2] [--rounds 3]

Captions are the dev set's (repeated to ``--num-captions``). Rows:
  - spaCy alone: ``nlp.pipe`` over the pipeline as shipped (stock attribute ruler, named entities
    left out), without the scene-graph component;
  - ernievil_ds at each process count: ``SceneGraphParser.parse_stream``, end to end (for more than
    one process, starting the workers is inside the timing);
  - SceneGraphParser 0.1.0 (``sng_parser``, PyPI ``scenegraphparser``) on the same pipeline, one
    caption at a time as its API parses, over the first ``--sng-captions`` captions, when installed.
The rows take turns, round after round, and each keeps its best round, so that a change in the
machine's load hits them alike. The header names the CPU, the cores this process may use and the
load average: other work on the machine lowers every wall-clock figure, the multi-process ones
most. Captions per CPU second (this process plus its joined workers) is what the work costs
whatever that load; n times it, relative to one process, is the speed-up n processes reach when
each has an idle core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from itertools import cycle, islice
from pathlib import Path

import spacy
from machine import cpu_name

from ernievil_ds.scene_graph import SceneGraphParser
from ernievil_ds.scene_graph.parser import UNUSED_COMPONENTS

DEV_SET = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "scene_graphs_dev.jsonl"


def cpu_seconds() -> float:
    """CPU time of this process and of its finished (joined) worker processes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(run) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one call of ``run()``."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    run()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--captions", type=Path, default=DEV_SET, help="JSONL, a caption field per line")
    ap.add_argument("--num-captions", type=int, default=20000)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--spacy-model", default=None)
    ap.add_argument("--sng-captions", type=int, default=2000, help="captions for SceneGraphParser (slow)")
    args = ap.parse_args()

    with args.captions.open(encoding="utf-8") as f:
        source = [json.loads(line)["caption"] for line in f if line.strip()]
    captions = list(islice(cycle(source), args.num_captions))
    parsers = {
        n: SceneGraphParser(args.spacy_model, n_process=n, batch_size=args.batch_size) for n in args.processes
    }
    model = parsers[args.processes[0]].spacy_model
    plain = spacy.load(model, exclude=list(UNUSED_COMPONENTS))

    # (name, processes, number of captions, run)
    rows = [
        ("spaCy pipeline alone, stock components (no graphs)", 1, len(captions),
         lambda: list(plain.pipe(captions, batch_size=args.batch_size))),
    ]  # fmt: skip
    for n, parser in parsers.items():
        rows.append(
            (
                "ernievil_ds SceneGraphParser",
                n,
                len(captions),
                lambda p=parser: list(p.parse_stream(captions)),
            )
        )
    try:
        import sng_parser
    except ImportError:
        sng_parser = None
    if sng_parser is not None:
        sng, subset = sng_parser.Parser("spacy", model=model), captions[: args.sng_captions]
        rows.append(
            ("SceneGraphParser 0.1.0 (sng_parser)", 1, len(subset), lambda: [sng.parse(c) for c in subset])
        )

    print(
        f"CPU: {cpu_name()}; usable cores: {len(os.sched_getaffinity(0))}; load average: {os.getloadavg()[0]:.2f}"
    )
    print(
        f"Python {platform.python_version()}, spaCy {spacy.__version__}, {model} without {UNUSED_COMPONENTS}"
    )
    print(f"{len(captions)} captions from {args.captions.name}, best of {args.rounds} interleaved rounds\n")
    best = [(0.0, 0.0)] * len(rows)  # (captions/s, captions/CPU-s) per row
    for _ in range(args.rounds):
        for k, (_, _, count, run) in enumerate(rows):
            wall, cpu = timed(run)
            best[k] = (max(best[k][0], count / wall), max(best[k][1], count / cpu))

    ours = {n: rates for (name, n, _, _), rates in zip(rows, best) if name.startswith("ernievil_ds")}
    one_wall, one_cpu = ours[min(ours)]
    sng_wall = best[-1][0] if sng_parser is not None else None
    print(
        "| parser | processes | captions/s | vs 1 process | vs SceneGraphParser | captions/CPU-s | idle-core speed-up |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (name, n, _, _), (wall, cpu) in zip(rows, best):
        versus_sng = f"{wall / sng_wall:.2f}x" if sng_wall else "n/a"
        idle = f"{n * cpu / one_cpu:.2f}x" if name.startswith("ernievil_ds") else ""
        print(f"| {name} | {n} | {wall:,.0f} | {wall / one_wall:.2f}x | {versus_sng} | {cpu:,.0f} | {idle} |")
    print(f"\n(load average after the run: {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
