"""The pipeline's ``attribute_ruler`` made cheap: the same rules, looked up instead of matched.

spaCy's English ``attribute_ruler`` maps fine tags to POS and morphology and fixes exceptions with
~180 token patterns run through a ``Matcher``; it costs about as much as the dependency parser. Its
one-token patterns are indexed here by one exact (attribute, value) pair each, so that a token
checks only the few patterns that can match it; patterns of several tokens stay in a ``Matcher``
that runs only on Docs holding one of their words. Matches are applied in the ruler's own
order (later patterns override earlier ones) with the ruler's own attribute values, so the
annotation is the same; a test checks it token by token on the dev captions.
"""

from __future__ import annotations

import re
from collections import defaultdict

from spacy.language import Language
from spacy.matcher import Matcher
from spacy.pipeline import AttributeRuler
from spacy.tokens import Doc, Span, Token
from spacy.tokens._retokenize import set_token_attrs

FACTORY_NAME = "ernievil_fast_attribute_ruler_v1"

#: Token attributes a one-token pattern may test here, and how to read them.
_READERS = {
    "LOWER": lambda token: token.lower_,
    "TAG": lambda token: token.tag_,
    "DEP": lambda token: token.dep_,
    "IS_SPACE": lambda token: token.is_space,
}


def _value_test(value: object):
    """A test of one pattern field's value (exact, IN, NOT_IN or REGEX), or None if unsupported."""
    if isinstance(value, (str, bool)):
        return lambda x: x == value
    if isinstance(value, dict) and len(value) == 1:
        ((operator, operand),) = value.items()
        if operator == "IN":
            return frozenset(operand).__contains__
        if operator == "NOT_IN":
            return lambda x, excluded=frozenset(operand): x not in excluded
        if operator == "REGEX":
            return lambda x, search=re.compile(operand).search: isinstance(x, str) and bool(search(x))
    return None


def _index_keys(spec: dict) -> list[tuple[str, object]] | None:
    """(attribute, value) pairs one of which any token matching ``spec`` has, or None if none is exact."""
    for key in ("LOWER", "TAG", "DEP", "IS_SPACE"):
        value = spec.get(key)
        if isinstance(value, (str, bool)):
            return [(key, value)]
        if isinstance(value, dict) and set(value) == {"IN"}:
            return [(key, v) for v in value["IN"]]
    return None


def _required_words(pattern: list[dict]) -> set[str] | None:
    """Lowercase words one of which a Doc must hold for ``pattern`` to match it (None: unknown)."""
    for spec in pattern:
        keys = _index_keys({"LOWER": spec["LOWER"]}) if "LOWER" in spec else None
        if keys is not None:
            return {value for _, value in keys}
    return None


class FastAttributeRuler:
    """Applies an ``AttributeRuler``'s patterns (see the module docstring); fill it with ``load_from``."""

    def __init__(self, vocab):
        self.vocab = vocab
        self.attrs: list[dict] = []
        self.indices: list[int] = []
        # (attribute, value) -> [(attr_id, [(reader, test), ...]), ...]
        self.indexed: dict[tuple[str, object], list] = {}
        self.unindexed: list = []
        self.matcher = Matcher(vocab)
        self.matcher_triggers: frozenset[str] | None = frozenset()

    def load_from(self, ruler: AttributeRuler) -> None:
        """Take over the patterns of ``ruler`` (normally the pipeline's disabled ``attribute_ruler``)."""
        self.attrs, self.indices = list(ruler.attrs), list(ruler.indices)
        indexed, triggers = defaultdict(list), frozenset()
        for attr_id, entry in enumerate(ruler.patterns):
            for pattern in entry["patterns"]:
                tests = [(key, _value_test(value)) for key, value in pattern[0].items()]
                supported = len(pattern) == 1 and all(key in _READERS and test for key, test in tests)
                if not supported:
                    self.matcher.add(str(attr_id), [pattern])
                    words = _required_words(pattern)
                    triggers = None if triggers is None or words is None else triggers | words
                    continue
                checks = [(_READERS[key], test) for key, test in tests]
                keys = _index_keys(pattern[0])
                if keys is None:
                    self.unindexed.append((attr_id, checks))
                for key in keys or ():
                    indexed[key].append((attr_id, checks))
        self.indexed = dict(indexed)
        self.matcher_triggers = None if triggers is None else frozenset(triggers)

    def __call__(self, doc: Doc) -> Doc:
        matches = []  # (attr_id, token index), applied in attr_id order as spaCy does
        for token in doc:
            keys = (
                ("LOWER", token.lower_),
                ("TAG", token.tag_),
                ("DEP", token.dep_),
                ("IS_SPACE", token.is_space),
            )
            for key in keys:
                for attr_id, checks in self.indexed.get(key, ()):
                    if _passes(token, checks):
                        matches.append((attr_id, token.i))
            for attr_id, checks in self.unindexed:
                if _passes(token, checks):
                    matches.append((attr_id, token.i))
        if len(self.matcher) and (
            self.matcher_triggers is None or any(t.lower_ in self.matcher_triggers for t in doc)
        ):
            for match_id, start, end in self.matcher(doc, allow_missing=True):
                attr_id = int(self.vocab.strings[match_id])
                matches.append((attr_id, Span(doc, start, end)[self.indices[attr_id]].i))
        for attr_id, i in sorted(set(matches)):
            set_token_attrs(doc[i], self.attrs[attr_id])
        return doc


def _passes(token: Token, checks: list) -> bool:
    return all(test(read(token)) for read, test in checks)


@Language.factory(FACTORY_NAME, requires=["token.tag"], assigns=["token.pos", "token.morph", "token.lemma"])
def make_fast_attribute_ruler(nlp: Language, name: str) -> FastAttributeRuler:
    """spaCy factory of ``FastAttributeRuler`` (empty until ``load_from``)."""
    return FastAttributeRuler(nlp.vocab)


def speed_up_attribute_ruler(nlp: Language) -> bool:
    """Swap a pipeline's ``attribute_ruler`` for a ``FastAttributeRuler`` with its patterns.

    Returns False (and changes nothing) when the pipeline has no enabled ``attribute_ruler``.
    """
    if "attribute_ruler" not in nlp.pipe_names:
        return False
    fast = nlp.add_pipe(FACTORY_NAME, after="attribute_ruler")
    fast.load_from(nlp.get_pipe("attribute_ruler"))
    nlp.disable_pipe("attribute_ruler")
    return True
