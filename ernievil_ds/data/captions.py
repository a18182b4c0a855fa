"""Readers of the caption formats users hold, each yielding (record id, raw record) in file order.

A raw record is a dict with ``pair_id``, ``image_id`` and ``caption`` (and, from JSONL, optionally a
``scene_graph``), or ``{"error": reason}`` when the line or entry cannot be read; ``decode_pair`` turns
it into a clean record or raises ``ValueError``, so malformed records are skipped and counted in one place.

Image ids follow the feature files of each dataset: COCO's numeric id, Flickr30K's file name without
extension, and for Conceptual Captions and SBU the 0-based line number (features of these web datasets
are usually extracted in line order; pass ``--image-id url`` to key them by URL instead).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path

Raw = dict


def _open_text(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"caption file {path} does not exist")
    return path.open(encoding="utf-8", newline="")


def _web_pair(prefix: str, n: int, caption: str, url: str, image_id: str) -> tuple[str, Raw]:
    pair_id = f"{prefix}-{n}"
    return pair_id, {"pair_id": pair_id, "image_id": url if image_id == "url" else str(n), "caption": caption}


def read_conceptual_captions(path: Path, *, image_id: str = "line") -> Iterator[tuple[str, Raw]]:
    """Conceptual Captions TSV: ``caption<TAB>url`` per line; images keyed by line number or URL."""
    with _open_text(path) as file:
        for n, line in enumerate(file):
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 2:
                yield f"cc-{n}", {"error": f"expected 'caption<TAB>url', got {len(fields)} field(s)"}
                continue
            yield _web_pair("cc", n, fields[0], fields[1], image_id)


def read_sbu(captions: Path, urls: Path, *, image_id: str = "line") -> Iterator[tuple[str, Raw]]:
    """SBU captions: ``SBU_captioned_photo_dataset_captions.txt`` and ``..._urls.txt``, line by line."""
    with _open_text(captions) as caption_file, _open_text(urls) as url_file:
        for n, (caption, url) in enumerate(zip_longest(caption_file, url_file)):
            if caption is None or url is None:
                yield (
                    f"sbu-{n}",
                    {"error": f"{captions.name} and {urls.name} have different numbers of lines"},
                )
                continue
            yield _web_pair("sbu", n, caption.rstrip("\r\n"), url.strip(), image_id)


def read_coco_json(path: Path) -> Iterator[tuple[str, Raw]]:
    """COCO captions JSON (``captions_train2017.json``): one record per entry of ``annotations``."""
    with _open_text(path) as file:
        annotations = json.load(file).get("annotations")
    if not isinstance(annotations, list):
        raise ValueError(f"{path} has no 'annotations' list: is it a COCO captions file?")
    for n, entry in enumerate(annotations):
        if not isinstance(entry, dict) or "image_id" not in entry:
            yield f"annotations[{n}]", {"error": "annotation without image_id"}
            continue
        pair_id = str(entry.get("id", f"annotations[{n}]"))
        yield (
            pair_id,
            {"pair_id": pair_id, "image_id": str(entry["image_id"]), "caption": entry.get("caption")},
        )


def read_flickr30k_tokens(path: Path) -> Iterator[tuple[str, Raw]]:
    """Flickr30K ``results_20130124.token``: ``1000092795.jpg#0<TAB>caption`` per line."""
    with _open_text(path) as file:
        for n, line in enumerate(file):
            key, tab, caption = line.rstrip("\r\n").partition("\t")
            name, hash_sign, _ = key.partition("#")
            if not tab or not hash_sign:
                yield f"line {n + 1}", {"error": "expected 'image.jpg#k<TAB>caption'"}
                continue
            yield key, {"pair_id": key, "image_id": Path(name).stem, "caption": caption}


def read_karpathy_json(path: Path, splits: tuple[str, ...]) -> Iterator[tuple[str, Raw]]:
    """Karpathy split JSON (``dataset_coco.json``, ``dataset_flickr30k.json``), images whose split is in ``splits``.

    COCO images are keyed by ``cocoid``, Flickr30K images by their file name without extension.
    """
    with _open_text(path) as file:
        images = json.load(file).get("images")
    if not isinstance(images, list):
        raise ValueError(f"{path} has no 'images' list: is it a Karpathy split file?")
    for n, image in enumerate(images):
        if image.get("split") not in splits:
            continue
        image_id = str(image["cocoid"]) if "cocoid" in image else Path(str(image.get("filename", ""))).stem
        for k, sentence in enumerate(image.get("sentences") or []):
            pair_id = str(sentence.get("sentid", f"images[{n}].sentences[{k}]"))
            yield pair_id, {"pair_id": pair_id, "image_id": image_id, "caption": sentence.get("raw")}


def read_jsonl(path: Path) -> Iterator[tuple[str, Raw]]:
    """JSON lines with ``image_id`` and ``caption``, optionally ``pair_id`` and a ``scene_graph`` in the
    parser's format (then it is used instead of parsing)."""
    with _open_text(path) as file:
        for n, line in enumerate(file):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                yield f"line {n + 1}", {"error": f"invalid JSON ({error.msg})"}
                continue
            if not isinstance(entry, dict):
                yield f"line {n + 1}", {"error": "not a JSON object"}
                continue
            pair_id = str(entry.get("pair_id", f"line-{n + 1}"))
            yield (
                pair_id,
                {
                    "pair_id": pair_id,
                    "image_id": None if entry.get("image_id") is None else str(entry["image_id"]),
                    "caption": entry.get("caption"),
                    "scene_graph": entry.get("scene_graph"),
                },
            )


def _check_graph(graph: object) -> None:
    if not isinstance(graph, dict) or not all(
        isinstance(graph.get(k), list) for k in ("objects", "attributes", "relations")
    ):
        raise ValueError("scene_graph must have 'objects', 'attributes' and 'relations' lists")
    num_objects = len(graph["objects"])
    for node in graph["attributes"] + graph["relations"]:
        if any(not 0 <= node.get(key, -1) < num_objects for key in ("object", "subject") if key in node):
            raise ValueError("scene_graph node points to a missing object")


def decode_pair(raw: Raw) -> dict:
    """A clean pair record: non-empty ``pair_id``, ``image_id`` and ``caption``; ``scene_graph`` as JSON text
    ("" when the caption is to be parsed).

    Raises:
        ValueError: naming what is wrong with the record.
    """
    if "error" in raw:
        raise ValueError(raw["error"])
    for key in ("pair_id", "image_id"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ValueError(f"missing {key}")
    caption = raw.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"empty caption {caption!r}")
    graph = raw.get("scene_graph")
    if graph is not None:
        _check_graph(graph)
    return {
        "pair_id": raw["pair_id"],
        "image_id": raw["image_id"],
        "caption": caption,
        "given_graph": json.dumps(graph) if graph is not None else "",
    }


#: Formats of ``prepare_data.py captions --format``.
CAPTION_FORMATS = ("cc", "sbu", "coco", "flickr30k", "karpathy", "jsonl")
