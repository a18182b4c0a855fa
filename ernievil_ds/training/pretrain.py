"""The pretraining job run by ``launchers/pretrain.py``: arguments, model and data set-up, and the loop.

The launcher owns the DeepSpeed calls that define a DeepSpeed program (``init_distributed``,
``initialize``); everything else a run needs is here: building the model (preset or config file,
optional text-stream initialisation from BERT), the data (a prepared directory, or SynthScenes by
default), the training loop over the engine, metrics, periodic evaluation, fault-tolerant checkpoints
and the final export.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ernievil_ds.configuration_ernievil import ErnieVilConfig
from ernievil_ds.data import (
    ResumableDistributedSampler,
    SGPCollator,
    build_synth_scenes,
    load_pretraining_split,
    load_tokenizer,
)
from ernievil_ds.data.collator import node_mask_rates
from ernievil_ds.data.storage import load_detector_class_names
from ernievil_ds.data.synth import SYNTH_VERSION
from ernievil_ds.distributed import dist_info, get_logger
from ernievil_ds.modeling_ernievil import ErnieVilForPreTraining, training_flops_per_sample
from ernievil_ds.training.checkpoint import load_latest_checkpoint, save_checkpoint
from ernievil_ds.training.ds_config import fit_schedule_to_steps, load_ds_config, resolve_batch_sizes
from ernievil_ds.training.metrics import LossAverager, MetricsWriter

logger = get_logger(__name__)

#: SynthScenes defaults for the demo: enough images that 10 CPU minutes do not repeat much.
DEFAULT_SYNTH_TRAIN_IMAGES = 6000
DEFAULT_SYNTH_EVAL_IMAGES = 100


def default_synth_dir(
    seed: int = 0,
    num_train_images: int = DEFAULT_SYNTH_TRAIN_IMAGES,
    num_eval_images: int = DEFAULT_SYNTH_EVAL_IMAGES,
) -> Path:
    """Where the built-in SynthScenes data is cached (``$ERNIEVIL_DS_CACHE`` or ``~/.cache/ernievil_ds``);
    with no arguments, the data of a run with the default seed and sizes."""
    root = Path(os.environ.get("ERNIEVIL_DS_CACHE", Path.home() / ".cache" / "ernievil_ds"))
    return root / f"synth_scenes-v{SYNTH_VERSION}-seed{seed}-train{num_train_images}-eval{num_eval_images}"


def node_mask_prob_argument(text: str) -> float | dict[str, float]:
    """``--node-mask-prob``: a number, or a JSON object of rates by node type, checked here."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, bool) or not isinstance(value, (int, float, dict)):
        raise argparse.ArgumentTypeError(
            f"expected a number or a JSON object of rates by node type, got {text!r}"
        )
    try:
        node_mask_rates(value)
    except (TypeError, ValueError) as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return value


def add_pretrain_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The pretraining command line (DeepSpeed's own ``--deepspeed CONFIG`` and ``--local_rank`` included)."""
    ds = parser.add_argument_group("DeepSpeed")
    # `--deepspeed PATH`, as in the documented command and in HF Trainer; DeepSpeed's add_config_arguments
    # declares --deepspeed as a flag, so it cannot take the path.
    ds.add_argument(
        "--deepspeed", "--deepspeed_config", dest="deepspeed_config", required=True, metavar="JSON"
    )
    ds.add_argument(
        "--local_rank", "--local-rank", type=int, default=-1, help="set by the deepspeed launcher"
    )

    model = parser.add_argument_group("model")
    model.add_argument("--preset", default="small", help="tiny, small, base or large (default: small)")
    model.add_argument("--model-config", type=Path, help="an ErnieVilConfig JSON file (overrides --preset)")
    model.add_argument(
        "--init-text-from",
        default="none",
        help="initialise the text stream from a BERT checkpoint directory, or 'minilm' for the packaged "
        "all-MiniLM-L6-v2 (small preset), or 'none' (default)",
    )
    model.add_argument(
        "--freeze-word-embeddings",
        action="store_true",
        help="keep the word embeddings (and the token head tied to them) fixed: with a pretrained text "
        "stream they are already good, and ZeRO then neither reduces nor updates the vocabulary matrix",
    )
    model.add_argument("--attn-implementation", default="sdpa", choices=["eager", "sdpa"])
    model.add_argument("--loss-weights", type=json.loads, help="JSON, e.g. '{\"itm\": 0.5}'")

    data = parser.add_argument_group("data")
    data.add_argument(
        "--data-dir", type=Path, help="a prepared data directory (default: built-in SynthScenes)"
    )
    data.add_argument("--synth-train-images", type=int, default=DEFAULT_SYNTH_TRAIN_IMAGES)
    data.add_argument("--synth-eval-images", type=int, default=DEFAULT_SYNTH_EVAL_IMAGES)
    data.add_argument(
        "--tokenizer", help="a Hugging Face tokenizer directory (default: packaged BERT uncased)"
    )
    data.add_argument("--no-sgp", action="store_true", help="ablation: random token masking only, no SGP")
    data.add_argument(
        "--node-mask-prob",
        type=node_mask_prob_argument,
        default=0.3,
        help="share of each caption's objects, attributes and relations masked for SGP: one rate, or rates by "
        "type as JSON, e.g. '{\"relation\": 0.6}' (a type left out keeps 0.3; default 0.3, as in ERNIE-ViL)",
    )
    data.add_argument(
        "--itm-negative-prob",
        type=float,
        default=0.5,
        help="share of training pairs shown another image for image-text matching; token targets come from "
        "the matched rest (default 0.5, as in ViLBERT and ERNIE-ViL)",
    )
    data.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes per rank")
    data.add_argument(
        "--group-by-length",
        action="store_true",
        help="batch captions of similar length together (within groups of 50 global batches) to cut padding",
    )

    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", type=Path, required=True)
    run.add_argument("--max-steps", type=int, required=True, help="optimizer steps to train for")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--log-every", type=int, default=10)
    run.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (0: only at the end)")
    run.add_argument("--eval-batches", type=int, default=4)
    run.add_argument(
        "--save-every", type=int, default=0, help="checkpoint every N steps (0: only at the end)"
    )
    run.add_argument("--keep-checkpoints", type=int, default=2)
    run.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    run.add_argument(
        "--stop-after-steps",
        type=int,
        help="leave after this many steps in this invocation, with a checkpoint (for time-sliced or "
        "preemptible jobs: rerun with --resume); the schedule still spans --max-steps",
    )
    run.add_argument("--no-export", action="store_true", help="skip the Hugging Face export at the end")
    run.add_argument("--no-cloze", action="store_true", help="skip the cloze evaluation at the end")
    return parser


def build_model(args: argparse.Namespace) -> ErnieVilForPreTraining:
    """The model of ``--model-config`` or ``--preset``, optionally with a BERT-initialised text stream."""
    overrides = {"task_loss_weights": args.loss_weights} if args.loss_weights else {}
    if args.model_config is not None:
        if not args.model_config.is_file():
            raise FileNotFoundError(f"--model-config {args.model_config} does not exist")
        config = ErnieVilConfig.from_json_file(str(args.model_config))
        for key, value in overrides.items():
            setattr(config, key, value)
    else:
        config = ErnieVilConfig.from_preset(args.preset, **overrides)
    config._attn_implementation = args.attn_implementation
    model = ErnieVilForPreTraining(config)
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
    _barrier()
    return data_dir


def add_grounding_targets(collator: SGPCollator, config: ErnieVilConfig, data_dir: Path) -> None:
    """Give the collator the detector's class names when the model has a grounding loss, so that its
    batches carry ``region_word_targets``.

    Raises:
        ValueError: when the model has a grounding loss and the data directory records no class names.
    """
    if not config.grounding_co_layers:
        return
    names = load_detector_class_names(data_dir)
    if names is None:
        raise ValueError(
            f"This model's grounding loss (config.grounding_co_layers) needs the detector's class names, and "
            f"{data_dir} has none: import the features with `prepare_data.py features --detector-classes "
            f"objects_vocab.txt`, or set grounding_co_layers to [] in a --model-config"
        )
    collator.set_region_class_names(names)


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def batch_to_engine(batch: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype) -> dict:
    """Move a collated batch to the engine's device; floating tensors take the engine's dtype (fp16/bf16
    engines do not cast inputs themselves)."""
    return {
        key: value.to(device=device, dtype=dtype if value.is_floating_point() else value.dtype)
        for key, value in batch.items()
    }


def engine_dtype(engine) -> torch.dtype:
    if engine.fp16_enabled():
        return torch.float16
    if engine.bfloat16_enabled():
        return torch.bfloat16
    return torch.float32


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
        """Check the DeepSpeed config against the world size, then build tokenizer, data and model.

        Raises:
            ValueError: batch sizes that do not fit the world size, an unknown preset, a bad argument.
            FileNotFoundError: a missing config file, data directory or checkpoint.
        """
        info = dist_info()
        if args.max_steps < 1:
            raise ValueError(f"--max-steps must be at least 1, got {args.max_steps}")
        ds_config = fit_schedule_to_steps(load_ds_config(args.deepspeed_config), args.max_steps)
        _, micro_batch_size, _ = resolve_batch_sizes(ds_config, info.world_size)
        tokenizer = load_tokenizer(args.tokenizer)
        collator = SGPCollator(
            tokenizer,
            sgp=not args.no_sgp,
            seed=args.seed,
            node_mask_prob=args.node_mask_prob,
            itm_negative_prob=args.itm_negative_prob,
        )
        torch.manual_seed(args.seed)  # the same initial weights on every rank
        model = build_model(args)
        data_dir = prepare_data_dir(args, tokenizer)
        add_grounding_targets(collator, model.config, data_dir)
        args.output_dir.mkdir(parents=True, exist_ok=True)
        return cls(args, ds_config, model, tokenizer, data_dir, micro_batch_size, collator)

    def train(self, engine) -> dict[str, float]:
        """The loop: engine(batch) -> engine.backward(loss) -> engine.step(), with metrics, evaluation and
        checkpoints; then the final checkpoint, export and cloze table. Returns the last logged losses."""
        args, info = self.args, dist_info()
        dataset = load_pretraining_split(self.data_dir, "train")
        grouping = (
            {"lengths": dataset.text_lengths(), "group_size": 50 * self.micro_batch_size * info.world_size}
            if args.group_by_length
            else {}
        )
        sampler = ResumableDistributedSampler(
            len(dataset), num_replicas=info.world_size, rank=info.rank, seed=args.seed, **grouping
        )
        collator = self.collator
        loader = DataLoader(
            dataset,
            batch_size=self.micro_batch_size,
            sampler=sampler,
            collate_fn=collator,
            num_workers=args.num_workers,
            drop_last=True,
            # Its own generator: a DataLoader otherwise draws its workers' base seed from the global RNG
            # on every new iterator, which would shift dropout after a resume.
            generator=torch.Generator().manual_seed(args.seed),
        )
        if len(loader) == 0:
            raise ValueError(
                f"The training split of {self.data_dir} has {len(dataset)} pairs: too few for one micro-batch "
                f"of {self.micro_batch_size} on each of {info.world_size} processes"
            )
        checkpoint_root = args.output_dir / "checkpoints"
        state = load_latest_checkpoint(engine, checkpoint_root) if args.resume else None
        step = engine.global_steps
        stop_step = min(args.max_steps, step + (args.stop_after_steps or args.max_steps))
        epoch, position = (state["epoch"], state["position"]) if state else (0, 0)
        writer = MetricsWriter(args.output_dir, enabled=info.is_main)
        writer.drop_after(step)
        averager = LossAverager(engine.device)
        dtype = engine_dtype(engine)
        config = engine.module.config
        progress = tqdm(total=args.max_steps, initial=step, desc="pretrain", disable=not info.is_main)
        interval_start, interval_samples, interval_flops = time.perf_counter(), 0, 0.0
        last_losses: dict[str, float] = {}

        while step < stop_step:
            sampler.load_state_dict({"epoch": epoch, "position": position})
            collator.set_epoch(epoch)
            for batch in loader:
                outputs = engine(**batch_to_engine(batch, engine.device, dtype))
                engine.backward(outputs.loss)
                engine.step()
                averager.update(outputs)
                position += self.micro_batch_size
                num_pairs, text_len = batch["input_ids"].shape
                interval_samples += num_pairs * info.world_size
                interval_flops += (
                    num_pairs
                    * info.world_size
                    * training_flops_per_sample(config, text_len, batch["region_mask"].shape[1] + 1)
                )
                if engine.global_steps == step:  # inside a gradient-accumulation window
                    continue
                step = engine.global_steps
                progress.update(1)
                if step % args.log_every == 0 or step == stop_step:
                    elapsed = time.perf_counter() - interval_start
                    last_losses = averager.compute()
                    writer.write(
                        {
                            "step": step,
                            "epoch": epoch,
                            **last_losses,
                            "lr": engine.get_lr()[0],
                            "loss_scale": _loss_scale(engine),
                            "skipped_steps": engine.skipped_steps,
                            "samples_per_sec": interval_samples / elapsed,
                            "model_tflops_per_sec": interval_flops / elapsed / 1e12,
                            **_peak_memory(engine.device),
                        }
                    )
                    progress.set_postfix(loss=f"{last_losses.get('loss', math.nan):.3f}")
                    averager.reset()
                    interval_start, interval_samples, interval_flops = time.perf_counter(), 0, 0.0
                if args.eval_every and step % args.eval_every == 0:
                    writer.write_eval({"step": step, **self.evaluate(engine)})
                if (args.save_every and step % args.save_every == 0) or step == stop_step:
                    save_checkpoint(
                        engine,
                        checkpoint_root,
                        step,
                        {"epoch": epoch, "position": position},
                        tokenizer=self.tokenizer,
                        keep=args.keep_checkpoints,
                    )
                if step >= stop_step:
                    break
            else:  # the epoch ran out before max_steps
                epoch, position = epoch + 1, 0
        progress.close()
        if step == args.max_steps:
            if not (args.eval_every and step % args.eval_every == 0):  # else it was just evaluated
                writer.write_eval({"step": step, **self.evaluate(engine)})
            self._finish(checkpoint_root, engine.device)
        writer.close()
        return last_losses

    @cached_property
    def _eval_loader(self) -> DataLoader:
        """The evaluation split in a fixed order with fixed masking, opened once per run."""
        info = dist_info()
        dataset = load_pretraining_split(self.data_dir, "eval")
        sampler = ResumableDistributedSampler(
            len(dataset), num_replicas=info.world_size, rank=info.rank, seed=self.args.seed, shuffle=False
        )
        collator = SGPCollator(self.tokenizer, sgp=True, seed=self.args.seed)
        add_grounding_targets(collator, self.model.config, self.data_dir)
        return DataLoader(dataset, batch_size=self.micro_batch_size, sampler=sampler, collate_fn=collator)

    @torch.no_grad()
    def evaluate(self, engine) -> dict[str, float]:
        """Per-task losses on the first ``--eval-batches`` batches of the evaluation split, with a fixed
        masking seed; RNG state and train mode are restored afterwards."""
        args, loader = self.args, self._eval_loader
        averager, dtype = LossAverager(engine.device), engine_dtype(engine)
        engine.eval()
        with torch.random.fork_rng(devices=[]):
            for i, batch in enumerate(loader):
                if i == args.eval_batches:
                    break
                averager.update(engine(**batch_to_engine(batch, engine.device, dtype)))
        engine.train()
        return {f"eval_{name}": value for name, value in averager.compute().items()}

    def _finish(self, checkpoint_root: Path, device: torch.device) -> None:
        """Export the last checkpoint to ``hf_model/`` and print the cloze table (rank 0, on ``device``)."""
        if self.args.no_export or not dist_info().is_main:
            _barrier()
            return
        from ernievil_ds.training.export import export_checkpoint

        hf_dir = export_checkpoint(checkpoint_root, self.args.output_dir / "hf_model")
        if not self.args.no_cloze:
            from ernievil_ds.training.cloze import format_cloze_table, run_cloze

            results = run_cloze(hf_dir, self.data_dir, device=device)
            (self.args.output_dir / "cloze.json").write_text(json.dumps(results, indent=2))
            print(format_cloze_table(results), flush=True)
        _barrier()


def _peak_memory(device: torch.device) -> dict[str, float]:
    """``{"gpu_peak_memory_gb": ...}``: the most this process has allocated on its GPU so far (none on a CPU)."""
    if device.type != "cuda":
        return {}
    return {"gpu_peak_memory_gb": torch.cuda.max_memory_allocated(device) / 1e9}


def _loss_scale(engine) -> float:
    return float(engine.optimizer.loss_scale) if engine.fp16_enabled() else 1.0
