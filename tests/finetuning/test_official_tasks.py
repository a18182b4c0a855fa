"""The official tasks through the fine-tuning loop: small splits in the official layouts, imported, then
a few steps of the tiny preset and an evaluation, with the metrics each task reports; and the retrieval
evaluation's score matrix against a hand-built one."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from ernievil_ds.errors import UserError
from ernievil_ds.finetuning.arguments import FinetuneSettings
from ernievil_ds.finetuning.data import import_official_vqa, import_refcoco, import_retrieval, import_vcr
from ernievil_ds.finetuning.loop import finetune
from ernievil_ds.finetuning.tasks import ImageTextRetrievalTask
from ernievil_ds.finetuning.tasks.retrieval import AllPairs
from ernievil_ds.runs import read_metrics
from tests.finetuning.official_files import (
    image_tsv_row,
    refcoco_row,
    regions,
    vilbert_beta_row,
    vqa_row,
    write_jsonl,
    write_lines,
    write_lmdb,
)


def vqa_split(root):
    rows = []
    for i, (question, label) in enumerate([("is it red?", 0), ("is it blue?", 1)] * 4):
        rows.append(vqa_row(i, question, [label], [1.0], 64, 48, *regions(2 + i % 2, seed=i % 3)))
    write_lines(root / "vqa.tsv", rows)
    (root / "answers.pkl").write_bytes(pickle.dumps(["yes", "no"]))
    import_official_vqa([root / "vqa.tsv"], root / "split", answers=root / "answers.pkl")


def refcoco_split(root):
    rows = [
        refcoco_row(f"thing {i}", 64, 48, 2, *regions(3, seed=i), [0, 0, 20, 20], [0.9, 0.1, 0.6])
        for i in range(8)
    ]
    write_lines(root / "refcoco.tsv", rows)
    import_refcoco([root / "refcoco.tsv"], root / "split")


def retrieval_split(root):
    write_lines(root / "images.tsv", [image_tsv_row(str(i), 64, 48, *regions(2, seed=i)) for i in range(4)])
    (root / "captions.txt").write_text("".join(f"{i % 4}\t{i}\tcaption number {i}\n" for i in range(8)))
    import_retrieval([root / "captions.txt"], [root / "images.tsv"], root / "split")


def vcr_split(root):
    keys = [str(1_000_000 + i) for i in range(3)]
    write_lmdb(
        root / "det.lmdb",
        {key: vilbert_beta_row(key, 64, 48, *regions(2, seed=i)) for i, key in enumerate(keys)},
    )
    choices = [["yes", "."], ["no", "."], [[0], "runs", "."], ["it", "rains", "."]]
    items = [
        {
            "annot_id": f"val-{i}",
            "img_id": f"val-{i % 3}",
            "objects": ["person", "dog"],
            "question": ["Is", [0], "near", [1], "?"],
            "answer_choices": choices,
            "rationale_choices": choices,
            "answer_label": i % 4,
            "rationale_label": (i + 1) % 4,
        }
        for i in range(8)
    ]
    write_jsonl(root / "val.jsonl", items)
    (root / "names.csv").write_text(",name,count\n0,Casey,1\n")
    import_vcr([root / "val.jsonl"], [root / "det.lmdb"], root / "split", names=root / "names.csv")


SPLITS = {"vqa": vqa_split, "refcoco": refcoco_split, "retrieval": retrieval_split, "vcr": vcr_split}
METRICS = {
    "vqa": {"eval_accuracy"},
    "refcoco": {"eval_accuracy"},
    "retrieval": {f"eval_{way}_r@{k}" for way in ("image", "text") for k in (1, 5, 10)},
    "vcr": {"eval_q2a", "eval_qa2r", "eval_q2ar"},
}


@pytest.mark.parametrize("task", sorted(SPLITS))
def test_each_official_task_trains_and_evaluates(task, tmp_path):
    SPLITS[task](tmp_path)
    settings = FinetuneSettings(
        task=task,
        output_dir=tmp_path / "run",
        preset="tiny",
        data_dir=tmp_path / "split",
        eval_data_dir=tmp_path / "split",
        steps=2,
        batch_size=4,
        warmup_steps=0,
        log_every=1,
    )
    result = finetune(settings)
    assert set(result) == METRICS[task]
    assert all(0.0 <= value <= 1.0 for value in result.values())
    assert all(math.isfinite(r["loss"]) for r in read_metrics(tmp_path / "run" / "metrics.jsonl"))
    assert (tmp_path / "run" / "hf_model" / "model.safetensors").is_file()


def test_an_official_task_needs_both_splits(tmp_path):
    settings = FinetuneSettings(task="refcoco", output_dir=tmp_path / "run", preset="tiny", data_dir=tmp_path)
    with pytest.raises(UserError, match="needs --eval-data-dir"):
        finetune(settings)


def test_retrieval_scores_every_caption_against_every_image(tmp_path):
    """Each (caption, image) pair appears once; a scorer that prefers each caption's own image, given the
    pairs in a shuffled order, gets recall 1 both ways, and one that prefers the next image gets 0 at 1."""
    retrieval_split(tmp_path)
    task = ImageTextRetrievalTask(
        FinetuneSettings(
            task="retrieval",
            output_dir=tmp_path,
            preset="tiny",
            data_dir=tmp_path / "split",
            eval_data_dir=tmp_path / "split",
        )
    )
    _, pairs = task.datasets()
    assert isinstance(pairs, AllPairs) and len(pairs) == 8 * 4
    caption, image = (
        torch.tensor([p["caption_index"] for p in pairs]),
        torch.tensor([p["image_row"] for p in pairs]),
    )
    assert len(set(zip(caption.tolist(), image.tolist(), strict=True))) == 32
    own = torch.tensor([int(pairs[c * 4]["image_id"]) for c in range(8)])  # caption c shows image `own[c]`
    image_ids = pairs.captions.images.data.table.column("image_id").to_pylist()
    rows = torch.tensor([int(i) for i in image_ids])  # image id of each images-table row
    order = torch.randperm(32, generator=torch.Generator().manual_seed(0))
    matched = (rows[image] == own[caption]).float()
    recalls = task.summarize({"score": matched[order], "caption": caption[order], "image": image[order]})
    assert recalls["eval_image_r@1"] == recalls["eval_text_r@1"] == 1.0
    next_image = (rows[image] == (own[caption] + 1) % 4).float()
    recalls = task.summarize({"score": next_image[order], "caption": caption[order], "image": image[order]})
    assert recalls["eval_image_r@1"] == recalls["eval_text_r@1"] == 0.0
