"""Readers of the caption formats users hold, each yielding (record id, raw record) in file order.

A raw record is a dict with ``pair_id``, ``image_id`` and ``caption`` (and, from JSONL, optionally a
``scene_graph``), or ``{"error": reason}`` when the line or entry cannot be read; ``decode_pair`` turns
it into a clean record or raises ``ValueError``, so malformed records are skipped and counted in one place.

Image ids follow the feature files of each dataset: COCO's numeric id, Flickr30K's file name without
extension, and for Conceptual Captions and SBU the 0-based line number (features of these web datasets
are usually extracted in line order; pass ``--image-id url`` to key them by URL instead).

Before anything is read, ``check_caption_file`` tells the kind of a file from its first bytes and refuses
one of another format, saying which flag reads it. Line formats are read line by line, so a line that is
not UTF-8 is one malformed record; JSON formats are read whole, so a file cut short is refused.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path

from ernievil_ds.errors import UserError

Raw = dict

#: How much of a file is read to tell the caption formats apart.
_HEAD_BYTES = 1 << 16
#: What each kind of file is called in messages; the kinds are those of ``caption_file_kind``.
KIND_NAMES = {
    "cc": "a Conceptual Captions TSV file",
    "sbu": "an SBU caption text file",
    "sbu-json": "the SBU JSON release",
    "coco": "a COCO annotations file",
    "flickr30k": "a Flickr30K token file",
    "karpathy": "a Karpathy split file",
    "jsonl": "a JSON lines file",
    "json": "a JSON file of unknown layout",
    "text": "a text file",
    "binary": "a binary file (not UTF-8 text)",
    "empty": "empty",
}
#: The kinds of file each ``--format`` reads; "text" and "json" are files the first bytes do not pin down.
_ACCEPTED_KINDS = {
    "cc": ("cc", "text"),
    "sbu": ("text", "sbu-json"),
    "coco": ("coco", "json"),
    "flickr30k": ("flickr30k", "text"),
    "karpathy": ("karpathy", "json"),
    "jsonl": ("jsonl",),
}
# The ``--format`` that reads each kind of file that only one format reads.
_FORMAT_OF_KIND = {
    kind: format
    for format, kinds in _ACCEPTED_KINDS.items()
    for kind in kinds
    if kind not in ("text", "json")
}
# Keys that only one JSON layout has near its start, tried in this order: a Karpathy file's images hold
# "sentences", a COCO file's images a "coco_url" and its annotations come after them, SBU's JSON release
# names its URLs "image_urls" (columns) or "url"/"image_url" (records).
_JSON_MARKERS = (
    ("karpathy", re.compile(r'"(sentences|sentids)"\s*:')),
    ("coco", re.compile(r'"(annotations|coco_url|licenses)"\s*:')),
    ("sbu-json", re.compile(r'"(image_urls|image_url|url)"\s*:')),
)
# Top-level keys of whole-file JSON layouts, which a line of a JSON lines file does not have.
_DOCUMENT_KEYS = {"annotations", "images", "captions", "image_urls"}
_FLICKR30K_LINE = re.compile(r"[^\t#]+\.jpg#\d+\t")


def _read_head(path: Path) -> str | None:
    """The text at the start of ``path``, or None for a binary file: a NUL byte in it, or a first line that
    is not UTF-8. A later line that is not UTF-8 is left to the readers, which count it as malformed."""
    with path.open("rb") as file:
        head = file.read(_HEAD_BYTES)
    if b"\0" in head:
        return None
    first_line, newline, _ = head.lstrip().partition(b"\n")
    try:  # a multi-byte character cut by the end of the head is not an error
        codecs.getincrementaldecoder("utf-8")().decode(first_line, final=bool(newline))
    except UnicodeDecodeError:
        return None
    return head.decode("utf-8", errors="replace")


def _json_kind(head: str) -> str:
    for kind, marker in _JSON_MARKERS:
        if marker.search(head):
            return kind
    return "json"


def caption_file_kind(path: Path) -> str:
    """What kind of caption file ``path`` is, from its first bytes: a key of ``KIND_NAMES``."""
    head = _read_head(path)
    if head is None:
        return "binary"
    first = next((line for line in head.splitlines() if line.strip()), "").strip()
    if not first:
        return "empty"
    if first[0] in "{[":
        try:
            value = json.loads(first)
        except (ValueError, RecursionError):  # a JSON document spread over lines, or cut by the head's end
            return _json_kind(head)
        if isinstance(value, dict) and not _DOCUMENT_KEYS & value.keys():
            return "jsonl"
        return _json_kind(head)
    if _FLICKR30K_LINE.match(first):
        return "flickr30k"
    fields = first.split("\t")
    if len(fields) == 2 and "://" in fields[1]:
        return "cc"
    return "text"


def check_caption_file(format: str, path: Path) -> None:
    """Refuse ``path`` at its start when it is not a file of ``format`` (one of ``CAPTION_FORMATS``).

    Raises:
        UserError: naming what was expected, what was found and, when it is another format, its flag.
    """
    if not path.is_file():
        raise FileNotFoundError(f"caption file {path} does not exist")
    kind = caption_file_kind(path)
    if kind in _ACCEPTED_KINDS[format]:
        return
    hint = f": use --format {_FORMAT_OF_KIND[kind]}" if kind in _FORMAT_OF_KIND else ""
    raise UserError(f"{path} is {KIND_NAMES[kind]}, not {KIND_NAMES[format]}{hint}")


def _text_lines(path: Path) -> Iterator[str | None]:
    """The lines of a text file without their line ends; None for a line that is not UTF-8."""
    if not path.is_file():
        raise FileNotFoundError(f"caption file {path} does not exist")
    with path.open("rb") as file:
        for raw in file:
            try:
                yield raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                yield None


_NOT_UTF8 = {"error": "the line is not UTF-8 text"}


def _load_json(path: Path) -> object:
    """The JSON value in ``path``.

    Raises:
        UserError: a file that is not UTF-8 or not one complete JSON value (e.g. cut short), with where.
    """
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text (byte {error.start})") from error
    except json.JSONDecodeError as error:
        raise UserError(
            f"{path} is not valid JSON ({error.msg} at line {error.lineno} column {error.colno}; "
            "a download cut short ends this way)"
        ) from error
    except RecursionError as error:
        raise UserError(f"{path} nests its JSON too deeply to be a caption file") from error


def _json_list(value: object, key: str, path: Path, what: str) -> list:
    """``value[key]`` when ``value`` is a JSON object holding a list there; else a ``UserError``."""
    entries = value.get(key) if isinstance(value, dict) else None
    if not isinstance(entries, list):
        raise UserError(f"{path} has no {key!r} list: is it {what}?")
    return entries


def _web_pair(prefix: str, n: int, caption: str, url: str, image_id: str) -> tuple[str, Raw]:
    pair_id = f"{prefix}-{n}"
    return pair_id, {"pair_id": pair_id, "image_id": url if image_id == "url" else str(n), "caption": caption}


def read_conceptual_captions(path: Path, *, image_id: str = "line") -> Iterator[tuple[str, Raw]]:
    """Conceptual Captions TSV: ``caption<TAB>url`` per line; images keyed by line number or URL."""
    for n, line in enumerate(_text_lines(path)):
        fields = line.split("\t") if line is not None else []
        if line is None:
            yield f"cc-{n}", _NOT_UTF8
        elif len(fields) != 2:
            yield f"cc-{n}", {"error": f"expected 'caption<TAB>url', got {len(fields)} field(s)"}
        else:
            yield _web_pair("cc", n, fields[0], fields[1], image_id)


def check_sbu_urls(captions: Path, urls: Path | None) -> None:
    """Refuse SBU's caption text without its URL file (the JSON release holds the URLs itself).

    Raises:
        UserError: naming the caption file and the flag to add.
    """
    if urls is None and caption_file_kind(captions) != "sbu-json":
        raise UserError(f"{captions} is SBU's caption text: give its URL file with --urls")


def read_sbu(captions: Path, urls: Path | None, *, image_id: str = "line") -> Iterator[tuple[str, Raw]]:
    """SBU captions: the JSON release (``sbu-captions-all.json``), or ``SBU_captioned_photo_dataset_captions.txt``
    with ``..._urls.txt`` read line by line."""
    if caption_file_kind(captions) == "sbu-json":
        yield from read_sbu_json(captions, image_id=image_id)
        return
    check_sbu_urls(captions, urls)
    for n, (caption, url) in enumerate(
        zip_longest(_text_lines(captions), _text_lines(urls), fillvalue=False)
    ):
        if caption is False or url is False:
            yield f"sbu-{n}", {"error": f"{captions.name} and {urls.name} have different numbers of lines"}
        elif caption is None or url is None:
            yield f"sbu-{n}", _NOT_UTF8
        else:
            yield _web_pair("sbu", n, caption, url.strip(), image_id)


def _sbu_json_records(value: object, path: Path) -> list:
    """The (caption, url) of each record of SBU's JSON release: its columns ``captions`` and ``image_urls``
    (``sbu-captions-all.json``), or a list of records with ``caption`` and ``url`` or ``image_url``."""
    if isinstance(value, list):
        return [
            (entry.get("caption"), entry.get("image_url", entry.get("url")))
            if isinstance(entry, dict)
            else (None, None)
            for entry in value
        ]
    captions = _json_list(value, "captions", path, "SBU's JSON release")
    urls = _json_list(value, "image_urls", path, "SBU's JSON release")
    if len(captions) != len(urls):
        raise UserError(f"{path} has {len(captions)} captions but {len(urls)} image_urls")
    return list(zip(captions, urls))


def read_sbu_json(path: Path, *, image_id: str = "line") -> Iterator[tuple[str, Raw]]:
    """SBU's JSON release, record by record; images keyed by record number or URL, as for the text files."""
    for n, (caption, url) in enumerate(_sbu_json_records(_load_json(path), path)):
        if not isinstance(url, str) or not url:
            yield f"sbu-{n}", {"error": "record without an image URL"}
        else:
            yield _web_pair("sbu", n, caption, url, image_id)


def read_coco_json(path: Path) -> Iterator[tuple[str, Raw]]:
    """COCO captions JSON (``captions_train2017.json``): one record per entry of ``annotations``; an
    annotation whose image is not among the file's ``images`` is malformed."""
    value = _load_json(path)
    annotations = _json_list(value, "annotations", path, "a COCO captions file")
    images = value.get("images")
    known = (
        {str(image.get("id")) for image in images if isinstance(image, dict)}
        if isinstance(images, list)
        else None
    )
    for n, entry in enumerate(annotations):
        if not isinstance(entry, dict) or "image_id" not in entry:
            yield f"annotations[{n}]", {"error": "annotation without image_id"}
            continue
        pair_id = str(entry.get("id", f"annotations[{n}]"))
        if known is not None and str(entry["image_id"]) not in known:
            yield pair_id, {"error": f"image {entry['image_id']} is not among the file's images"}
            continue
        yield (
            pair_id,
            {"pair_id": pair_id, "image_id": str(entry["image_id"]), "caption": entry.get("caption")},
        )


def read_flickr30k_tokens(path: Path) -> Iterator[tuple[str, Raw]]:
    """Flickr30K ``results_20130124.token``: ``1000092795.jpg#0<TAB>caption`` per line."""
    for n, line in enumerate(_text_lines(path)):
        if line is None:
            yield f"line {n + 1}", _NOT_UTF8
            continue
        key, tab, caption = line.partition("\t")
        name, hash_sign, _ = key.partition("#")
        if not tab or not hash_sign:
            yield f"line {n + 1}", {"error": "expected 'image.jpg#k<TAB>caption'"}
            continue
        yield key, {"pair_id": key, "image_id": Path(name).stem, "caption": caption}


def _karpathy_pairs(image: object, n: int) -> Iterator[tuple[str, Raw]]:
    """The pairs of one Karpathy image entry; an image without sentences is one malformed record."""
    if not isinstance(image, dict):
        yield f"images[{n}]", {"error": "image entry is not a JSON object"}
        return
    image_id = str(image["cocoid"]) if "cocoid" in image else Path(str(image.get("filename", ""))).stem
    sentences = image.get("sentences")
    if not isinstance(sentences, list) or not sentences:
        yield f"images[{n}] ({image_id})", {"error": "image without sentences"}
        return
    for k, sentence in enumerate(sentences):
        if not isinstance(sentence, dict):
            yield f"images[{n}].sentences[{k}]", {"error": "sentence is not a JSON object"}
            continue
        pair_id = str(sentence.get("sentid", f"images[{n}].sentences[{k}]"))
        yield pair_id, {"pair_id": pair_id, "image_id": image_id, "caption": sentence.get("raw")}


def read_karpathy_json(path: Path, splits: tuple[str, ...]) -> Iterator[tuple[str, Raw]]:
    """Karpathy split JSON (``dataset_coco.json``, ``dataset_flickr30k.json``), images whose split is in ``splits``.

    COCO images are keyed by ``cocoid``, Flickr30K images by their file name without extension.
    """
    images = _json_list(_load_json(path), "images", path, "a Karpathy split file")
    for n, image in enumerate(images):
        if not isinstance(image, dict) or image.get("split") in splits:
            yield from _karpathy_pairs(image, n)


def read_jsonl(path: Path) -> Iterator[tuple[str, Raw]]:
    """JSON lines with ``image_id`` and ``caption``, optionally ``pair_id`` and a ``scene_graph`` in the
    parser's format (then it is used instead of parsing)."""
    for n, line in enumerate(_text_lines(path)):
        if line is None:
            yield f"line {n + 1}", _NOT_UTF8
            continue
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as error:
            yield f"line {n + 1}", {"error": f"invalid JSON ({getattr(error, 'msg', 'nested too deeply')})"}
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
