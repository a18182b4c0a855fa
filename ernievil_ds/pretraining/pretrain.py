"""The pretraining job run by ``launchers/pretrain.py``: model and data set-up, and the loop.

The launcher owns the DeepSpeed calls that define a DeepSpeed program (``init_distributed``,
``initialize``); everything else a run needs is here: building the model (preset or config file,
optional text-stream initialisation from BERT), the data (a prepared directory, or SynthScenes by
default), the learning-rate schedule, the training loop over the engine, metrics, periodic evaluation,
fault-tolerant checkpoints and the final export.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForPreTraining

from ernievil_ds.configuration_ernievil import ErnieVilConfig
from ernievil_ds.data import (
    ResumableDistributedSampler,
    SGPCollator,
    build_synth_scenes,
    default_synth_dir,
    load_pretraining_split,
    load_tokenizer,
)
from ernievil_ds.data.schema import IMAGES_DIR, MANIFEST, PAIRS_DIR
from ernievil_ds.data.storage import load_detector_class_names
from ernievil_ds.data.transfer import batch_to_device, loader_pins_memory
from ernievil_ds.distributed import barrier, dist_info, get_logger, release_shm_allreduce_buffer
from ernievil_ds.errors import UserError
from ernievil_ds.modeling_ernievil import ErnieVilForPreTraining, training_flops_per_sample
from ernievil_ds.pretraining.checkpoint import load_latest_checkpoint, save_checkpoint
from ernievil_ds.pretraining.determinism import apply_determinism
from ernievil_ds.pretraining.dispatch import current_device, resolve_kernel_arguments, training_dtype
from ernievil_ds.pretraining.ds_config import fit_schedule_to_steps, load_ds_config, resolve_batch_sizes
from ernievil_ds.pretraining.metrics import LOSS_NAMES, ThroughputMeter
from ernievil_ds.pretraining.schedules import noam_schedule
from ernievil_ds.runs import (
    PRETRAINING,
    LossAverager,
    MetricsWriter,
    RunFolder,
    SamplePosition,
    finish_run,
    preserved_rng,
    require_latest_checkpoint,
    resumed_batches,
    write_settings,
)

logger = get_logger(__name__)


def build_config(args: argparse.Namespace) -> ErnieVilConfig:
    """The config of ``--model-config`` or ``--preset``, with ``--loss-weights`` merged over its weights and
    validated as any config is. The config file's ``model_type`` picks the config class."""
    if args.model_config is None:
        overrides = {"task_loss_weights": args.loss_weights} if args.loss_weights else {}
        return ErnieVilConfig.from_preset(args.preset, **overrides)
    if not args.model_config.is_file():
        raise FileNotFoundError(f"--model-config {args.model_config} does not exist")
    try:
        values = json.loads(args.model_config.read_text())
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise UserError(f"--model-config {args.model_config} is not a JSON file ({error})") from error
    if not isinstance(values, dict):
        raise UserError(
            f"--model-config {args.model_config} holds a {type(values).__name__}, not a JSON object"
        )
    model_type = values.pop("model_type", ErnieVilConfig.model_type)
    if args.loss_weights:
        values["task_loss_weights"] = {**(values.get("task_loss_weights") or {}), **args.loss_weights}
    return AutoConfig.for_model(model_type, **values)


def build_model(args: argparse.Namespace) -> ErnieVilForPreTraining:
    """The pretraining model of ``build_config``, optionally with a BERT-initialised text stream."""
    config = build_config(args)
    config._attn_implementation = args.attn_implementation
    config.masked_token_loss_implementation = args.masked_token_loss
    model = AutoModelForPreTraining.from_config(config)
    if args.init_text_from != "none":
        from ernievil_ds.assets import minilm_dir
        from ernievil_ds.text_init import init_text_stream_from_bert

        init_text_stream_from_bert(
            model, minilm_dir() if args.init_text_from == "minilm" else args.init_text_from
        )
    if args.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)  # optimizer_groups leaves it out
    return model


def prepare_data_dir(args: argparse.Namespace, tokenizer) -> Path:
    """The data directory of this run; SynthScenes is built once, by rank 0, while the others wait."""
    if args.data_dir is not None:
        if not args.data_dir.is_dir():
            raise FileNotFoundError(
                f"--data-dir {args.data_dir} does not exist; prepare one with launchers/prepare_data.py, "
                f"or leave --data-dir out to train on the built-in SynthScenes"
            )
        check_prepared_data_dir(args.data_dir)
        return args.data_dir
    data_dir = default_synth_dir(args.seed, args.synth_train_images, args.synth_eval_images)
    if dist_info().is_main:
        build_synth_scenes(
            data_dir,
            num_train_images=args.synth_train_images,
            num_eval_images=args.synth_eval_images,
            seed=args.seed,
            tokenizer=tokenizer,
        )
    barrier()
    return data_dir


#: The tables a pretraining run reads from its data directory.
REQUIRED_TABLES = (f"{PAIRS_DIR}/train", f"{PAIRS_DIR}/eval", IMAGES_DIR)


def check_prepared_data_dir(data_dir: Path) -> None:
    """Refuse a data directory that lacks one of ``REQUIRED_TABLES`` or holds an unfinished one.

    Raises:
        UserError: naming every table that is missing or unfinished.
    """
    problems = [
        f"{table} {'is unfinished (no ' + MANIFEST + ')' if (data_dir / table).is_dir() else 'is missing'}"
        for table in REQUIRED_TABLES
        if not (data_dir / table / MANIFEST).is_file()
    ]
    if problems:
        raise UserError(
            f"--data-dir {data_dir} is not ready for pretraining: {'; '.join(problems)}. Import captions "
            "(--split train and --split eval) and features with launchers/prepare_data.py, or rerun an "
            "interrupted import to finish it"
        )


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite: the run stops before it saves the damaged weights."""


class NonFiniteLossGuard:
    """Stops an fp32/bf16 run at the first micro-batch whose loss is not finite, naming the step and pairs.

    ``watch`` keeps one on-device flag per micro-batch (no host sync on the hot path); ``check``, called at
    each optimizer step, reduces them over ranks (one sync per step) and raises on every rank, before any
    checkpoint of the damaged weights is saved. fp16 runs are left to DeepSpeed's loss scaler, which skips
    the steps whose gradients overflow.
    """

    def __init__(self, enabled: bool, pair_ids_at: Callable[[int, int], list[str]]) -> None:
        self.enabled, self.pair_ids_at = enabled, pair_ids_at
        self.flags: list[torch.Tensor] = []
        self.batches: list[tuple[int, int, int]] = []  # (step, epoch, first sample index) per micro-batch

    def watch(self, loss: torch.Tensor, step: int, epoch: int, first_index: int) -> None:
        if self.enabled:
            self.flags.append(~torch.isfinite(loss.detach()))
            self.batches.append((step, epoch, first_index))

    def check(self) -> None:
        """Collective. Raises NonFiniteLossError naming the first bad micro-batch's step and pair ids."""
        if not self.flags:
            return
        local = torch.stack(self.flags).to(torch.int32)  # (micro_batches,)
        flags = local.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        bad = torch.nonzero(flags).flatten().tolist()
        batches, self.flags, self.batches = self.batches, [], []
        if bad:
            step, epoch, first_index = batches[bad[0]]
            culprits = self._gather_pair_ids(bool(local[bad[0]]), epoch, first_index)
            raise NonFiniteLossError(
                f"the training loss is not finite at step {step} (batch of pairs {culprits}); stopped before "
                "saving, so the last complete checkpoint is intact: lower the learning rate or check those pairs"
            )

    def _gather_pair_ids(self, mine: bool, epoch: int, first_index: int) -> str:
        ids = self.pair_ids_at(epoch, first_index) if mine else None
        gathered = [ids]
        if dist.is_available() and dist.is_initialized():
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, ids)
        return "; ".join(f"rank {rank}: {', '.join(i)}" for rank, i in enumerate(gathered) if i is not None)


def add_grounding_targets(collator: SGPCollator, config: ErnieVilConfig, data_dir: Path) -> None:
    """Give the collator the detector's class names when the model has a grounding loss, so that its
    batches carry ``region_word_targets``.

    Raises:
        ValueError: when the model has a grounding loss and the data directory records no class names.
    """
    if not getattr(config, "grounding_co_layers", None):
        return
    names = load_detector_class_names(data_dir)
    if names is None:
        raise ValueError(
            f"This model's grounding loss (config.grounding_co_layers) needs the detector's class names, and "
            f"{data_dir} has none: import the features with `prepare_data.py features --detector-classes "
            f"objects_vocab.txt`, or set grounding_co_layers to [] in a --model-config"
        )
    collator.set_region_class_names(names)


def check_padding_fits(multiple: int, max_text_len: int, config: ErnieVilConfig) -> None:
    """Refuse a ``--pad-to-multiple-of`` that pads captions past the model's position embeddings.

    Raises:
        UserError: naming the padded length and the model's limit.
    """
    padded = -(-max_text_len // multiple) * multiple
    if padded > config.max_position_embeddings:
        raise UserError(
            f"--pad-to-multiple-of {multiple} pads captions of up to {max_text_len} tokens to {padded}, more "
            f"than the model's {config.max_position_embeddings} positions: choose a multiple of at most "
            f"{config.max_position_embeddings}"
        )


def engine_dtype(engine) -> torch.dtype:
    if engine.fp16_enabled():
        return torch.float16
    if engine.bfloat16_enabled():
        return torch.bfloat16
    return torch.float32


def check_hub_arguments(args: argparse.Namespace) -> None:
    """With ``--push-to-hub``: an export to push, a valid repository name and a token, checked before
    training rather than at its end."""
    if args.push_to_hub is None:
        return
    if not args.export:
        raise UserError("--push-to-hub publishes the export at the end: drop --no-export")
    from ernievil_ds.hub.push import check_push_ready

    check_push_ready(args.push_to_hub)


@dataclass
class PretrainingRun:
    """Everything a run needs before ``deepspeed.initialize``, and the loop that runs after it."""

    args: argparse.Namespace
    ds_config: dict
    model: ErnieVilForPreTraining
    tokenizer: object
    data_dir: Path
    micro_batch_size: int
    collator: SGPCollator

    @classmethod
    def prepare(cls, args: argparse.Namespace) -> PretrainingRun:
        """Collective, after ``deepspeed.init_distributed``: release DeepSpeed's /dev/shm buffer names
        (``release_shm_allreduce_buffer``), check the DeepSpeed config against the world size, then build
        tokenizer, data and model.

        Raises:
            ValueError: batch sizes that do not fit the world size, an unknown preset, a bad argument, a
                data split with no pair left once joined with the images, or too few for one batch.
            FileNotFoundError: a missing config file, data directory or checkpoint.
        """
        release_shm_allreduce_buffer()
        info = dist_info()
        apply_determinism(args)
        if args.max_steps < 1:
            raise ValueError(f"--max-steps must be at least 1, got {args.max_steps}")
        check_hub_arguments(args)
        ds_config = fit_schedule_to_steps(load_ds_config(args.deepspeed_config), args.max_steps)
        _, micro_batch_size, _ = resolve_batch_sizes(ds_config, info.world_size)
        tokenizer = load_tokenizer(args.tokenizer)
        collator = SGPCollator(
            tokenizer,
            sgp=args.sgp,
            seed=args.seed,
            node_mask_prob=args.node_mask_prob,
            itm_negative_prob=args.itm_negative_prob,
            pad_to_multiple_of=args.pad_to_multiple_of,
        )
        resolve_kernel_arguments(args, current_device(), training_dtype(ds_config), log=info.is_main)
        torch.manual_seed(args.seed)  # the same initial weights on every rank
        model = build_model(args)
        data_dir = prepare_data_dir(args, tokenizer)
        add_grounding_targets(collator, model.config, data_dir)
        check_padding_fits(args.pad_to_multiple_of, collator.max_text_len, model.config)
        if args.resume:
            require_latest_checkpoint(RunFolder(args.output_dir).checkpoints_dir)
        run = cls(args, ds_config, model, tokenizer, data_dir, micro_batch_size, collator)
        # Open both splits now: pairs without images, or a split too small, stop the run before DeepSpeed
        # starts rather than at the first batch or, for the evaluation split, at the end of training.
        logger.info(
            "%s: %d training pairs, %d evaluation pairs",
            data_dir,
            len(run.train_loader[0].dataset),
            len(run.eval_loader.dataset),
        )
        args.output_dir.mkdir(parents=True, exist_ok=True)
        if info.is_main:
            write_settings(run.folder, PRETRAINING, vars(args), model.config.to_dict())
        return run

    def optimizer_groups(self) -> list[dict]:
        """The model's parameter groups for ``deepspeed.initialize``, with the DeepSpeed JSON's weight decay."""
        return self.model.optimizer_groups(self.ds_config["optimizer"]["params"].get("weight_decay", 0.0))

    def lr_scheduler(self) -> Callable | None:
        """The learning-rate schedule to hand to ``deepspeed.initialize``: None when the DeepSpeed JSON has a
        ``scheduler`` (DeepSpeed builds it), else the paper's Noam schedule with ``--warmup-steps``."""
        if "scheduler" in self.ds_config:
            logger.info(
                "Learning-rate schedule: %s from the DeepSpeed config", self.ds_config["scheduler"]["type"]
            )
            return None
        logger.info(
            "Learning-rate schedule: Noam, linear warmup over %d steps, then 1/sqrt(step)",
            self.args.warmup_steps,
        )
        return lambda optimizer: noam_schedule(optimizer, self.args.warmup_steps)

    def train(self, engine) -> dict[str, float]:
        """The loop: engine(batch) -> engine.backward(loss) -> engine.step(), with metrics, evaluation and
        checkpoints; then the final checkpoint, export and cloze table. Returns the last logged losses."""
        args, info = self.args, dist_info()
        resumed = load_latest_checkpoint(engine, self.folder.checkpoints_dir) if args.resume else None
        position = resumed or SamplePosition()
        step = engine.global_steps
        stop_step = min(args.max_steps, step + (args.stop_after_steps or args.max_steps))
        writer = MetricsWriter(self.folder, enabled=info.is_main)
        writer.drop_after(step)
        averager, meter = LossAverager(LOSS_NAMES, engine.device), ThroughputMeter()
        progress = tqdm(total=args.max_steps, initial=step, desc="pretrain", disable=not info.is_main)
        last_losses: dict[str, float] = {}
        guard = NonFiniteLossGuard(not engine.fp16_enabled(), self.pair_ids_at)
        batches = self.batches(position) if step < stop_step else iter(())
        for batch in batches:
            outputs = engine(**batch_to_device(batch, engine.device, engine_dtype(engine)))
            guard.watch(outputs.loss, step + 1, position.epoch, position.index - self.micro_batch_size)
            engine.backward(outputs.loss)
            boundary = engine.is_gradient_accumulation_boundary()
            engine.step()
            averager.update(outputs)
            meter.add(*self.work_of(batch))
            if not boundary:
                continue
            guard.check()
            step = engine.global_steps
            progress.update(1)
            if step % args.log_every == 0 or step == stop_step:
                last_losses = averager.compute()
                writer.write(self.log_record(engine, step, position, last_losses, meter.rates()))
                progress.set_postfix(loss=f"{last_losses.get('loss', math.nan):.3f}")
                averager.reset()
            if args.eval_every and step % args.eval_every == 0:
                writer.write_eval({"step": step, **self.evaluate(engine)})
            if (args.save_every and step % args.save_every == 0) or step == stop_step:
                self.save(engine, step, position)
            if step >= stop_step:
                break
        progress.close()
        if step == args.max_steps:
            if not (args.eval_every and step % args.eval_every == 0):  # else it was just evaluated
                writer.write_eval({"step": step, **self.evaluate(engine)})
            self.finish(engine.device)
        writer.close()
        return last_losses

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.args.output_dir)

    def batches(self, position: SamplePosition) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's training batches from ``position`` on, epoch after epoch; ``position`` follows them,
        and each epoch reseeds the collator's masking."""
        return resumed_batches(self.train_loader[0], position, self.collator.set_epoch)

    @cached_property
    def train_loader(self) -> tuple[DataLoader, ResumableDistributedSampler]:
        """The training split's loader and its resumable sampler.

        Raises:
            ValueError: when the split is too small for one micro-batch on every process.
        """
        info = dist_info()
        dataset = load_pretraining_split(self.data_dir, "train")
        grouping = {}
        if self.args.group_by_length:
            grouping = {
                "lengths": dataset.text_lengths(),
                "group_size": 50 * self.micro_batch_size * info.world_size,
            }
        sampler = ResumableDistributedSampler(
            len(dataset), num_replicas=info.world_size, rank=info.rank, seed=self.args.seed, **grouping
        )
        loader = DataLoader(
            dataset,
            batch_size=self.micro_batch_size,
            sampler=sampler,
            collate_fn=self.collator,
            num_workers=self.args.num_workers,
            drop_last=True,
            pin_memory=loader_pins_memory(),
            # Its own generator: a DataLoader otherwise draws its workers' base seed from the global RNG
            # on every new iterator, which would shift dropout after a resume.
            generator=torch.Generator().manual_seed(self.args.seed),
        )
        if len(loader) == 0:
            raise ValueError(
                f"The training split of {self.data_dir} has {len(dataset)} pairs: too few for one micro-batch "
                f"of {self.micro_batch_size} on each of {info.world_size} processes"
            )
        return loader, sampler

    def pair_ids_at(self, epoch: int, first_index: int) -> list[str]:
        """The pair ids of this rank's micro-batch that starts at sample ``first_index`` of ``epoch``."""
        loader, sampler = self.train_loader
        sampler = copy.copy(sampler)  # the loader's iterator keeps its own order
        sampler.load_state_dict({"epoch": epoch, "position": first_index})
        indices = list(itertools.islice(iter(sampler), self.micro_batch_size))
        return [example["pair_id"] for example in loader.dataset.__getitems__(indices)]

    def work_of(self, batch: dict[str, torch.Tensor]) -> tuple[int, float]:
        """The pairs and model FLOPs of one micro-batch summed over all ranks (for the throughput meter)."""
        num_pairs, text_len = batch["input_ids"].shape
        world = dist_info().world_size
        flops = training_flops_per_sample(self.model.config, text_len, batch["region_mask"].shape[1] + 1)
        return num_pairs * world, num_pairs * world * flops

    def log_record(self, engine, step: int, position: SamplePosition, losses: dict, rates: dict) -> dict:
        """One line of ``metrics.jsonl``: losses, learning rate, fp16 loss scale, skipped steps, throughput."""
        record = {"step": step, "epoch": position.epoch, **losses, "lr": engine.get_lr()[0]}
        record["loss_scale"] = float(engine.optimizer.loss_scale) if engine.fp16_enabled() else 1.0
        record["skipped_steps"] = engine.skipped_steps
        record.update(rates)
        if engine.device.type == "cuda":  # the most this process has allocated on its GPU so far
            record["gpu_peak_memory_gb"] = torch.cuda.max_memory_allocated(engine.device) / 1e9
        return record

    def save(self, engine, step: int, position: SamplePosition) -> None:
        save_checkpoint(
            engine,
            self.folder.checkpoints_dir,
            step,
            position,
            tokenizer=self.tokenizer,
            keep=self.args.keep_checkpoints,
        )

    @cached_property
    def eval_loader(self) -> DataLoader:
        """The evaluation split in a fixed order with fixed masking, opened once per run."""
        info = dist_info()
        dataset = load_pretraining_split(self.data_dir, "eval")
        sampler = ResumableDistributedSampler(
            len(dataset), num_replicas=info.world_size, rank=info.rank, seed=self.args.seed, shuffle=False
        )
        collator = SGPCollator(
            self.tokenizer, sgp=True, seed=self.args.seed, pad_to_multiple_of=self.args.pad_to_multiple_of
        )
        add_grounding_targets(collator, self.model.config, self.data_dir)
        return DataLoader(
            dataset,
            batch_size=self.micro_batch_size,
            sampler=sampler,
            collate_fn=collator,
            pin_memory=loader_pins_memory(),
        )

    @torch.no_grad()
    def evaluate(self, engine) -> dict[str, float]:
        """Per-task losses on the first ``--eval-batches`` batches of the evaluation split, with a fixed
        masking seed; RNG state and train mode are restored afterwards."""
        averager = LossAverager(LOSS_NAMES, engine.device)
        engine.eval()
        with preserved_rng(engine.device):
            for i, batch in enumerate(self.eval_loader):
                if i == self.args.eval_batches:
                    break
                averager.update(engine(**batch_to_device(batch, engine.device, engine_dtype(engine))))
        engine.train()
        return {f"eval_{name}": value for name, value in averager.compute().items()}

    def finish(self, device: torch.device) -> None:
        """The end of the run (``runs.finish_run``): export the last checkpoint to ``hf_model/`` and print
        the cloze table (unless ``--no-export``), write the model card and, with ``--push-to-hub``, publish
        the export (rank 0, on ``device``)."""
        from ernievil_ds.hub.push import HubPublisher

        publisher = HubPublisher(
            self.args.push_to_hub, private=self.args.hub_private, revision=self.args.hub_revision
        )
        finish_run(self.folder, lambda folder: self.export(folder, device), publisher)

    def export(self, folder: RunFolder, device: torch.device) -> None:
        """``hf_model/`` from the last checkpoint and, with ``--cloze``, its cloze table (``cloze.json``);
        nothing with ``--no-export``."""
        if not self.args.export:
            return
        from ernievil_ds.pretraining.export import export_checkpoint

        hf_dir = export_checkpoint(folder.checkpoints_dir, folder.model_dir)
        if self.args.cloze:
            from ernievil_ds.pretraining.cloze import format_cloze_table, run_cloze

            results = run_cloze(hf_dir, self.data_dir, device=device)
            folder.cloze_file.write_text(json.dumps(results, indent=2))
            print(format_cloze_table(results), flush=True)
