"""Fine-tuning data: importers of the official ERNIE-ViL files (VQA, RefCOCO+, Flickr30K, VCR) and of VQA
v2's JSON into an examples table beside an images table, their loaders and the collate functions that
build each head's inputs. See ``docs/data.md``, "Fine-tuning data"."""

from ernievil_ds.finetuning.data.dataset import FineTuningDataset, load_examples
from ernievil_ds.finetuning.data.refcoco import collate_refcoco, import_refcoco, load_refcoco
from ernievil_ds.finetuning.data.retrieval import (
    collate_retrieval,
    collate_retrieval_groups,
    import_retrieval,
    load_retrieval,
    negative_image_groups,
)
from ernievil_ds.finetuning.data.tables import FineTuningImportReport
from ernievil_ds.finetuning.data.vcr import collate_vcr, import_vcr, load_vcr
from ernievil_ds.finetuning.data.vqa import collate_vqa, import_official_vqa, import_vqa_v2, load_vqa

__all__ = [
    "FineTuningDataset",
    "FineTuningImportReport",
    "collate_refcoco",
    "collate_retrieval",
    "collate_retrieval_groups",
    "collate_vcr",
    "collate_vqa",
    "import_official_vqa",
    "import_refcoco",
    "import_retrieval",
    "import_vcr",
    "import_vqa_v2",
    "load_examples",
    "load_refcoco",
    "load_retrieval",
    "load_vcr",
    "load_vqa",
    "negative_image_groups",
]
