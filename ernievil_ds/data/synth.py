"""SynthScenes: image-text pairs with gold scene graphs, generated from a seed with no download.

Each image is a scene of 2-4 objects (a noun unique within the scene, a colour, a size, a material and a
2-D box). Objects are placed one at a time against an already placed anchor so that the pair satisfies a
chosen spatial relation with a wide margin; the relation of every placed pair is the canonical function
``spatial_relation`` of the two boxes. Captions mention one or two such pairs (or a few objects, or one
colour), each object once, so a masked attribute or relation can only be recovered from the image.
Every noun phrase names its object's colour, and its adjectives keep the order size, colour, material, so the
words around a masked adjective fix which of the object's attributes it is; only its value needs the image.
(With optional colours, "a [MASK] cube" could be any of the three, and the truth of the image would not
decide it: the cloze would cap near 0.88 however well the model sees.)
Region features are detector-like: fixed random embeddings of noun, colour, size and material plus noise,
projected to 2048-d, with a class distribution over the 1601 detector classes peaked at the noun's class.

Every relation is one preposition of one WordPiece ("above", "below", "on", "under", "beside"): span masking
keeps a node's WordPiece count, so phrases of different lengths ("next to", "to the left of") would let the
number of [MASK]s give the relation away without looking at the image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ernievil_ds.data.schema import FEATURE_DIM, IMAGES_DIR, NUM_DETECTOR_CLASSES, PAIRS_DIR
from ernievil_ds.data.storage import (
    clear_table,
    images_dataset,
    pairs_dataset,
    read_manifest,
    table_source,
    write_detector_class_names,
    write_manifest,
    write_shard,
)
from ernievil_ds.data.tokenization import annotate_pairs, load_tokenizer
from ernievil_ds.distributed import get_logger

logger = get_logger(__name__)

# Every word below is one WordPiece of the BERT uncased vocabulary (tests/data/test_synth.py checks it).
NOUNS = ("cube", "ball", "cup", "bottle", "chair", "lamp", "book", "vase", "bowl", "clock")
COLOURS = ("red", "blue", "green", "yellow", "purple", "brown", "white", "black")
SIZES = ("tiny", "small", "large")
MATERIALS = ("metal", "wooden", "plastic", "glass")
RELATIONS = ("above", "below", "on", "under", "beside")
INVERSE_RELATION = {"above": "below", "below": "above", "on": "under", "under": "on", "beside": "beside"}
#: Detector class of each noun among the 1601 (index 0 is background in bottom-up attention).
NOUN_CLASSES = tuple(1 + 157 * k for k in range(len(NOUNS)))

_SIZE_SCALE = {"tiny": 0.12, "small": 0.17, "large": 0.23}  # box side as a fraction of the image height
_TOUCH_FRACTION = 0.04  # boxes closer than this fraction of min(W, H) touch; placed gaps are 0 or >= 0.10
_EMBED_DIM = 64
# Drawing weights that offset how often each relation fits in the image, so placed relations come out
# roughly balanced (vertical gaps fit less often in landscape images; touching pairs fit most often).
_RELATION_DRAW = np.array([1.5, 1.5, 1.05, 1.0, 0.7])
_RELATION_DRAW /= _RELATION_DRAW.sum()
_TABLE_SEED = 20200630  # fixed: every SynthScenes build sees the same "detector"
#: Bumped whenever the generator or what it writes changes (3: detector class names; 4: every noun phrase
#: names its colour), so a cached build of an older world is never reused.
SYNTH_VERSION = 4
_SPLITS = ("train", "eval")


@dataclass(frozen=True)
class SynthObject:
    noun: int
    colour: int
    size: int
    material: int
    box: tuple[float, float, float, float]  # pixel x1, y1, x2, y2


def spatial_relation(subject: tuple, obj: tuple, image_size: tuple[int, int]) -> str:
    """The one relation that holds from ``subject``'s box to ``obj``'s box (pixel x1, y1, x2, y2).

    The dominant displacement of the centres picks the axis: on the horizontal axis the subject is "beside"
    the object; on the vertical axis (y grows downwards) a subject above is "on" the object when the boxes
    touch and "above" it when they are apart, and a subject below is "under" or "below" it.
    """
    dx = (subject[0] + subject[2] - obj[0] - obj[2]) / 2
    dy = (subject[1] + subject[3] - obj[1] - obj[3]) / 2
    if abs(dx) >= abs(dy):
        return "beside"
    touching = max(obj[1] - subject[3], subject[1] - obj[3]) <= _TOUCH_FRACTION * min(image_size)
    if dy < 0:
        return "on" if touching else "above"
    return "under" if touching else "below"


def _place(rng: np.random.Generator, anchor: tuple, relation: str, width: float, height: float, image: tuple):
    """A box of the given size in ``relation`` to ``anchor``, far from the rule's decision boundaries."""
    ax1, ay1, ax2, ay2 = anchor
    image_w, image_h = image
    gap = rng.uniform(0.10, 0.25) * min(image)
    if relation == "beside":
        offset = gap if rng.random() < 0.5 else 0.0  # apart or touching, on either side
        x1 = ax1 - offset - width if rng.random() < 0.5 else ax2 + offset
        cy = (ay1 + ay2) / 2 + rng.uniform(-0.15, 0.15) * min(height, ay2 - ay1)
        box = (x1, cy - height / 2, x1 + width, cy + height / 2)
    else:
        subject_above = relation in ("above", "on")
        offset = gap if relation in ("above", "below") else 0.0
        y1 = ay1 - offset - height if subject_above else ay2 + offset
        cx = (ax1 + ax2) / 2 + rng.uniform(-0.15, 0.15) * min(width, ax2 - ax1)
        box = (cx - width / 2, y1, cx + width / 2, y1 + height)
    inside = box[0] >= 0 and box[1] >= 0 and box[2] <= image_w and box[3] <= image_h
    return box if inside else None


def _overlaps(box: tuple, others: list[tuple]) -> bool:
    return any(
        min(box[2], o[2]) > max(box[0], o[0]) and min(box[3], o[3]) > max(box[1], o[1]) for o in others
    )


def sample_scene(rng: np.random.Generator) -> tuple[tuple[int, int], list[SynthObject], list[tuple]]:
    """One scene: ((width, height), objects, facts), each fact (subject, object, relation) with a clear margin."""
    while True:
        image = (int(rng.integers(560, 721)), int(rng.integers(420, 541)))
        num_objects = int(rng.integers(2, 5))
        nouns = rng.permutation(len(NOUNS))[:num_objects]
        sizes = rng.integers(0, len(SIZES), num_objects)
        dims = [
            (
                _SIZE_SCALE[SIZES[s]] * image[1] * rng.uniform(0.9, 1.1) * a,
                _SIZE_SCALE[SIZES[s]] * image[1] / a,
            )
            for s, a in zip(sizes, rng.uniform(0.85, 1.2, num_objects))
        ]
        w0, h0 = dims[0]
        boxes = [(x := rng.uniform(0, image[0] - w0), y := rng.uniform(0, image[1] - h0), x + w0, y + h0)]
        placed, facts = [0], []  # placed: which sampled objects found a place; facts index into it
        for i in range(1, num_objects):
            for _ in range(30):
                anchor = int(rng.integers(0, len(boxes)))
                relation = RELATIONS[int(rng.choice(len(RELATIONS), p=_RELATION_DRAW))]
                box = _place(rng, boxes[anchor], relation, *dims[i], image)
                if box is not None and not _overlaps(box, boxes):
                    assert spatial_relation(box, boxes[anchor], image) == relation
                    facts.append((len(boxes), anchor, relation))
                    boxes.append(box)
                    placed.append(i)
                    break
        if len(boxes) >= 2:
            break
    colours = rng.integers(0, len(COLOURS), len(placed))
    materials = rng.integers(0, len(MATERIALS), len(placed))
    objects = [
        SynthObject(int(nouns[i]), int(colours[k]), int(sizes[i]), int(materials[k]), boxes[k])
        for k, i in enumerate(placed)
    ]
    return image, objects, facts


class _CaptionBuilder:
    """Concatenates words while recording the character span of every scene-graph node."""

    def __init__(self) -> None:
        self.text = ""
        self.graph: dict[str, list] = {"objects": [], "attributes": [], "relations": []}
        self._object_index: dict[int, int] = {}

    def word(self, text: str) -> tuple[int, int]:
        start = len(self.text) + (1 if self.text else 0)
        self.text = f"{self.text} {text}" if self.text else text
        return start, start + len(text)

    def noun_phrase(self, obj: SynthObject, rng: np.random.Generator) -> None:
        """ "a/an [size] colour [material] noun", each adjective an attribute of the object."""
        words = [
            word
            for word, probability in (
                (SIZES[obj.size], 0.35),
                (COLOURS[obj.colour], 1.0),
                (MATERIALS[obj.material], 0.35),
            )
            if rng.random() < probability
        ]
        self.word("an" if (words or [NOUNS[obj.noun]])[0][0] in "aeiou" else "a")
        spans = [self.word(w) for w in words]
        self.object(obj, self.word(NOUNS[obj.noun]))
        index = self._object_index[obj.noun]
        for name, span in zip(words, spans):
            self.graph["attributes"].append({"object": index, "name": name, "span": list(span)})

    def object(self, obj: SynthObject, span: tuple[int, int]) -> None:
        self._object_index[obj.noun] = len(self.graph["objects"])
        self.graph["objects"].append({"name": NOUNS[obj.noun], "span": list(span)})

    def link(self, subject: SynthObject, obj: SynthObject, name: str, span: tuple[int, int]) -> None:
        self.graph["relations"].append(
            {
                "subject": self._object_index[subject.noun],
                "object": self._object_index[obj.noun],
                "name": name,
                "span": list(span),
            }
        )


def _relation_clause(builder: _CaptionBuilder, objects, fact, rng, copula: bool) -> None:
    subject, obj, name = objects[fact[0]], objects[fact[1]], fact[2]
    builder.noun_phrase(subject, rng)
    if copula:
        builder.word("is")
    span = builder.word(name)
    builder.noun_phrase(obj, rng)
    builder.link(subject, obj, name, span)


def sample_caption(
    rng: np.random.Generator, objects: list[SynthObject], facts: list[tuple]
) -> tuple[str, dict]:
    """A caption mentioning part of the scene, and its gold scene graph (spans into the caption)."""
    oriented = [(s, o, r) if rng.random() < 0.5 else (o, s, INVERSE_RELATION[r]) for s, o, r in facts]
    builder = _CaptionBuilder()
    form = rng.choice(6, p=(0.25, 0.2, 0.2, 0.15, 0.1, 0.1))
    first = oriented[int(rng.integers(0, len(oriented)))]
    if form == 0:  # "a red cube is beside a ball."
        _relation_clause(builder, objects, first, rng, copula=True)
    elif form == 1:  # "there is a red cube on a ball."
        builder.word("there")
        builder.word("is")
        _relation_clause(builder, objects, first, rng, copula=False)
    elif form == 2:  # "a red cube under a ball."
        _relation_clause(builder, objects, first, rng, copula=False)
    elif form == 3:  # "..., and ...": two facts on four distinct objects when the scene has them, else one
        disjoint = [f for f in oriented if not {f[0], f[1]} & {first[0], first[1]}]
        _relation_clause(builder, objects, first, rng, copula=True)
        if disjoint:
            builder.text += ","
            builder.word("and")
            _relation_clause(
                builder, objects, disjoint[int(rng.integers(0, len(disjoint)))], rng, copula=True
            )
    elif form == 4:  # "the cube is red." (only a colour: "is [MASK]" must not leave the kind open)
        obj = objects[first[0]]
        builder.word("the")
        builder.object(obj, builder.word(NOUNS[obj.noun]))
        builder.word("is")
        name = COLOURS[obj.colour]
        builder.graph["attributes"].append({"object": 0, "name": name, "span": list(builder.word(name))})
    else:  # "there are a red cube and a ball." (no relation)
        builder.word("there")
        builder.word("are")
        builder.noun_phrase(objects[first[0]], rng)
        builder.word("and")
        builder.noun_phrase(objects[first[1]], rng)
    builder.text += "."
    return builder.text, builder.graph


def detector_features(attributes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Detector-like region features and class distributions of objects given as (noun, colour, size, material).

    Args:
        attributes: (num_boxes, 4) integer indices into NOUNS, COLOURS, SIZES and MATERIALS.

    Returns:
        features (num_boxes, 2048) and class distributions (num_boxes, 1601), float16.
    """
    tables = _embedding_tables()
    latent = sum(
        tables[name][attributes[:, k]] for k, name in enumerate(("noun", "colour", "size", "material"))
    )
    latent += 0.3 * rng.standard_normal(latent.shape, dtype=np.float32)  # (N, 64)
    features = np.maximum(latent @ tables["projection"], 0.0)  # (N, 2048)
    logits = rng.standard_normal((len(attributes), NUM_DETECTOR_CLASSES), dtype=np.float32)  # (N, 1601)
    logits[np.arange(len(attributes)), np.array(NOUN_CLASSES)[attributes[:, 0]]] += 8.0
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return features.astype(np.float16), probs.astype(np.float16)


def _embedding_tables() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(_TABLE_SEED)
    tables = {
        name: rng.standard_normal((count, _EMBED_DIM))
        for name, count in (
            ("noun", len(NOUNS)),
            ("colour", len(COLOURS)),
            ("size", len(SIZES)),
            ("material", len(MATERIALS)),
        )
    }
    tables["projection"] = rng.standard_normal((_EMBED_DIM, FEATURE_DIM)) / np.sqrt(_EMBED_DIM)
    return {name: table.astype(np.float32) for name, table in tables.items()}


def generate_split(split: str, num_images: int, seed: int, captions_per_image: int):
    """Image records and raw pair records (with gold graphs) of one split; deterministic in ``seed``."""
    rng = np.random.default_rng([seed, _SPLITS.index(split)])
    images, pairs, attributes = [], [], []
    for n in tqdm(range(num_images), desc=f"SynthScenes {split}", unit="image", leave=False):
        image_id = f"synth-{split}-{n:06d}"
        size, objects, facts = sample_scene(rng)
        regions = [objects[i] for i in rng.permutation(len(objects))]  # detector order carries no information
        images.append(
            {"image_id": image_id, "width": size[0], "height": size[1], "boxes": [o.box for o in regions]}
        )
        attributes += [(o.noun, o.colour, o.size, o.material) for o in regions]
        for k in range(captions_per_image):
            caption, graph = sample_caption(rng, objects, facts)
            pairs.append(
                {"pair_id": f"{image_id}-{k}", "image_id": image_id, "caption": caption, "scene_graph": graph}
            )
    features, cls_prob = detector_features(np.array(attributes), rng)
    split_points = np.cumsum([len(image["boxes"]) for image in images])[:-1]
    for image, image_features, image_cls_prob in zip(
        images, np.split(features, split_points), np.split(cls_prob, split_points)
    ):
        image["features"], image["cls_prob"] = image_features, image_cls_prob
    return images, pairs


def detector_class_names() -> list[str]:
    """The SynthScenes detector's class names: each noun at its class, "" for the classes it never uses."""
    names = [""] * NUM_DETECTOR_CLASSES
    for noun, index in zip(NOUNS, NOUN_CLASSES):
        names[index] = noun
    return names


#: The default SynthScenes of a run: enough images that the demo's 700 steps do not repeat much.
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


def build_synth_scenes(
    output_dir: str | Path,
    *,
    num_train_images: int,
    num_eval_images: int,
    seed: int,
    tokenizer=None,
    captions_per_image: int = 3,
) -> Path:
    """Write SynthScenes in the importers' on-disk format, with "train" and "eval" splits.

    Reuses a complete directory built with the same settings; data from anything else (other settings,
    an import) is an error rather than silently overwritten.

    Raises:
        ValueError: when ``output_dir`` holds other data, or a count is < 1.
    """
    output_dir = Path(output_dir)
    for name, value in (("num_train_images", num_train_images), ("num_eval_images", num_eval_images)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    settings = {
        "source": "synth",
        "version": SYNTH_VERSION,
        "num_train_images": num_train_images,
        "num_eval_images": num_eval_images,
        "seed": seed,
        "captions_per_image": captions_per_image,
    }
    tables = [output_dir / IMAGES_DIR] + [output_dir / PAIRS_DIR / s for s in _SPLITS]
    sources = [table_source(t) for t in tables]
    foreign = [s for s in sources if s is not None and s != settings]
    if foreign:
        raise ValueError(
            f"{output_dir} already holds data from {foreign[0]}, not SynthScenes {settings}: choose another directory"
        )
    if all(read_manifest(t) is not None for t in tables):
        logger.info("SynthScenes already complete in %s", output_dir)
        return output_dir
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    for table in tables:
        clear_table(table)
    all_images = []
    for split, num_images in zip(_SPLITS, (num_train_images, num_eval_images)):
        images, pairs = generate_split(split, num_images, seed, captions_per_image)
        all_images += images
        columns = {key: [p[key] for p in pairs] for key in ("pair_id", "image_id", "caption", "scene_graph")}
        columns |= annotate_pairs(columns["caption"], columns["scene_graph"], tokenizer)
        write_shard(pairs_dataset(columns), output_dir / PAIRS_DIR / split, 0)
        write_manifest(output_dir / PAIRS_DIR / split, {"source": settings, "num_pairs": len(pairs)})
    write_shard(images_dataset(all_images, with_class_distribution=True), output_dir / IMAGES_DIR, 0)
    write_detector_class_names(output_dir, detector_class_names())
    write_manifest(output_dir / IMAGES_DIR, {"source": settings, "num_images": len(all_images)})
    logger.info("SynthScenes: %d images written to %s", len(all_images), output_dir)
    return output_dir
