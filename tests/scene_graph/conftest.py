"""Fixtures of the scene-graph tests: one spaCy pipeline per session, the dev set and its parses, the
reference scorer, and a readable form of a graph."""

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


@pytest.fixture(scope="session")
def scorer_script() -> Path:
    """The reference scorer of the gold dev set (skips when shared/ is not beside the repository)."""
    if not SCORER_SCRIPT.is_file():
        pytest.skip(f"shared scoring script not found at {SCORER_SCRIPT.resolve()}")
    return SCORER_SCRIPT


@pytest.fixture(scope="session")
def readable():
    """``readable(graph)``: names and the caption text under every span, relations and attributes sorted."""

    def readable(graph: dict) -> dict:
        """Names and the caption text under every span, with relations and attributes sorted."""
        caption = graph["caption"]
        names = [o["name"] for o in graph["objects"]]
        return {
            "objects": [(o["name"], caption[slice(*o["span"])]) for o in graph["objects"]],
            "attributes": sorted(
                (names[a["object"]], a["name"], caption[slice(*a["span"])]) for a in graph["attributes"]
            ),
            "relations": sorted(
                (names[r["subject"]], r["name"], names[r["object"]], caption[slice(*r["span"])])
                for r in graph["relations"]
            ),
        }

    return readable
