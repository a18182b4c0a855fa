"""Caption -> scene graph parsing on spaCy, and its scoring against gold graphs.

    from ernievil_ds.scene_graph import SceneGraphParser, score_graphs
    parser = SceneGraphParser()                      # default English pipeline, one process
    graph = parser.parse("a man sitting on a bench")
    # {"caption": ..., "objects": [{"name": "man", "span": [2, 5]}, ...],
    #  "attributes": [...], "relations": [{"subject": 0, "object": 1, "name": "sit on", "span": [6, 16]}]}
    scores = score_graphs(parser.parse_stream(captions), gold_graphs)   # GraphScores
    print(scores.table())

Importing this package does not import spaCy; loading a pipeline does.
"""

from ernievil_ds.scene_graph.parser import SceneGraphParser, caption_problem, load_pipeline
from ernievil_ds.scene_graph.scoring import GraphScores, KindScore, normalize, score_graphs

__all__ = [
    "GraphScores",
    "KindScore",
    "SceneGraphParser",
    "caption_problem",
    "load_pipeline",
    "normalize",
    "score_graphs",
]
