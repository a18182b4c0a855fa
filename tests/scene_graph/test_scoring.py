"""The library's scoring: normalization, both graph formats, and equality with the shared script."""

from __future__ import annotations

import pytest

from ernievil_ds.scene_graph import normalize, score_graphs
from ernievil_ds.scene_graph.scoring import graph_names, graph_tuples
from tests.scripts import load_script


@pytest.mark.parametrize(
    "name, expected",
    [
        ("The two Dogs.", "2 dog"),
        ("a", "a"),  # a lone article stays
        ("glasses", "glass"),
        ("skis", "skis"),  # -is is kept by the scorer's suffix rule
        ("benches", "bench"),
        ("sitting on", "sitting on"),  # verb forms are not undone: parsers must emit lemmas
        ("t-shirt", "t-shirt"),
    ],
)
def test_normalize(name, expected):
    assert normalize(name) == expected


PARSED = {
    "caption": "two men on a bench",
    "objects": [{"name": "man", "span": [4, 7]}, {"name": "bench", "span": [13, 18]}],
    "attributes": [{"object": 0, "name": "2", "span": [0, 3]}],
    "relations": [{"subject": 0, "object": 1, "name": "on", "span": [8, 10]}],
}
GOLD = {"objects": ["men", "bench"], "attributes": [["men", "two"]], "relations": [["men", "on", "bench"]]}


def test_parser_format_is_read_by_name():
    assert graph_names(PARSED) == {
        "objects": ["man", "bench"],
        "attributes": [["man", "2"]],
        "relations": [["man", "on", "bench"]],
    }
    assert graph_tuples(PARSED) == graph_tuples(GOLD)


def test_counts_of_a_partial_match():
    predicted = dict(PARSED, relations=[], attributes=[{"object": 1, "name": "wooden", "span": [0, 0]}])
    scores = score_graphs([predicted, None], [GOLD, {"objects": ["cat"], "attributes": [], "relations": []}])
    assert (scores.objects.tp, scores.objects.fp, scores.objects.fn) == (2, 0, 1)
    assert (scores.attributes.tp, scores.attributes.fp, scores.attributes.fn) == (0, 1, 1)
    assert (scores.relations.tp, scores.relations.fn) == (0, 1)
    assert scores.overall.precision == pytest.approx(2 / 3) and scores.overall.recall == pytest.approx(2 / 5)
    assert scores.captions == 2 and scores.exact_graph_match == 0.0


def test_lengths_must_agree():
    with pytest.raises(ValueError, match="differ in number"):
        score_graphs([PARSED], [GOLD, GOLD])


def test_same_numbers_as_the_shared_scoring_script(dev_set, dev_predictions, scorer_script):
    script = load_script(scorer_script, "score_scene_graphs")
    by_caption = {example["caption"]: graph_names(graph) for example, graph in zip(dev_set, dev_predictions)}
    reference = script.score(dev_set, by_caption.__getitem__)
    ours = score_graphs(dev_predictions, dev_set).to_dict()
    for kind in ("objects", "attributes", "relations", "overall"):
        assert {k: ours[kind][k] for k in ("tp", "fp", "fn")} == {
            k: reference[kind][k] for k in ("tp", "fp", "fn")
        }
        assert ours[kind]["f1"] == pytest.approx(reference[kind]["f1"])
    assert ours["macro_overall_f1"] == pytest.approx(reference["macro_overall_f1"])
    assert ours["exact_graph_match"] == pytest.approx(reference["exact_graph_match"])
