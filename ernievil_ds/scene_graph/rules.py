"""Pure functions from a dependency-parsed spaCy ``Doc`` to the parts of its scene graph.

``find_objects``, ``find_attributes`` and ``find_relations`` read only the Doc's tokens (text, lemma,
POS, tag, dependency arcs) and return small frozen records; ``build_scene_graph`` composes them into
the JSON dict of the Interfaces section of DESIGN.md. Token indices are used inside, character
offsets come out: a node's span is always one contiguous run of tokens, so that
``caption[start:end]`` is exactly the words that masking hides.

Names: objects are lemmas ("boats" -> "boat") with their compound modifiers as written ("tennis
racket"); relations are verb lemma plus preposition ("sitting on" -> "sit on"), a bare preposition
after a copula or a noun, with determiners dropped ("on the side of" -> "on side of"); attributes are
the modifier as written, lowercased, number words as digits ("two" -> "2"): an adjective is its own
lemma, and participles used as adjectives ("broken", "stuffed") keep their form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ernievil_ds.scene_graph.lexicon import (
    BODY_PART_NOUNS,
    CLOTHING_NOUNS,
    COLLECTIVE_NOUNS,
    COLOUR_WORDS,
    CONTAINER_NOUNS,
    DIRECTION_NOUNS,
    MATERIAL_NOUNS,
    NUMBER_WORDS,
    POSITION_MODIFIERS,
    PREPOSITION_ALIASES,
    PREPOSITION_HEADS,
    PRONOUN_NUMBER,
    QUANTIFIER_WORDS,
    QUANTITY_NOUNS,
    RELATIVE_PRONOUNS,
    SHADE_WORDS,
    SPATIAL_NOUNS,
    VERB_LEMMA_ALIASES,
)

if TYPE_CHECKING:
    from spacy.tokens import Doc, Token

NOUN_POS = frozenset({"NOUN", "PROPN"})
VERB_POS = frozenset({"VERB", "AUX"})
#: Parts of speech of the first word of "next to", "right of", "out of" (not "left" the verb).
PREPOSITION_HEAD_POS = frozenset({"ADV", "ADJ", "ADP"})
#: Verbs that link a subject to a predicative adjective or place: "the boat is white".
COPULAS = frozenset({"be", "look", "seem", "appear", "become", "remain", "stay", "get"})
#: Dependents of an adjective that belong to its attribute: "partly cloudy", "very tall".
ADJECTIVE_MODIFIER_DEPS = frozenset({"advmod", "npadvmod"})
#: Noun dependents of a verb, left of it, that the small pipeline gives caption subjects it fails to
#: parse as such ("woman holding kite": npadvmod; "horse riding on a field": compound).
FALLBACK_SUBJECT_DEPS = frozenset({"npadvmod", "compound"})
#: Dependents through which a verb relates its subject to something.
RELATION_ARGUMENT_DEPS = frozenset(
    {"dobj", "prep", "agent", "xcomp", "ccomp", "attr", "acomp", "dative", "prt"}
)
#: Dependents only a real verb has.
VERB_ARGUMENT_DEPS = frozenset({"nsubj", "nsubjpass", "dobj", "aux", "auxpass", "expl"})
#: Words allowed between a verb and its preposition for the relation's span to cover both.
SPAN_GAP_POS = frozenset({"ADV", "PART"})


@dataclass(frozen=True)
class ObjectNode:
    """An object: its head noun's token index, the token span of its name [start, end) and its name."""

    head: int
    start: int
    end: int
    name: str


@dataclass(frozen=True)
class AttributeNode:
    """An attribute of ``objects[object]`` spelled by tokens [start, end)."""

    object: int
    name: str
    start: int
    end: int


@dataclass(frozen=True)
class RelationNode:
    """A relation ``objects[subject] --name--> objects[object]`` spelled by tokens [start, end)."""

    subject: int
    object: int
    name: str
    start: int
    end: int


@dataclass(frozen=True)
class Preposition:
    """A (possibly multi-word) preposition: its name words, its token span [start, end), its noun."""

    words: tuple[str, ...]
    start: int
    end: int
    complement: Token


# --------------------------------------------------------------------------------------- helpers


def verb_lemma(token: Token) -> str:
    """The token's lemma, repairing the small pipeline's "riding" -> "rid" kind of error.

    A one-syllable verb ending consonant-vowel-consonant doubles that consonant before -ing/-ed
    ("rid" -> "ridding"), so an undoubled "riding" whose lemma came out as "rid" is "ride".
    """
    lemma = token.lemma_.lower()
    text = token.lower_
    for suffix in ("ing", "ed"):
        if text.endswith(suffix) and text[: -len(suffix)] == lemma and _is_short_cvc(lemma):
            lemma += "e"
            break
    return VERB_LEMMA_ALIASES.get(lemma, lemma)


def _is_short_cvc(word: str) -> bool:
    """Whether ``word`` is one syllable ending consonant-vowel-consonant (not w, x or y)."""
    vowels = "aeiou"
    if len(word) < 3 or word[-1] in vowels + "wxy" or word[-2] not in vowels or word[-3] in vowels:
        return False
    return sum(1 for k, ch in enumerate(word) if ch in vowels and (k == 0 or word[k - 1] not in vowels)) == 1


def is_noun(token: Token) -> bool:
    """A noun, or a noun the small pipeline tagged as a verb form where no verb can be: a caption's
    first word with nothing a verb has ("awning on the building", "surfer sitting on board"), or
    the object of a preposition ("hanging from building")."""
    if token.pos_ in NOUN_POS:
        return token.dep_ != "amod"  # "red" in "red towel" tagged as a proper noun
    if token.tag_ not in ("VB", "VBG") or any(c.dep_ in VERB_ARGUMENT_DEPS for c in token.children):
        return False
    if token.dep_ == "ROOT":
        return all(t.pos_ == "DET" for t in token.doc[: token.i])
    return token.dep_ in ("pobj", "pcomp") and not any(True for _ in token.children)


def of_complement(token: Token) -> Token | None:
    """The noun of an ``of`` phrase hanging on ``token`` ("people" for "group" in "group of people")."""
    for child in token.rights:
        if child.dep_ == "prep" and child.lower_ == "of":
            for grandchild in child.children:
                if grandchild.dep_ == "pobj":
                    return grandchild
    return None


def is_quantity_head(token: Token) -> bool:
    """Whether ``token`` counts or groups the noun after it: "couple" in "a couple of people"."""
    lemma = token.lemma_.lower()
    return (lemma in QUANTITY_NOUNS or lemma in COLLECTIVE_NOUNS) and of_complement(token) is not None


def is_spatial_noun(token: Token) -> bool:
    """Whether ``token`` is the noun inside a phrasal preposition: "front" in "in front of"."""
    return token.dep_ == "pobj" and token.lower_ in SPATIAL_NOUNS and of_complement(token) is not None


def grammatical_number(token: Token) -> str:
    """ "Plur" for plural nouns (by tag), else "Sing"."""
    return "Plur" if token.tag_ in ("NNS", "NNPS") else "Sing"


def span_chars(doc: Doc, start: int, end: int) -> list[int]:
    """Character offsets [start, end) of tokens [start, end)."""
    last = doc[end - 1]
    return [doc[start].idx, last.idx + len(last.text)]


# --------------------------------------------------------------------------------------- objects


def find_objects(doc: Doc) -> list[ObjectNode]:
    """The objects of a caption: its head nouns, in order, with non-material compounds in the name.

    Not objects: compound modifiers (part of their head's name, or attributes if materials), nouns
    that count or group another ("couple", "group" before "of"), and the noun of a phrasal
    preposition ("front" in "in front of").
    """
    objects = []
    for token in doc:
        if not is_noun(token) or (token.dep_ == "compound" and token.head.pos_ in NOUN_POS):
            continue
        if is_quantity_head(token) or is_spatial_noun(token):
            continue
        start = name_start(doc, token)
        head_name = token.lemma_ if token.pos_ in NOUN_POS else token.text  # "awning", not "awne"
        name = doc[start : token.i].text_with_ws.lower() + head_name.lower()
        objects.append(ObjectNode(head=token.i, start=start, end=token.i + 1, name=name))
    return objects


def name_start(doc: Doc, head: Token) -> int:
    """First token of the object's name: the contiguous compound nouns before ``head`` that are not
    materials or colours ("tennis racket", not "metal cube"), and a position word before them
    ("front legs", "left shoe")."""
    start = hyphenated_start(doc, head.i)
    while start > 0:
        previous = doc[start - 1]
        in_chain = start <= previous.head.i <= head.i
        if in_chain and previous.lower_ in POSITION_MODIFIERS and previous.dep_ in ("amod", "compound"):
            return start - 1
        describes = previous.lower_ in MATERIAL_NOUNS or previous.lower_ in COLOUR_WORDS
        if not in_chain or previous.dep_ != "compound" or previous.pos_ not in NOUN_POS or describes:
            break
        start = hyphenated_start(doc, start - 1)
    return start


def hyphenated_start(doc: Doc, i: int) -> int:
    """First token of the hyphenated word ending at token ``i`` ("t-shirt", "heart-shaped"), which
    the tokenizer splits at the hyphen."""
    while i >= 2 and doc[i - 1].text == "-" and not doc[i - 1].whitespace_ and not doc[i - 2].whitespace_:
        i -= 2
    return i


def relative_clause_of(pronoun: Token) -> Token | None:
    """The relative clause's verb a relative pronoun belongs to ("on which girl is walking")."""
    for ancestor in pronoun.ancestors:
        if ancestor.dep_ in ("relcl", "acl"):
            return ancestor
        if ancestor.pos_ in NOUN_POS:
            return None
    return None


class Referents:
    """Maps tokens to the objects they stand for; built once per Doc from ``find_objects``."""

    def __init__(self, doc: Doc, objects: list[ObjectNode]):
        self.doc = doc
        self.index = {node.head: k for k, node in enumerate(objects)}

    def of(self, token: Token, exclude: tuple[int, ...] = (), *, conjuncts: bool = True) -> list[int]:
        """The objects ``token`` stands for, its coordinated nouns included ("a man and a woman")
        unless ``conjuncts`` is False."""
        found = []
        for member in (token, *token.conjuncts) if conjuncts else (token,):
            for k in self._direct(member, exclude):
                if k not in found:
                    found.append(k)
        return found

    def _direct(self, token: Token, exclude: tuple[int, ...]) -> list[int]:
        if token.i in self.index:
            return [self.index[token.i]]
        if is_quantity_head(token):
            return self.of(of_complement(token), exclude)
        lower = token.lower_
        if lower in RELATIVE_PRONOUNS:
            clause = relative_clause_of(token)
            return [] if clause is None else self.of(clause.head, exclude)
        if lower in PRONOUN_NUMBER:
            antecedent = self.antecedent(token, PRONOUN_NUMBER[lower], exclude)
            return [] if antecedent is None else [antecedent]
        return []

    def antecedent(self, pronoun: Token, number: str, exclude: tuple[int, ...]) -> int | None:
        """The nearest object before ``pronoun`` with its number that is not one of ``exclude``,
        preferring one that is not an object of a verb or preposition ("a woman in the room
        holding her arm": the woman, not the room)."""
        candidates = [
            (self.doc[i].dep_ in ("pobj", "dobj"), -i, k)
            for i in range(pronoun.i)
            if (k := self.index.get(i)) is not None
            and k not in exclude
            and grammatical_number(self.doc[i]) == number
        ]
        return min(candidates)[2] if candidates else None

    def subjects_of(self, verb: Token) -> list[int]:
        """Who does ``verb``: its subject, the noun a participle or relative clause modifies
        ("a man standing on a boat"), what "there is" introduces, or a coordinated verb's subject."""
        for child in verb.children:
            if child.dep_ in ("nsubj", "nsubjpass"):
                return self.of(child)
        if verb.dep_ in ("acl", "relcl"):
            return self.of(verb.head)
        for child in verb.lefts:
            if child.dep_ in FALLBACK_SUBJECT_DEPS and child.i in self.index:
                return self.of(child)
        if any(child.dep_ == "expl" for child in verb.children):
            for child in verb.children:
                if child.dep_ == "attr":
                    return self.of(child)
        if verb.dep_ in ("conj", "xcomp", "advcl") and verb.head.pos_ in VERB_POS:
            return self.subjects_of(verb.head)
        return []

    def is_verb(self, token: Token) -> bool:
        """A verb, and not one of the verb-tagged nouns ``is_noun`` takes for objects."""
        return token.pos_ in VERB_POS and token.i not in self.index

    def owners_of(self, token: Token) -> list[int]:
        """Who a relation hanging on ``token`` is about: the noun itself, or the verb's subjects."""
        if self.is_verb(token):
            return self.subjects_of(token)
        return self.of(token)


# ------------------------------------------------------------------------------------ attributes


def find_attributes(doc: Doc, objects: list[ObjectNode]) -> list[AttributeNode]:
    """Attributes: adjectives and numbers before a noun ("two white boats"), material nouns
    ("metal cube"), predicative adjectives ("the boat is white"), collectives ("group of"), and
    participles with nothing to relate to ("two women skiing")."""
    referents = Referents(doc, objects)
    found: dict[tuple[int, int, int], AttributeNode] = {}

    def add(owners: list[int], start: int, end: int) -> None:
        name = " ".join(NUMBER_WORDS.get(word, word) for word in doc[start:end].text.lower().split())
        for k in owners:
            found.setdefault((k, start, end), AttributeNode(k, name, start, end))

    for k, node in enumerate(objects):
        for modifier in noun_modifiers(doc[node.head]):
            if is_attribute_modifier(modifier, node):
                for word in (modifier, *modifier.conjuncts):
                    if not merges_with_next(doc, word):
                        add([k], *attribute_span(doc, word))
    for token in doc:
        if token.dep_ == "acomp" and token.head.lemma_ in COPULAS and not opens_preposition(token):
            for word in (token, *token.conjuncts):
                add(referents.subjects_of(token.head), *attribute_span(doc, word))
        elif token.lemma_.lower() in COLLECTIVE_NOUNS and is_quantity_head(token):
            add(referents.of(of_complement(token)), token.i, token.i + 2)
        elif is_bare_participle(token):
            add(referents.subjects_of(token), token.i, token.i + 1)
    return list(found.values())


def noun_modifiers(noun: Token) -> list[Token]:
    """Left dependents of a noun and of its compounds: the parser often hangs "red" in "red metal
    cube" on "metal"."""
    modifiers = []
    for child in noun.lefts:
        modifiers.append(child)
        if child.dep_ == "compound":
            modifiers.extend(noun_modifiers(child))
    return modifiers


def opens_preposition(token: Token) -> bool:
    """Whether ``token`` is the first word of "next to", "right of" and the like; "left" in "left
    of" whatever its tag (the small pipeline often takes it for the verb "leave")."""
    if token.lower_ not in PREPOSITION_HEADS:
        return False
    if token.pos_ not in PREPOSITION_HEAD_POS and token.lower_ not in DIRECTION_NOUNS:
        return False
    return any(c.dep_ == "prep" and c.i == token.i + 1 for c in token.rights)


def is_attribute_modifier(token: Token, node: ObjectNode) -> bool:
    """Whether a left dependent of an object's noun is one of its attributes: an adjective, number,
    or compound noun (a material, a colour) left outside the object's name; not "many", "one"."""
    return (
        token.dep_ in ("amod", "nummod", "compound")
        and token.i < node.start
        and token.lower_ not in QUANTIFIER_WORDS
    )


def is_bare_participle(token: Token) -> bool:
    """A participle that says what its subject is doing without relating it to anything: "two
    women skiing", "a cat resting sideways" (not "the rope the man is holding", whose noun is
    what the participle acts on)."""
    return (
        token.tag_ in ("VBG", "VBN")
        and token.dep_ in ("acl", "relcl", "ROOT")
        and not any(c.dep_ in RELATION_ARGUMENT_DEPS or opens_preposition(c) for c in token.children)
        and not (
            token.dep_ == "relcl"
            and any(c.dep_ == "nsubj" and c.lower_ not in RELATIVE_PRONOUNS for c in token.children)
        )
    )


def merges_with_next(doc: Doc, token: Token) -> bool:
    """Whether ``token`` is a shade that joins the colour after it into one attribute ("dark green")."""
    nxt = token.i + 1
    return token.lower_ in SHADE_WORDS and nxt < len(doc) and doc[nxt].lower_ in COLOUR_WORDS


def attribute_span(doc: Doc, token: Token) -> tuple[int, int]:
    """Tokens [start, end) of the attribute headed by ``token``: adverbs right before it ("partly
    cloudy") and a shade before a colour ("dark green") are part of it."""
    start = hyphenated_start(doc, token.i)
    while start > 0:
        previous = doc[start - 1]
        is_modifier = previous.head.i == token.i and previous.dep_ in ADJECTIVE_MODIFIER_DEPS
        if not (is_modifier or (start == token.i and merges_with_next(doc, previous))):
            break
        start -= 1
    return start, token.i + 1


# ------------------------------------------------------------------------------------- relations


def find_relations(
    doc: Doc, objects: list[ObjectNode], *, with_predicate: str = "with"
) -> list[RelationNode]:
    """Relations from prepositions, verbs with objects, passive agents and possessives."""
    referents = Referents(doc, objects)
    found: dict[tuple[int, int, str], RelationNode] = {}

    def add(subjects: list[int], objects_: list[int], name: str, start: int, end: int) -> None:
        for s in subjects:
            for o in objects_:
                if s != o:
                    found.setdefault((s, o, name), RelationNode(s, o, name, start, end))

    for token in doc:
        if token.dep_ == "prep":
            preposition_relation(doc, token, referents, with_predicate, add)
        elif token.dep_ == "dobj" and token.head.pos_ in VERB_POS:
            verb = token.head
            subjects = referents.subjects_of(verb)
            start, end = verb_span(verb)
            add(subjects, referents.of(token, tuple(subjects)), verb_name(verb), start, end)
        elif token.dep_ == "agent":
            passive_relation(token, referents, add)
        elif token.dep_ == "relcl" and token.pos_ in VERB_POS:
            object_relative_relation(token, referents, add)
        elif token.dep_ == "poss":
            possessive_relation(token, referents, add)
    return list(found.values())


def read_preposition(prep: Token) -> Preposition | None:
    """The preposition starting at ``prep`` with its noun; folds "in front of" / "to the left of"."""
    complement = next((c for c in prep.children if c.dep_ == "pobj"), None)
    if complement is None:
        return None
    if is_spatial_noun(complement):
        of = next(c for c in complement.rights if c.dep_ == "prep" and c.lower_ == "of")
        direction = complement.lower_ in DIRECTION_NOUNS
        words = (complement.lower_, "of") if direction else (prep.lower_, complement.lower_, "of")
        return Preposition(words, prep.i, of.i + 1, of_complement(complement))
    return Preposition((PREPOSITION_ALIASES.get(prep.lower_, prep.lower_),), prep.i, prep.i + 1, complement)


def preposition_relation(doc: Doc, prep: Token, referents: Referents, with_predicate: str, add) -> None:
    """The relation a preposition makes between what it hangs on and its noun.

    On a noun: the preposition itself ("stove in kitchen"), "of" turned around into have ("the seat
    of the toilet" -> toilet have seat) or, after a container, into where the content is ("a plate
    of food" -> food on plate), clothing after in/with -> wear. On a verb: lemma +
    preposition ("sitting on" -> "sit on"), or the bare preposition after a copula.
    """
    anchor = prep.head
    if prep.lower_ == "of" and (is_quantity_head(anchor) or is_spatial_noun(anchor)):
        return  # read with the quantity noun or the phrasal preposition it belongs to
    phrase = read_preposition(prep)
    if phrase is None and anchor.dep_ == "relcl":
        # A preposition left at the end of a relative clause: "the sidewalk the people walk on".
        phrase = Preposition((prep.lower_,), prep.i, prep.i + 1, anchor.head)
    if phrase is None:
        return
    if opens_preposition(anchor) and anchor.i == prep.i - 1:
        # "next to", "close to", "right of": the adverb or adjective opens the preposition.
        phrase = Preposition((anchor.lower_, *phrase.words), anchor.i, phrase.end, phrase.complement)
        anchor = anchor.head
    subjects = referents.owners_of(anchor)
    objects_ = referents.of(phrase.complement, tuple(subjects))
    held = held_before(anchor, prep) if phrase.complement.lower_ in PRONOUN_NUMBER else None
    if held is not None:
        # "a glass with liquid in it": the pronoun is the glass, what it holds is in it.
        subjects, objects_ = referents.of(held), subjects
    name = " ".join(phrase.words)
    start, end = phrase.start, phrase.end
    if referents.is_verb(anchor):
        held = next((c for c in anchor.children if c.dep_ == "dobj"), None)
        if held is not None and (
            anchor.lemma_ == "have" or phrase.complement.lemma_.lower() in BODY_PART_NOUNS
        ):
            # "the man has a glass in his hand", "a man holding a cup in his hand": the glass, the
            # cup is in the hand.
            subjects = referents.of(held)
        elif anchor.lemma_ != "be":
            name = f"{verb_name(anchor)} {name}"
            if all(t.pos_ in SPAN_GAP_POS for t in doc[anchor.i + 1 : phrase.start]):
                start = anchor.i
    elif anchor.pos_ in NOUN_POS or anchor.i in referents.index:
        if name == "of":
            # "the seat of the toilet" -> toilet have seat; "a plate of food" -> food on plate.
            add(objects_, subjects, CONTAINER_NOUNS.get(anchor.lemma_.lower(), "have"), start, end)
            return
        if name in ("in", "with") and phrase.complement.lemma_.lower() in CLOTHING_NOUNS:
            name = "wear"
        elif name == "with":
            name = with_predicate
    else:
        return
    add(subjects, objects_, name, start, end)


def held_before(holder: Token, prep: Token) -> Token | None:
    """The noun of a "with" phrase on ``holder`` that comes before ``prep`` ("liquid" in "glass with
    liquid in it")."""
    for child in holder.rights:
        if child.dep_ == "prep" and child.lower_ == "with" and child.i < prep.i:
            return next((c for c in child.children if c.dep_ == "pobj"), None)
    return None


def verb_name(verb: Token) -> str:
    """A verb's relation name: its lemma plus its particle ("pick up")."""
    particles = [c.lower_ for c in verb.rights if c.dep_ == "prt"]
    return " ".join([verb_lemma(verb), *particles])


def verb_span(verb: Token) -> tuple[int, int]:
    """Tokens [start, end) of a verb with its particle when the particle follows it directly."""
    end = verb.i + 1
    for child in verb.rights:
        if child.dep_ == "prt" and child.i == end:
            end += 1
    return verb.i, end


def object_relative_relation(verb: Token, referents: Referents, add) -> None:
    """A relative clause about its noun's object: "the rope the man is holding" -> man hold rope."""
    subject = next((c for c in verb.children if c.dep_ in ("nsubj", "nsubjpass")), None)
    if subject is None or subject.lower_ in RELATIVE_PRONOUNS or verb.lemma_ == "be":
        return
    objects_ = [c for c in verb.children if c.dep_ == "dobj"]
    stranded = any(c.dep_ == "prep" and not any(g.dep_ == "pobj" for g in c.children) for c in verb.children)
    if stranded or (objects_ and objects_[0].lower_ not in RELATIVE_PRONOUNS):
        return
    add(referents.of(subject), referents.of(verb.head), verb_name(verb), *verb_span(verb))


def passive_relation(agent: Token, referents: Referents, add) -> None:
    """A passive with its agent, turned active: "bear surrounded by grass" -> grass surround bear."""
    verb = agent.head
    complement = next((c for c in agent.children if c.dep_ == "pobj"), None)
    if complement is None or verb.pos_ not in VERB_POS:
        return
    patients = referents.subjects_of(verb)
    add(referents.of(complement, tuple(patients)), patients, verb_name(verb), *verb_span(verb))


def possessive_relation(owner: Token, referents: Referents, add) -> None:
    """A possessive as have: "his hat" -> (man, have, hat) with span "his"; "player 's socks" ->
    (player, have, socks) with span "'s"."""
    possessed = referents.of(owner.head, conjuncts=False)
    if not possessed:
        return
    if owner.pos_ == "PRON":
        add(referents.of(owner, tuple(possessed)), possessed, "have", owner.i, owner.i + 1)
        return
    marker = next((c for c in owner.children if c.dep_ == "case"), None)
    if marker is not None:
        add(referents.of(owner), possessed, "have", marker.i, marker.i + 1)


# --------------------------------------------------------------------------------------- compose


def build_scene_graph(doc: Doc, *, with_predicate: str = "with") -> dict:
    """The scene graph of a parsed caption as the JSON dict of DESIGN.md's Interfaces section.

    Raises:
        ValueError: when the Doc has tokens but no dependency arcs (no parser ran on it).
    """
    if len(doc) and not doc.has_annotation("DEP"):
        raise ValueError(
            f"scene-graph rules need dependency arcs, but the Doc {doc.text[:60]!r} has none: "
            "run a pipeline with a dependency parser on it"
        )
    objects = find_objects(doc)
    attributes = find_attributes(doc, objects)
    relations = find_relations(doc, objects, with_predicate=with_predicate)
    return {
        "caption": doc.text,
        "objects": [{"name": o.name, "span": span_chars(doc, o.start, o.end)} for o in objects],
        "attributes": [
            {"object": a.object, "name": a.name, "span": span_chars(doc, a.start, a.end)} for a in attributes
        ],
        "relations": [
            {
                "subject": r.subject,
                "object": r.object,
                "name": r.name,
                "span": span_chars(doc, r.start, r.end),
            }
            for r in relations
        ],
    }
