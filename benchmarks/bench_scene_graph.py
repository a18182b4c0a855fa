"""Captions per second of the scene-graph parser, at 1 and more processes, beside SceneGraphParser.

    python benchmarks/bench_scene_graph.py [--num-captions 20000] [--processes 1 2] [--rounds 3]

Captions are the dev set's (repeated to ``--num-captions``). Rows, each the best of ``--rounds``
timed runs (the least disturbed one on a shared machine):
  - spaCy alone: ``nlp.pipe`` over the pipeline as shipped (stock attribute ruler, named entities
    left out), without the scene-graph component;
  - ernievil_ds at each process count: ``SceneGraphParser.parse_stream``, end to end (for more than
    one process, starting the workers is inside the timing);
  - SceneGraphParser 0.1.0 (``sng_parser``, PyPI ``scenegraphparser``) on the same pipeline, one
    caption at a time as its API parses, over the first ``--sng-captions`` captions, when installed.
The header names the CPU, the cores this process may use and the load average before the run:
other work on the machine lowers every figure, the multi-process ones most; captions per CPU
second (one-process rows) is what one core does whatever that load.
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

from ernievil_ds.scene_graph import SceneGraphParser
from ernievil_ds.scene_graph.parser import UNUSED_COMPONENTS

DEV_SET = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "scene_graphs_dev.jsonl"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def best_rates(run, count: int, rounds: int) -> tuple[float, float]:
    """Highest items per wall-clock second and per CPU second of this process over ``rounds`` calls
    of ``run()``, which processes ``count`` items. CPU time leaves out other programs' load but
    also worker processes, so it is only read for one-process rows."""
    best_wall = best_cpu = 0.0
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        best_wall = max(best_wall, count / (time.perf_counter() - wall))
        best_cpu = max(best_cpu, count / (time.process_time() - cpu))
    return best_wall, best_cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--captions", type=Path, default=DEV_SET, help="JSONL with a caption field (default: dev set)"
    )
    ap.add_argument("--num-captions", type=int, default=20000)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--spacy-model", default=None)
    ap.add_argument(
        "--sng-captions", type=int, default=2000, help="captions for SceneGraphParser (it is slow)"
    )
    args = ap.parse_args()

    with args.captions.open(encoding="utf-8") as f:
        source = [json.loads(line)["caption"] for line in f if line.strip()]
    captions = list(islice(cycle(source), args.num_captions))
    parser = SceneGraphParser(args.spacy_model, batch_size=args.batch_size)
    model = parser.spacy_model

    print(
        f"CPU: {cpu_name()}; usable cores: {len(os.sched_getaffinity(0))}; load average: {os.getloadavg()[0]:.2f}"
    )
    print(
        f"Python {platform.python_version()}, spaCy {spacy.__version__}, pipeline {model} without {UNUSED_COMPONENTS}"
    )
    print(f"{len(captions)} captions from {args.captions.name}, best of {args.rounds} rounds\n")

    rows = []
    plain = spacy.load(model, exclude=list(UNUSED_COMPONENTS))
    rates = best_rates(
        lambda: list(plain.pipe(captions, batch_size=args.batch_size)), len(captions), args.rounds
    )
    rows.append(("spaCy pipeline alone, stock components (no graphs)", 1, *rates))
    for n in args.processes:
        parser.n_process = n
        rates = best_rates(lambda: sum(1 for _ in parser.parse_stream(captions)), len(captions), args.rounds)
        rows.append(("ernievil_ds SceneGraphParser", n, *rates))
    try:
        import sng_parser
    except ImportError:
        sng_parser = None
    if sng_parser is not None:
        sng = sng_parser.Parser("spacy", model=model)
        subset = captions[: args.sng_captions]
        rates = best_rates(lambda: [sng.parse(c) for c in subset], len(subset), args.rounds)
        rows.append(("SceneGraphParser 0.1.0 (sng_parser)", 1, *rates))

    ours_1 = next(wall for name, n, wall, _ in rows if name.startswith("ernievil_ds") and n == 1)
    sng_wall = rows[-1][2] if sng_parser is not None else None
    print(
        "| parser | processes | captions/s | captions/CPU-s | vs ernievil_ds at 1 process | vs SceneGraphParser |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, n, wall, cpu in rows:
        per_cpu = f"{cpu:,.0f}" if n == 1 else "n/a"
        versus_sng = f"{wall / sng_wall:.2f}x" if sng_wall else "n/a"
        print(f"| {name} | {n} | {wall:,.0f} | {per_cpu} | {wall / ours_1:.2f}x | {versus_sng} |")


if __name__ == "__main__":
    main()
