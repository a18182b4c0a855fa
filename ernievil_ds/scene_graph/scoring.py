"""Precision, recall and F1 of predicted scene graphs against gold ones, SPICE-style.

The scoring is the one of the project's ``tools/score_scene_graphs.py`` (shared folder), kept here
so the library needs nothing outside itself; a test checks both give the same numbers. Every name,
gold and predicted, is normalized (``normalize``); per caption the objects, (object, attribute)
pairs and (subject, predicate, object) triples are compared as sets; counts are summed over
captions (micro average). "overall" is the union of the three tuple kinds, as SPICE's tuple F-score
without its WordNet synonyms.

Graphs may be given in either format: the parser's (objects as ``{"name", "span"}`` dicts,
attributes and relations pointing into them by index) or the gold file's (objects as names,
attributes as ``[object, attribute]``, relations as ``[subject, predicate, object]``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from ernievil_ds.scene_graph.lexicon import NUMBER_WORDS

ARTICLES = frozenset({"a", "an", "the"})
#: Irregular plurals and verb forms the scorer's small lemmatizer knows.
IRREGULAR_LEMMAS = {
    "men": "man", "women": "woman", "children": "child", "feet": "foot", "teeth": "tooth",
    "mice": "mouse", "geese": "goose", "oxen": "ox", "leaves": "leaf", "knives": "knife",
    "wolves": "wolf", "shelves": "shelf", "halves": "half", "loaves": "loaf", "scarves": "scarf",
    "calves": "calf", "wives": "wife", "lives": "life", "thieves": "thief", "hooves": "hoof",
    "has": "have", "is": "be", "are": "be", "was": "be", "were": "be", "does": "do", "goes": "go",
    "buses": "bus", "glasses": "glass", "grasses": "grass", "dresses": "dress",
}  # fmt: skip
_PUNCTUATION = re.compile(r"[^\w\s'\-]")
KINDS = ("objects", "attributes", "relations", "overall")


def lemmatize_word(word: str) -> str:
    """The scorer's rule lemma of one word: irregular table, then plural suffixes (-ies, -es, -s)."""
    if not word.isalpha():
        return word
    if word in IRREGULAR_LEMMAS:
        return IRREGULAR_LEMMAS[word]
    if len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses", "zzes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def normalize(name: object) -> str:
    """Lowercase, punctuation (but - and ') to spaces, leading articles dropped, number words as
    digits, each word rule-lemmatized: "The two Dogs." -> "2 dog"."""
    words = _PUNCTUATION.sub(" ", str(name).lower().replace("_", " ")).split()
    while len(words) > 1 and words[0] in ARTICLES:
        words = words[1:]
    return " ".join(lemmatize_word(NUMBER_WORDS.get(w, w)) for w in words)


def graph_names(graph: dict | None) -> dict:
    """A graph in the gold file's name format, whichever of the two formats it comes in."""
    graph = graph or {}
    objects = graph.get("objects") or []
    if not objects or not isinstance(objects[0], dict):
        return {
            "objects": list(objects),
            "attributes": list(graph.get("attributes") or []),
            "relations": list(graph.get("relations") or []),
        }
    names = [o["name"] for o in objects]
    return {
        "objects": names,
        "attributes": [[names[a["object"]], a["name"]] for a in graph.get("attributes") or []],
        "relations": [
            [names[r["subject"]], r["name"], names[r["object"]]] for r in graph.get("relations") or []
        ],
    }


def graph_tuples(graph: dict | None) -> tuple[set, set, set]:
    """Normalized sets of objects, (object, attribute) pairs and (subject, predicate, object) triples."""
    named = graph_names(graph)
    objects = {normalize(o) for o in named["objects"]} - {""}
    attributes = {(normalize(a[0]), normalize(a[1])) for a in named["attributes"] if len(a) == 2}
    relations = {tuple(normalize(x) for x in r) for r in named["relations"] if len(r) == 3}
    return objects, attributes, relations


def precision_recall_f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts (0.0 where undefined)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@dataclass(frozen=True)
class KindScore:
    """Micro-averaged scores of one tuple kind, with the counts they come from."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int


@dataclass(frozen=True)
class GraphScores:
    """Scores of predicted graphs against gold ones (see the module docstring)."""

    objects: KindScore
    attributes: KindScore
    relations: KindScore
    overall: KindScore
    #: Mean over captions of the per-caption overall F1 (1.0 for a caption where both are empty).
    macro_overall_f1: float
    #: Fraction of captions whose three normalized sets all equal the gold ones.
    exact_graph_match: float
    captions: int

    def to_dict(self) -> dict:
        """Plain JSON-ready dict, in the layout of the shared scoring script's ``--json`` line."""
        return asdict(self)

    def table(self) -> str:
        """The scores as a fixed-width text table."""
        lines = [f"{'':<11} {'precision':>9} {'recall':>9} {'F1':>9}   {'tp':>6} {'fp':>6} {'fn':>6}"]
        for kind in KINDS:
            s = getattr(self, kind)
            lines.append(
                f"{kind:<11} {s.precision:9.4f} {s.recall:9.4f} {s.f1:9.4f}   {s.tp:6d} {s.fp:6d} {s.fn:6d}"
            )
        lines.append(f"macro-averaged per-caption overall F1: {self.macro_overall_f1:.4f}")
        lines.append(f"exact graph match: {self.exact_graph_match:.4f} over {self.captions} captions")
        return "\n".join(lines)


def score_graphs(predicted: Iterable[dict | None], gold: Iterable[dict]) -> GraphScores:
    """Score predicted graphs against gold graphs, caption by caption in the same order.

    Args:
        predicted: one graph per caption, in the parser's JSON format or the gold name format;
            ``None`` or ``{}`` counts as an empty graph.
        gold: the gold graphs (for example the lines of ``scene_graphs_dev.jsonl``).

    Raises:
        ValueError: when the two sequences differ in length.
    """
    counts = {kind: [0, 0, 0] for kind in KINDS}
    macro_f1 = 0.0
    exact = 0
    n = 0
    sentinel = object()
    predicted_it, gold_it = iter(predicted), iter(gold)
    while True:
        pred, ref = next(predicted_it, sentinel), next(gold_it, sentinel)
        if pred is sentinel or ref is sentinel:
            if pred is not ref:
                raise ValueError(f"predicted and gold graphs differ in number: one ends after {n} graphs")
            break
        n += 1
        gold_sets, pred_sets = graph_tuples(ref), graph_tuples(pred)
        for kind, gold_set, pred_set in zip(KINDS[:3], gold_sets, pred_sets):
            _count(counts[kind], gold_set, pred_set)
        gold_all, pred_all = _all_tuples(gold_sets), _all_tuples(pred_sets)
        tp, fp, fn = _count(counts["overall"], gold_all, pred_all)
        macro_f1 += precision_recall_f1(tp, fp, fn)[2] if gold_all or pred_all else 1.0
        exact += gold_sets == pred_sets
    kinds = {kind: KindScore(*precision_recall_f1(*counts[kind]), *counts[kind]) for kind in KINDS}
    return GraphScores(
        **kinds,
        macro_overall_f1=macro_f1 / n if n else 0.0,
        exact_graph_match=exact / n if n else 0.0,
        captions=n,
    )


def _count(totals: list[int], gold: set, predicted: set) -> tuple[int, int, int]:
    """Add one caption's true positives, false positives and false negatives to ``totals``."""
    tp = len(gold & predicted)
    fp, fn = len(predicted) - tp, len(gold) - tp
    totals[0] += tp
    totals[1] += fp
    totals[2] += fn
    return tp, fp, fn


def _all_tuples(sets: tuple[set, set, set]) -> set:
    """Objects, attributes and relations as one set of tuples (objects as 1-tuples)."""
    objects, attributes, relations = sets
    return {(o,) for o in objects} | attributes | relations
