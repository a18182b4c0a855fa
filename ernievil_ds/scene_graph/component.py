"""The spaCy component ``ernievil_scene_graph_v1``: each Doc's scene graph in ``doc._.scene_graph``.

Importing this module registers the factory; ``SceneGraphParser`` adds it after the pipeline's
parser, so that the graphs are built inside ``nlp.pipe`` (and inside worker processes). The version
is joined with "_" because spaCy refuses "." in factory names (error E853).
"""

from __future__ import annotations

from spacy.language import Language
from spacy.tokens import Doc

from ernievil_ds.scene_graph.rules import build_scene_graph

FACTORY_NAME = "ernievil_scene_graph_v1"
DEFAULT_WITH_PREDICATE = "with"

if not Doc.has_extension("scene_graph"):
    Doc.set_extension("scene_graph", default=None)


class SceneGraphComponent:
    """Writes ``build_scene_graph(doc)`` to ``doc._.scene_graph``; a Doc without dependency arcs
    is a ``ValueError`` (put a parser before this component), never an empty graph.

    Args:
        with_predicate: relation name for "X with Y" (FACTUAL's gold mostly keeps "with"; SPICE
            writes "have").
    """

    def __init__(self, *, with_predicate: str = DEFAULT_WITH_PREDICATE):
        self.with_predicate = with_predicate

    def __call__(self, doc: Doc) -> Doc:
        doc._.scene_graph = build_scene_graph(doc, with_predicate=self.with_predicate)
        return doc


@Language.factory(
    FACTORY_NAME,
    default_config={"with_predicate": DEFAULT_WITH_PREDICATE},
    requires=["token.dep", "token.pos", "token.tag", "token.lemma"],
    assigns=["doc._.scene_graph"],
)
def make_scene_graph_component(nlp: Language, name: str, *, with_predicate: str) -> SceneGraphComponent:
    """spaCy factory of ``SceneGraphComponent`` (settings come from the component's config)."""
    return SceneGraphComponent(with_predicate=with_predicate)
