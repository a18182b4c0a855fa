"""``SceneGraphParser``: captions in, scene-graph dicts out, streamed in input order.

One process runs ``nlp.pipe`` with the ``ernievil_scene_graph_v1`` component at the end of the
pipeline. With ``n_process > 1`` each worker process holds the pipeline (inherited when forked,
else loaded once) and parses whole chunks of ``batch_size`` captions with ``nlp.pipe``, sending
back only the graphs: spaCy's own ``nlp.pipe(n_process=...)`` sends every Doc back and rebuilds it
in the parent, which then becomes the bottleneck. At most two chunks per worker are in flight, so
memory does not grow with the input."""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

from ernievil_ds.assets import DEFAULT_SPACY_PIPELINES, SPACY_INSTALL_HINT, default_spacy_pipeline

#: Pipeline components the rules do not read, left out when loading (named entities cost ~15%).
UNUSED_COMPONENTS = ("ner", "senter")
#: Longer inputs are not captions; they get an empty graph instead of a slow parse.
MAX_CAPTION_CHARS = 1000
#: Chunks waiting in or coming back from each worker; bounds the memory of a streamed run.
CHUNKS_IN_FLIGHT_PER_WORKER = 2


def install_command(spacy_model: str) -> str:
    """The command that installs a spaCy pipeline of this name."""
    if spacy_model in DEFAULT_SPACY_PIPELINES:
        return SPACY_INSTALL_HINT
    return f"python -m spacy download {spacy_model}"


def load_pipeline(spacy_model: str, *, with_predicate: str | None = None):
    """Load a spaCy pipeline (installed package name or path) and add the scene-graph component.

    Components the rules do not read are left out, and the attribute ruler is replaced by its
    equivalent ``FastAttributeRuler``.

    Raises:
        OSError: when the pipeline is not installed, with the command that installs it.
        ValueError: when the pipeline has no dependency parser.
    """
    import spacy

    from ernievil_ds.scene_graph.component import FACTORY_NAME
    from ernievil_ds.scene_graph.fast_attributes import speed_up_attribute_ruler

    try:
        nlp = spacy.load(spacy_model, exclude=list(UNUSED_COMPONENTS))
    except OSError as error:
        if Path(spacy_model).exists():
            raise
        raise OSError(
            f"spaCy pipeline {spacy_model!r} is not installed. Install it with: {install_command(spacy_model)}"
        ) from error
    if "parser" not in nlp.pipe_names:
        raise ValueError(
            f"spaCy pipeline {spacy_model!r} has no dependency parser (components: {nlp.pipe_names}); "
            "the scene-graph rules need one"
        )
    speed_up_attribute_ruler(nlp)
    config = {} if with_predicate is None else {"with_predicate": with_predicate}
    nlp.add_pipe(FACTORY_NAME, config=config)
    return nlp


def caption_problem(value: object, max_chars: int = MAX_CAPTION_CHARS) -> str | None:
    """Why ``value`` cannot be parsed as a caption ("not text", "empty", "too long"), or None."""
    if not isinstance(value, str):
        return "not text"
    if not value.strip():
        return "empty"
    if len(value) > max_chars:
        return "too long"
    return None


def empty_graph(value: object) -> dict:
    """The graph of an unusable caption: no nodes; the caption itself when it is text."""
    return {
        "caption": value if isinstance(value, str) else "",
        "objects": [],
        "attributes": [],
        "relations": [],
    }


def parse_chunk(nlp, values: list[object], batch_size: int, max_chars: int) -> list[dict]:
    """Graphs of one chunk of captions, in order; unusable ones get ``empty_graph``."""
    graphs: list[dict | None] = [None] * len(values)
    usable = []
    for k, value in enumerate(values):
        if caption_problem(value, max_chars) is None:
            usable.append(k)
        else:
            graphs[k] = empty_graph(value)
    docs = nlp.pipe((values[k] for k in usable), batch_size=batch_size)
    for k, doc in zip(usable, docs):
        graphs[k] = doc._.scene_graph
    return graphs


class SceneGraphParser:
    """Caption -> scene graph with a spaCy pipeline (see ``ernievil_ds.scene_graph.rules``).

    Args:
        spacy_model: an installed pipeline name or a path; None picks ``default_spacy_pipeline()``.
        n_process: worker processes for ``parse_stream`` (1: parse in this process).
        batch_size: captions per ``nlp.pipe`` batch, and per chunk sent to a worker.
        with_predicate: relation name for "X with Y" (None: the component's default, "with").
        max_caption_chars: longer captions get an empty graph.

    Raises:
        OSError: when the pipeline is not installed (the message has the install command).
        ValueError: for a non-positive ``n_process`` or ``batch_size``, or a pipeline without parser.
    """

    def __init__(
        self,
        spacy_model: str | None = None,
        n_process: int = 1,
        batch_size: int = 256,
        *,
        with_predicate: str | None = None,
        max_caption_chars: int = MAX_CAPTION_CHARS,
    ):
        if n_process < 1:
            raise ValueError(f"n_process must be >= 1, got {n_process}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.spacy_model = spacy_model or default_spacy_pipeline()
        self.n_process = n_process
        self.batch_size = batch_size
        self.with_predicate = with_predicate
        self.max_caption_chars = max_caption_chars
        self.nlp = load_pipeline(self.spacy_model, with_predicate=with_predicate)

    def parse(self, caption: object) -> dict:
        """The scene graph of one caption (an empty graph when it is not usable text)."""
        if caption_problem(caption, self.max_caption_chars) is not None:
            return empty_graph(caption)
        return self.nlp(caption)._.scene_graph

    def parse_stream(self, captions: Iterable[object]) -> Iterator[dict]:
        """Scene graphs of ``captions``, lazily and in input order, one per caption."""
        remaining = iter(captions)
        chunks = iter(lambda: list(islice(remaining, self.batch_size)), [])
        if self.n_process == 1:
            for chunk in chunks:
                yield from parse_chunk(self.nlp, chunk, self.batch_size, self.max_caption_chars)
            return
        yield from self._parse_in_workers(chunks)

    def _parse_in_workers(self, chunks: Iterator[list[object]]) -> Iterator[dict]:
        """``parse_stream`` over a pool of ``n_process`` workers, a bounded number of chunks ahead."""
        global _worker_nlp
        _worker_nlp = self.nlp  # forked workers inherit it; spawned ones load their own
        settings = (self.spacy_model, self.with_predicate)
        with multiprocessing.get_context().Pool(self.n_process, _init_worker, settings) as pool:
            pending: deque = deque()
            for chunk in chunks:
                pending.append(
                    pool.apply_async(_parse_in_worker, (chunk, self.batch_size, self.max_caption_chars))
                )
                if len(pending) >= CHUNKS_IN_FLIGHT_PER_WORKER * self.n_process:
                    yield from pending.popleft().get()
            while pending:
                yield from pending.popleft().get()


_worker_nlp = None


def _init_worker(spacy_model: str, with_predicate: str | None) -> None:
    """Load the pipeline once per worker process, unless the worker was forked with it."""
    global _worker_nlp
    if _worker_nlp is None:
        _worker_nlp = load_pipeline(spacy_model, with_predicate=with_predicate)


def _parse_in_worker(values: list[object], batch_size: int, max_chars: int) -> list[dict]:
    return parse_chunk(_worker_nlp, values, batch_size, max_chars)
