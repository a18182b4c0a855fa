"""Importers: caption files and region-feature files -> the pairs and images tables, resumably.

Records are read in file order and cut into shards of ``shard_size``; each shard is decoded (malformed
records skipped and counted), annotated (captions: scene graph and WordPieces, through
``datasets.map(num_proc=)``) and written atomically. A rerun skips the shards already on disk, so an
interrupted import neither loses nor duplicates records; the table's manifest is written last. An import
that yields no row at all is an error: it leaves no table behind, and no manifest.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import pyarrow.compute as pc
from datasets import Dataset, Features, Value
from tqdm.auto import tqdm

from ernievil_ds.data import captions as caption_readers
from ernievil_ds.data.region_features import FEATURE_READERS, check_feature_input, decode_region_record
from ernievil_ds.data.schema import IMAGES_DIR, NUM_DETECTOR_CLASSES, PAIR_FEATURES, PAIRS_DIR
from ernievil_ds.data.storage import (
    JOB,
    clear_table,
    completed_shards,
    images_dataset,
    pairs_dataset,
    read_manifest,
    shard_stats,
    table_source,
    write_detector_class_names,
    write_manifest,
    write_shard,
)
from ernievil_ds.data.tokenization import annotate_pairs, load_tokenizer
from ernievil_ds.distributed import get_logger
from ernievil_ds.errors import UserError, require_output_dir

logger = get_logger(__name__)

#: How many malformed record ids an import report keeps.
MAX_REPORTED = 10
_RAW_PAIR_FEATURES = Features(
    {key: Value("string") for key in ("pair_id", "image_id", "caption", "given_graph")}
)


@dataclass
class ImportReport:
    """What an import wrote: rows, malformed records skipped (and the first few ids, with the reason),
    and for captions how many have an empty scene graph (kept: masked language modelling still applies;
    ``None`` for region features)."""

    rows: int = 0
    malformed: int = 0
    first_malformed: list[str] = field(default_factory=list)
    empty_graphs: int | None = None

    def add(self, stats: dict) -> None:
        self.rows += stats["rows"]
        self.malformed += stats.get("malformed", 0)
        self.first_malformed = (self.first_malformed + stats.get("first_malformed", []))[:MAX_REPORTED]
        if "empty_graphs" in stats:
            self.empty_graphs = (self.empty_graphs or 0) + stats["empty_graphs"]

    def summary(self) -> str:
        text = f"{self.rows} rows written, {self.malformed} malformed records skipped"
        if self.first_malformed:
            text += " (first: " + "; ".join(self.first_malformed) + ")"
        if self.empty_graphs is not None:
            text += f", {self.empty_graphs} captions with an empty scene graph"
        return text


def describe_inputs(paths: Iterable[Path]) -> list[list]:
    """Input files with their sizes: a rerun on changed inputs must not resume the old shards."""
    return [[str(p.resolve()), p.stat().st_size if p.is_file() else None] for p in paths]


def _start_job(table_dir: Path, source: dict) -> dict | None:
    """The finished report if the table is complete for ``source``; else record the job and return None.

    Raises:
        ValueError: when the table holds (or was being written from) a different source.
    """
    previous, manifest = table_source(table_dir), read_manifest(table_dir)
    if manifest is None and not completed_shards(table_dir):
        previous = None  # an unfinished job that wrote nothing: nothing to lose by starting another
    if previous is not None and previous != source:
        raise ValueError(
            f"{table_dir} holds {'a finished' if manifest else 'an unfinished'} import of {previous}, not of "
            f"{source}: choose another output directory or split, or delete {table_dir}"
        )
    if manifest:
        return manifest["report"]
    table_dir.mkdir(parents=True, exist_ok=True)
    (table_dir / JOB).write_text(json.dumps(source))
    return None


def write_table(
    items: Iterable[tuple[str, object]],
    decode: Callable[[object], dict],
    build: Callable[[list[dict]], tuple[Dataset, dict]],
    table_dir: Path,
    *,
    source: dict,
    shard_size: int,
) -> ImportReport:
    """Decode, build and write ``items`` ((record id, raw record) pairs) as a sharded table, resumably.

    ``decode`` raises ``ValueError`` for a malformed record; ``build`` turns a shard's records into a
    ``Dataset`` and extra stats. Shards already on disk are skipped without decoding.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    finished = _start_job(table_dir, source)
    if finished is not None:
        logger.info("%s is already complete: %s", table_dir, ImportReport(**finished).summary())
        return ImportReport(**finished)
    done = set(completed_shards(table_dir))
    items = iter(items)
    progress = tqdm(desc=f"importing {table_dir.name}", unit=" records")
    for index, chunk in enumerate(iter(lambda: list(islice(items, shard_size)), [])):
        progress.update(len(chunk))
        if index in done:
            continue
        records, malformed = [], []
        for record_id, raw in chunk:
            try:
                records.append(decode(raw))
            except ValueError as error:
                malformed.append(f"{record_id}: {error}")
        dataset, extra = build(records)
        stats = {
            "rows": len(dataset),
            "malformed": len(malformed),
            "first_malformed": malformed[:MAX_REPORTED],
        }
        write_shard(dataset, table_dir, index, stats | extra)
    progress.close()
    return _finish_table(table_dir, source)


def _input_names(source: dict) -> str:
    return ", ".join(Path(path).name for path, _ in source["inputs"]) or "no input"


def _finish_table(table_dir: Path, source: dict) -> ImportReport:
    """Sum the shards' reports and write the manifest; a table of zero rows is removed instead.

    Raises:
        UserError: when no record could be imported, with the malformed records' count and first reasons.
    """
    report = ImportReport()
    for index in completed_shards(table_dir):
        report.add(shard_stats(table_dir, index))
    if report.rows == 0:
        clear_table(table_dir)
        raise UserError(f"nothing imported from {_input_names(source)} into {table_dir}: {report.summary()}")
    write_manifest(table_dir, {"source": source, "report": asdict(report)})
    (table_dir / JOB).unlink()
    if report.malformed:
        logger.warning("%s: %s", table_dir, report.summary())
    else:
        logger.info("%s: %s", table_dir, report.summary())
    return report


# --- captions -------------------------------------------------------------------------------------------

_worker_cache: dict = {}


def _default_parser(spacy_model: str | None, batch_size: int = 256):
    from ernievil_ds.scene_graph import SceneGraphParser

    return SceneGraphParser(spacy_model=spacy_model, batch_size=batch_size)


def _cached(key, make: Callable):
    """One tokenizer and one parser per process (``datasets.map`` workers included)."""
    if key not in _worker_cache:
        _worker_cache[key] = make()
    return _worker_cache[key]


def _clean_graph(graph: dict) -> dict:
    """The schema's fields of a graph (the parser adds ``caption``; users' JSONL may add more)."""
    return {
        "objects": [{"name": n["name"], "span": list(n["span"])} for n in graph["objects"]],
        "attributes": [
            {"object": n["object"], "name": n["name"], "span": list(n["span"])} for n in graph["attributes"]
        ],
        "relations": [
            {"subject": n["subject"], "object": n["object"], "name": n["name"], "span": list(n["span"])}
            for n in graph["relations"]
        ],
    }


def _annotate(batch: dict, tokenizer_path: str | None, parser_factory: Callable) -> dict:
    """``datasets.map`` function: scene graphs (given or parsed) and WordPieces of a batch of pairs."""
    tokenizer = _cached(("tokenizer", tokenizer_path), functools.partial(load_tokenizer, tokenizer_path))
    to_parse = [i for i, given in enumerate(batch["given_graph"]) if not given]
    graphs = [json.loads(given) if given else None for given in batch["given_graph"]]
    if to_parse:
        parser = _cached(("parser", parser_factory), parser_factory)
        for i, graph in zip(to_parse, parser.parse_stream(batch["caption"][i] for i in to_parse)):
            graphs[i] = graph
    graphs = [_clean_graph(graph) for graph in graphs]
    return {"scene_graph": graphs, **annotate_pairs(batch["caption"], graphs, tokenizer)}


def _build_pairs(records: list[dict], tokenizer_path, parser_factory, num_proc: int) -> tuple[Dataset, dict]:
    if not records:
        return pairs_dataset({key: [] for key in PAIR_FEATURES}), {"empty_graphs": 0}
    raw = Dataset.from_dict(
        {key: [r[key] for r in records] for key in _RAW_PAIR_FEATURES}, features=_RAW_PAIR_FEATURES
    )
    pairs = raw.map(
        _annotate,
        batched=True,
        batch_size=256,
        num_proc=min(num_proc, len(records)) if num_proc > 1 else None,
        fn_kwargs={"tokenizer_path": tokenizer_path, "parser_factory": parser_factory},
        remove_columns=["given_graph"],
        features=PAIR_FEATURES,
        desc="scene graphs + WordPieces",
    )
    empty = pc.sum(pc.equal(pc.list_value_length(pairs.data.table.column("node_types")), 0)).as_py() or 0
    return pairs, {"empty_graphs": empty}


def caption_items(
    format: str, inputs: list[Path], *, urls: Path | None, karpathy_splits: tuple[str, ...], image_id: str
) -> Iterator[tuple[str, dict]]:
    """(record id, raw record) of every input file of a caption format (one of ``captions.CAPTION_FORMATS``)."""
    for path in inputs:
        if format == "cc":
            yield from caption_readers.read_conceptual_captions(path, image_id=image_id)
        elif format == "sbu":
            yield from caption_readers.read_sbu(path, urls, image_id=image_id)
        elif format == "coco":
            yield from caption_readers.read_coco_json(path)
        elif format == "flickr30k":
            yield from caption_readers.read_flickr30k_tokens(path)
        elif format == "karpathy":
            yield from caption_readers.read_karpathy_json(path, karpathy_splits)
        else:
            yield from caption_readers.read_jsonl(path)


def _check_caption_inputs(format: str, inputs: list[Path], urls: Path | None) -> None:
    """Refuse, before anything is written, an input that is not a file of ``format``, and SBU caption text
    without its URL file.

    Raises:
        FileNotFoundError: a missing file. UserError: a file of another kind, or a missing ``urls``.
    """
    for path in inputs:
        caption_readers.check_caption_file(format, path)
        if format == "sbu":
            caption_readers.check_sbu_urls(path, urls)
    if urls is not None:
        caption_readers.check_caption_file("sbu", urls)


def import_captions(
    format: str,
    inputs: list[str | Path],
    output_dir: str | Path,
    *,
    split: str,
    urls: str | Path | None = None,
    karpathy_splits: tuple[str, ...] = ("train", "restval"),
    image_id: str = "line",
    tokenizer: str | None = None,
    spacy_model: str | None = None,
    num_proc: int = 1,
    shard_size: int = 10_000,
    parser_factory: Callable | None = None,
) -> ImportReport:
    """Import caption files into ``output_dir/pairs/<split>``: parse scene graphs, tokenise, align spans.

    Args:
        format: one of ``captions.CAPTION_FORMATS``.
        inputs: the caption files (several are read one after the other).
        split: the split name the pairs are written under ("train", "eval", ...).
        urls: SBU's URL file.
        karpathy_splits: which Karpathy splits to take ("train", "restval", "val", "test").
        image_id: "line" or "url": how Conceptual Captions / SBU images are keyed.
        tokenizer: a tokenizer path; None for the offline BERT uncased default.
        spacy_model: the parser's spaCy pipeline; None for the default.
        num_proc: processes for parsing and tokenisation.
        shard_size: records per shard (the unit of resumption).
        parser_factory: a picklable zero-argument callable returning an object with ``parse_stream``
            (default: the project's ``SceneGraphParser``).

    Raises:
        FileNotFoundError: for a missing input file. ValueError: for an unknown format, an input that is
        not a file of that format, an output that holds another import, or an import of zero rows.
    """
    inputs = [Path(p) for p in inputs]
    if format not in caption_readers.CAPTION_FORMATS:
        raise ValueError(
            f"unknown caption format {format!r}; choose one of {', '.join(caption_readers.CAPTION_FORMATS)}"
        )
    if image_id not in ("line", "url"):
        raise ValueError(f"image_id must be 'line' or 'url', got {image_id!r}")
    _check_caption_inputs(format, inputs, Path(urls) if urls is not None else None)
    require_output_dir(Path(output_dir))
    factory = parser_factory or functools.partial(_default_parser, spacy_model)
    source = {
        "kind": "captions",
        "format": format,
        "inputs": describe_inputs(inputs + ([Path(urls)] if urls is not None else [])),
        "karpathy_splits": list(karpathy_splits) if format == "karpathy" else None,
        "image_id": image_id,
        "tokenizer": tokenizer,
        "parser": spacy_model if parser_factory is None else repr(parser_factory),
    }
    items = caption_items(
        format, inputs, urls=Path(urls) if urls else None, karpathy_splits=karpathy_splits, image_id=image_id
    )
    build = functools.partial(
        _build_pairs, tokenizer_path=tokenizer, parser_factory=factory, num_proc=num_proc
    )
    table_dir = Path(output_dir) / PAIRS_DIR / split
    return write_table(
        items, caption_readers.decode_pair, build, table_dir, source=source, shard_size=shard_size
    )


# --- region features ------------------------------------------------------------------------------------


def _decode_image(raw, with_class_distribution: bool) -> dict:
    record = decode_region_record(raw)
    if with_class_distribution and "cls_prob" not in record:
        raise ValueError("no cls_prob, although the first image of this import has one")
    if not with_class_distribution:
        record.pop("cls_prob", None)
    return record


def _first_has_class_distribution(items: Iterable[tuple[str, object]]) -> bool:
    for _, raw in items:
        try:
            return "cls_prob" in decode_region_record(raw)
        except ValueError:
            continue
    return False


def read_detector_classes(path: str | Path) -> list[str]:
    """Class names from a vocabulary file, one per line; a file of 1600 names (bottom-up attention's
    objects_vocab.txt) leaves out the background class, which comes first among the detector's 1601.

    Raises:
        FileNotFoundError: a missing file. ValueError: a file that does not name every class.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detector class file {path} does not exist")
    names = path.read_text().splitlines()
    if len(names) == NUM_DETECTOR_CLASSES - 1:
        names = ["", *names]
    if len(names) != NUM_DETECTOR_CLASSES:
        raise ValueError(
            f"{path} has {len(names)} lines; expected {NUM_DETECTOR_CLASSES - 1} class names (without the "
            f"background) or {NUM_DETECTOR_CLASSES}"
        )
    return names


def import_region_features(
    format: str,
    inputs: list[str | Path],
    output_dir: str | Path,
    *,
    shard_size: int = 1000,
    detector_classes: str | Path | None = None,
) -> ImportReport:
    """Import region-feature files into ``output_dir/images`` (one images table per data directory).

    Args:
        format: "tsv" (bottom-up attention, ViLBERT or LXMERT variant), "lmdb" (ViLBERT-style, either
            flavour) or "npy" (per-image ``.npy``/``.npz`` files or directories of them).
        inputs: the files (or LMDB / ``.npy`` directories).
        detector_classes: a file of the detector's class names (``read_detector_classes``), recorded with
            the images: they name the regions for the grounding loss.

    The detector class distribution is kept when the first readable image has one (``cls_prob``).
    LMDB rows and ``.npy`` dicts are unpickled by ``safe_pickle``: a record referring to a global other
    than numpy's arrays and Python's builtins is refused, counted and reported as malformed.

    Raises:
        FileNotFoundError: for a missing input. ValueError: for an unknown format, an input of another
        format, an output holding another import, an LMDB whose ``keys`` entry is missing or refused, or
        an import of zero rows.
    """
    if format not in FEATURE_READERS:
        raise ValueError(f"unknown feature format {format!r}; choose one of {', '.join(FEATURE_READERS)}")
    paths = [Path(p) for p in inputs]
    for path in paths:
        check_feature_input(format, path)
    require_output_dir(Path(output_dir))
    class_names = read_detector_classes(detector_classes) if detector_classes is not None else None
    reader = FEATURE_READERS[format]
    with_cls = _first_has_class_distribution(reader(paths))
    source = {
        "kind": "region_features",
        "format": format,
        "inputs": describe_inputs(paths),
        "cls_prob": with_cls,
    }
    decode = functools.partial(_decode_image, with_class_distribution=with_cls)

    def build(records: list[dict]) -> tuple[Dataset, dict]:
        return images_dataset(records, with_class_distribution=with_cls), {}

    table_dir = Path(output_dir) / IMAGES_DIR
    report = write_table(reader(paths), decode, build, table_dir, source=source, shard_size=shard_size)
    if class_names is not None:
        write_detector_class_names(Path(output_dir), class_names)
    return report
