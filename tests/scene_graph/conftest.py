"""Fixtures of the scene-graph tests: one spaCy pipeline per session, the dev set and its parses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

#: CI clones the repository into a folder that has a copy of shared/ beside it.
DEV_SET = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "scene_graphs_dev.jsonl"
SCORER_SCRIPT = Path(__file__).resolve().parents[2] / ".." / "shared" / "tools" / "score_scene_graphs.py"


@pytest.fixture(scope="session")
def parser():
    """The default ``SceneGraphParser`` (skips the tests that need it when no pipeline is installed)."""
    from ernievil_ds.assets import default_spacy_pipeline
    from ernievil_ds.scene_graph import SceneGraphParser

    try:
        default_spacy_pipeline()
    except OSError as error:
        pytest.skip(f"no spaCy English pipeline installed: {error}")
    return SceneGraphParser()


@pytest.fixture(scope="session")
def dev_set() -> list[dict]:
    """The 1,000 gold graphs of shared/data/scene_graphs_dev.jsonl."""
    if not DEV_SET.is_file():
        pytest.skip(f"dev set not found at {DEV_SET.resolve()} (shared/ must sit beside the repository)")
    with DEV_SET.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="session")
def dev_predictions(parser, dev_set) -> list[dict]:
    """The parser's graphs of the dev captions, in order."""
    return list(parser.parse_stream(example["caption"] for example in dev_set))
