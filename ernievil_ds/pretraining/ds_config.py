"""Reading a DeepSpeed JSON config and checking it against the job before DeepSpeed sees it.

The settings themselves live only in ``ds_configs/*.json``; this module reads them, refuses a key that
DeepSpeed does not know (DeepSpeed ignores an unknown top-level key: a misspelled ``zero_optimization``
would train without ZeRO), checks that the batch sizes fit the world size (DeepSpeed's own assertion is
hard to read), and lets ``--max-steps`` set the schedule's length so that warmup/decay end where the run
ends.
"""

from __future__ import annotations

import difflib
import functools
import json
import typing
from pathlib import Path

from ernievil_ds.errors import UserError

# Top-level keys that DeepSpeed reads outside ``DeepSpeedConfig._initialize_params`` (in its ``__init__``),
# so that ``known_top_level_keys`` cannot see them by recording.
_KEYS_READ_ELSEWHERE = ("sequence_parallel_size",)
# Blocks read as a type and its free-form ``params`` (the optimizer's or scheduler's own arguments).
_TYPED_BLOCK_KEYS = {"optimizer": ("type", "params", "legacy_fusion"), "scheduler": ("type", "params")}


class _RecordingDict(dict):
    """A dict that records every key looked up in it, however DeepSpeed spells the lookup."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.looked_up: set = set()

    def __contains__(self, key) -> bool:
        self.looked_up.add(key)
        return super().__contains__(key)

    def get(self, key, default=None):
        self.looked_up.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.looked_up.add(key)
        return super().__getitem__(key)

    def keys(self):  # ``key in config.keys()`` is how DeepSpeed reads some blocks
        recorder = self.looked_up

        class _Keys(set):
            def __contains__(self, key) -> bool:
                recorder.add(key)
                return super().__contains__(key)

        return _Keys(super().keys())


def _looked_up_by_deepspeed(block: str | None = None) -> frozenset[str]:
    """The keys DeepSpeed's config parser looks up in a minimal config, or, for ``block``, in that
    top-level block given empty (its parser then asks for each key it knows, to fall back on defaults)."""
    from deepspeed.runtime.config import DeepSpeedConfig

    config = _RecordingDict({"train_micro_batch_size_per_gpu": 1})
    watched = config
    if block is not None:
        watched = config[block] = _RecordingDict()
    DeepSpeedConfig.__new__(DeepSpeedConfig)._initialize_params(config)
    return frozenset(k for k in watched.looked_up if isinstance(k, str))


@functools.cache
def known_top_level_keys() -> frozenset[str]:
    """Every top-level key the installed DeepSpeed reads: those its config parser looks up (recorded, so the
    list follows the DeepSpeed version), and ``_KEYS_READ_ELSEWHERE``."""
    return _looked_up_by_deepspeed() | frozenset(_KEYS_READ_ELSEWHERE)


@functools.cache
def known_block_keys(block: str) -> frozenset[str]:
    """The keys DeepSpeed's parser reads in a top-level block without a pydantic model (``aio``,
    ``activation_checkpointing``, ``flops_profiler``, ``checkpoint``...); empty when it reads the block
    otherwise than key by key (then the block is not checked)."""
    return _looked_up_by_deepspeed(block)


@functools.cache
def _block_models() -> dict[str, type]:
    """DeepSpeed's pydantic model of each top-level block that has one (they forbid unknown keys)."""
    from deepspeed.comm.config import CommsLoggerConfig
    from deepspeed.compile.config import CompileConfig
    from deepspeed.monitor.config import CometConfig, CSVConfig, TensorBoardConfig, WandbConfig
    from deepspeed.runtime.config import HybridEngineConfig
    from deepspeed.runtime.precision_config import DeepSpeedBF16Config, DeepSpeedFP16Config
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    return {
        "zero_optimization": DeepSpeedZeroConfig,
        "fp16": DeepSpeedFP16Config,
        "bf16": DeepSpeedBF16Config,
        "bfloat16": DeepSpeedBF16Config,
        "tensorboard": TensorBoardConfig,
        "wandb": WandbConfig,
        "csv_monitor": CSVConfig,
        "comet": CometConfig,
        "comms_logger": CommsLoggerConfig,
        "hybrid_engine": HybridEngineConfig,
        "compile": CompileConfig,
    }


def _model_fields(model: type) -> dict[str, type | None]:
    """The keys a pydantic model accepts (names and aliases), each with its nested model or None."""
    from pydantic import BaseModel

    fields = {}
    for name, info in model.model_fields.items():
        nested = next(
            (
                t
                for t in (info.annotation, *typing.get_args(info.annotation))
                if isinstance(t, type) and issubclass(t, BaseModel)
            ),
            None,
        )
        fields[name] = nested
        if info.alias:
            fields[info.alias] = nested
    return fields


def _removed_top_level_keys() -> dict[str, str]:
    """DeepSpeed's message for each top-level block it has removed (``elasticity``, ``sparse_attention``...)."""
    from deepspeed.runtime import config

    return getattr(config, "_REMOVED_TOP_LEVEL_CONFIG_KEYS", {})


def _refuse_unknown(key: str, known, where: str, path: Path) -> None:
    if not where and key in _removed_top_level_keys():
        raise UserError(f"DeepSpeed config {path}: {_removed_top_level_keys()[key]}")
    if key not in known:
        close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
        hint = f": did you mean {close[0]!r}?" if close else f"; DeepSpeed reads {', '.join(sorted(known))}"
        raise UserError(f"DeepSpeed config {path}: unknown key {where + key!r}{hint}")


def _check_block(block: dict, model: type, where: str, path: Path) -> None:
    fields = _model_fields(model)
    for key, value in block.items():
        _refuse_unknown(key, fields, where, path)
        if fields[key] is not None and isinstance(value, dict):
            _check_block(value, fields[key], f"{where}{key}.", path)


def check_ds_config_keys(config: dict, path: Path) -> None:
    """Refuse a key DeepSpeed does not know: at the top level, in the typed blocks (optimizer, scheduler),
    at every level of the blocks DeepSpeed has a model of, and at the first level of the blocks its parser
    reads key by key; the message names the closest valid key.

    Raises:
        UserError: naming the file, the key (dotted under its block) and the closest valid one.
    """
    models = _block_models()
    for key, value in config.items():
        _refuse_unknown(key, known_top_level_keys(), "", path)
        if key in _TYPED_BLOCK_KEYS and isinstance(value, dict):
            for inner in value:
                _refuse_unknown(inner, _TYPED_BLOCK_KEYS[key], f"{key}.", path)
        elif key in models and isinstance(value, dict):
            _check_block(value, models[key], f"{key}.", path)
        elif isinstance(value, dict) and known_block_keys(key):
            for inner in value:
                _refuse_unknown(inner, known_block_keys(key), f"{key}.", path)


def load_ds_config(path: str | Path) -> dict:
    """Read a DeepSpeed JSON config and refuse keys DeepSpeed does not know (``check_ds_config_keys``).

    Raises:
        FileNotFoundError: a missing file. UserError: not a JSON object, or an unknown key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"DeepSpeed config {path} does not exist (see ds_configs/ for the shipped ones)"
        )
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"DeepSpeed config {path} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise UserError(f"DeepSpeed config {path} holds a {type(config).__name__}, not a JSON object")
    check_ds_config_keys(config, path)
    return config


def resolve_batch_sizes(ds_config: dict, world_size: int) -> tuple[int, int, int]:
    """Return (global batch, micro batch per rank, accumulation steps), checking that they fit ``world_size``.

    Like DeepSpeed, any two of the three determine the third; all three given must satisfy
    ``train_batch_size == micro_batch * accumulation_steps * world_size``.

    Raises:
        ValueError: in plain words, with the numbers, when they do not fit.
    """
    total = ds_config.get("train_batch_size")
    micro = ds_config.get("train_micro_batch_size_per_gpu")
    accumulation = ds_config.get("gradient_accumulation_steps")
    if micro is None and accumulation is None:
        accumulation = 1
    if total is None:
        if micro is None:
            raise ValueError(
                "The DeepSpeed config must set train_micro_batch_size_per_gpu or train_batch_size"
            )
        accumulation = accumulation or 1
        return micro * accumulation * world_size, micro, accumulation
    if micro is None:
        if total % (accumulation * world_size):
            raise ValueError(
                f"train_batch_size={total} cannot be split over {world_size} processes with "
                f"gradient_accumulation_steps={accumulation}: {total} is not a multiple of {accumulation * world_size}"
            )
        return total, total // (accumulation * world_size), accumulation
    if accumulation is None:
        if total % (micro * world_size):
            raise ValueError(
                f"train_batch_size={total} is not a multiple of train_micro_batch_size_per_gpu={micro} x "
                f"{world_size} processes = {micro * world_size}"
            )
        return total, micro, total // (micro * world_size)
    if micro * accumulation * world_size != total:
        raise ValueError(
            f"The batch sizes do not fit this world of {world_size} processes: train_micro_batch_size_per_gpu="
            f"{micro} x gradient_accumulation_steps={accumulation} x {world_size} processes = "
            f"{micro * accumulation * world_size}, but train_batch_size={total}. Change one of them, e.g. "
            f"gradient_accumulation_steps={total / (micro * world_size):g} for this world size."
        )
    return total, micro, accumulation


def fit_schedule_to_steps(ds_config: dict, max_steps: int) -> dict:
    """Return a copy of ``ds_config`` whose LR schedule ends at ``max_steps`` (warmup kept, capped at 10%
    of the run when the run is shorter than the configured warmup)."""
    config = json.loads(json.dumps(ds_config))
    params = config.get("scheduler", {}).get("params")
    if params is not None and "total_num_steps" in params:
        params["total_num_steps"] = max_steps
        if params.get("warmup_num_steps", 0) >= max_steps:
            params["warmup_num_steps"] = max(1, max_steps // 10)
    return config
