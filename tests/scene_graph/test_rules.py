"""Rule tests on hand-annotated Docs: no statistical model, so each test pins one rule."""

from __future__ import annotations

import inspect

import pytest
import spacy
from spacy.tokens import Doc

from ernievil_ds.scene_graph.component import FACTORY_NAME, SceneGraphComponent, make_scene_graph_component
from ernievil_ds.scene_graph.rules import (
    build_scene_graph,
    find_attributes,
    find_objects,
    find_relations,
    verb_lemma,
)

VOCAB = spacy.blank("en").vocab


def annotated_doc(rows: list[tuple], no_space_after: tuple[int, ...] = ()) -> Doc:
    """A Doc from (word, tag, pos, dep, head index, lemma) rows, as a parser would annotate it."""
    words, tags, pos, deps, heads, lemmas = (list(column) for column in zip(*rows))
    spaces = [i not in no_space_after and i < len(words) - 1 for i in range(len(words))]
    return Doc(VOCAB, words=words, spaces=spaces, tags=tags, pos=pos, deps=deps, heads=heads, lemmas=lemmas)


MAN_HOLDING_RACKET = [
    ("a", "DT", "DET", "det", 1, "a"),
    ("man", "NN", "NOUN", "ROOT", 1, "man"),
    ("holding", "VBG", "VERB", "acl", 1, "hold"),
    ("a", "DT", "DET", "det", 5, "a"),
    ("tennis", "NN", "NOUN", "compound", 5, "tennis"),
    ("racket", "NN", "NOUN", "dobj", 2, "racket"),
]
RED_METAL_CUBE = [
    ("a", "DT", "DET", "det", 3, "a"),
    ("red", "JJ", "ADJ", "amod", 2, "red"),
    ("metal", "NN", "NOUN", "compound", 3, "metal"),
    ("cube", "NN", "NOUN", "ROOT", 3, "cube"),
]
ORANGE_AND_BLACK_SIGN = [
    ("the", "DT", "DET", "det", 4, "the"),
    ("orange", "JJ", "ADJ", "amod", 4, "orange"),
    ("and", "CC", "CCONJ", "cc", 1, "and"),
    ("black", "JJ", "ADJ", "conj", 1, "black"),
    ("sign", "NN", "NOUN", "ROOT", 4, "sign"),
]
SHIRT_IS_RED_AND_WHITE = [
    ("the", "DT", "DET", "det", 1, "the"),
    ("shirt", "NN", "NOUN", "nsubj", 2, "shirt"),
    ("is", "VBZ", "AUX", "ROOT", 2, "be"),
    ("red", "JJ", "ADJ", "acomp", 2, "red"),
    ("and", "CC", "CCONJ", "cc", 3, "and"),
    ("white", "JJ", "ADJ", "conj", 3, "white"),
]
MAN_SITTING_ON_BENCH = [
    ("a", "DT", "DET", "det", 1, "a"),
    ("man", "NN", "NOUN", "ROOT", 1, "man"),
    ("sitting", "VBG", "VERB", "acl", 1, "sit"),
    ("on", "IN", "ADP", "prep", 2, "on"),
    ("a", "DT", "DET", "det", 5, "a"),
    ("bench", "NN", "NOUN", "pobj", 3, "bench"),
]
CUBE_TO_THE_LEFT_OF_BALL = [
    ("the", "DT", "DET", "det", 1, "the"),
    ("cube", "NN", "NOUN", "nsubj", 2, "cube"),
    ("is", "VBZ", "AUX", "ROOT", 2, "be"),
    ("to", "IN", "ADP", "prep", 2, "to"),
    ("the", "DT", "DET", "det", 5, "the"),
    ("left", "NN", "NOUN", "pobj", 3, "left"),
    ("of", "IN", "ADP", "prep", 5, "of"),
    ("the", "DT", "DET", "det", 8, "the"),
    ("ball", "NN", "NOUN", "pobj", 6, "ball"),
]
LAMP_IN_FRONT_OF_WINDOW = [
    ("a", "DT", "DET", "det", 1, "a"),
    ("lamp", "NN", "NOUN", "ROOT", 1, "lamp"),
    ("in", "IN", "ADP", "prep", 1, "in"),
    ("front", "NN", "NOUN", "pobj", 2, "front"),
    ("of", "IN", "ADP", "prep", 3, "of"),
    ("the", "DT", "DET", "det", 6, "the"),
    ("window", "NN", "NOUN", "pobj", 4, "window"),
]
CYLINDER_NEXT_TO_CUBE = [
    ("a", "DT", "DET", "det", 1, "a"),
    ("cylinder", "NN", "NOUN", "ROOT", 1, "cylinder"),
    ("next", "RB", "ADV", "advmod", 1, "next"),
    ("to", "IN", "ADP", "prep", 2, "to"),
    ("a", "DT", "DET", "det", 5, "a"),
    ("cube", "NN", "NOUN", "pobj", 3, "cube"),
]
BEAR_SURROUNDED_BY_TREES = [
    ("a", "DT", "DET", "det", 1, "a"),
    ("bear", "NN", "NOUN", "ROOT", 1, "bear"),
    ("surrounded", "VBN", "VERB", "acl", 1, "surround"),
    ("by", "IN", "ADP", "agent", 2, "by"),
    ("trees", "NNS", "NOUN", "pobj", 3, "tree"),
]
MAN_WITH_HIS_DOG = [
    ("a", "DT", "DET", "det", 1, "a"),
    ("man", "NN", "NOUN", "ROOT", 1, "man"),
    ("with", "IN", "ADP", "prep", 1, "with"),
    ("his", "PRP$", "PRON", "poss", 4, "his"),
    ("dog", "NN", "NOUN", "pobj", 2, "dog"),
]
GIRLS_SHOES = [
    ("the", "DT", "DET", "det", 1, "the"),
    ("girl", "NN", "NOUN", "poss", 3, "girl"),
    ("'s", "POS", "PART", "case", 1, "'s"),
    ("shoes", "NNS", "NOUN", "ROOT", 3, "shoe"),
]
MAN_AND_WOMAN_RIDING_HORSES = [
    ("a", "DT", "DET", "det", 1, "a"),
    ("man", "NN", "NOUN", "nsubj", 5, "man"),
    ("and", "CC", "CCONJ", "cc", 1, "and"),
    ("a", "DT", "DET", "det", 4, "a"),
    ("woman", "NN", "NOUN", "conj", 1, "woman"),
    ("riding", "VBG", "VERB", "ROOT", 5, "rid"),  # the small pipeline's lemma
    ("horses", "NNS", "NOUN", "dobj", 5, "horse"),
]
GLASS_WITH_WATER_IN_IT = [
    ("a", "DT", "DET", "det", 1, "a"),
    ("glass", "NN", "NOUN", "ROOT", 1, "glass"),
    ("with", "IN", "ADP", "prep", 1, "with"),
    ("water", "NN", "NOUN", "pobj", 2, "water"),
    ("in", "IN", "ADP", "prep", 1, "in"),
    ("it", "PRP", "PRON", "pobj", 4, "it"),
]
THERE_IS_A_DOG_ON_THE_COUCH = [  # "on" hangs on the verb here, so the subject comes from "there is"
    ("there", "EX", "PRON", "expl", 1, "there"),
    ("is", "VBZ", "VERB", "ROOT", 1, "be"),
    ("a", "DT", "DET", "det", 3, "a"),
    ("dog", "NN", "NOUN", "attr", 1, "dog"),
    ("on", "IN", "ADP", "prep", 1, "on"),
    ("the", "DT", "DET", "det", 6, "the"),
    ("couch", "NN", "NOUN", "pobj", 4, "couch"),
]
ROPE_THE_MAN_IS_HOLDING = [
    ("the", "DT", "DET", "det", 1, "the"),
    ("rope", "NN", "NOUN", "ROOT", 1, "rope"),
    ("the", "DT", "DET", "det", 3, "the"),
    ("man", "NN", "NOUN", "nsubj", 5, "man"),
    ("is", "VBZ", "AUX", "aux", 5, "be"),
    ("holding", "VBG", "VERB", "relcl", 1, "hold"),
]
A_TSHIRT = [
    ("a", "DT", "DET", "det", 3, "a"),
    ("t", "NN", "NOUN", "compound", 3, "t"),
    ("-", "HYPH", "PUNCT", "punct", 3, "-"),
    ("shirt", "NN", "NOUN", "ROOT", 3, "shirt"),
]


def test_compound_noun_is_one_object_with_both_words_in_its_span():
    doc = annotated_doc(MAN_HOLDING_RACKET)
    objects = find_objects(doc)
    assert [(o.name, doc[o.start : o.end].text) for o in objects] == [
        ("man", "man"),
        ("tennis racket", "tennis racket"),
    ]


def test_material_compound_is_an_attribute_and_adjectives_on_it_reach_the_head():
    doc = annotated_doc(RED_METAL_CUBE)
    objects = find_objects(doc)
    assert [o.name for o in objects] == ["cube"]
    assert sorted(a.name for a in find_attributes(doc, objects)) == ["metal", "red"]


def test_hyphenated_compound_keeps_its_hyphen(readable):
    graph = build_scene_graph(annotated_doc(A_TSHIRT, no_space_after=(1, 2)))
    assert readable(graph)["objects"] == [("t-shirt", "t-shirt")]


def test_coordinated_adjectives_are_two_attributes(readable):
    graph = readable(build_scene_graph(annotated_doc(ORANGE_AND_BLACK_SIGN)))
    assert graph["attributes"] == [("sign", "black", "black"), ("sign", "orange", "orange")]


def test_predicative_coordinated_adjectives_attach_to_the_subject(readable):
    graph = readable(build_scene_graph(annotated_doc(SHIRT_IS_RED_AND_WHITE)))
    assert graph == {
        "objects": [("shirt", "shirt")],
        "attributes": [("shirt", "red", "red"), ("shirt", "white", "white")],
        "relations": [],
    }


def test_verb_and_preposition_make_a_lemma_predicate_spanning_both_words():
    graph = build_scene_graph(annotated_doc(MAN_SITTING_ON_BENCH))
    assert graph["relations"] == [{"subject": 0, "object": 1, "name": "sit on", "span": [6, 16]}]
    assert graph["caption"][6:16] == "sitting on"


@pytest.mark.parametrize(
    "rows, expected",
    [
        (CUBE_TO_THE_LEFT_OF_BALL, ("cube", "left of", "ball", "to the left of")),
        (LAMP_IN_FRONT_OF_WINDOW, ("lamp", "in front of", "window", "in front of")),
        (CYLINDER_NEXT_TO_CUBE, ("cylinder", "next to", "cube", "next to")),
        (THERE_IS_A_DOG_ON_THE_COUCH, ("dog", "on", "couch", "on")),
    ],
)
def test_phrasal_and_copular_prepositions(rows, expected, readable):
    graph = readable(build_scene_graph(annotated_doc(rows)))
    assert graph["relations"] == [expected]
    assert len(graph["objects"]) == 2  # "left", "front" are part of the preposition, not objects


def test_passive_with_agent_is_turned_active(readable):
    graph = readable(build_scene_graph(annotated_doc(BEAR_SURROUNDED_BY_TREES)))
    assert graph["relations"] == [("tree", "surround", "bear", "surrounded")]


def test_possessives_become_have_spanning_the_possessive_word(readable):
    assert ("man", "have", "dog", "his") in readable(build_scene_graph(annotated_doc(MAN_WITH_HIS_DOG)))[
        "relations"
    ]
    assert readable(build_scene_graph(annotated_doc(GIRLS_SHOES)))["relations"] == [
        ("girl", "have", "shoe", "'s")
    ]


def test_with_predicate_setting_names_with_relations():
    doc = annotated_doc(MAN_WITH_HIS_DOG)
    names = {r.name for r in find_relations(doc, find_objects(doc), with_predicate="have")}
    assert names == {"have"}
    assert {r.name for r in find_relations(doc, find_objects(doc))} == {"with", "have"}


def test_coordinated_subjects_share_the_relation_and_the_lemma_is_repaired(readable):
    graph = readable(build_scene_graph(annotated_doc(MAN_AND_WOMAN_RIDING_HORSES)))
    assert graph["relations"] == [("man", "ride", "horse", "riding"), ("woman", "ride", "horse", "riding")]


def test_pronoun_after_with_refers_back_to_the_holder(readable):
    graph = readable(build_scene_graph(annotated_doc(GLASS_WITH_WATER_IN_IT)))
    assert graph["relations"] == [("glass", "with", "water", "with"), ("water", "in", "glass", "in")]


def test_relative_clause_about_its_object(readable):
    graph = readable(build_scene_graph(annotated_doc(ROPE_THE_MAN_IS_HOLDING)))
    assert graph["relations"] == [("man", "hold", "rope", "holding")]


@pytest.mark.parametrize(
    "text, tag, lemma, expected",
    [
        ("riding", "VBG", "rid", "ride"),  # undoubled consonant: the lemma ends in e
        ("ridding", "VBG", "rid", "rid"),
        ("sitting", "VBG", "sit", "sit"),
        ("visiting", "VBG", "visit", "visit"),  # two syllables: no e
        ("lying", "VBG", "lie", "lay"),  # lying/laying are one relation
    ],
)
def test_verb_lemma(text, tag, lemma, expected):
    doc = Doc(VOCAB, words=[text], tags=[tag], pos=["VERB"], lemmas=[lemma], deps=["ROOT"], heads=[0])
    assert verb_lemma(doc[0]) == expected


def test_doc_without_dependencies_is_an_error_not_an_empty_graph():
    doc = Doc(VOCAB, words=["a", "man"], pos=["DET", "NOUN"])
    with pytest.raises(ValueError, match="dependency arcs"):
        SceneGraphComponent()(doc)
    with pytest.raises(ValueError, match="dependency arcs"):
        build_scene_graph(doc)


def test_component_is_registered_with_keyword_only_settings():
    nlp = spacy.blank("en")
    component = nlp.add_pipe(FACTORY_NAME, config={"with_predicate": "have"})
    assert component.with_predicate == "have"
    meta = nlp.get_factory_meta(FACTORY_NAME)
    assert meta.default_config == {"with_predicate": "with"}
    assert {"token.dep", "token.pos"} <= set(meta.requires)
    settings = inspect.signature(make_scene_graph_component).parameters["with_predicate"]
    assert settings.kind is inspect.Parameter.KEYWORD_ONLY
