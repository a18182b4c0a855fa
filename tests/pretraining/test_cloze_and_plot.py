"""Cloze scoring rules and the metrics plot, on hand-made inputs."""

from __future__ import annotations

import json

import pytest
import torch

from ernievil_ds.pretraining.cloze import (
    format_cloze_curve,
    format_cloze_table,
    node_hits,
    run_cloze,
    run_cloze_per_checkpoint,
)
from ernievil_ds.pretraining.plot import plot_metrics


def test_a_multi_wordpiece_node_is_right_only_when_every_wordpiece_is():
    vocab = 10
    labels = torch.tensor([1, 2, 3, 4, 5, 6])
    logits = torch.zeros(6, vocab)
    # node A (rows 0-1): both right at top 1.
    logits[0, 1] = logits[1, 2] = 5.0
    # node B (rows 2-4, e.g. "on top of"): the middle WordPiece is only second best -> top-1 wrong, top-5 right.
    logits[2, 3] = 5.0
    logits[3, 9], logits[3, 4] = 5.0, 4.0
    logits[4, 5] = 5.0
    # node C (row 5): the true id is below five others -> wrong at top 1 and top 5.
    logits[5, [0, 1, 2, 3, 4]] = torch.tensor([9.0, 8.0, 7.0, 6.0, 5.0])
    targets = [{"positions": [1, 2]}, {"positions": [4, 5, 6]}, {"positions": [3]}]
    assert node_hits(logits, labels, targets) == [(True, True), (False, True), (False, False)]


def test_cloze_table_gives_every_node_type_its_own_row():
    """Every number distinct, so a row that shows another type's figure or a swapped column fails."""
    types = ("object", "attribute", "relation")
    results = {
        "true_image": {
            t: {"top1": 0.91 + i / 100, "top5": 0.95 + i / 100, "count": 10 + i} for i, t in enumerate(types)
        },
        "mismatched_image": {
            t: {"top1": 0.21 + i / 100, "top5": 0.51 + i / 100, "count": 10 + i} for i, t in enumerate(types)
        },
        "gap_top1": {t: 0.7 + i / 10 for i, t in enumerate(types)},
    }
    lines = format_cloze_table(results).splitlines()
    assert len(lines) == 2 + len(types)
    for i, (node, line) in enumerate(zip(types, lines[2:])):
        assert line.split() == [
            node,
            str(10 + i),
            f"{0.91 + i / 100:.3f}",
            f"{0.95 + i / 100:.3f}",
            f"{0.21 + i / 100:.3f}",
            f"{0.51 + i / 100:.3f}",
            f"{0.7 + i / 10:+.3f}",
        ]


def test_cloze_curve_gives_one_row_per_step():
    types = ("object", "attribute", "relation")
    curve = {
        step: {
            "true_image": {t: {"top1": step / 1000 + i / 100} for i, t in enumerate(types)},
            "gap_top1": {t: step / 2000 + i / 100 for i, t in enumerate(types)},
        }
        for step in (100, 200)
    }
    lines = format_cloze_curve(curve).splitlines()
    assert lines[0] == "| step | object | attribute | relation |"
    assert lines[2] == "| 100 | 0.100 (+0.050) | 0.110 (+0.060) | 0.120 (+0.070) |"
    assert lines[3] == "| 200 | 0.200 (+0.100) | 0.210 (+0.110) | 0.220 (+0.120) |"


def test_cloze_per_checkpoint_needs_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no complete checkpoint"):
        run_cloze_per_checkpoint(tmp_path, tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cloze_on_a_missing_gpu_says_so_before_loading_anything(tmp_path):
    with pytest.raises(ValueError, match="'cuda' was asked for, but this PyTorch sees no CUDA GPU"):
        run_cloze(tmp_path / "no_model", tmp_path / "no_data", device="cuda")


def test_plot_draws_a_png_from_metrics(tmp_path):
    records = [
        {"step": s, "loss": 10 - s, "mlm_loss": 5 - s / 2, "loss_scale": 2.0**16, "samples_per_sec": 100.0}
        for s in range(1, 6)
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "eval.jsonl").write_text(
        json.dumps({"step": 5, "eval_loss": 4.0, "eval_mlm_loss": 2.0}) + "\n"
    )
    png = plot_metrics(tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
