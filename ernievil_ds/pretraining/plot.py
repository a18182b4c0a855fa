"""Draw a run's per-task loss curves, loss scale and throughput from ``metrics.jsonl`` into one PNG."""

from __future__ import annotations

from pathlib import Path

from ernievil_ds.pretraining.metrics import LOSS_NAMES
from ernievil_ds.runs import RunFolder, read_metrics


def plot_metrics(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write ``run_dir/metrics.png`` (or ``output``) with three panels: task losses (train solid, eval
    dashed, from ``eval.jsonl`` when present), loss scale, samples/s. Returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    train = read_metrics(folder.metrics_file)
    evals = read_metrics(folder.eval_file) if folder.eval_file.is_file() else []
    figure, (losses, scale, speed) = plt.subplots(3, 1, figsize=(9, 11), sharex=True)
    for i, name in enumerate(LOSS_NAMES):
        colour = f"C{i}"
        points = [(r["step"], r[name]) for r in train if name in r]
        if points:
            losses.plot(*zip(*points), color=colour, label=name)
        points = [(r["step"], r[f"eval_{name}"]) for r in evals if f"eval_{name}" in r]
        if points:
            losses.plot(*zip(*points), color=colour, linestyle="--", marker="o", markersize=3)
    losses.set_ylabel("loss (solid: train, dashed: eval)")
    losses.set_yscale("log")
    losses.legend(fontsize=8, ncol=2)
    scale.plot([r["step"] for r in train], [r["loss_scale"] for r in train], color="C7")
    scale.set_ylabel("loss scale")
    scale.set_yscale("log")
    speed.plot([r["step"] for r in train], [r["samples_per_sec"] for r in train], color="C8")
    speed.set_ylabel("samples/s")
    speed.set_xlabel("step")
    figure.suptitle(f"ernievil-ds pretraining: {run_dir.name}")
    figure.tight_layout()
    output = Path(output) if output else run_dir / "metrics.png"
    figure.savefig(output, dpi=100)
    plt.close(figure)
    return output
