"""synth_qa: visual questions on SynthScenes, answered from each scene's gold objects, for a fine-tuning
run that needs no download (the CPU demo and the tests).

Four question types, each drawn so that the question alone tells little:

- ``colour``: "what colour is the cube?" -> one of the 8 colours (drawn uniformly by the generator);
- ``relation``: "what is on the cube?" -> the noun of the one object in that relation to the cube (only
  asked when exactly one object is), one of the 10 nouns;
- ``yes_no``: "is the lamp on the cube?" -> "yes" for the pair's relation, "no" for another relation
  drawn at random, half and half;
- ``count``: "how many red objects are there?" -> "0", "1" or "2", each the answer to a third of the count
  questions of a set of scenes (``balanced_count_questions``): per scene "0" is almost always askable
  (most colours are absent) and "2" in a third of the scenes, so a count drawn per scene would let the
  question alone answer "0" half the time. A colour on three objects (2% of scenes) is not asked about.

Each scene gets up to one question of each type; answers are VQA soft scores (1 for the right answer, 0
for the others), for the VQA head and metric. Shape legend: N regions of an image, A answers, T tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ernievil_ds.data.synth import (
    COLOURS,
    NOUNS,
    RELATIONS,
    detector_features,
    sample_scene,
    spatial_relation,
)

#: The counts asked about (see the module docstring).
COUNTS = ("0", "1", "2")
#: The answer vocabulary: every colour, every noun, yes and no, every count.
ANSWERS = (*COLOURS, *NOUNS, "yes", "no", *COUNTS)
QUESTION_TYPES = ("colour", "relation", "yes_no", "count")


@dataclass(frozen=True)
class SynthQuestion:
    question: str
    answer: str
    kind: str


def colour_questions(objects) -> list[SynthQuestion]:
    """One "what colour is the <noun>?" per object (nouns are unique within a scene)."""
    return [
        SynthQuestion(f"what colour is the {NOUNS[o.noun]}?", COLOURS[o.colour], "colour") for o in objects
    ]


def relation_questions(objects, image_size: tuple[int, int]) -> list[SynthQuestion]:
    """ "what is <relation> the <noun>?" for each (relation, object) that exactly one other object answers."""
    holders: dict[tuple[str, int], list[int]] = {}
    for s, subject in enumerate(objects):
        for o, obj in enumerate(objects):
            if s != o:
                holders.setdefault((spatial_relation(subject.box, obj.box, image_size), o), []).append(s)
    return [
        SynthQuestion(
            f"what is {relation} the {NOUNS[objects[o].noun]}?", NOUNS[objects[only[0]].noun], "relation"
        )
        for (relation, o), only in holders.items()
        if len(only) == 1
    ]


def yes_no_questions(objects, image_size: tuple[int, int], rng: np.random.Generator) -> list[SynthQuestion]:
    """For each ordered pair of objects, "is the <A> <relation> the <B>?" with its relation (yes) and with
    another relation drawn by ``rng`` (no)."""
    questions = []
    for s, subject in enumerate(objects):
        for o, obj in enumerate(objects):
            if s == o:
                continue
            holds = spatial_relation(subject.box, obj.box, image_size)
            wrong = [r for r in RELATIONS if r != holds][int(rng.integers(len(RELATIONS) - 1))]
            a, b = NOUNS[subject.noun], NOUNS[obj.noun]
            questions.append(SynthQuestion(f"is the {a} {holds} the {b}?", "yes", "yes_no"))
            questions.append(SynthQuestion(f"is the {a} {wrong} the {b}?", "no", "yes_no"))
    return questions


def count_questions(objects, rng: np.random.Generator) -> list[SynthQuestion]:
    """One "how many <colour> objects are there?" per count of ``COUNTS`` that some colour has in the scene
    (0 included), each about a colour with that count drawn by ``rng``."""
    counts = np.bincount([o.colour for o in objects], minlength=len(COLOURS))  # (colours,)
    questions = []
    for count in np.unique(counts[counts < len(COUNTS)]):
        with_count = np.flatnonzero(counts == count)
        colour = COLOURS[int(with_count[int(rng.integers(len(with_count)))])]
        questions.append(SynthQuestion(f"how many {colour} objects are there?", str(count), "count"))
    return questions


def balanced_count_questions(
    candidates: list[list[SynthQuestion]], rng: np.random.Generator
) -> list[SynthQuestion | None]:
    """At most one count question per scene, every answer of ``COUNTS`` that some scene offers given to
    equally many scenes (a set of a few scenes may offer no "2"; it still gets its "0" and "1").

    Args:
        candidates: per scene, its ``count_questions`` (one per askable count).

    Returns:
        per scene, its count question or None. The answers are placed rarest first, each on scenes drawn by
        ``rng`` among those offering it and still free, as many as the rarest answer can have (at most
        a share of the scenes).
    """
    offering = {answer: [] for answer in COUNTS}  # answer -> [(scene, question)]
    for scene, questions in enumerate(candidates):
        for question in questions:
            offering[question.answer].append((scene, question))
    offered = [answer for answer in COUNTS if offering[answer]]
    chosen: list[SynthQuestion | None] = [None] * len(candidates)
    if not offered:
        return chosen
    placed: dict[str, list[int]] = {}
    # No more per answer than the rarest answer has, nor than the scenes can hold with one question each.
    per_answer = min(min(len(offering[answer]) for answer in offered), len(candidates) // len(offered))
    for answer in sorted(offered, key=lambda a: len(offering[a])):
        free = [(scene, q) for scene, q in offering[answer] if chosen[scene] is None]
        picks = rng.permutation(len(free))[:per_answer]
        placed[answer] = [free[i][0] for i in picks]
        for i in picks:
            chosen[free[i][0]] = free[i][1]
    # Scenes taken by rarer answers can leave a later one short: trim every answer to the smallest.
    fewest = min(len(scenes) for scenes in placed.values())
    for scenes in placed.values():
        for scene in scenes[fewest:]:
            chosen[scene] = None
    return chosen


def scene_questions(objects, image_size: tuple[int, int], rng: np.random.Generator) -> list[SynthQuestion]:
    """Up to one colour, relation and yes/no question about a scene, each drawn uniformly among its
    candidates (count questions are drawn over a set of scenes: ``balanced_count_questions``)."""
    candidates_by_type = (
        colour_questions(objects),
        relation_questions(objects, image_size),
        yes_no_questions(objects, image_size, rng),
    )
    return [candidates[int(rng.integers(len(candidates)))] for candidates in candidates_by_type if candidates]


def sample_examples(num_images: int, seed: int, tokenizer) -> list[dict]:
    """The questions of ``num_images`` scenes, with the scenes' region features and boxes.

    Each example holds ``input_ids`` (T,), ``region_features`` (N, 2048) float32, ``region_boxes`` (N, 4),
    ``image_size`` (width, height), ``labels`` (A,) soft scores and ``kind`` (index in QUESTION_TYPES).
    """
    rng = np.random.default_rng(seed)
    scenes, questions, count_candidates = [], [], []
    for _ in range(num_images):
        image_size, objects, _facts = sample_scene(rng)
        attributes = np.array([(o.noun, o.colour, o.size, o.material) for o in objects])
        features, _class_distributions = detector_features(attributes, rng)
        scenes.append((image_size, objects, features))
        questions.append(scene_questions(objects, image_size, rng))
        count_candidates.append(count_questions(objects, rng))
    for asked, count in zip(questions, balanced_count_questions(count_candidates, rng)):
        if count is not None:
            asked.append(count)
    examples = []
    for (image_size, objects, features), asked in zip(scenes, questions):
        for question in asked:
            labels = np.zeros(len(ANSWERS), dtype=np.float32)
            labels[ANSWERS.index(question.answer)] = 1.0
            examples.append(
                {
                    "input_ids": np.array(tokenizer(question.question)["input_ids"], dtype=np.int64),
                    "region_features": features.astype(np.float32),
                    "region_boxes": np.array([o.box for o in objects], dtype=np.float32),
                    "image_size": np.array(image_size, dtype=np.float32),
                    "labels": labels,
                    "kind": QUESTION_TYPES.index(question.kind),
                }
            )
    return examples


#: A fine-tuning run's splits: seed ``s`` draws its training scenes with ``2 s + 1`` and its evaluation
#: scenes with ``2 s + 2``, so no two runs' or splits' scenes share a generator seed.
SPLIT_SEED_OFFSETS = {"train": 1, "eval": 2}


def split_examples(split: str, num_images: int, seed: int, tokenizer) -> list[dict]:
    """``sample_examples`` of a fine-tuning run's ``split`` ("train" or "eval") for its ``seed``."""
    return sample_examples(num_images, seed * 2 + SPLIT_SEED_OFFSETS[split], tokenizer)


def collate_questions(examples: list[dict], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad a list of examples into the VQA model's inputs plus ``labels`` (B, A) and ``meta_kinds`` (B,)."""
    batch, text_len = len(examples), max(len(e["input_ids"]) for e in examples)
    num_regions = max(len(e["region_boxes"]) for e in examples)
    input_ids = torch.full((batch, text_len), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(batch, text_len, dtype=torch.long)
    region_features = torch.zeros(batch, num_regions, examples[0]["region_features"].shape[1])
    region_boxes = torch.zeros(batch, num_regions, 4)
    region_mask = torch.zeros(batch, num_regions, dtype=torch.long)
    for i, example in enumerate(examples):
        tokens, regions = len(example["input_ids"]), len(example["region_boxes"])
        input_ids[i, :tokens] = torch.from_numpy(example["input_ids"])
        attention_mask[i, :tokens] = 1
        region_features[i, :regions] = torch.from_numpy(example["region_features"])
        region_boxes[i, :regions] = torch.from_numpy(example["region_boxes"])
        region_mask[i, :regions] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "region_features": region_features,
        "region_boxes": region_boxes,
        "image_sizes": torch.from_numpy(np.stack([e["image_size"] for e in examples])),
        "region_mask": region_mask,
        "labels": torch.from_numpy(np.stack([e["labels"] for e in examples])),
        "meta_kinds": torch.tensor([e["kind"] for e in examples]),
    }


__all__ = [
    "ANSWERS",
    "QUESTION_TYPES",
    "SynthQuestion",
    "balanced_count_questions",
    "collate_questions",
    "colour_questions",
    "count_questions",
    "relation_questions",
    "sample_examples",
    "scene_questions",
    "split_examples",
    "yes_no_questions",
]
