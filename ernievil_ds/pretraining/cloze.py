"""The paper's cloze analysis: mask each object, attribute and relation node in turn and score the model's
recovery of it, with the true image and with a mismatched one; the gap measures how much it uses vision."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForPreTraining

from ernievil_ds.data import collate_cloze, load_pretraining_split, load_tokenizer
from ernievil_ds.data.transfer import batch_to_device
from ernievil_ds.modeling_ernievil import ErnieVilForPreTraining
from ernievil_ds.objectives import NODE_TYPE_NAMES

CONDITIONS = ("true_image", "mismatched_image")


def _mismatched_partner(dataset, index: int) -> int:
    """An example, half the data set away, whose image differs from example ``index``'s."""
    n = len(dataset)
    image_id = dataset[index]["image_id"]
    for offset in range(n // 2, n // 2 + n):
        candidate = (index + offset) % n
        if dataset[candidate]["image_id"] != image_id:
            return candidate
    raise ValueError("The cloze control needs at least two distinct images in the split")


def node_hits(logits: torch.Tensor, labels: torch.Tensor, targets: list[dict]) -> list[tuple[bool, bool]]:
    """(top-1 right, top-5 right) per node; a node is right only when every one of its WordPieces is.

    Args:
        logits: (num_masked_tokens, vocab_size), the rows of all nodes one after the other.
        labels: (num_masked_tokens,) the true WordPiece ids in the same order.
        targets: one dict per node with its ``positions`` (its number of rows).
    """
    top5 = logits.topk(5, dim=-1).indices  # (N, 5)
    right1 = top5[:, 0] == labels  # (N,)
    right5 = (top5 == labels[:, None]).any(-1)  # (N,)
    hits, row = [], 0
    for target in targets:
        rows = slice(row, row + len(target["positions"]))
        hits.append((bool(right1[rows].all()), bool(right5[rows].all())))
        row = rows.stop
    return hits


def run_cloze(
    model_dir: str | Path,
    data_dir: str | Path,
    split: str = "eval",
    batch_size: int = 64,
    max_examples: int | None = None,
    device: str | torch.device | None = None,
) -> dict:
    """The cloze of an exported model on a prepared split (see ``cloze_accuracy``).

    The model runs on ``device`` (default: the GPU when there is one).

    Raises:
        ValueError: a CUDA device is asked for where PyTorch sees none.
    """
    model_dir = Path(model_dir)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for, but this PyTorch sees no CUDA GPU")
    # The cloze reads the logits, which a fused masked-token loss never forms.
    model = AutoModelForPreTraining.from_pretrained(model_dir, masked_token_loss_implementation="torch").to(
        device
    )
    tokenizer = load_tokenizer(model_dir if (model_dir / "tokenizer_config.json").is_file() else None)
    dataset = load_pretraining_split(data_dir, split)
    return cloze_accuracy(model, tokenizer, dataset, batch_size=batch_size, max_examples=max_examples)


@torch.no_grad()
def cloze_accuracy(
    model: ErnieVilForPreTraining,
    tokenizer,
    dataset,
    batch_size: int = 64,
    max_examples: int | None = None,
    node_types: tuple[str, ...] = tuple(NODE_TYPE_NAMES.values()),
) -> dict:
    """Top-1/top-5 accuracy per node type with the true and with a mismatched image.

    Each scene-graph node of ``node_types`` in the first ``max_examples`` examples is masked in turn, alone
    (a type left out scores count 0). A node counts as right at top-k only when every one of its
    WordPieces is (for a relation such as "on top of", all three). The model runs in eval mode on the device
    its parameters are on, and is left in the mode it came in.

    Returns:
        ``{"true_image": {type: {"top1", "top5", "count"}}, "mismatched_image": {...},
        "gap_top1": {type: true - mismatched}}``.
    """
    was_training = model.training
    model.eval()
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    count = len(dataset) if max_examples is None else min(max_examples, len(dataset))
    tasks = [
        (i, k)
        for i in range(count)
        for k, node_type in enumerate(dataset[i]["node_types"])
        if NODE_TYPE_NAMES[int(node_type)] in node_types
    ]
    hits = {c: {t: [0, 0, 0] for t in NODE_TYPE_NAMES.values()} for c in CONDITIONS}  # top1, top5, count
    for start in tqdm(range(0, len(tasks), batch_size), desc="cloze", leave=False):
        chunk = tasks[start : start + batch_size]
        examples = [dataset[i] for i, _ in chunk]
        nodes = [k for _, k in chunk]
        for condition in CONDITIONS:
            images = (
                None
                if condition == "true_image"
                else [dataset[_mismatched_partner(dataset, i)] for i, _ in chunk]
            )
            batch, targets = collate_cloze(examples, nodes, tokenizer, image_examples=images)
            batch = batch_to_device(batch, device, dtype)
            logits = model(**batch).masked_token_logits  # (N, V), rows in (example, position) order
            labels = batch["labels"][batch["labels"] != -100]  # (N,)
            for target, (top1, top5) in zip(targets, node_hits(logits, labels, targets)):
                tally = hits[condition][NODE_TYPE_NAMES[target["node_type"]]]
                tally[0] += top1
                tally[1] += top5
                tally[2] += 1
    model.train(was_training)
    results = {
        c: {
            t: {"top1": a / n if n else 0.0, "top5": b / n if n else 0.0, "count": n}
            for t, (a, b, n) in v.items()
        }
        for c, v in hits.items()
    }
    results["gap_top1"] = {
        t: results["true_image"][t]["top1"] - results["mismatched_image"][t]["top1"]
        for t in NODE_TYPE_NAMES.values()
    }
    return results


def format_cloze_table(results: dict) -> str:
    """A plain-text table: one row per node type, top-1/top-5 with each image, and the top-1 gap."""
    lines = [
        "Cloze accuracy (each scene-graph node masked in turn)",
        f"{'node':<10} {'count':>6}  {'true top1':>9} {'true top5':>9}  {'mism top1':>9} {'mism top5':>9}  {'gap top1':>8}",
    ]
    for node in NODE_TYPE_NAMES.values():
        true, mism = results["true_image"][node], results["mismatched_image"][node]
        lines.append(
            f"{node:<10} {true['count']:>6}  {true['top1']:>9.3f} {true['top5']:>9.3f}  "
            f"{mism['top1']:>9.3f} {mism['top5']:>9.3f}  {results['gap_top1'][node]:>+8.3f}"
        )
    return "\n".join(lines)


def run_cloze_per_checkpoint(
    run_dir: str | Path, data_dir: str | Path, device: str | torch.device | None = None, **cloze_options
) -> dict[int, dict]:
    """The cloze (``run_cloze``) at every complete checkpoint of a pretraining run, by step: when along
    training do objects, attributes and relations start to use the image?

    Each checkpoint is exported to a temporary Hugging Face directory with DeepSpeed's ``zero_to_fp32``, as
    ``ernievil-ds export`` does. Train with ``--save-every N --keep-checkpoints K`` to keep the points.

    Raises:
        FileNotFoundError: when the run holds no complete checkpoint.
    """
    from ernievil_ds.pretraining.export import export_checkpoint
    from ernievil_ds.runs import RunFolder, complete_checkpoints

    checkpoints_dir = RunFolder(Path(run_dir)).checkpoints_dir
    checkpoints = complete_checkpoints(checkpoints_dir)
    if not checkpoints:
        raise FileNotFoundError(f"{checkpoints_dir} holds no complete checkpoint")
    curve = {}
    with tempfile.TemporaryDirectory() as tmp:
        for step, tag_dir in tqdm(checkpoints, desc="checkpoints"):
            hf_dir = export_checkpoint(tag_dir, Path(tmp) / tag_dir.name)
            curve[step] = run_cloze(hf_dir, data_dir, device=device, **cloze_options)
    return curve


def format_cloze_curve(curve: dict[int, dict]) -> str:
    """A Markdown table: one row per checkpoint step, top-1 with the true image (and the gap) per node type."""
    types = list(NODE_TYPE_NAMES.values())
    lines = ["| step | " + " | ".join(types) + " |", "| ---: |" + " ---: |" * len(types)]
    for step, results in curve.items():
        cells = [f"{results['true_image'][t]['top1']:.3f} ({results['gap_top1'][t]:+.3f})" for t in types]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
