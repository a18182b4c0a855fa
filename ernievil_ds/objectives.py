"""The pretraining objectives, named once: the schema, the collator, the model, its config, the metrics
and the cloze analysis all take their task names and ids from here.

ERNIE-ViL trains six losses. Four predict masked WordPieces through one token head and differ only in
which tokens were masked: random tokens (masked language modelling) and the three kinds of scene-graph
node (Scene Graph Prediction). The collator marks each masked token with the id of its task, and a
scene-graph node's id is the id of the task that predicts it. The other two are masked-region
classification and image-text matching.
"""

from __future__ import annotations

#: Masked-token tasks, indexed by the id the collator writes into ``task_ids``.
TOKEN_TASKS = ("mlm", "sgp_object", "sgp_attribute", "sgp_relation")
MLM_TASK_ID = 0

#: Scene-graph node types -> the id of the token task that predicts them (also ``node_types`` on disk).
NODE_TYPE_IDS = {"object": 1, "attribute": 2, "relation": 3}
#: The inverse map: node type id -> node type.
NODE_TYPE_NAMES = {task_id: node_type for node_type, task_id in NODE_TYPE_IDS.items()}

#: ERNIE-ViL's six pretraining losses: the token tasks, masked-region classification, image-text matching.
PRETRAINING_TASKS = (*TOKEN_TASKS, "mrc", "itm")
#: The grounded presets' extra loss (``ernievil_ds.grounding``), not in ERNIE-ViL.
GROUNDING_TASK = "grounding"

#: Label value of a position that no task scores (PyTorch's cross-entropy ``ignore_index``).
IGNORE_INDEX = -100


def loss_name(task: str) -> str:
    """The output field and metric that hold a task's loss: ``"sgp_relation"`` -> ``"sgp_relation_loss"``."""
    return f"{task}_loss"


#: Every task's loss field, in the order metrics report them.
TASK_LOSS_NAMES = tuple(loss_name(task) for task in (*PRETRAINING_TASKS, GROUNDING_TASK))
