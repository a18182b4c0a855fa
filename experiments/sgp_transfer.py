"""Does Scene Graph Prediction pretraining help synth_qa? SGP and ``--no-sgp`` models pretrained over seeds,
each fine-tuned over seeds, beside a MiniLM-only and a question-only arm, in one command.

    python experiments/sgp_transfer.py                      # 3 pretraining x 3 fine-tuning seeds
    python experiments/sgp_transfer.py --pretrain-seeds 0 1 --finetune-seeds 0 --output-dir runs/sgp_quick

Stages, each timed:

1. pretraining: for each arm (``sgp``; ``no_sgp``, the same with ``--no-sgp``) and each ``--pretrain-seeds``
   S, the README's main job as a child process, its output appended to ``OUT/pretrain/ARM-sS.log``::

       deepspeed --num_gpus 2 launchers/pretrain.py --deepspeed ds_configs/cpu_fp32.json --recipe demo_cpu \\
           --output-dir OUT/pretrain/ARM-sS --seed S --deterministic [--no-sgp]

   (``deepspeed`` run as ``python -m deepspeed.launcher.runner`` of this interpreter). A run folder whose
   ``hf_model/`` holds its model card (``runs.finish_run`` writes it last) is reused whatever made it; one
   with a complete checkpoint and no finished export is resumed with ``--resume``; any other is removed
   and started afresh.
2. the MiniLM-only model: a fresh model of the SGP models' config whose text stream is MiniLM's and nothing
   else pretrained (``OUT/minilm_only_model``, built once, initial weights from seed 0).
3. fine-tuning, in this process through ``ernievil_ds.finetuning.loop.finetune``, with ``SYNTH_QA_RECIPE``
   (``ernievil_ds/finetuning/arguments.py``, the settings of the docs' demo command; ``--steps`` replaces
   its steps), each ``--finetune-seeds`` F of: ``sgp`` and ``no_sgp`` (every pretrained model),
   ``minilm_only``, and ``question_only`` (the first SGP model, every region feature zeroed). The runs lie
   under ``OUT/finetune-<digest of the settings>/`` (its ``recipe.json`` says which), so that other
   settings fine-tune afresh while the pretrained models are reused. A finished run is read back from the
   last line of its ``eval.jsonl``; an unfinished one is removed and run afresh.
4. report: ``OUT/runs.jsonl`` (one row per fine-tuning run), ``OUT/summary.md`` (per arm and question type:
   mean, sd, min, max, n; then the acceptance checks) and ``OUT/summary.png``; the table and the checks are
   printed too.

Time on 2 CPU cores, nothing else running (Intel Xeon): a ``--deterministic`` demo pretraining takes 7-8
minutes (one torch thread per rank), a 900-step synth_qa fine-tune in this process 2.5 minutes; the defaults
(6 pretrainings, 3 x 3 x 2 + 3 + 3 = 24 fine-tunes) took 1 h 47 min,
``--pretrain-seeds 0 1 --finetune-seeds 0`` (4 pretrainings, 6 fine-tunes) take about 45 min. On the 2-core
machines of the first runs (an AMD EPYC shared with other jobs, another Intel Xeon) each stage took 1.5 to 3
times as long (pretraining 17-22 minutes, fine-tunes 4-6), the defaults about 4 hours. A rerun reuses what
finished.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ernievil_ds.finetuning.arguments import SYNTH_QA_RECIPE, FinetuneSettings
from ernievil_ds.finetuning.loop import finetune
from ernievil_ds.finetuning.synth_qa import QUESTION_TYPES
from ernievil_ds.hub.files import CARD_FILE
from ernievil_ds.runs import RunFolder, latest_checkpoint, read_metrics

REPO = Path(__file__).resolve().parents[1]
PRETRAIN_ARMS = ("sgp", "no_sgp")
ARMS = (*PRETRAIN_ARMS, "minilm_only", "question_only")
COLUMNS = (*QUESTION_TYPES, "all")  # a table column per question type, and all questions together
# The acceptance checks: every SGP run reaches both targets; SGP is ahead of --no-sgp in relation by the
# margin on average and in every run; SGP's colour is not behind --no-sgp's by more than the tolerance.
TARGETS = {"colour": 0.95, "relation": 0.85}
RELATION_MARGIN, COLOUR_TOLERANCE = 0.15, 0.02
#: At least this share of the SGP runs must meet both TARGETS: 8 of every 9 (all of fewer than 9).
MEETING_TARGETS = (8, 9)

#: Runs a command line (argv) from the repository root, its output appended to a log file.
Runner = Callable[[list[str], Path], None]
#: Fine-tunes as the settings say and returns the final evaluation (``finetune``'s signature).
Trainer = Callable[[FinetuneSettings], dict[str, float]]


# --- pretraining ---------------------------------------------------------------------------------------


def pretrain_command(run_dir: Path, seed: int, sgp: bool, resume: bool) -> list[str]:
    """The README's main job for one seed and arm, as argv (this interpreter first)."""
    command = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "launchers/pretrain.py"]
    command += ["--deepspeed", "ds_configs/cpu_fp32.json", "--recipe", "demo_cpu"]
    command += ["--output-dir", str(run_dir), "--seed", str(seed), "--deterministic"]
    return command + (["--no-sgp"] if not sgp else []) + (["--resume"] if resume else [])


def run_child(command: list[str], log: Path) -> None:
    """Run ``command`` from the repository root, stdout and stderr appended to ``log``.

    Raises:
        SystemExit: the command failed, naming its exit status and the log.
    """
    with log.open("a") as out:
        status = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT).returncode
    if status:
        raise SystemExit(
            f"sgp_transfer.py: exit status {status} (output in {log}) from {shlex.join(command)}"
        )


def is_finished(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` ended: ``runs.finish_run`` writes the model card into ``hf_model/``
    after the export (and, in pretraining, after the cloze table)."""
    return (RunFolder(run_dir).model_dir / CARD_FILE).is_file()


def pretrain_action(run_dir: Path) -> str:
    """``"reuse"`` a finished run, ``"resume"`` one with a complete checkpoint, else ``"start"``."""
    if is_finished(run_dir):
        return "reuse"
    if latest_checkpoint(RunFolder(run_dir).checkpoints_dir) is not None:
        return "resume"
    return "start"


def ensure_pretrained(arm: str, seed: int, root: Path, run: Runner = run_child) -> tuple[Path, str]:
    """The ``hf_model/`` of arm ``arm`` (one of ``PRETRAIN_ARMS``) and seed ``seed`` under ``root/pretrain``,
    reused, resumed or started (see ``pretrain_action``); returns it and the action taken."""
    run_dir = root / "pretrain" / f"{arm}-s{seed}"
    action = pretrain_action(run_dir)
    if action == "start" and run_dir.exists():
        shutil.rmtree(run_dir)  # an unfinished start: a new run would append to its metrics
    if action != "reuse":
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        command = pretrain_command(run_dir, seed, sgp=arm == "sgp", resume=action == "resume")
        run(command, run_dir.parent / f"{run_dir.name}.log")
        if not is_finished(run_dir):
            raise SystemExit(f"sgp_transfer.py: {run_dir} did not finish; see {run_dir}.log")
    return RunFolder(run_dir).model_dir, action


def pretrain_all(root: Path, seeds: Sequence[int], run: Runner) -> dict[tuple[str, int], Path]:
    """Every arm's model for every seed: (arm, seed) -> its ``hf_model/``, with a progress line each. Seed by
    seed, both arms each, so that a run stopped early leaves the arms with equally many models."""
    jobs = [(arm, seed) for seed in seeds for arm in PRETRAIN_ARMS]
    models = {}
    for i, (arm, seed) in enumerate(jobs, 1):
        start = time.perf_counter()
        models[arm, seed], action = ensure_pretrained(arm, seed, root, run)
        seconds = time.perf_counter() - start
        print(f"[pretrain {i}/{len(jobs)}] {arm} seed {seed}: {action} ({seconds:.0f} s)", flush=True)
    return models


def ensure_minilm_model(sgp_model: Path, output_dir: Path) -> Path:
    """A fresh pretraining model of ``sgp_model``'s config with MiniLM's text stream (initial weights of
    seed 0), saved as ``output_dir`` unless it is there already; returns ``output_dir``."""
    from transformers import AutoConfig, AutoModelForPreTraining

    from ernievil_ds.assets import minilm_dir
    from ernievil_ds.text_init import init_text_stream_from_bert

    if (output_dir / "config.json").is_file():
        return output_dir
    torch.manual_seed(0)
    model = AutoModelForPreTraining.from_config(AutoConfig.from_pretrained(sgp_model))
    init_text_stream_from_bert(model, minilm_dir())
    partial = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    os.replace(partial, output_dir)  # whole or absent: a killed save is not taken for a model
    return output_dir


# --- fine-tuning ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinetuneJob:
    """One fine-tuning run: its arm, the pretraining seed of its model (None: ``minilm_only``), its seed."""

    arm: str
    pretrain_seed: int | None
    finetune_seed: int
    model: Path

    @property
    def name(self) -> str:
        """The run folder's name, e.g. ``sgp-p0-f2`` or ``minilm_only-f2``."""
        pretrained = "" if self.pretrain_seed is None else f"-p{self.pretrain_seed}"
        return f"{self.arm}{pretrained}-f{self.finetune_seed}"


def plan_finetunes(
    models: dict[tuple[str, int], Path],
    minilm_model: Path,
    pretrain_seeds: Sequence[int],
    finetune_seeds: Sequence[int],
) -> list[FinetuneJob]:
    """The runs of every arm: K x M each of ``sgp`` and ``no_sgp`` (K pretraining, M fine-tuning seeds),
    M of ``minilm_only`` and M of ``question_only`` (on the first SGP model). Fine-tuning seed by seed, every
    arm each, so that a run stopped early has compared the arms on the same seeds."""
    first = pretrain_seeds[0]
    jobs = []
    for f in finetune_seeds:
        jobs += [FinetuneJob(arm, p, f, models[arm, p]) for p in pretrain_seeds for arm in PRETRAIN_ARMS]
        jobs += [
            FinetuneJob("minilm_only", None, f, minilm_model),
            FinetuneJob("question_only", first, f, models["sgp", first]),
        ]
    return jobs


def finetune_recipe(steps: int | None = None) -> dict[str, object]:
    """``SYNTH_QA_RECIPE``, with ``steps`` in place of its steps when given."""
    return {**SYNTH_QA_RECIPE, **({"steps": steps} if steps else {})}


def recipe_dir(root: Path, recipe: dict[str, object]) -> Path:
    """``root/finetune-<8 hex digits of the recipe>``, created with the recipe in its ``recipe.json``."""
    text = json.dumps(recipe, sort_keys=True)
    folder = root / f"finetune-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.json").write_text(text + "\n")
    return folder


def job_settings(job: FinetuneJob, folder: Path, recipe: dict[str, object]) -> FinetuneSettings:
    """The settings of ``job``: synth_qa with ``recipe``, in ``folder / job.name``."""
    return FinetuneSettings(
        task="synth_qa",
        output_dir=folder / job.name,
        model=job.model,
        seed=job.finetune_seed,
        zero_image_features=job.arm == "question_only",
        **recipe,
    )


def ensure_finetuned(settings: FinetuneSettings, train: Trainer) -> tuple[dict[str, float], bool]:
    """The final evaluation of the run ``settings`` describe (``eval_*`` accuracies), and whether it was
    read back from a finished run (else: any unfinished folder removed, ``train(settings)`` run)."""
    run_dir = Path(settings.output_dir)
    if is_finished(run_dir):
        record = read_metrics(RunFolder(run_dir).eval_file)[-1]
        return {name: value for name, value in record.items() if name != "step"}, True
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a new run would append to its metrics and evaluations
    return train(settings), False


def job_row(job: FinetuneJob, result: dict[str, float], reused: bool, seconds: float) -> dict:
    """One row of ``runs.jsonl``: the job, the accuracy of each question type and of all (``COLUMNS``)."""
    accuracies = {kind: result[f"eval_accuracy_{kind}"] for kind in QUESTION_TYPES}
    return {
        "arm": job.arm,
        "pretrain_seed": job.pretrain_seed,
        "finetune_seed": job.finetune_seed,
        "model": str(job.model),
        **accuracies,
        "all": result["eval_accuracy"],
        "reused": reused,
        "seconds": None if reused else round(seconds, 1),
    }


def finetune_all(jobs: Sequence[FinetuneJob], folder: Path, recipe: dict, train: Trainer) -> list[dict]:
    """Run (or read back) every job under ``folder``; returns their rows, with a progress line each."""
    rows = []
    for i, job in enumerate(jobs, 1):
        start = time.perf_counter()
        result, reused = ensure_finetuned(job_settings(job, folder, recipe), train)
        rows.append(job_row(job, result, reused, time.perf_counter() - start))
        scores = ", ".join(f"{kind} {rows[-1][kind]:.3f}" for kind in COLUMNS)
        how = "reused" if reused else f"trained in {rows[-1]['seconds']:.0f} s"
        print(f"[finetune {i}/{len(jobs)}] {job.name}: {how}; {scores}", flush=True)
    return rows


# --- the report ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Accuracy over the runs of one arm and question type; ``sd`` is the sample sd (NaN for one run)."""

    mean: float
    sd: float
    min: float
    max: float
    n: int


def summarize(values: Sequence[float]) -> Summary:
    """Mean, sample standard deviation (n - 1), min, max and count of ``values`` (at least one)."""
    sd = statistics.stdev(values) if len(values) > 1 else math.nan
    return Summary(statistics.fmean(values), sd, min(values), max(values), len(values))


def arm_values(rows: Sequence[dict], arm: str, column: str) -> list[float]:
    """The ``column`` accuracy of every row of ``arm``, in row order."""
    return [row[column] for row in rows if row["arm"] == arm]


def markdown_table(rows: Sequence[dict]) -> str:
    """A row per arm and question type (``COLUMNS``): mean, sd, min, max, n, to three decimals."""
    lines = [
        "| arm | question | mean | sd | min | max | n |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for arm in ARMS:
        for column in COLUMNS:
            values = arm_values(rows, arm, column)
            if values:
                s = summarize(values)
                sd = "-" if math.isnan(s.sd) else f"{s.sd:.3f}"
                lines.append(
                    f"| {arm} | {column} | {s.mean:.3f} | {sd} | {s.min:.3f} | {s.max:.3f} | {s.n} |"
                )
    return "\n".join(lines)


def acceptance_checks(rows: Sequence[dict]) -> list[tuple[bool, str]]:
    """The SGP-transfer claim's checks over the ``sgp`` and ``no_sgp`` rows: (passed, the computed line)."""
    sgp, no_sgp = [r for r in rows if r["arm"] == "sgp"], [r for r in rows if r["arm"] == "no_sgp"]
    colour, relation = TARGETS["colour"], TARGETS["relation"]
    good_colour = sum(r["colour"] >= colour for r in sgp)
    good_relation = sum(r["relation"] >= relation for r in sgp)
    good = sum(r["colour"] >= colour and r["relation"] >= relation for r in sgp)
    rel, no_rel = arm_values(sgp, "sgp", "relation"), arm_values(no_sgp, "no_sgp", "relation")
    col, no_col = arm_values(sgp, "sgp", "colour"), arm_values(no_sgp, "no_sgp", "colour")
    mean = statistics.fmean
    return [
        (
            good * MEETING_TARGETS[1] >= len(sgp) * MEETING_TARGETS[0],
            f"SGP runs with colour >= {colour} and relation >= {relation}: {good} of {len(sgp)} "
            f"(colour {good_colour}, relation {good_relation}; at least {MEETING_TARGETS[0]} of every "
            f"{MEETING_TARGETS[1]} needed)",
        ),
        (
            mean(rel) >= mean(no_rel) + RELATION_MARGIN,
            f"SGP mean relation {mean(rel):.3f} >= no-SGP mean {mean(no_rel):.3f} + {RELATION_MARGIN}",
        ),
        (min(rel) > max(no_rel), f"SGP min relation {min(rel):.3f} > no-SGP max {max(no_rel):.3f}"),
        (
            mean(col) >= mean(no_col) - COLOUR_TOLERANCE,
            f"SGP mean colour {mean(col):.3f} >= no-SGP mean {mean(no_col):.3f} - {COLOUR_TOLERANCE}",
        ),
    ]


def plot_runs(rows: Sequence[dict], output: Path) -> Path:
    """A panel per question type (``COLUMNS``): each arm's runs as dots, their mean as a bar, the targets
    dotted. Returns ``output``."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    arms = [arm for arm in ARMS if arm_values(rows, arm, "all")]
    figure, axes = plt.subplots(1, len(COLUMNS), figsize=(3 * len(COLUMNS), 4.5), sharey=True)
    for axis, column in zip(axes, COLUMNS):
        for i, arm in enumerate(arms):
            values = arm_values(rows, arm, column)
            spread = [i + 0.3 * ((k + 0.5) / len(values) - 0.5) for k in range(len(values))]  # centred
            axis.scatter(spread, values, s=14, color=f"C{i}", alpha=0.7)
            axis.hlines(statistics.fmean(values), i - 0.3, i + 0.3, color=f"C{i}")
        if column in TARGETS:
            axis.axhline(TARGETS[column], linestyle=":", color="grey")
        axis.set_title(column)
        axis.set_xticks(range(len(arms)), arms, rotation=45, ha="right")
    axes[0].set_ylabel("accuracy (dots: runs; bars: mean; dotted: target)")
    axes[0].set_ylim(0, 1.02)
    figure.suptitle("synth_qa accuracy after pretraining with and without SGP")
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    plt.close(figure)
    return output


def write_report(root: Path, rows: Sequence[dict], recipe: dict) -> str:
    """``runs.jsonl``, ``summary.md`` and ``summary.png`` under ``root``; returns the summary's text."""
    (root / "runs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    checks = "\n".join(f"- {'PASS' if ok else 'FAIL'}: {line}" for ok, line in acceptance_checks(rows))
    text = (
        f"# SGP transfer to synth_qa\n\nFine-tuning settings: `{json.dumps(recipe)}`\n\n"
        f"{markdown_table(rows)}\n\nAcceptance checks:\n\n{checks}\n"
    )
    (root / "summary.md").write_text(text)
    plot_runs(rows, root / "summary.png")
    return text


# --- the command ---------------------------------------------------------------------------------------


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pretrain-seeds", type=int, nargs="+", default=[0, 1, 2], metavar="S")
    parser.add_argument("--finetune-seeds", type=int, nargs="+", default=[0, 1, 2], metavar="F")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/sgp_transfer"))
    parser.add_argument("--steps", type=int, help="fine-tuning steps (default: SYNTH_QA_RECIPE's)")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads of the fine-tunes (default: torch's choice); the pretraining children keep "
        "the README command's, one per rank with --deterministic",
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def timed(clock: dict[str, float], stage: str) -> Iterator[None]:
    """Record the wall time of the block in ``clock[stage]``, in seconds."""
    start = time.perf_counter()
    yield
    clock[stage] = time.perf_counter() - start


def main(argv: list[str] | None = None, run: Runner = run_child, train: Trainer = finetune) -> str:
    """The experiment; returns the summary's text. ``run`` and ``train`` stand in for the child process
    and the fine-tuning loop in tests."""
    args = parse_arguments(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    root, recipe, clock = args.output_dir.resolve(), finetune_recipe(args.steps), {}
    with timed(clock, "pretraining"):
        models = pretrain_all(root, args.pretrain_seeds, run)
    with timed(clock, "MiniLM-only model"):
        minilm = ensure_minilm_model(models["sgp", args.pretrain_seeds[0]], root / "minilm_only_model")
    with timed(clock, "fine-tuning"):
        jobs = plan_finetunes(models, minilm, args.pretrain_seeds, args.finetune_seeds)
        rows = finetune_all(jobs, recipe_dir(root, recipe), recipe, train)
    with timed(clock, "report"):
        text = write_report(root, rows, recipe)
    print(f"\n{text}\nWall time: " + ", ".join(f"{stage} {s:.0f} s" for stage, s in clock.items()))
    print(f"Written: {root / 'summary.md'}, {root / 'summary.png'}, {root / 'runs.jsonl'}")
    return text


if __name__ == "__main__":
    main()
