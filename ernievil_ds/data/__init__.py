"""Image-text pairs with region features and scene graphs, and the SGP masking collator."""

from ernievil_ds.data.collator import SGPCollator, collate_cloze
from ernievil_ds.data.dataset import PretrainingDataset, load_pretraining_split
from ernievil_ds.data.sampler import ResumableDistributedSampler
from ernievil_ds.data.synth import build_synth_scenes, default_synth_dir
from ernievil_ds.data.tokenization import load_tokenizer

__all__ = [
    "PretrainingDataset",
    "ResumableDistributedSampler",
    "SGPCollator",
    "build_synth_scenes",
    "collate_cloze",
    "default_synth_dir",
    "load_pretraining_split",
    "load_tokenizer",
]
