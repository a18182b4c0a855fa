"""Consolidate a ZeRO checkpoint to fp32 with DeepSpeed's own utility and write a Hugging Face model."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, AutoModelForPreTraining

from ernievil_ds.distributed import get_logger
from ernievil_ds.errors import UserError, require_output_dir
from ernievil_ds.hub.model_code import write_model_code
from ernievil_ds.runs import CHECKPOINT_PREFIX, CHECKPOINTS_DIR, COMPLETE_FILE, latest_checkpoint

logger = get_logger(__name__)


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A tag directory (``.../checkpoints/step_N``) given itself, its ``checkpoints/`` folder or the run's
    output directory; the newest complete checkpoint is taken when a folder holds several."""
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise UserError(f"checkpoint {checkpoint} does not exist")
    for root in (checkpoint, checkpoint / CHECKPOINTS_DIR):
        if (root / "config.json").is_file() and any(root.glob("*model_states.pt")):
            return root
        latest = latest_checkpoint(root)
        if latest is not None:
            return latest[1]
    raise UserError(
        f"{checkpoint} holds no complete ernievil-ds checkpoint (no {CHECKPOINT_PREFIX}*/{COMPLETE_FILE})"
    )


def export_checkpoint(checkpoint: str | Path, output_dir: str | Path) -> Path:
    """Write ``output_dir`` with ``config.json``, ``model.safetensors``, the model's code
    (``ernievil_ds.hub.model_code``) and the tokenizer files.

    The fp32 weights come from ``deepspeed.utils.zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint``,
    which merges the ZeRO partitions of every rank. (It unpickles the checkpoint files: export only
    checkpoints you wrote yourself.)
    """
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoTokenizer

    tag_dir = resolve_checkpoint(checkpoint)
    output_dir = require_output_dir(Path(output_dir), "export folder")
    state_dict = get_fp32_state_dict_from_zero_checkpoint(str(tag_dir.parent), tag=tag_dir.name)
    config = AutoConfig.from_pretrained(tag_dir)
    # The fused loss is a choice of the run's device, not of the model: the exported one runs anywhere.
    config.masked_token_loss_implementation = "torch"
    model = AutoModelForPreTraining.from_config(config)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    tied = set(model._tied_weights_keys)
    if set(missing) - tied or unexpected:
        raise RuntimeError(
            f"The checkpoint in {tag_dir} does not match its config: missing {sorted(set(missing) - tied)}, "
            f"unexpected {sorted(unexpected)}"
        )
    model.tie_weights()
    model.save_pretrained(output_dir)
    write_model_code(output_dir)
    if (tag_dir / "tokenizer_config.json").is_file():
        AutoTokenizer.from_pretrained(tag_dir).save_pretrained(output_dir)
    logger.info("Exported %s to %s", tag_dir, output_dir)
    return output_dir
