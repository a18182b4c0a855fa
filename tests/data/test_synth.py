"""SynthScenes: vocabulary, geometry of relations, caption properties, splits, and reuse."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest

from ernievil_ds.data import build_synth_scenes, load_pretraining_split
from ernievil_ds.data.storage import load_detector_class_names
from ernievil_ds.data.synth import (
    COLOURS,
    MATERIALS,
    NOUN_CLASSES,
    NOUNS,
    RELATIONS,
    SIZES,
    detector_class_names,
    generate_split,
    sample_scene,
    spatial_relation,
)


def test_words_are_single_wordpieces(tokenizer):
    for word in NOUNS + COLOURS + SIZES + MATERIALS:
        assert len(tokenizer.tokenize(word)) == 1, word


def test_relations_follow_the_geometry_with_clear_margins():
    rng = np.random.default_rng(1)
    counts = collections.Counter()
    for _ in range(400):
        image, objects, facts = sample_scene(rng)
        assert 2 <= len(objects) <= 4
        assert len({o.noun for o in objects}) == len(objects)  # every mention is grounded by its noun
        for s, o, relation in facts:
            a, b = objects[s].box, objects[o].box
            assert spatial_relation(a, b, image) == relation
            dx = abs(a[0] + a[2] - b[0] - b[2]) / 2
            dy = abs(a[1] + a[3] - b[1] - b[3]) / 2
            assert max(dx, dy) >= 1.5 * min(dx, dy)  # far from the axis boundary
            horizontal = dx > dy
            gap = max(b[0] - a[2], a[0] - b[2]) if horizontal else max(b[1] - a[3], a[1] - b[3])
            assert abs(gap) < 1e-3 or gap >= 0.1 * min(image) - 1e-3  # touching or clearly apart
            counts[relation] += 1
    assert set(counts) == set(RELATIONS)
    assert max(counts.values()) <= 1.35 * min(counts.values()), counts


def test_gold_graph_spans_match_the_caption():
    _, pairs = generate_split("train", 50, seed=3, captions_per_image=3)
    for pair in pairs:
        caption, graph = pair["caption"], pair["scene_graph"]
        for node in graph["objects"] + graph["attributes"] + graph["relations"]:
            assert caption[slice(*node["span"])] == node["name"]


def _masked_words(caption: str, span: list[int], num_masks: int) -> list[str]:
    return (caption[: span[0]] + " [MASK]" * num_masks + caption[span[1] :]).replace(".", " ").split()


def _naive_bayes_accuracy(train: list[tuple[list[str], str]], test: list[tuple[list[str], str]]) -> float:
    """Accuracy of a bag-of-words naive Bayes classifier (add-one smoothing) trained on ``train``."""
    label_counts = collections.Counter(label for _, label in train)
    word_counts = collections.defaultdict(collections.Counter)
    for words, label in train:
        word_counts[label].update(words)
    vocabulary = {w for words, _ in train for w in words}

    def score(words, label):
        total = sum(word_counts[label].values()) + len(vocabulary)
        return math.log(label_counts[label]) + sum(
            math.log((word_counts[label][w] + 1) / total) for w in words
        )

    return float(
        np.mean([max(label_counts, key=lambda c: score(words, c)) == label for words, label in test])
    )


def _cloze_items(pairs, kind: str, tokenizer):
    items = []
    for pair in pairs:
        for node in pair["scene_graph"][kind]:
            if kind == "relations" or node["name"] in COLOURS:
                text = pair["caption"][slice(*node["span"])]
                items.append(
                    (
                        _masked_words(pair["caption"], node["span"], len(tokenizer.tokenize(text))),
                        node["name"],
                    )
                )
    return items


def test_relations_are_single_wordpieces(tokenizer):
    """Span masking keeps a node's WordPiece count: equal counts keep the relation out of the [MASK]s."""
    for relation in RELATIONS:
        assert len(tokenizer.tokenize(relation)) == 1, relation


def test_masked_colour_and_relation_are_not_in_the_text(tokenizer):
    """A text-only classifier does no better than chance on colours, and on relations no better than
    always answering the most frequent relation."""
    _, train = generate_split("train", 700, seed=5, captions_per_image=3)
    _, test = generate_split("eval", 250, seed=5, captions_per_image=3)
    colours_train, colours_test = (
        _cloze_items(train, "attributes", tokenizer),
        _cloze_items(test, "attributes", tokenizer),
    )
    assert _naive_bayes_accuracy(colours_train, colours_test) < 1 / len(COLOURS) + 0.06

    relations_train, relations_test = (
        _cloze_items(train, "relations", tokenizer),
        _cloze_items(test, "relations", tokenizer),
    )
    majority = collections.Counter(label for _, label in relations_train).most_common(1)[0][0]
    majority_accuracy = np.mean([label == majority for _, label in relations_test])
    assert majority_accuracy < 1 / len(RELATIONS) + 0.06
    assert _naive_bayes_accuracy(relations_train, relations_test) < majority_accuracy + 0.06


def _attribute_kind_ceiling(pairs) -> float:
    """The best cloze accuracy on attributes for a model that knows every attribute of every object: it
    must still read from the text which attribute (colour, size or material) the [MASK] stands for, so it
    answers the kind seen most often with the same words around the [MASK] (every other word reduced to
    its kind)."""
    kinds = {
        w: kind
        for kind, words in (("C", COLOURS), ("S", SIZES), ("M", MATERIALS), ("N", NOUNS))
        for w in words
    }
    seen = collections.defaultdict(collections.Counter)
    for pair in pairs:
        for node in pair["scene_graph"]["attributes"]:
            context = tuple(kinds.get(w, w) for w in _masked_words(pair["caption"], node["span"], 1))
            seen[context][kinds[node["name"]]] += 1
    return sum(max(c.values()) for c in seen.values()) / sum(sum(c.values()) for c in seen.values())


def test_the_words_around_a_masked_attribute_say_which_attribute_it_is():
    """Otherwise the truth of the image cannot decide between "a red cube" and "a large cube" for
    "a [MASK] cube", and the cloze would measure guessing instead of seeing."""
    _, pairs = generate_split("train", 700, seed=5, captions_per_image=3)
    assert _attribute_kind_ceiling(pairs) == 1.0


def test_splits_share_no_image_and_load(synth_dir):
    train, evaluation = load_pretraining_split(synth_dir, "train"), load_pretraining_split(synth_dir, "eval")
    assert len(train) == 60 * 3 and len(evaluation) == 20 * 3
    train_images = {train[i]["image_id"] for i in range(len(train))}
    eval_images = {evaluation[i]["image_id"] for i in range(len(evaluation))}
    assert len(train_images) == 60 and len(eval_images) == 20
    assert not train_images & eval_images


def test_detector_class_names_name_the_class_each_region_peaks_at(synth_dir):
    names = load_detector_class_names(synth_dir)
    assert names == detector_class_names() and len(names) == 1601
    assert {k: name for k, name in enumerate(names) if name} == dict(zip(NOUN_CLASSES, NOUNS))
    train = load_pretraining_split(synth_dir, "train")
    for example in train.__getitems__(list(range(0, len(train), 3))):
        peaks = np.asarray(example["cls_prob"], dtype=np.float32).argmax(-1)
        assert all(names[k] for k in peaks)


def test_generation_is_deterministic():
    assert (
        generate_split("train", 20, seed=7, captions_per_image=2)[1]
        == generate_split("train", 20, seed=7, captions_per_image=2)[1]
    )
    assert (
        generate_split("train", 20, seed=7, captions_per_image=2)[1]
        != generate_split("train", 20, seed=8, captions_per_image=2)[1]
    )


def test_build_reuses_a_complete_directory_and_refuses_other_settings(synth_dir, tokenizer):
    stamp = (synth_dir / "images" / "manifest.json").stat().st_mtime_ns
    build_synth_scenes(synth_dir, num_train_images=60, num_eval_images=20, seed=0, tokenizer=tokenizer)
    assert (synth_dir / "images" / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="seed"):
        build_synth_scenes(synth_dir, num_train_images=60, num_eval_images=20, seed=1, tokenizer=tokenizer)


def _graph_key(graph: dict) -> tuple:
    names = [o["name"] for o in graph["objects"]]
    return (
        sorted(names),
        sorted((names[a["object"]], a["name"]) for a in graph["attributes"]),
        sorted((names[r["subject"]], r["name"], names[r["object"]]) for r in graph["relations"]),
    )


def test_parser_recovers_the_gold_graphs():
    from ernievil_ds.assets import default_spacy_pipeline

    try:
        default_spacy_pipeline()
    except OSError as error:
        pytest.skip(str(error))
    from ernievil_ds.scene_graph import SceneGraphParser

    _, pairs = generate_split("eval", 100, seed=11, captions_per_image=3)
    graphs = SceneGraphParser().parse_stream(pair["caption"] for pair in pairs)
    recovered = [_graph_key(pair["scene_graph"]) == _graph_key(graph) for pair, graph in zip(pairs, graphs)]
    assert np.mean(recovered) >= 0.95
