"""Batches for pretraining: Scene Graph Prediction masking, masked regions and image-text matching.

The masking follows ERNIE-ViL (arXiv 2006.16934) and ViLBERT:

- 30% of each caption's objects, 30% of its attributes and 30% of its relations are chosen, each type on
  its own as in the paper (the rate can differ per type): an object masks its span, an attribute its span
  (its object is kept), a relation its span (both objects are kept); a chosen node's WordPieces all become
  [MASK] (80%), random tokens (10%) or stay (10%);
- 15% of the remaining caption tokens are chosen with the same 80/10/10 split (the only masking with
  ``sgp=False``);
- 15% of the regions are chosen for masked-region classification, and 90% of those are zeroed;
- with ``region_class_names`` (the detector's class names), each region of a matched pair whose most likely
  detector class names exactly one object of the caption gets that object's first WordPiece position as its
  grounding target (``region_word_targets``), unless masking touched the word (not in ERNIE-ViL: the
  grounding loss of the grounded presets, ``ernievil_ds.grounding``);
- with probability 0.5 the image is replaced by another example's image of the batch (image-text matching);
  masking applies to every example alike, so masks reveal nothing about matching (``masked_regions`` marks
  the chosen regions of every pair, so the model's [IMG] mean leaves them out everywhere), but token targets
  are kept on matched pairs only and the model scores masked regions of matched pairs only.

The heads score the labelled tokens and the masked regions of matched pairs at positions that the
collator lists, padded to a capacity fixed by the batch's shape (``add_scored_positions``): no shape in
the step depends on how many were masked, so the host never waits for the device to count them.

Randomness comes from a generator seeded by (seed, epoch, the batch's pair ids): a batch is the same
whichever DataLoader worker builds it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping

import numpy as np
import torch

from ernievil_ds.data.schema import FEATURE_DIM
from ernievil_ds.modeling_ernievil import BOX_TOLERANCE
from ernievil_ds.objectives import IGNORE_INDEX, MLM_TASK_ID, NODE_TYPE_IDS, TOKEN_TASKS


def _pad_text(token_ids: list[np.ndarray], max_len: int | None, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad [CLS] ... [SEP] sequences, truncating the caption (the [SEP] is kept) beyond ``max_len``.

    Returns:
        input_ids (batch_size, num_tokens) int64 and attention_mask (batch_size, num_tokens) int64.
    """
    if max_len is not None:
        token_ids = [
            ids if len(ids) <= max_len else np.append(ids[: max_len - 1], ids[-1]) for ids in token_ids
        ]
    length = max(len(ids) for ids in token_ids)
    input_ids = np.full((len(token_ids), length), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(token_ids), length), dtype=np.int64)
    for i, ids in enumerate(token_ids):
        input_ids[i, : len(ids)] = ids
        attention_mask[i, : len(ids)] = 1
    return input_ids, attention_mask


def check_boxes(image: dict, num_regions: int) -> None:
    """Refuse an image whose first ``num_regions`` boxes are not all x1 <= x2, y1 <= y2 inside it (up to
    ``BOX_TOLERANCE`` of a side), naming the box. The model asserts the same on the device, where it can
    neither stop the host nor say which box.

    Raises:
        ValueError: naming the image, the region, its box and the image's size.
    """
    width, height = image["width"], image["height"]
    boxes = np.asarray(image["boxes"][:num_regions], dtype=np.float32)  # (R, 4)
    corners = boxes / np.array([width, height, width, height], dtype=np.float32)  # (R, 4)
    bad = ((corners < -BOX_TOLERANCE) | (corners > 1 + BOX_TOLERANCE)).any(-1)  # (R,)
    bad |= (corners[:, 2] < corners[:, 0]) | (corners[:, 3] < corners[:, 1])
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"image {image.get('image_id')!r}: region {r}'s box {boxes[r].tolist()} is not an x1 <= x2, "
            f"y1 <= y2 box inside the image of size (width, height) = ({width}, {height})"
        )


def _pack_regions(images: list[dict], max_regions: int | None) -> dict[str, torch.Tensor | None]:
    """Pad the images' regions to the batch's largest count (at most ``max_regions``, [IMG] not counted).

    Returns ``region_features`` (batch_size, num_regions, 2048) float16, ``region_boxes``
    (batch_size, num_regions, 4), ``region_mask`` (batch_size, num_regions), ``image_sizes``
    (batch_size, 2) as (width, height), and ``cls_prob`` (batch_size, num_regions, 1601) float16 when every
    image has a class distribution (else ``None``). Features and class distributions keep the float16 they
    are stored in: widening them is left to the device the batch goes to (``batch_to_device``), which halves
    what the loader copies, pins and sends.
    """
    counts = [
        len(image["boxes"]) if max_regions is None else min(len(image["boxes"]), max_regions)
        for image in images
    ]
    for image, n in zip(images, counts):
        check_boxes(image, n)
    batch_size, num_regions = len(images), max(max(counts), 1)
    features = np.zeros((batch_size, num_regions, FEATURE_DIM), dtype=np.float16)
    boxes = np.zeros((batch_size, num_regions, 4), dtype=np.float32)
    region_mask = np.zeros((batch_size, num_regions), dtype=np.int64)
    with_cls = all(image["cls_prob"] is not None for image in images)
    num_classes = images[0]["cls_prob"].shape[1] if with_cls else 0
    cls_prob = np.zeros((batch_size, num_regions, num_classes), dtype=np.float16) if with_cls else None
    for i, (image, n) in enumerate(zip(images, counts)):
        features[i, :n] = image["features"][:n]
        boxes[i, :n] = image["boxes"][:n]
        region_mask[i, :n] = 1
        if with_cls:
            cls_prob[i, :n] = image["cls_prob"][:n]
    sizes = np.array([[image["width"], image["height"]] for image in images], dtype=np.float32)  # (B, 2)
    return {
        "region_features": torch.from_numpy(features),
        "region_boxes": torch.from_numpy(boxes),
        "region_mask": torch.from_numpy(region_mask),
        "image_sizes": torch.from_numpy(sizes),
        "cls_prob": torch.from_numpy(cls_prob) if with_cls else None,
    }


def _to_batch(
    input_ids, attention_mask, labels, task_ids, regions, masked_regions, region_targets, itm_labels
) -> dict[str, torch.Tensor]:
    """The model's keyword arguments as tensors (region targets: class distributions, else features)."""
    batch = {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention_mask),
        "token_type_ids": torch.zeros(input_ids.shape, dtype=torch.long),
        "region_features": regions["region_features"],
        "region_boxes": regions["region_boxes"],
        "image_sizes": regions["image_sizes"],
        "region_mask": regions["region_mask"],
        "masked_regions": torch.from_numpy(masked_regions),
        "labels": torch.from_numpy(labels),
        "task_ids": torch.from_numpy(task_ids),
        "itm_labels": torch.from_numpy(itm_labels),
    }
    key = "region_class_targets" if regions["cls_prob"] is not None else "region_feature_targets"
    batch[key] = region_targets
    return batch


#: The value a padded position takes in each batch key with a text (T) or region (R) axis, by axis.
_TEXT_PADDING = {"attention_mask": 0, "token_type_ids": 0, "labels": IGNORE_INDEX, "task_ids": IGNORE_INDEX}
_REGION_PADDING = {
    "region_features": 0,
    "region_boxes": 0,
    "region_mask": 0,
    "masked_regions": False,
    "region_class_targets": 0,
    "region_feature_targets": 0,
    "region_word_targets": IGNORE_INDEX,
}


def pad_to_multiple(batch: dict[str, torch.Tensor], multiple: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad the text axis (T) and the region axis (R) of a collated batch to multiples of ``multiple``.

    Padded tokens are [PAD] outside the attention mask and padded regions lie outside ``region_mask``, with
    no target either, so they change no loss; fixed shapes let CUDA graphs and ``torch.compile`` reuse one
    capture. Right padding keeps every text position, so ``region_word_targets`` stay valid.

    Returns:
        the batch with T and R rounded up (the [IMG] the model adds is not counted in R).
    """
    if multiple == 1:
        return batch
    fills = {"input_ids": pad_id, **_TEXT_PADDING}
    num_tokens, num_regions = batch["input_ids"].shape[1], batch["region_mask"].shape[1]
    extra_tokens, extra_regions = -num_tokens % multiple, -num_regions % multiple
    padded = dict(batch)
    for key, value in batch.items():
        if key in fills and extra_tokens:
            padded[key] = torch.nn.functional.pad(value, (0, extra_tokens), value=fills[key])
        elif key in _REGION_PADDING and extra_regions:
            # (B, R) keys pad their last axis; (B, R, D) keys pad the one before it.
            widths = (0, extra_regions) if value.dim() == 2 else (0, 0, 0, extra_regions)
            padded[key] = torch.nn.functional.pad(value, widths, value=_REGION_PADDING[key])
    return padded


#: Capacities are multiples of this: the rows of the heads' matrix products, in whole tensor-core tiles.
CAPACITY_MULTIPLE = 8


def position_capacity(count: int, num_positions: int, share: float | None) -> int:
    """How many rows a head gathers from a batch of ``num_positions`` positions, ``count`` of them masked.

    ``share`` of the positions, rounded up to a multiple of ``CAPACITY_MULTIPLE``, depends on the batch's
    shape alone: a compiled step sees one size. A batch that masks more doubles it until the count fits,
    so the rare batch adds one of a few sizes rather than a size of its own. ``None``: ``count`` exactly.
    """
    if share is None:
        return count
    capacity = CAPACITY_MULTIPLE * max(1, math.ceil(share * num_positions / CAPACITY_MULTIPLE))
    while capacity < count:
        capacity *= 2
    return capacity


def padded_positions(mask: np.ndarray, share: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The True entries of ``mask`` (B, L) as rows padded to ``position_capacity``.

    Returns:
        positions (N,) int64, the flat index b * L + l of each entry in row-major order, then 0; weights
        (N,) float32, 1 for the entries and 0 for the padding.
    """
    flat = np.flatnonzero(mask)
    capacity = position_capacity(len(flat), mask.size, share)
    positions = np.zeros(capacity, dtype=np.int64)
    positions[: len(flat)] = flat
    weights = (np.arange(capacity) < len(flat)).astype(np.float32)
    return torch.from_numpy(positions), torch.from_numpy(weights)


def add_scored_positions(
    batch: dict[str, torch.Tensor], token_share: float | None, region_share: float | None
) -> dict[str, torch.Tensor]:
    """Add the rows the pretraining heads score (see ``ErnieVilForPreTraining.forward``): the labelled
    tokens as ``masked_token_positions`` and ``masked_token_weights``, the masked regions of matched pairs
    as ``masked_region_positions`` and ``masked_region_weights``, each padded to its capacity
    (``position_capacity`` with ``token_share`` of the text positions and ``region_share`` of the regions).

    The positions index the batch's (B, T) and (B, R) grids as they are: pad before, not after.
    """
    labelled = batch["labels"].numpy() != IGNORE_INDEX  # (B, T)
    scored = batch["masked_regions"].numpy() & (batch["itm_labels"].numpy()[:, None] == 1)  # (B, R)
    batch = dict(batch)
    batch["masked_token_positions"], batch["masked_token_weights"] = padded_positions(labelled, token_share)
    batch["masked_region_positions"], batch["masked_region_weights"] = padded_positions(scored, region_share)
    return batch


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


def node_mask_rates(node_mask_prob: float | Mapping[str, float]) -> np.ndarray:
    """The node-masking rate of every token task id (index ``NODE_TYPE_IDS[type]``; 0 for plain tokens).

    Args:
        node_mask_prob: one rate for every node type, or rates by type name (``"object"``, ``"attribute"``,
            ``"relation"``); a type left out keeps the paper's 0.3.

    Raises:
        ValueError: an unknown node type or a rate outside [0, 1].
    """
    if not isinstance(node_mask_prob, Mapping):
        node_mask_prob = dict.fromkeys(NODE_TYPE_IDS, node_mask_prob)
    unknown = set(node_mask_prob) - set(NODE_TYPE_IDS)
    if unknown:
        raise ValueError(
            f"node_mask_prob names unknown node types {sorted(unknown)}; known: {list(NODE_TYPE_IDS)}"
        )
    rates = np.zeros(len(TOKEN_TASKS))
    for node_type, task_id in NODE_TYPE_IDS.items():
        rate = float(node_mask_prob.get(node_type, 0.3))
        _check_probability(f"node_mask_prob[{node_type!r}]", rate)
        rates[task_id] = rate
    return rates


def region_word_targets(
    examples: list[dict],
    region_classes: np.ndarray,
    region_mask: np.ndarray,
    labels: np.ndarray,
    attention_mask: np.ndarray,
    matched: np.ndarray,
    class_words: list[frozenset[str]],
) -> np.ndarray:
    """Each region's grounding target: the text position of the caption object that its detector class names.

    Args:
        examples: the captions' examples (their scene-graph nodes and WordPieces).
        region_classes: (batch_size, num_regions) the most likely detector class of each region.
        region_mask: (batch_size, num_regions) 1 for real regions.
        labels: (batch_size, num_tokens) -100 where the token is not a prediction target.
        attention_mask: (batch_size, num_tokens) 1 for the (possibly truncated) caption's tokens.
        matched: (batch_size,) whether each caption is shown its own image.
        class_words: for every detector class, the lower-cased words that name it (empty: unnamed).

    Returns:
        (batch_size, num_regions) int64: the first WordPiece position of the one object node of the caption
        whose name the region's class has, -100 where there is none (an unmatched pair, no such object, an
        object named twice, a word cut off by truncation or chosen for prediction).
    """
    targets = np.full(region_classes.shape, IGNORE_INDEX, dtype=np.int64)
    lengths = attention_mask.sum(1)
    for i in np.flatnonzero(matched):
        example = examples[i]
        objects: dict[str, np.ndarray | None] = {}  # name -> WordPieces; None when two objects share it
        for node_type, name, pieces in zip(
            example["node_types"], example["node_names"], example["node_wordpieces"]
        ):
            if node_type == NODE_TYPE_IDS["object"] and len(pieces):
                objects[name.lower()] = None if name.lower() in objects else pieces
        for r in np.flatnonzero(region_mask[i]):
            named = [objects.get(word) for word in class_words[region_classes[i, r]]]
            named = [pieces for pieces in named if pieces is not None]
            if len(named) != 1:
                continue
            pieces = named[0]
            if pieces[-1] < lengths[i] - 1 and (labels[i, pieces] == IGNORE_INDEX).all():
                targets[i, r] = pieces[0]
    return targets


class SGPCollator:
    """Collate examples of ``load_pretraining_split`` into a pretraining batch (see the module docstring).

    Returns ``input_ids``, ``attention_mask``, ``token_type_ids`` (batch_size, num_tokens);
    ``region_features`` (batch_size, num_regions, 2048) with masked regions zeroed, ``region_boxes``
    (batch_size, num_regions, 4) pixel x1, y1, x2, y2, ``image_sizes`` (batch_size, 2) (width, height),
    ``region_mask`` and ``masked_regions`` (batch_size, num_regions); ``region_class_targets``
    (batch_size, num_regions, 1601) when the data has detector class distributions, else
    ``region_feature_targets`` (batch_size, num_regions, 2048); ``labels`` and ``task_ids``
    (batch_size, num_tokens), -100 where nothing is predicted; ``itm_labels`` (batch_size,) 1 matched, 0 not;
    with ``region_class_names``, ``region_word_targets`` (batch_size, num_regions) (see ``region_word_targets``);
    the rows the heads score, padded to capacities fixed by the batch's shape: ``masked_token_positions``,
    ``masked_token_weights``, ``masked_region_positions``, ``masked_region_weights`` (see
    ``add_scored_positions``).

    Region features and class targets are float16, as stored (see ``_pack_regions``).

    Args:
        region_class_names: the detector's name of every class (``load_detector_class_names``; "" for a
            class without one; synonyms separated by commas, as in bottom-up attention's objects_vocab.txt).
            The data must then have class distributions.
        pad_to_multiple_of: pad T and R to multiples of this (``pad_to_multiple``); 1 pads to the batch's
            longest only.
        token_capacity, region_capacity: the share of the batch's text positions (B * T) and regions
            (B * R) that the token and region heads gather (``position_capacity``): more than the default
            masking rates mark, on matched pairs only.
    """

    def __init__(
        self,
        tokenizer,
        *,
        sgp: bool = True,
        seed: int = 0,
        node_mask_prob: float | Mapping[str, float] = 0.3,
        token_mask_prob: float = 0.15,
        region_mask_prob: float = 0.15,
        region_zero_prob: float = 0.9,
        itm_negative_prob: float = 0.5,
        max_text_len: int = 40,
        max_regions: int = 100,
        region_class_names: list[str] | None = None,
        pad_to_multiple_of: int = 1,
        token_capacity: float = 0.25,
        region_capacity: float = 0.15,
    ) -> None:
        self.node_mask_rates = node_mask_rates(node_mask_prob)  # (4,) by task id
        for name, value in (
            ("token_mask_prob", token_mask_prob),
            ("region_mask_prob", region_mask_prob),
            ("region_zero_prob", region_zero_prob),
            ("itm_negative_prob", itm_negative_prob),
        ):
            _check_probability(name, value)
        for name, value in (("token_capacity", token_capacity), ("region_capacity", region_capacity)):
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be a share of the batch's positions in (0, 1], got {value}")
        self.token_capacity, self.region_capacity = token_capacity, region_capacity
        if max_text_len < 3:
            raise ValueError(f"max_text_len must leave room for [CLS], a token and [SEP], got {max_text_len}")
        if max_regions < 1:
            raise ValueError(f"max_regions must be >= 1, got {max_regions}")
        if pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
        self.pad_to_multiple_of = pad_to_multiple_of
        self.sgp, self.seed, self.epoch = sgp, seed, 0
        self.token_mask_prob = token_mask_prob
        self.region_mask_prob, self.region_zero_prob = region_mask_prob, region_zero_prob
        self.itm_negative_prob = itm_negative_prob
        self.max_text_len, self.max_regions = max_text_len, max_regions
        self.set_region_class_names(region_class_names)
        self.mask_id, self.pad_id = tokenizer.mask_token_id, tokenizer.pad_token_id
        special = set(tokenizer.all_special_ids)
        self.random_ids = np.array(
            sorted(
                i
                for t, i in tokenizer.get_vocab().items()
                if i not in special and not t.startswith("[unused")
            ),
            dtype=np.int64,
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_region_class_names(self, names: list[str] | None) -> None:
        """Name the detector's classes (see the class docstring) to emit grounding targets; ``None``: none."""
        self.class_words = (
            None
            if names is None
            else [frozenset(w.strip().lower() for w in name.split(",") if w.strip()) for name in names]
        )

    def _generator(self, examples: list[dict]) -> np.random.Generator:
        batch_key = zlib.crc32("\n".join(example["pair_id"] for example in examples).encode())
        return np.random.default_rng([self.seed, self.epoch, batch_key])

    def _swap_images(self, examples: list[dict], rng: np.random.Generator) -> tuple[list[dict], np.ndarray]:
        """Each example's image, or with ``itm_negative_prob`` another image of the batch; and the ITM labels."""
        image_ids = np.array([example["image_id"] for example in examples])
        swap = rng.random(len(examples)) < self.itm_negative_prob
        images = list(examples)
        for i in np.flatnonzero(swap):
            others = np.flatnonzero(image_ids != image_ids[i])
            if len(others) == 0:  # the whole batch shows one image: nothing to swap in
                swap[i] = False
                continue
            images[i] = examples[others[rng.integers(len(others))]]
        return images, (~swap).astype(np.int64)

    def _choose_nodes(self, examples: list[dict], lengths: np.ndarray, rng: np.random.Generator):
        """Choose each caption's nodes of every type at that type's rate: randomised rounding of the count
        makes the rate exact in expectation; nodes cut off by truncation drop out.

        Returns:
            the chosen nodes' WordPieces as rows (num_pieces,) and columns (num_pieces,), each piece's task
            id (num_pieces,) and its node's 80/10/10 draw (num_pieces,), shared by the node's pieces.
        """
        node_rows, node_types, pieces = [], [], []
        for i, example in enumerate(examples):
            for node_type, wordpieces in zip(example["node_types"], example["node_wordpieces"]):
                if len(wordpieces) and wordpieces[-1] < lengths[i] - 1:
                    node_rows.append(i)
                    node_types.append(node_type)
                    pieces.append(wordpieces)
        if not pieces:
            return (np.zeros(0, dtype=np.int64),) * 3 + (np.zeros(0),)
        node_rows, node_types = np.array(node_rows), np.array(node_types, dtype=np.int64)
        groups = node_rows * len(TOKEN_TASKS) + node_types  # one group per (caption, node type)
        per_group = np.bincount(groups, minlength=len(examples) * len(TOKEN_TASKS))  # (B * 4,)
        group_rates = np.tile(self.node_mask_rates, len(examples))  # (B * 4,)
        quota = np.floor(group_rates * per_group + rng.random(len(per_group)))  # (B * 4,)
        order = np.lexsort((rng.random(len(groups)), groups))  # shuffled within each group
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order)) - (np.cumsum(per_group) - per_group)[groups[order]]
        chosen = rank < quota[groups]
        draws = rng.random(len(node_rows))
        piece_node = np.repeat(np.arange(len(pieces)), [len(p) for p in pieces])
        columns = np.concatenate(pieces).astype(np.int64)
        keep = chosen[piece_node]
        piece_node = piece_node[keep]
        return node_rows[piece_node], columns[keep], node_types[piece_node], draws[piece_node]

    def _mask_text(self, examples: list[dict], matched: np.ndarray, rng: np.random.Generator):
        """Token inputs with SGP node masking then random token masking, and the targets on matched pairs.

        Returns:
            input_ids, attention_mask, labels and task_ids, each (batch_size, num_tokens).
        """
        input_ids, attention_mask = _pad_text(
            [e["input_ids"] for e in examples], self.max_text_len, self.pad_id
        )
        original = input_ids.copy()
        lengths = attention_mask.sum(1)  # (B,)
        covered = np.zeros(input_ids.shape, dtype=bool)
        node_task = np.zeros(input_ids.shape, dtype=np.int64)
        draw = rng.random(input_ids.shape)  # 80/10/10 draw of each token, overwritten by its node's
        if self.sgp:
            rows, columns, tasks, node_draws = self._choose_nodes(examples, lengths, rng)
            covered[rows, columns] = True
            node_task[rows, columns] = tasks
            draw[rows, columns] = node_draws
        position = np.arange(input_ids.shape[1])
        in_caption = (position >= 1) & (position < lengths[:, None] - 1)  # (B, T) without [CLS] and [SEP]
        predicted = covered | (in_caption & ~covered & (rng.random(input_ids.shape) < self.token_mask_prob))
        input_ids[predicted & (draw < 0.8)] = self.mask_id
        replaced = predicted & (draw >= 0.8) & (draw < 0.9)
        input_ids[replaced] = self.random_ids[rng.integers(len(self.random_ids), size=int(replaced.sum()))]
        targeted = predicted & matched[:, None]
        labels = np.where(targeted, original, IGNORE_INDEX)
        task_ids = np.where(targeted, np.where(covered, node_task, MLM_TASK_ID), IGNORE_INDEX)
        return input_ids, attention_mask, labels, task_ids

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        rng = self._generator(examples)
        images, itm_labels = self._swap_images(examples, rng)
        input_ids, attention_mask, labels, task_ids = self._mask_text(examples, itm_labels == 1, rng)
        regions = _pack_regions(images, self.max_regions)
        features = regions["region_features"]
        real = regions["region_mask"].numpy() == 1
        chosen = (rng.random(real.shape) < self.region_mask_prob) & real  # (B, R)
        zeroed = chosen & (rng.random(real.shape) < self.region_zero_prob)
        targets = regions["cls_prob"] if regions["cls_prob"] is not None else features.clone()
        features[torch.from_numpy(zeroed)] = 0.0
        batch = _to_batch(input_ids, attention_mask, labels, task_ids, regions, chosen, targets, itm_labels)
        if self.class_words is not None:
            if regions["cls_prob"] is None:
                raise ValueError(
                    "region_class_names were given for grounding targets, but these images have no detector "
                    "class distribution (cls_prob) to name their regions"
                )
            if len(self.class_words) != regions["cls_prob"].shape[-1]:
                raise ValueError(
                    f"{len(self.class_words)} region_class_names for a detector of "
                    f"{regions['cls_prob'].shape[-1]} classes"
                )
            batch["region_word_targets"] = torch.from_numpy(
                region_word_targets(
                    examples,
                    regions["cls_prob"].argmax(-1).numpy(),
                    real,
                    labels,
                    attention_mask,
                    itm_labels == 1,
                    self.class_words,
                )
            )
        batch = pad_to_multiple(batch, self.pad_to_multiple_of, self.pad_id)
        return add_scored_positions(batch, self.token_capacity, self.region_capacity)


def collate_cloze(
    examples: list[dict], node_indices: list[int], tokenizer, image_examples: list[dict] | None = None
):
    """A batch for the cloze analysis: exactly one scene-graph node masked per example, nothing else.

    Args:
        examples: examples of ``load_pretraining_split``.
        node_indices: for each example, the node to mask (an index into its ``node_types``).
        tokenizer: the tokenizer the data was prepared with (for [MASK] and [PAD]).
        image_examples: examples whose images replace the captions' own (the mismatched-image control).

    Returns:
        ``(batch, targets)``: ``batch`` has the ``SGPCollator`` keys with every WordPiece of the node
        [MASK]ed (labels and task ids there), no region masked and ``itm_labels`` all 1, its scored
        positions unpadded (the logits' rows are the nodes' WordPieces in order); ``targets[i]`` is
        a dict with the node's ``node_type``, ``name``, ``text``, ``positions`` and ``token_ids``.

    Raises:
        ValueError: when the lengths differ, or a node index is out of range or has no WordPieces.
    """
    images = examples if image_examples is None else image_examples
    if not len(examples) == len(node_indices) == len(images):
        raise ValueError(
            f"need one node index and one image per example: {len(examples)} examples, "
            f"{len(node_indices)} node indices, {len(images)} images"
        )
    input_ids, attention_mask = _pad_text([e["input_ids"] for e in examples], None, tokenizer.pad_token_id)
    labels = np.full(input_ids.shape, IGNORE_INDEX, dtype=np.int64)
    task_ids = np.full(input_ids.shape, IGNORE_INDEX, dtype=np.int64)
    targets = []
    for i, (example, k) in enumerate(zip(examples, node_indices)):
        if not 0 <= k < len(example["node_types"]) or len(example["node_wordpieces"][k]) == 0:
            raise ValueError(
                f"pair {example['pair_id']!r}: node {k} does not exist or has no WordPieces "
                f"({len(example['node_types'])} nodes)"
            )
        positions = example["node_wordpieces"][k].astype(np.int64)
        start, end = example["node_spans"][k]
        labels[i, positions] = input_ids[i, positions]
        task_ids[i, positions] = int(example["node_types"][k])
        input_ids[i, positions] = tokenizer.mask_token_id
        targets.append(
            {
                "node_type": int(example["node_types"][k]),
                "name": example["node_names"][k],
                "text": example["caption"][start:end],
                "positions": positions.tolist(),
                "token_ids": labels[i, positions].tolist(),
            }
        )
    regions = _pack_regions(images, None)
    masked_regions = np.zeros(regions["region_mask"].shape, dtype=bool)
    region_targets = (
        regions["cls_prob"] if regions["cls_prob"] is not None else regions["region_features"].clone()
    )
    itm_labels = np.ones(len(examples), dtype=np.int64)
    batch = _to_batch(
        input_ids, attention_mask, labels, task_ids, regions, masked_regions, region_targets, itm_labels
    )
    return add_scored_positions(batch, None, None), targets
