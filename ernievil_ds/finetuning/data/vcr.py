"""VCR (Q->A and QA->R) from the official annotations and ViLBERT's feature LMDBs.

**Annotations** (``reader/vcr_finetuning.py``, ``_load_annotationsQ_A`` and ``_load_annotationsQA_R``): JSON
lines with ``annot_id`` ("val-12"), ``img_id`` ("val-34"), ``objects`` (the detector class of each tagged
object), ``question``, ``answer_choices`` and ``rationale_choices`` (four each), ``answer_label`` and
``rationale_label`` (absent in the test split). Texts are lists of tokens, each a word or a list of object
indices (a tag). As ``VCRDataReader.replace_det_with_name`` does, a tag becomes the names of its objects one
after the other: a ``person`` gets a name drawn from the unisex names table (``unisex_names_table.csv``,
its second column without the header ``name``), any other object its class name. The official reader
draws the names once per item (``generate_random_name``) with Python's global ``random``; here each item's
generator is seeded by (``seed``, its ``annot_id``), so that a reimport writes the same text.

**Features** (``reader/_image_features_reader.py``): an LMDB of detected regions and one of ground-truth
boxes, each row keyed by the image id converted as ``_converId`` converts it (train-N -> N, val-N ->
N + 1000000, test-N -> N + 2000000), each a pickled dict ``image_id, image_h, image_w, num_boxes, boxes,
features`` (base64 float32 (num_boxes, 4) pixel x1, y1, x2, y2 and (num_boxes, 2048)), which
``data/region_features.py`` decodes after the restricted unpickler of ``data/safe_pickle.py`` has read it
(a row that refers to any global outside numpy's arrays and Python's builtins is refused, never run). The
regions are merged as ``VCRDataReader.parse_line`` merges them with ``use_gt_fea`` (``conf/vcr``): with
``max_regions`` M counting [IMG] (100 in the official reader with ground truth, 37 without), the first
min(M - 1, G) ground-truth boxes are kept, the first min(M - 1 - kept, D) detected ones before them. The
[IMG] feature is the official one, stored per image (``img_feature``) and fed to the model as
``img_features``: the mean of each set over all its regions (not only the kept ones), weighted by the
set's size plus one (``_image_features_reader`` counts [IMG] in ``num_boxes``). Only the images of the
split's items are imported.

Examples table (``DIR/examples``), one row per item; one table serves both tasks:

| column | type | meaning |
| --- | --- | --- |
| ``annot_id`` | string | |
| ``image_id`` | string | the converted image id, key into ``DIR/images`` |
| ``question`` | string | tags replaced by names |
| ``answer_choices``, ``rationale_choices`` | list<string> (4) | tags replaced by the same names |
| ``answer_label``, ``rationale_label`` | int32 | the right choices; -1 in the test split |
| ``question_ids`` | list<int32> | the question's WordPieces, without [CLS] or [SEP] |
| ``answer_ids``, ``rationale_ids`` | list<list<int32>> | each choice's WordPieces |
"""

from __future__ import annotations

import csv
import functools
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from datasets import Features, List, Value

from ernievil_ds.data.prepare import describe_inputs
from ernievil_ds.data.region_features import decode_region_record, lmdb_row, open_feature_lmdb
from ernievil_ds.data.tokenization import load_tokenizer
from ernievil_ds.errors import UserError, require_output_dir
from ernievil_ds.finetuning.data.collate import group, pad_images, pad_tokens
from ernievil_ds.finetuning.data.dataset import FineTuningDataset, load_examples
from ernievil_ds.finetuning.data.tables import (
    FineTuningImportReport,
    require_image,
    tokenize,
    write_examples,
    write_images,
    written_image_ids,
)

EXAMPLE_FEATURES = Features(
    {
        "annot_id": Value("string"),
        "image_id": Value("string"),
        "question": Value("string"),
        "answer_choices": List(Value("string")),
        "rationale_choices": List(Value("string")),
        "answer_label": Value("int32"),
        "rationale_label": Value("int32"),
        "question_ids": List(Value("int32")),
        "answer_ids": List(List(Value("int32"))),
        "rationale_ids": List(List(Value("int32"))),
    }
)
NUM_CHOICES = 4
#: The official reader's ``max_region_num`` with and without the ground-truth LMDB.
MAX_REGIONS_WITH_GROUND_TRUTH = 100
MAX_REGIONS_DETECTED_ONLY = 37
#: The official confs' maximum text length per task (``conf/vcr/task_vcr.json``).
MAX_TEXT_LENGTH = {"q2a": 60, "qa2r": 80}
_SPLIT_OFFSETS = {"train": 0, "val": 1_000_000, "test": 2_000_000}


def converted_image_id(img_id: str) -> str:
    """The LMDB key of a VCR image, as ``_converId``: "val-34" -> "1000034".

    Raises:
        ValueError: an id of another form.
    """
    split, _, number = img_id.partition("-")
    offset = next((value for name, value in _SPLIT_OFFSETS.items() if name in split), None)
    if offset is None or not number.isdigit():
        raise ValueError(f"img_id {img_id!r} is not <split>-<number> with a train, val or test split")
    return str(int(number) + offset)


def read_names(path: str | Path) -> list[str]:
    """The names of the unisex names table: the second column of each row but the header (``name``).

    Raises:
        FileNotFoundError: a missing file. UserError: a table without names.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"names table {path} does not exist")
    with path.open(newline="", encoding="utf-8") as file:
        names = [row[1] for row in csv.reader(file) if len(row) > 1 and row[1] != "name"]
    if not names:
        raise UserError(f"names table {path} has no names in its second column")
    return names


def item_names(objects: list[str], names: list[str], seed: int, annot_id: str) -> list[str]:
    """The word each tagged object becomes: a drawn name for a ``person``, its class name otherwise."""
    rng = np.random.default_rng([seed, zlib.crc32(annot_id.encode())])
    return [names[int(rng.integers(len(names)))] if name == "person" else name for name in objects]


def tagged_text(tokens: list, object_names: list[str]) -> str:
    """A VCR text (words and tags) as one string, each tag replaced by its objects' names."""
    words = []
    for token in tokens:
        if isinstance(token, list):
            for index in token:
                if not isinstance(index, int) or not 0 <= index < len(object_names):
                    raise ValueError(f"tag {token} names no object (the item has {len(object_names)})")
                words.append(object_names[index])
        elif isinstance(token, str):
            words.append(token)
        else:
            raise ValueError(f"token {token!r} is neither a word nor a tag")
    return " ".join(words)


def _read_items(paths: list[Path]) -> Iterator[tuple[str, dict]]:
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"VCR annotations {path} do not exist")
        with path.open(encoding="utf-8", errors="replace") as file:
            for n, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as error:
                    yield f"{path.name}:{n}", {"error": f"not JSON ({error})"}
                    continue
                if not isinstance(item, dict):
                    yield f"{path.name}:{n}", {"error": "not a JSON object"}
                    continue
                yield str(item.get("annot_id") or f"{path.name}:{n}"), item


def _label(item: dict, key: str) -> int:
    label = item.get(key, -1)
    if not isinstance(label, int) or not -1 <= label < NUM_CHOICES:
        raise ValueError(f"{key} {label!r} is not a choice index")
    return label


def _item(raw: dict, names: list[str], seed: int, known_images: set[str], image_reason) -> dict:
    if "error" in raw:
        raise ValueError(raw["error"])
    missing = [
        key for key in ("annot_id", "img_id", "objects", "question", "answer_choices") if key not in raw
    ]
    if missing or "rationale_choices" not in raw:
        raise ValueError(f"missing field(s) {', '.join(missing or ['rationale_choices'])}")
    for key in ("answer_choices", "rationale_choices"):
        if not isinstance(raw[key], list) or len(raw[key]) != NUM_CHOICES:
            raise ValueError(f"{key} is not a list of {NUM_CHOICES} texts")
    image_id = converted_image_id(str(raw["img_id"]))
    require_image(image_id, known_images, lambda: image_reason(image_id))
    object_names = item_names([str(o) for o in raw["objects"]], names, seed, str(raw["annot_id"]))
    return {
        "annot_id": str(raw["annot_id"]),
        "image_id": image_id,
        "question": tagged_text(raw["question"], object_names),
        "answer_choices": [tagged_text(choice, object_names) for choice in raw["answer_choices"]],
        "rationale_choices": [tagged_text(choice, object_names) for choice in raw["rationale_choices"]],
        "answer_label": _label(raw, "answer_label"),
        "rationale_label": _label(raw, "rationale_label"),
    }


def _build_columns(records: list[dict], tokenizer) -> dict[str, list]:
    columns = {name: [r[name] for r in records] for name in EXAMPLE_FEATURES if not name.endswith("_ids")}
    columns["question_ids"] = tokenize(tokenizer, columns["question"], special_tokens=False)
    for key, choices in (("answer_ids", "answer_choices"), ("rationale_ids", "rationale_choices")):
        flat = tokenize(
            tokenizer, [text for texts in columns[choices] for text in texts], special_tokens=False
        )
        columns[key] = [flat[i : i + NUM_CHOICES] for i in range(0, len(flat), NUM_CHOICES)]
    return columns


# --- features ---------------------------------------------------------------------------------------------


class FeatureLmdbs:
    """The detected-region LMDB and, optionally, the ground-truth one, read by key.

    Raises (on opening):
        FileNotFoundError: a missing path. UserError: a path that is not an LMDB.
    """

    def __init__(self, detected: Path, ground_truth: Path | None) -> None:
        self.paths = [p for p in (detected, ground_truth) if p is not None]
        self.envs = [open_feature_lmdb(path) for path in self.paths]

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def rows(self, key: str) -> list[dict]:
        """Each LMDB's row of ``key``, unpickled by ``safe_pickle``, or an error record naming the LMDB."""
        rows = []
        for path, env in zip(self.paths, self.envs):
            with env.begin(write=False) as txn:
                value = txn.get(key.encode())
            if value is None:
                rows.append({"error": f"image {key} is missing from LMDB {path.name}"})
            else:
                rows.append(lmdb_row(value, source=f"LMDB {path.name} record {key}"))
        return rows


def official_img_feature(detected: np.ndarray, ground_truth: np.ndarray | None) -> np.ndarray:
    """The official VCR reader's [IMG] feature (2048,) from all D detected (D, 2048) and G ground-truth
    (G, 2048) features: their means weighted by D + 1 and G + 1 (``parse_line`` with ``use_gt_fea``), or the
    detected mean alone. A set with no region has a zero mean rather than the official division by zero."""
    sets = [detected] if ground_truth is None else [detected, ground_truth]
    means = [np.asarray(s, np.float32).sum(0) / max(len(s), 1) for s in sets]  # each (2048,)
    weights = [len(s) + 1 for s in sets] if ground_truth is not None else [1]
    return sum(w * m for w, m in zip(weights, means)) / sum(weights)


def merge_regions(detected: dict, ground_truth: dict | None, max_regions: int) -> dict:
    """One image record from decoded detected and ground-truth records: the first min(M - 1 - G', D)
    detected regions then the first G' = min(M - 1, G) ground-truth ones, M = ``max_regions`` counting
    [IMG] (``VCRDataReader.parse_line``), and the official ``img_feature`` of all of them."""
    record = {key: detected[key] for key in ("image_id", "width", "height")}
    record["img_feature"] = official_img_feature(
        detected["features"], None if ground_truth is None else ground_truth["features"]
    )
    kept_gt = 0 if ground_truth is None else min(max_regions - 1, len(ground_truth["boxes"]))
    kept_detected = min(max_regions - 1 - kept_gt, len(detected["boxes"]))
    for key in ("boxes", "features"):
        parts = [detected[key][:kept_detected]]
        if ground_truth is not None:
            parts.append(ground_truth[key][:kept_gt])
        record[key] = np.concatenate(parts)
    return record


def _merged_image(raw: dict, max_regions: int) -> dict:
    """The image record of ``{"key": ..., "rows": FeatureLmdbs.rows(key)}``; ValueError when a row is
    missing, refused or malformed."""
    decoded = [decode_region_record(row | {"image_id": raw["key"]}) for row in raw["rows"]]
    return merge_regions(decoded[0], decoded[1] if len(decoded) > 1 else None, max_regions)


def _image_items(keys: list[str], lmdbs: FeatureLmdbs) -> Iterator[tuple[str, dict]]:
    for key in keys:
        yield key, {"key": key, "rows": lmdbs.rows(key)}


def _needed_images(paths: list[Path]) -> list[str]:
    """The converted image ids of the items, in order of first use (malformed items left to the examples
    pass, which reports them)."""
    keys: dict[str, None] = {}
    for _, item in _read_items(paths):
        try:
            keys[converted_image_id(str(item.get("img_id", "")))] = None
        except ValueError:
            continue
    return list(keys)


# --- import -----------------------------------------------------------------------------------------------


def import_vcr(
    annotations: list[str | Path],
    features: list[str | Path],
    output_dir: str | Path,
    *,
    names: str | Path,
    max_regions: int | None = None,
    seed: int = 0,
    tokenizer: str | None = None,
    shard_size: int = 1000,
) -> FineTuningImportReport:
    """Import a VCR split into ``output_dir``: its images' regions from the LMDBs, its items.

    Args:
        annotations: the split's JSON-lines files.
        features: the detected-region LMDB, optionally followed by the ground-truth LMDB.
        names: the unisex names table that ``person`` tags draw their names from.
        max_regions: regions per image counting [IMG]; default 100 with ground truth, 37 without.
        seed: seeds each item's draw of names, with its ``annot_id``.

    Raises:
        FileNotFoundError: a missing input. UserError: not one or two LMDBs, a path that is not an LMDB,
        an empty names table, an output holding another import, or an import of zero rows.
    """
    paths, output_dir = [Path(p) for p in annotations], require_output_dir(Path(output_dir))
    if len(features) not in (1, 2):
        raise UserError(
            f"VCR takes the detected-region LMDB and optionally the ground-truth one, got {len(features)} paths"
        )
    if max_regions is None:
        max_regions = MAX_REGIONS_WITH_GROUND_TRUTH if len(features) == 2 else MAX_REGIONS_DETECTED_ONLY
    if max_regions < 2:
        raise UserError(f"max_regions counts [IMG] and must be at least 2, got {max_regions}")
    name_list, feature_paths = read_names(names), [Path(p) for p in features]
    lmdbs = FeatureLmdbs(feature_paths[0], feature_paths[1] if len(feature_paths) > 1 else None)
    source = {
        "task": "vcr",
        "format": "official-vcr",
        "inputs": describe_inputs([*paths, *feature_paths, Path(names)]),
        "max_regions": max_regions,
    }
    merge = functools.partial(_merged_image, max_regions=max_regions)
    try:
        images = write_images(
            _image_items(_needed_images(paths), lmdbs),
            merge,
            lambda raw: raw["key"],
            output_dir,
            source=source,
            shard_size=shard_size,
            with_img_feature=True,
        )
        decode = functools.partial(
            _item,
            names=name_list,
            seed=seed,
            known_images=written_image_ids(output_dir),
            image_reason=lambda key: merge({"key": key, "rows": lmdbs.rows(key)}),
        )
        examples = write_examples(
            _read_items(paths),
            decode,
            functools.partial(_build_columns, tokenizer=load_tokenizer(tokenizer)),
            output_dir,
            features=EXAMPLE_FEATURES,
            source=source | {"seed": seed, "tokenizer": tokenizer},
            shard_size=shard_size,
        )
    finally:
        lmdbs.close()
    return FineTuningImportReport(examples, images)


# --- reading back -----------------------------------------------------------------------------------------


def load_vcr(data_dir: str | Path) -> FineTuningDataset:
    """The imported VCR split in ``data_dir``, items joined with their images."""
    return load_examples(data_dir, "vcr")


def truncate_pair(first: list[int], second: list[int], max_tokens: int) -> None:
    """Drop tokens from the end of the longer list (the second on a tie) until both hold ``max_tokens``
    together, in place (``VCRDataReader._truncate_seq_pair``)."""
    while len(first) + len(second) > max_tokens:
        (first if len(first) > len(second) else second).pop()


def choice_tokens(
    first: list[int], choices: list[list[int]], max_length: int, cls_token_id: int, sep_token_id: int
) -> tuple[list[list[int]], list[list[int]]]:
    """``[CLS] first [SEP] choice [SEP]`` and its segment ids (0 up to the first [SEP], 1 after) per choice,
    cut to ``max_length``. As in the official ``tokenize``, ``first`` is cut in place for each choice in
    turn, so that a cut made for one choice stays for the next."""
    first, sequences, segments = list(first), [], []
    for choice in choices:
        second = list(choice)
        truncate_pair(first, second, max_length - 3)
        sequences.append([cls_token_id, *first, sep_token_id, *second, sep_token_id])
        segments.append([0] * (len(first) + 2) + [1] * (len(second) + 1))
    return sequences, segments


def collate_vcr(
    examples: list[dict],
    task: str = "q2a",
    max_length: int | None = None,
    answers: list[int] | None = None,
    pad_token_id: int = 0,
    cls_token_id: int = 101,
    sep_token_id: int = 102,
) -> dict[str, torch.Tensor]:
    """The VCR head's inputs from ``FineTuningDataset`` items, the choices second: ``input_ids``,
    ``attention_mask``, ``token_type_ids`` (B, 4, T), the image inputs of ``collate.pad_images`` repeated per
    choice, (B, 4, R, ...), and ``labels`` (B,) (-1 in the test split).

    Args:
        task: "q2a" (``[CLS] question [SEP] answer [SEP]``) or "qa2r" (``[CLS] question [SEP] answer [SEP]
            rationale [SEP]``, with the right answer, or the answers given).
        max_length: tokens per choice; default the official conf's (60 for q2a, 80 for qa2r).
        answers: (B,) the answer each QA->R item is asked with, e.g. the model's Q->A choice in the test
            split, which has no answer label.
        cls_token_id, sep_token_id: the tokenizer's (BERT uncased by default).
    """
    if task not in MAX_TEXT_LENGTH:
        raise ValueError(f"VCR task {task!r} is unknown; expected one of {tuple(MAX_TEXT_LENGTH)}")
    max_length = max_length or MAX_TEXT_LENGTH[task]
    sequences, segments, labels = [], [], []
    for i, example in enumerate(examples):
        first, choices = example["question_ids"], example["answer_ids"]
        if task == "qa2r":
            answer = example["answer_label"] if answers is None else answers[i]
            if answer < 0:
                raise ValueError(
                    f"item {example['annot_id']} has no answer label: give the answers to ask with"
                )
            first, choices = [*first, sep_token_id, *example["answer_ids"][answer]], example["rationale_ids"]
        item_sequences, item_segments = choice_tokens(first, choices, max_length, cls_token_id, sep_token_id)
        sequences += item_sequences
        segments += item_segments
        labels.append(example["answer_label" if task == "q2a" else "rationale_label"])
    tokens = group(pad_tokens(sequences, pad_token_id, segments), len(examples))
    images = pad_images([e["image"] for e in examples])
    repeated = {name: t.unsqueeze(1).expand(-1, NUM_CHOICES, *t.shape[1:]) for name, t in images.items()}
    return tokens | repeated | {"labels": torch.tensor(labels, dtype=torch.long)}
