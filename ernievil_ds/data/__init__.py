"""Image-text pairs with region features and scene graphs, and the SGP masking collator."""

from ernievil_ds.data.collator import TASK_IDS, SGPCollator, collate_cloze
from ernievil_ds.data.dataset import PretrainingDataset, load_pretraining_split
from ernievil_ds.data.sampler import ResumableDistributedSampler
from ernievil_ds.data.synth import build_synth_scenes
from ernievil_ds.data.tokenization import load_tokenizer

__all__ = [
    "TASK_IDS",
    "PretrainingDataset",
    "ResumableDistributedSampler",
    "SGPCollator",
    "build_synth_scenes",
    "collate_cloze",
    "load_pretraining_split",
    "load_tokenizer",
]
