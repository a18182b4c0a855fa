"""synth_qa accuracy per question type of four arms at the demo's fine-tuning budget, over seeds.

    python experiments/synth_qa_arms.py runs/demo/hf_model runs/demo_no_sgp/hf_model
    python experiments/synth_qa_arms.py SGP_MODEL NO_SGP_MODEL --seeds 0 1 2

The arms, each fine-tuned with ``DEMO_SETTINGS`` through ``ernievil_ds.finetuning.loop.finetune``:

- ``sgp``: the SGP-pretrained model;
- ``no_sgp``: the model pretrained with ``--no-sgp``;
- ``no_pretraining``: a fresh model of the SGP model's config whose text stream is MiniLM's and nothing
  else pretrained (built, saved to a temporary directory and fine-tuned from there);
- ``question_only``: the SGP model with every region feature zeroed.

Prints one markdown table per question type (accuracy per seed and the mean) and the wall time of each run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from transformers import AutoConfig, AutoModelForPreTraining

from ernievil_ds.assets import minilm_dir
from ernievil_ds.finetuning.arguments import FinetuneSettings
from ernievil_ds.finetuning.loop import finetune
from ernievil_ds.finetuning.synth_qa import QUESTION_TYPES
from ernievil_ds.text_init import init_text_stream_from_bert

#: The demo's fine-tuning settings (the flags of the command in docs/finetuning.md).
DEMO_SETTINGS = {
    "steps": 600,
    "batch_size": 32,
    "learning_rate": 1e-4,
    "warmup_steps": 20,
    "head_lr_scale": 30.0,
}
ARMS = ("sgp", "no_sgp", "no_pretraining", "question_only")


def save_text_only_model(sgp_model: Path, output_dir: Path) -> Path:
    """A fresh pretraining model of ``sgp_model``'s config with MiniLM's text stream, saved under
    ``output_dir``; returns its directory."""
    model = AutoModelForPreTraining.from_config(AutoConfig.from_pretrained(sgp_model))
    init_text_stream_from_bert(model, minilm_dir())
    model.save_pretrained(output_dir)
    return output_dir


def run_arm(
    arm: str, models: dict[str, Path], seed: int, output_dir: Path, steps: int
) -> tuple[dict[str, float], float]:
    """Fine-tune one arm with one seed for ``steps`` optimiser steps; returns its final evaluation and its
    wall time in seconds."""
    settings = FinetuneSettings(
        task="synth_qa",
        output_dir=output_dir,
        model=models["sgp" if arm == "question_only" else arm],
        seed=seed,
        zero_image_features=arm == "question_only",
        log_every=50,
        **{**DEMO_SETTINGS, "steps": steps},
    )
    start = time.perf_counter()
    result = finetune(settings)
    return result, time.perf_counter() - start


def markdown_tables(results: dict[tuple[str, int], dict[str, float]], seeds: list[int]) -> str:
    """One table per question type: a row per arm, a column per seed and the mean."""
    header = "| arm | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |"
    rule = "| --- |" + " --- |" * (len(seeds) + 1)
    tables = []
    for kind in (*QUESTION_TYPES, None):
        key = "eval_accuracy" if kind is None else f"eval_accuracy_{kind}"
        rows = [f"**{kind or 'all'}**", "", header, rule]
        for arm in ARMS:
            values = [results[arm, seed][key] for seed in seeds]
            cells = " | ".join(f"{v:.3f}" for v in values)
            rows.append(f"| {arm} | {cells} | {sum(values) / len(values):.3f} |")
        tables.append("\n".join(rows))
    return "\n\n".join(tables)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sgp_model", type=Path, help="the SGP-pretrained hf_model/")
    parser.add_argument("no_sgp_model", type=Path, help="the --no-sgp pretrained hf_model/")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=DEMO_SETTINGS["steps"], help="optimiser steps per run")
    args = parser.parse_args()
    results, seconds = {}, {}
    with tempfile.TemporaryDirectory(prefix="synth_qa_arms-") as scratch:
        scratch = Path(scratch)
        models = {
            "sgp": args.sgp_model,
            "no_sgp": args.no_sgp_model,
            "no_pretraining": save_text_only_model(args.sgp_model, scratch / "text_only_model"),
        }
        for seed in args.seeds:
            for arm in ARMS:
                results[arm, seed], seconds[arm, seed] = run_arm(
                    arm, models, seed, scratch / f"{arm}-{seed}", args.steps
                )
                print(f"{arm} seed {seed}: {results[arm, seed]} in {seconds[arm, seed]:.0f} s", flush=True)
    print(markdown_tables(results, args.seeds))
    print("\nwall time (s): " + ", ".join(f"{arm} seed {s} {t:.0f}" for (arm, s), t in seconds.items()))


if __name__ == "__main__":
    main()
