"""VQA examples from the official ERNIE-ViL TSV or from the VQA v2 JSON files.

**Official TSV** (``reader/vqa_finetuning.py``, ``VQADataReader.process_vl``): one question per line, nine
tab-separated fields ``question_id, question, labels, scores, image_w, image_h, number_box, boxes,
features``. ``labels`` are '|'-separated indices into the answer list the files were made with
(``data/vqa/trainval_label2ans.pkl``, 3,129 answers), ``scores`` their '|'-separated soft scores; ``boxes``
and ``features`` are base64 float32 arrays (number_box, 4) pixel x1, y1, x2, y2 and (number_box, 2048). The
lines carry no image id: images are keyed by their content (``tables.content_image_id``).

**VQA v2 JSON**: a questions file (``questions``: ``question_id``, ``image_id``, ``question``) and, except
for the test split, an annotations file (``annotations``: ``question_id``, ``multiple_choice_answer`` and the
ten human ``answers``). The answer vocabulary is a given list or the training answers: every
``multiple_choice_answer``, normalised, given as the answer of at least ``min_answer_count`` questions (9
in bottom-up-attention-vqa's ``tools/compute_softscore.py``, which made the 3,129 answers of the official
``trainval_label2ans.pkl``), most frequent first. Each human answer is normalised
(``finetuning/vqa_answers.py``); an answer given by n humans scores min(1, 0.3 n) (``get_score`` of
``compute_softscore.py``: for ten answers this is the VQA accuracy averaged over the ten leave-one-out
subsets). Answers outside the vocabulary get no label; a question with none is kept (it scores 0). Images
are keyed by the COCO image id, as the bottom-up-attention feature TSVs are; ``--images`` imports them.

Examples table (``DIR/examples``), one row per question:

| column | type | meaning |
| --- | --- | --- |
| ``question_id`` | string | |
| ``image_id`` | string | key into ``DIR/images`` |
| ``question`` | string | |
| ``input_ids`` | list<int32> | ``[CLS] question [SEP]`` WordPieces, untruncated |
| ``answer_labels`` | list<int32> | indices into ``DIR/answers.json`` |
| ``answer_scores`` | list<float32> | each label's soft score |
"""

from __future__ import annotations

import functools
import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from datasets import Features, List, Value

from ernievil_ds.data import safe_pickle
from ernievil_ds.data.prepare import describe_inputs, import_region_features
from ernievil_ds.data.tokenization import load_tokenizer
from ernievil_ds.errors import UserError, require_output_dir
from ernievil_ds.finetuning.data.collate import pad_images, pad_tokens, truncate_tokens
from ernievil_ds.finetuning.data.dataset import FineTuningDataset, load_examples
from ernievil_ds.finetuning.data.tables import (
    ANSWERS_FILE,
    FineTuningImportReport,
    content_image_id,
    embedded_image,
    fields_of,
    parse_floats,
    parse_int,
    parse_ints,
    read_tsv_lines,
    require_image,
    tokenize,
    write_examples,
    write_images,
    written_image_ids,
)
from ernievil_ds.finetuning.vqa_answers import normalize_vqa_answer

EXAMPLE_FEATURES = Features(
    {
        "question_id": Value("string"),
        "image_id": Value("string"),
        "question": Value("string"),
        "input_ids": List(Value("int32")),
        "answer_labels": List(Value("int32")),
        "answer_scores": List(Value("float32")),
    }
)
#: Minimum count of a training answer in the vocabulary (``compute_softscore.py``'s ``min_occurence``).
MIN_ANSWER_COUNT = 9
#: The official conf's maximum text length (``conf/vqa/model_conf_vqa``, ``max_seq_len``).
MAX_TEXT_LENGTH = 16
#: The official TSV's fields (``VQADataReader.process_vl``).
TSV_FIELDS = (
    "question_id",
    "question",
    "labels",
    "scores",
    "image_w",
    "image_h",
    "number_box",
    "boxes",
    "features",
)


def answer_soft_score(count: int) -> float:
    """The soft score of an answer given by ``count`` humans: min(1, 0.3 count) (``get_score``)."""
    return min(1.0, 0.3 * count)


def read_answer_list(path: str | Path) -> list[str]:
    """An answer vocabulary: a JSON list, a pickled list (the official ``trainval_label2ans.pkl``, read by
    the restricted unpickler of ``data/safe_pickle.py``), or text with one answer per line.

    Raises:
        FileNotFoundError: a missing file. UserError: no list of distinct strings, or a refused pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"answer list {path} does not exist")
    if path.suffix == ".json":
        answers = json.loads(path.read_text())
    elif path.suffix in (".pkl", ".pickle"):
        try:
            answers = safe_pickle.loads(path.read_bytes(), source=f"answer list {path}")
        except pickle.UnpicklingError as error:
            raise UserError(str(error)) from error
    else:
        answers = path.read_text().splitlines()
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers) or not answers:
        raise UserError(f"answer list {path} does not hold a list of answers (strings)")
    if len(set(answers)) != len(answers):
        raise UserError(f"answer list {path} names an answer twice")
    return answers


def build_answer_vocabulary(annotations: list[dict], min_count: int = MIN_ANSWER_COUNT) -> list[str]:
    """The normalised ``multiple_choice_answer`` of at least ``min_count`` questions, most frequent first
    (ties in order of first appearance)."""
    counts = Counter(normalize_vqa_answer(str(a.get("multiple_choice_answer", ""))) for a in annotations)
    counts.pop("", None)
    return [answer for answer, count in counts.most_common() if count >= min_count]


def answer_targets(human_answers: list[str], answer_index: dict[str, int]) -> tuple[list[int], list[float]]:
    """Labels and soft scores of a question's human answers: each distinct normalised answer in the
    vocabulary, in order of first appearance."""
    counts = Counter(normalize_vqa_answer(answer) for answer in human_answers)
    labels = [answer_index[a] for a in counts if a in answer_index]
    return labels, [answer_soft_score(counts[a]) for a in counts if a in answer_index]


def _build_columns(records: list[dict], tokenizer) -> dict[str, list]:
    columns = {name: [r[name] for r in records] for name in EXAMPLE_FEATURES if name != "input_ids"}
    columns["input_ids"] = tokenize(tokenizer, columns["question"])
    return columns


def _write_answers(output_dir: Path, answers: list[str]) -> None:
    (output_dir / ANSWERS_FILE).write_text(json.dumps(answers))


# --- official TSV -----------------------------------------------------------------------------------------


def _tsv_image_id(fields: list[str]) -> str:
    return content_image_id(*fields[4:9])


def _tsv_image(raw: dict) -> dict:
    fields = fields_of(raw)
    width, height, num_boxes, boxes, features = fields[4:9]
    return embedded_image(
        _tsv_image_id(fields), width, height, parse_int(num_boxes, "number_box"), boxes, features
    )


def _tsv_example(raw: dict, known_images: set[str], num_answers: int) -> dict:
    fields = fields_of(raw)
    question_id, question = fields[0].strip(), fields[1]
    if not question_id or not question.strip():
        raise ValueError("empty question_id or question")
    labels, scores = parse_ints(fields[2], "labels", "|"), parse_floats(fields[3], "scores", "|")
    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} answer labels but {len(scores)} scores")
    unknown = [label for label in labels if not 0 <= label < num_answers]
    if unknown:
        raise ValueError(f"unknown answer label {unknown[0]} (the answer list has {num_answers} answers)")
    image_id = _tsv_image_id(fields)
    require_image(image_id, known_images, lambda: _tsv_image(raw))
    return {
        "question_id": question_id,
        "image_id": image_id,
        "question": question,
        "answer_labels": labels,
        "answer_scores": scores,
    }


def import_official_vqa(
    inputs: list[str | Path],
    output_dir: str | Path,
    *,
    answers: str | Path,
    tokenizer: str | None = None,
    shard_size: int = 10_000,
) -> FineTuningImportReport:
    """Import official ERNIE-ViL VQA TSV files into ``output_dir`` (images, examples, ``answers.json``).

    Args:
        inputs: the TSV files of one split, read one after the other.
        answers: the answer list the labels index (``trainval_label2ans.pkl``, or ``read_answer_list``'s
            other formats).
        tokenizer: a tokenizer path; None for the offline BERT uncased default.
        shard_size: records per shard (the unit of resumption).

    Raises:
        FileNotFoundError: a missing input. UserError: an unusable answer list, an output holding another
        import, or an import of zero rows.
    """
    paths, output_dir = [Path(p) for p in inputs], require_output_dir(Path(output_dir))
    answer_list = read_answer_list(answers)
    source = {"task": "vqa", "format": "official-tsv", "inputs": describe_inputs(paths)}
    images = write_images(
        read_tsv_lines(paths, len(TSV_FIELDS)),
        _tsv_image,
        lambda raw: _tsv_image_id(fields_of(raw)),
        output_dir,
        source=source,
        shard_size=shard_size,
    )
    decode = functools.partial(
        _tsv_example, known_images=written_image_ids(output_dir), num_answers=len(answer_list)
    )
    examples = write_examples(
        read_tsv_lines(paths, len(TSV_FIELDS)),
        decode,
        functools.partial(_build_columns, tokenizer=load_tokenizer(tokenizer)),
        output_dir,
        features=EXAMPLE_FEATURES,
        source=source | {"answers": describe_inputs([Path(answers)]), "tokenizer": tokenizer},
        shard_size=shard_size,
    )
    _write_answers(output_dir, answer_list)
    return FineTuningImportReport(examples, images)


# --- VQA v2 JSON ------------------------------------------------------------------------------------------


def _json_list(path: Path, key: str) -> list[dict]:
    """The top-level list ``key`` of a VQA JSON file.

    Raises:
        FileNotFoundError: a missing file. UserError: a file without that list.
    """
    if not path.is_file():
        raise FileNotFoundError(f"VQA file {path} does not exist")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise UserError(f"{path} has no top-level list {key!r}: it is not a VQA {key} file")
    return data[key]


def _v2_items(questions: list, annotations: dict[str, dict] | None):
    for n, question in enumerate(questions):
        if not isinstance(question, dict):
            yield f"question {n}", {"error": "not a JSON object"}
            continue
        question_id = str(question.get("question_id", ""))
        annotation = None if annotations is None else annotations.get(question_id)
        yield question_id or f"question {n}", {"question": question, "annotation": annotation}


def _v2_example(raw: dict, answer_index: dict[str, int], with_answers: bool) -> dict:
    if "error" in raw:
        raise ValueError(raw["error"])
    question = raw["question"]
    text, image_id = question.get("question"), question.get("image_id")
    if not isinstance(text, str) or not text.strip() or image_id is None or "question_id" not in question:
        raise ValueError("a question needs question_id, image_id and a non-empty question")
    labels, scores = [], []
    if with_answers:
        annotation = raw["annotation"]
        if annotation is None or not isinstance(annotation.get("answers"), list):
            raise ValueError("no annotation with answers for this question")
        humans = [a.get("answer") for a in annotation["answers"] if isinstance(a, dict)]
        if not humans or not all(isinstance(a, str) for a in humans):
            raise ValueError("the annotation's answers are not a list of {'answer': text}")
        labels, scores = answer_targets(humans, answer_index)
    return {
        "question_id": str(question["question_id"]),
        "image_id": str(image_id),
        "question": text,
        "answer_labels": labels,
        "answer_scores": scores,
    }


def import_vqa_v2(
    questions: str | Path,
    output_dir: str | Path,
    *,
    annotations: str | Path | None = None,
    answers: str | Path | None = None,
    min_answer_count: int = MIN_ANSWER_COUNT,
    images: list[str | Path] | None = None,
    image_format: str = "tsv",
    tokenizer: str | None = None,
    shard_size: int = 10_000,
) -> FineTuningImportReport:
    """Import a VQA v2 questions file (and its annotations) into ``output_dir``.

    Args:
        questions, annotations: the split's JSON files; no annotations for the test split.
        answers: an answer list (``read_answer_list``); without it the vocabulary is built from the
            annotations (``build_answer_vocabulary``), as for the training split. Give the training
            split's ``answers.json`` when importing the validation split.
        images: region-feature files of the split's COCO images, imported into ``output_dir/images`` by
            ``data.prepare.import_region_features`` in ``image_format`` (tsv, lmdb or npy); without them,
            import the features with ``prepare_data.py features --output output_dir``.

    Raises:
        FileNotFoundError: a missing file. UserError: no answer list and no annotations, an empty
        vocabulary, an output holding another import, or an import of zero rows.
    """
    output_dir = require_output_dir(Path(output_dir))
    question_list = _json_list(Path(questions), "questions")
    annotation_list = None if annotations is None else _json_list(Path(annotations), "annotations")
    if answers is not None:
        answer_list = read_answer_list(answers)
    elif annotation_list is not None:
        answer_list = build_answer_vocabulary(annotation_list, min_answer_count)
    else:
        raise UserError(
            "VQA v2 without annotations (the test split) needs the training answer list: --answers"
        )
    if not answer_list:
        raise UserError(f"no answer is the answer of {min_answer_count} questions: lower --min-answer-count")
    image_report = None
    if images:
        image_report = import_region_features(image_format, images, output_dir)
    by_question = None
    if annotation_list is not None:
        by_question = {str(a.get("question_id")): a for a in annotation_list if isinstance(a, dict)}
    given = [Path(p) for p in (questions, annotations, answers) if p is not None]
    source = {"task": "vqa", "format": "vqa-v2", "inputs": describe_inputs(given), "tokenizer": tokenizer}
    source["min_answer_count"] = None if answers is not None else min_answer_count
    decode = functools.partial(
        _v2_example,
        answer_index={a: i for i, a in enumerate(answer_list)},
        with_answers=annotation_list is not None,
    )
    examples = write_examples(
        _v2_items(question_list, by_question),
        decode,
        functools.partial(_build_columns, tokenizer=load_tokenizer(tokenizer)),
        output_dir,
        features=EXAMPLE_FEATURES,
        source=source,
        shard_size=shard_size,
    )
    _write_answers(output_dir, answer_list)
    return FineTuningImportReport(examples, image_report)


# --- reading back -----------------------------------------------------------------------------------------


def load_vqa(data_dir: str | Path) -> tuple[FineTuningDataset, list[str]]:
    """The imported VQA split in ``data_dir`` (questions joined with their images) and its answer list."""
    dataset = load_examples(data_dir, "vqa")
    return dataset, json.loads((Path(data_dir) / ANSWERS_FILE).read_text())


def collate_vqa(
    examples: list[dict], num_answers: int, max_length: int | None = MAX_TEXT_LENGTH, pad_token_id: int = 0
) -> dict[str, torch.Tensor]:
    """The VQA head's inputs from ``FineTuningDataset`` examples: ``input_ids``, ``attention_mask``,
    ``token_type_ids`` (B, T) (``[CLS] question [SEP]`` cut to ``max_length``), the image inputs of
    ``collate.pad_images``, and ``labels`` (B, num_answers), each answer's soft score."""
    tokens = pad_tokens([truncate_tokens(e["input_ids"], max_length) for e in examples], pad_token_id)
    labels = np.zeros((len(examples), num_answers), dtype=np.float32)
    for i, example in enumerate(examples):
        labels[i, example["answer_labels"]] = example["answer_scores"]
    return tokens | pad_images([e["image"] for e in examples]) | {"labels": torch.from_numpy(labels)}
