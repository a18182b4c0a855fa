"""A fine-tuning split read back: the examples table joined with the images table by ``image_id``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from datasets import Dataset

from ernievil_ds.data.schema import IMAGES_DIR
from ernievil_ds.data.storage import load_table, read_manifest
from ernievil_ds.distributed import get_logger
from ernievil_ds.errors import UserError
from ernievil_ds.finetuning.data.tables import EXAMPLES_DIR

logger = get_logger(__name__)

#: How many image ids of examples without an image are named.
MAX_REPORTED_IDS = 5


class FineTuningDataset(torch.utils.data.Dataset):
    """A task's examples, each joined with its image by ``image_id``.

    An example is the examples-table row (a dict of Python values) plus ``image``: ``features`` (N, 2048)
    float32, ``boxes`` (N, 4) float32 pixel x1, y1, x2, y2, ``width`` and ``height``. Examples whose image
    is not in the images table are left out with a warning.
    """

    def __init__(self, examples: Dataset, images: Dataset) -> None:
        self.examples = examples
        self.images = images.with_format("numpy", columns=["features", "boxes", "width", "height"])
        image_ids = images.data.table.column("image_id").to_pylist()
        self.image_rows = {image_id: row for row, image_id in enumerate(image_ids)}
        example_image_ids = examples.data.table.column("image_id").to_pylist()
        rows = np.array([self.image_rows.get(i, -1) for i in example_image_ids], dtype=np.int64)
        self._example_rows = np.flatnonzero(rows >= 0)
        #: (len(self),) the images-table row of each example's image.
        self.example_image_rows = rows[self._example_rows]
        self.num_missing_images = len(rows) - len(self._example_rows)
        if self.num_missing_images:
            missing = [example_image_ids[i] for i in np.flatnonzero(rows < 0)[:MAX_REPORTED_IDS]]
            logger.warning(
                "%d of %d examples have no image in the images table and are left out (first image ids: %s)",
                self.num_missing_images,
                len(rows),
                ", ".join(missing),
            )

    def __len__(self) -> int:
        return len(self._example_rows)

    def __getitem__(self, index: int) -> dict:
        example = self.example_row(index)
        return example | {"image": self.image(example["image_id"])}

    def example_row(self, index: int) -> dict:
        """Example ``index``'s examples-table row alone, without reading its image."""
        return self.examples[int(self._example_rows[index])]

    @property
    def num_images(self) -> int:
        """Rows of the images table."""
        return len(self.images)

    def image(self, image_id: str) -> dict:
        """An image's ``features`` (N, 2048), ``boxes`` (N, 4), ``width`` and ``height``, and its
        ``img_feature`` (2048,) where the import stored one (VCR)."""
        return self.image_at(self.image_rows[image_id])

    def image_at(self, row: int) -> dict:
        """The image in row ``row`` of the images table, as ``image``."""
        row = self.images[row]
        image = {
            "features": row["features"],
            "boxes": row["boxes"],
            "width": int(row["width"]),
            "height": int(row["height"]),
        }
        if "img_feature" in row:
            image["img_feature"] = row["img_feature"]
        return image


def load_examples(data_dir: str | Path, task: str) -> FineTuningDataset:
    """The imported split in ``data_dir`` of ``task``, examples joined with their images.

    Raises:
        FileNotFoundError: no complete examples or images table. UserError: a directory of another task,
        or one whose examples have no image at all.
    """
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir / EXAMPLES_DIR)
    if manifest is None:
        raise FileNotFoundError(
            f"{data_dir} holds no imported fine-tuning examples (no {EXAMPLES_DIR}/manifest.json): run "
            "ernievil-ds import-finetune first, or rerun the interrupted import"
        )
    found = manifest["source"].get("task")
    if found != task:
        raise UserError(f"{data_dir} holds {found} examples, not {task} examples")
    dataset = FineTuningDataset(load_table(data_dir / EXAMPLES_DIR), load_table(data_dir / IMAGES_DIR))
    if len(dataset) == 0:
        raise UserError(f"none of the examples of {data_dir} has its image in {data_dir / IMAGES_DIR}")
    return dataset
