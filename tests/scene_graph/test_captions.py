"""Hand-checked captions through the real pipeline: two or more per phenomenon the parser covers.

Each row gives the objects in order as (name, text under the span), the attributes as (object,
name, text) and the relations as (subject, name, object, text), the text being exactly
``caption[start:end]``.
"""

from __future__ import annotations

import pytest

CAPTIONS = {
    "compound nouns": [
        ("a man holding a tennis racket", [("man", "man"), ("tennis racket", "tennis racket")], [],
         [("man", "hold", "tennis racket", "holding")]),
        ("a parking lot next to a brick building", [("parking lot", "parking lot"), ("building", "building")],
         [("building", "brick", "brick")], [("parking lot", "next to", "building", "next to")]),
    ],
    "adjectives, coordinated adjectives": [
        ("a tall young tree", [("tree", "tree")], [("tree", "tall", "tall"), ("tree", "young", "young")], []),
        ("the orange and black sign", [("sign", "sign")], [("sign", "black", "black"), ("sign", "orange", "orange")],
         []),
    ],
    "predicative adjectives": [
        ("the boat is white", [("boat", "boat")], [("boat", "white", "white")], []),
        ("the shirt is red and white", [("shirt", "shirt")], [("shirt", "red", "red"), ("shirt", "white", "white")],
         []),
    ],
    "verb + preposition": [
        ("a man sitting on a bench", [("man", "man"), ("bench", "bench")], [],
         [("man", "sit on", "bench", "sitting on")]),
        ("a dog lying on the grass", [("dog", "dog"), ("grass", "grass")], [],
         [("dog", "lay on", "grass", "lying on")]),
    ],
    "phrasal prepositions": [
        ("a lamp in front of the window", [("lamp", "lamp"), ("window", "window")], [],
         [("lamp", "in front of", "window", "in front of")]),
        ("a clock on top of a tower", [("clock", "clock"), ("tower", "tower")], [],
         [("clock", "on top of", "tower", "on top of")]),
    ],
    "copula + preposition": [
        ("the chair is in front of the desk", [("chair", "chair"), ("desk", "desk")], [],
         [("chair", "in front of", "desk", "in front of")]),
        ("the cup is on the table", [("cup", "cup"), ("table", "table")], [], [("cup", "on", "table", "on")]),
    ],
    "participle clauses": [
        ("a man standing on a boat", [("man", "man"), ("boat", "boat")], [],
         [("man", "stand on", "boat", "standing on")]),
        ("a woman wearing a hat", [("woman", "woman"), ("hat", "hat")], [], [("woman", "wear", "hat", "wearing")]),
    ],
    "passives with an agent": [
        ("a bear surrounded by trees", [("bear", "bear"), ("tree", "trees")], [],
         [("tree", "surround", "bear", "surrounded")]),
        ("a ball thrown by a boy", [("ball", "ball"), ("boy", "boy")], [], [("boy", "throw", "ball", "thrown")]),
    ],
    "possessives": [
        ("the girl 's shoes are pink", [("girl", "girl"), ("shoe", "shoes")], [("shoe", "pink", "pink")],
         [("girl", "have", "shoe", "'s")]),
        ("a cat and its toy", [("cat", "cat"), ("toy", "toy")], [], [("cat", "have", "toy", "its")]),
    ],
    "with": [
        ("a boy with a kite", [("boy", "boy"), ("kite", "kite")], [], [("boy", "with", "kite", "with")]),
        ("a table with a lamp", [("table", "table"), ("lamp", "lamp")], [], [("table", "with", "lamp", "with")]),
    ],
    "numbers": [
        ("two dogs on the grass", [("dog", "dogs"), ("grass", "grass")], [("dog", "2", "two")],
         [("dog", "on", "grass", "on")]),
        ("three birds sitting on a wire", [("bird", "birds"), ("wire", "wire")], [("bird", "3", "three")],
         [("bird", "sit on", "wire", "sitting on")]),
    ],
    "quantifiers and partitives": [
        ("a couple of people sitting on a bench", [("people", "people"), ("bench", "bench")], [],
         [("people", "sit on", "bench", "sitting on")]),
        ("a group of people walking on the grass", [("people", "people"), ("grass", "grass")],
         [("people", "group of", "group of")], [("people", "walk on", "grass", "walking on")]),
        ("a bunch of bananas on a plate", [("banana", "bananas"), ("plate", "plate")], [],
         [("banana", "on", "plate", "on")]),
    ],
    "of: parts and containers": [
        ("the seat of the toilet", [("seat", "seat"), ("toilet", "toilet")], [], [("toilet", "have", "seat", "of")]),
        ("a cup of coffee on the table", [("cup", "cup"), ("coffee", "coffee"), ("table", "table")], [],
         [("coffee", "in", "cup", "of"), ("cup", "on", "table", "on")]),
    ],
    "coordinated subjects and objects": [
        ("a man and a woman riding horses", [("man", "man"), ("woman", "woman"), ("horse", "horses")], [],
         [("man", "ride", "horse", "riding"), ("woman", "ride", "horse", "riding")]),
        ("a plate holding a lemon and a banana", [("plate", "plate"), ("lemon", "lemon"), ("banana", "banana")], [],
         [("plate", "hold", "banana", "holding"), ("plate", "hold", "lemon", "holding")]),
    ],
    "pronouns": [
        ("a dog with a ball in its mouth", [("dog", "dog"), ("ball", "ball"), ("mouth", "mouth")], [],
         [("ball", "in", "mouth", "in"), ("dog", "have", "mouth", "its"), ("dog", "with", "ball", "with")]),
        ("a man holding a phone in his hand", [("man", "man"), ("phone", "phone"), ("hand", "hand")], [],
         [("man", "have", "hand", "his"), ("man", "hold", "phone", "holding"), ("phone", "in", "hand", "in")]),
    ],
    "there is / there are": [
        ("there is a dog on the couch", [("dog", "dog"), ("couch", "couch")], [], [("dog", "on", "couch", "on")]),
        ("there are two cups on the table", [("cup", "cups"), ("table", "table")], [("cup", "2", "two")],
         [("cup", "on", "table", "on")]),
    ],
    "spatial relations of the synthetic scenes": [
        ("the red metal cube is to the left of the small blue ball", [("cube", "cube"), ("ball", "ball")],
         [("ball", "blue", "blue"), ("ball", "small", "small"), ("cube", "metal", "metal"), ("cube", "red", "red")],
         [("cube", "left of", "ball", "to the left of")]),
        ("there is a large green sphere on top of a yellow box", [("sphere", "sphere"), ("box", "box")],
         [("box", "yellow", "yellow"), ("sphere", "green", "green"), ("sphere", "large", "large")],
         [("sphere", "on top of", "box", "on top of")]),
        ("a small red rubber cylinder next to a blue cube", [("cylinder", "cylinder"), ("cube", "cube")],
         [("cube", "blue", "blue"), ("cylinder", "red", "red"), ("cylinder", "rubber", "rubber"),
          ("cylinder", "small", "small")],
         [("cylinder", "next to", "cube", "next to")]),
        ("the blue ball is right of the cube", [("ball", "ball"), ("cube", "cube")], [("ball", "blue", "blue")],
         [("ball", "right of", "cube", "right of")]),
        ("a large gray cylinder left of a small metal sphere", [("cylinder", "cylinder"), ("sphere", "sphere")],
         [("cylinder", "gray", "gray"), ("cylinder", "large", "large"), ("sphere", "metal", "metal"),
          ("sphere", "small", "small")],
         [("cylinder", "left of", "sphere", "left of")]),
        ("a lamp above the table", [("lamp", "lamp"), ("table", "table")], [], [("lamp", "above", "table", "above")]),
        ("a rug below the bed", [("rug", "rug"), ("bed", "bed")], [], [("rug", "below", "bed", "below")]),
        ("a cat under the table", [("cat", "cat"), ("table", "table")], [], [("cat", "under", "table", "under")]),
    ],
}  # fmt: skip

ROWS = [(phenomenon, *row) for phenomenon, rows in CAPTIONS.items() for row in rows]


@pytest.mark.parametrize(
    "phenomenon, caption, objects, attributes, relations", ROWS, ids=[f"{row[0]}: {row[1]}" for row in ROWS]
)
def test_hand_checked_caption(parser, phenomenon, caption, objects, attributes, relations, readable):
    assert readable(parser.parse(caption)) == {
        "objects": objects,
        "attributes": sorted(attributes),
        "relations": sorted(relations),
    }


def test_exact_json_of_a_synthetic_caption(parser):
    caption = "the red metal cube is to the left of the small blue ball"
    graph = parser.parse(caption)
    graph["attributes"].sort(key=lambda a: a["span"])
    assert graph == {
        "caption": caption,
        "objects": [{"name": "cube", "span": [14, 18]}, {"name": "ball", "span": [52, 56]}],
        "attributes": [
            {"object": 0, "name": "red", "span": [4, 7]},
            {"object": 0, "name": "metal", "span": [8, 13]},
            {"object": 1, "name": "small", "span": [41, 46]},
            {"object": 1, "name": "blue", "span": [47, 51]},
        ],
        "relations": [{"subject": 0, "object": 1, "name": "left of", "span": [22, 36]}],
    }


def test_every_span_is_whole_words(parser):
    """Spans start and end on token boundaries, so masking hides whole WordPiece words."""
    for _, caption, *_ in ROWS:
        graph = parser.parse(caption)
        for node in graph["objects"] + graph["attributes"] + graph["relations"]:
            start, end = node["span"]
            assert caption[start:end] == caption[start:end].strip() and caption[start:end]
            assert start == 0 or not caption[start - 1].isalnum()
            assert end == len(caption) or not caption[end].isalnum()
