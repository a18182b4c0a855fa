"""The table-driven attribute ruler annotates exactly like spaCy's own."""

from __future__ import annotations

import spacy

from ernievil_ds.scene_graph.fast_attributes import FACTORY_NAME
from ernievil_ds.scene_graph.parser import UNUSED_COMPONENTS

AWKWARD = [
    "I ain't doin' nothin' but  waiting",
    "It is hers; you gave it to me.",
    "Y'all gonna let 's go , c'mon",
    "There's a dog that's big and he didn't bark",
    "   ",
    "",
]


def test_same_pos_morph_and_lemma_as_the_stock_attribute_ruler(parser, dev_set):
    assert FACTORY_NAME in parser.nlp.pipe_names
    stock = spacy.load(parser.spacy_model, exclude=list(UNUSED_COMPONENTS))
    texts = [example["caption"] for example in dev_set] + AWKWARD
    for ours, reference in zip(parser.nlp.pipe(texts), stock.pipe(texts)):
        got = [(t.pos_, str(t.morph), t.lemma_) for t in ours]
        expected = [(t.pos_, str(t.morph), t.lemma_) for t in reference]
        assert got == expected, ours.text
