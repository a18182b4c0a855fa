"""The run folder that pretraining and fine-tuning share, and the pieces of a run both loops use.

A run folder (``--output-dir``) holds::

    run.json           the settings record, written at start: kind, resolved arguments, model config,
                       launch command, world size, package versions
    metrics.jsonl      one line per logged training step (``step``, ``loss``, ...)
    eval.jsonl         one line per evaluation (``step``, ``eval_*``)
    tensorboard/       the same numbers for TensorBoard
    checkpoints/step_00000100/
                       one folder per save; ``COMPLETE`` (JSON: step, world size, sampler position) is
                       written last, atomically, by the main process once every process has saved
    hf_model/          the final model (config.json, model.safetensors, tokenizer files, README.md card)
    cloze.json         the scene-graph cloze table of a pretraining run

Every name above is defined here once. What a run does at its end (export, model card, optional push
to the Hub) is ``finish_run``; the Hub's own code is handed in by the loop (``ernievil_ds.hub`` reads
this module, never the other way round).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ernievil_ds.distributed import barrier, dist_info, get_logger
from ernievil_ds.errors import UserError

logger = get_logger(__name__)

SETTINGS_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.jsonl"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINTS_DIR = "checkpoints"
MODEL_DIR = "hf_model"
CLOZE_FILE = "cloze.json"
COMPLETE_FILE = "COMPLETE"
CHECKPOINT_PREFIX = "step_"

PRETRAINING, FINETUNING = "pretraining", "fine-tuning"
RUN_KINDS = (PRETRAINING, FINETUNING)
#: The distributions whose versions the settings record keeps (None where one is not installed).
RECORDED_PACKAGES = (
    "ernievil-ds",
    "torch",
    "transformers",
    "deepspeed",
    "accelerate",
    "datasets",
    "triton",
    "spacy",
)


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder."""

    root: Path

    @property
    def settings_file(self) -> Path:
        return self.root / SETTINGS_FILE

    @property
    def metrics_file(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def eval_file(self) -> Path:
        return self.root / EVAL_FILE

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / TENSORBOARD_DIR

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    @property
    def model_dir(self) -> Path:
        return self.root / MODEL_DIR

    @property
    def cloze_file(self) -> Path:
        return self.root / CLOZE_FILE

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / checkpoint_name(step)


# --- the settings record -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSettings:
    """What ``run.json`` holds: everything needed to say how a run was made."""

    kind: str  # PRETRAINING or FINETUNING
    arguments: dict  # every argument after recipes and defaults, by its argparse ``dest``
    model_config: dict | None  # the trained model's config.to_dict()
    command: list[str]  # this process's command line, interpreter first (``sys.orig_argv``)
    world_size: int  # processes in the job
    versions: dict[str, str | None] = field(default_factory=dict)


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _plain(value: object) -> object:
    """A JSON value for an argument: paths as strings, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def write_settings(
    folder: RunFolder, kind: str, arguments: Mapping[str, object], model_config: dict | None
) -> RunSettings:
    """Write ``run.json`` (main process only: the caller checks) and return what it holds."""
    if kind not in RUN_KINDS:
        raise ValueError(f"kind must be one of {RUN_KINDS}, got {kind!r}")
    settings = RunSettings(
        kind=kind,
        arguments={name: _plain(value) for name, value in arguments.items()},
        model_config=model_config,
        command=list(sys.orig_argv),
        world_size=dist_info().world_size,
        versions=package_versions(),
    )
    folder.root.mkdir(parents=True, exist_ok=True)
    text = json.dumps(asdict(settings), indent=2, default=str) + "\n"
    write_atomically(folder.settings_file, text)
    return settings


def read_settings(run_dir: str | Path) -> RunSettings:
    """The settings record of the run in ``run_dir``.

    Raises:
        UserError: the folder holds no ``run.json``, or one this version of ernievil-ds cannot read.
    """
    path = RunFolder(Path(run_dir)).settings_file
    if not path.is_file():
        raise UserError(f"{run_dir} holds no {SETTINGS_FILE}: it is not a run folder of ernievil-ds")
    try:
        return RunSettings(**json.loads(path.read_text()))
    except (ValueError, TypeError) as error:
        raise UserError(f"{path} is not a settings record of ernievil-ds ({error})") from error


def is_run_folder(path: Path) -> bool:
    return RunFolder(Path(path)).settings_file.is_file()


# --- checkpoints ---------------------------------------------------------------------------------------


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the whole new one, never a part."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def complete_checkpoints(checkpoints_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint whose save finished (it holds ``COMPLETE``), oldest first."""
    found = []
    for marker in Path(checkpoints_dir).glob(f"{CHECKPOINT_PREFIX}*/{COMPLETE_FILE}"):
        found.append((json.loads(marker.read_text())["step"], marker.parent))
    return sorted(found)


def latest_checkpoint(checkpoints_dir: str | Path) -> tuple[int, Path] | None:
    """The step and folder of the newest complete checkpoint; None when there is none."""
    found = complete_checkpoints(checkpoints_dir)
    return found[-1] if found else None


def require_latest_checkpoint(checkpoints_dir: Path) -> tuple[int, Path]:
    """``latest_checkpoint`` for ``--resume``: a ``UserError`` naming the folder when there is none."""
    latest = latest_checkpoint(checkpoints_dir)
    if latest is None:
        raise UserError(
            f"--resume: {checkpoints_dir} holds no complete checkpoint (no {CHECKPOINT_PREFIX}*/{COMPLETE_FILE});"
            " leave --resume out to start this run afresh"
        )
    return latest


def checkpoint_record(checkpoint_dir: Path) -> dict:
    """The ``COMPLETE`` record of a checkpoint: ``step``, ``world_size`` and ``sampler`` (epoch, position)."""
    return json.loads((Path(checkpoint_dir) / COMPLETE_FILE).read_text())


def complete_checkpoint(
    checkpoint_dir: Path,
    step: int,
    sampler_state: dict[str, int],
    *,
    keep: int | None = None,
    add_files: Callable[[Path], None] | None = None,
) -> None:
    """Mark a checkpoint complete once every process has saved its part.

    Collective: after a barrier the main process runs ``add_files(checkpoint_dir)``, writes ``COMPLETE``
    atomically, deletes all but the ``keep`` newest complete checkpoints, and everyone meets again. A save
    killed before the end leaves no ``COMPLETE``, and ``latest_checkpoint`` passes over it.
    """
    barrier()
    if dist_info().is_main:
        if add_files is not None:
            add_files(checkpoint_dir)
        record = {"step": step, "world_size": dist_info().world_size, "sampler": sampler_state}
        write_atomically(checkpoint_dir / COMPLETE_FILE, json.dumps(record))
        if keep:
            for _, old in complete_checkpoints(checkpoint_dir.parent)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        logger.info("Saved checkpoint %s", checkpoint_dir)
    barrier()


# --- the data stream -----------------------------------------------------------------------------------


@dataclass
class SamplePosition:
    """Where a rank's sample stream stands: the epoch, and the samples this rank has drawn in it."""

    epoch: int = 0
    index: int = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.index}

    @classmethod
    def from_state_dict(cls, state: dict[str, int]) -> SamplePosition:
        return cls(int(state["epoch"]), int(state["position"]))


def resumed_batches(
    loader: DataLoader, position: SamplePosition, on_epoch: Callable[[int], None] | None = None
) -> Iterator:
    """The batches of ``loader`` from ``position`` on, epoch after epoch; ``position`` follows them.

    ``loader.sampler`` is a ``ResumableDistributedSampler`` (this rank's share of a permutation that is a
    function of seed and epoch only), so a run resumed from a saved position draws the batches the
    uninterrupted run drew. ``on_epoch(epoch)`` runs as each epoch starts (e.g. to reseed a collator).
    """
    sampler = loader.sampler
    while True:
        sampler.load_state_dict(position.state_dict())
        if on_epoch is not None:
            on_epoch(position.epoch)
        for batch in loader:
            position.index += loader.batch_size
            yield batch
        position.epoch, position.index = position.epoch + 1, 0


@contextlib.contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Restore the CPU's (and ``device``'s) random state on exit, so that an evaluation in the middle of
    training leaves the draws of the steps after it as they would be without it."""
    devices = [] if device.type == "cpu" else [device]
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        yield


# --- metrics -------------------------------------------------------------------------------------------


class LossAverager:
    """Sums named losses over micro-batches (a loss may be absent from a batch) and averages them over
    micro-batches and ranks on ``compute()``.

    Args:
        names: the loss fields to average, e.g. ``("loss",)`` or the pretraining tasks' losses. A NaN value
            of a name other than ``"loss"`` means "no targets in this batch" and is not counted; a NaN total
            ``"loss"`` is (it shows a divergence).
        device: the loop's device. The sums stay there (no host sync per step) and are reduced there
            (NCCL reduces GPU tensors only).
    """

    def __init__(self, names: tuple[str, ...] = ("loss",), device: torch.device | str = "cpu") -> None:
        self.names, self.device = tuple(names), torch.device(device)
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(len(self.names), dtype=torch.float64, device=self.device)
        self.counts = torch.zeros(len(self.names), dtype=torch.float64, device=self.device)

    def update(self, outputs: Mapping[str, torch.Tensor | None]) -> None:
        """Add the losses of one micro-batch (a ``ModelOutput`` or a dict), on-device, without a host sync."""
        for i, name in enumerate(self.names):
            value = outputs.get(name)
            if value is not None:
                value = value.detach().to(self.device, torch.float64)
                present = (
                    ~torch.isnan(value)
                    if name != "loss"
                    else torch.ones((), dtype=torch.bool, device=self.device)
                )
                self.sums[i] += torch.where(present, value, 0.0)
                self.counts[i] += present

    def compute(self) -> dict[str, float]:
        """Each name's mean over everything seen since ``reset`` on every rank (collective when distributed)."""
        totals = torch.stack([self.sums, self.counts])  # (2, names)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals)
        return {name: float(s / c) for name, s, c in zip(self.names, *totals.cpu()) if c > 0}


class MetricsWriter:
    """Appends one JSON object per logged training step to ``metrics.jsonl`` and each evaluation to
    ``eval.jsonl``, and mirrors both to TensorBoard. Only the main process writes; the others hold a
    disabled writer.
    """

    def __init__(self, folder: RunFolder, enabled: bool) -> None:
        self.enabled, self.folder = enabled, folder
        self._tensorboard = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(log_dir=str(folder.tensorboard_dir))

    def write(self, record: dict) -> None:
        self._append(self.folder.metrics_file, record)

    def write_eval(self, record: dict) -> None:
        self._append(self.folder.eval_file, record)

    def _append(self, path: Path, record: dict) -> None:
        if not self.enabled:
            return
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self._tensorboard.add_scalar(key, value, record["step"])
        self._tensorboard.flush()

    def drop_after(self, step: int) -> None:
        """On resume, forget records logged after the checkpoint so that the resumed run does not repeat them."""
        for path in (self.folder.metrics_file, self.folder.eval_file):
            if self.enabled and path.is_file():
                kept = [
                    line
                    for line in path.read_text().splitlines()
                    if line and json.loads(line)["step"] <= step
                ]
                path.write_text("".join(line + "\n" for line in kept))

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def read_metrics(path: Path) -> list[dict]:
    """All records of a ``metrics.jsonl`` or ``eval.jsonl``; ``FileNotFoundError`` names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No metrics file at {path}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- the end of a run ----------------------------------------------------------------------------------


class Publisher(Protocol):
    """What ``finish_run`` needs of the Hub (``ernievil_ds.hub.push.HubPublisher``)."""

    repo_id: str | None  # the repository to push to; None: write the card, push nothing

    def write_card(self, run_dir: Path) -> None: ...

    def push(self, run_dir: Path) -> object: ...


def finish_run(folder: RunFolder, export: Callable[[RunFolder], None], publisher: Publisher | None) -> None:
    """The end of every run. Collective.

    The main process runs ``export(folder)`` (the final model into ``hf_model/``, and whatever evaluation
    the model card reports), then writes the model card beside the model; after a barrier, so that no rank
    waits on the network, it pushes ``hf_model/`` when the publisher names a repository.
    """
    is_main = dist_info().is_main
    if is_main:
        export(folder)
        if publisher is not None and folder.model_dir.is_dir():
            publisher.write_card(folder.root)
    barrier()
    if is_main and publisher is not None and publisher.repo_id is not None:
        publisher.push(folder.root)
