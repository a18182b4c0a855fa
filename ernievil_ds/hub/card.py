"""The model card (``README.md``) of a published model: Hub metadata, the architecture, the data, the
training command, the metrics, the limitations and the paper's citation."""

from __future__ import annotations

import json
import math
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from safetensors import safe_open

from ernievil_ds.configuration_ernievil import PRESETS, ErnieVilConfig
from ernievil_ds.finetuning.modeling import ErnieVilForVisualQuestionAnswering
from ernievil_ds.hub.files import CONFIG_FILE, ModelFiles
from ernievil_ds.hub.model_code import (
    auto_map,
    class_reference,
    model_code_files,
    saved_architecture,
)
from ernievil_ds.hub.runs import Evaluation, RunRecord

CITATION = """\
@inproceedings{yu2021ernievil,
  title     = {{ERNIE-ViL}: Knowledge Enhanced Vision-Language Representations through Scene Graphs},
  author    = {Yu, Fei and Tang, Jiji and Yin, Weichong and Sun, Yu and Tian, Hao and Wu, Hua and Wang, Haifeng},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},
  volume    = {35},
  number    = {4},
  pages     = {3208--3216},
  year      = {2021},
  eprint    = {2006.16934},
  archivePrefix = {arXiv},
}"""
LICENSE = "apache-2.0"  # the license of ernievil-ds, under which its training code and these weights come
TAGS = ["ernievil-ds", "ernie-vil", "vision-language", "multimodal", "scene-graph", "co-attention"]
#: The Hub's task of a saved architecture; the others (a pretraining model, the VCR, RefCOCO+ and
#: retrieval heads) match no Hub task and the card names none.
PIPELINE_TAGS = {ErnieVilForVisualQuestionAnswering: "visual-question-answering"}
#: The config fields that fix the architecture, for naming the preset a model was built from.
ARCHITECTURE_FIELDS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "v_hidden_size",
    "v_num_hidden_layers",
    "v_num_attention_heads",
    "v_intermediate_size",
    "co_hidden_size",
    "co_num_attention_heads",
    "text_co_layer_ids",
    "image_co_layer_ids",
)


def parameter_count(files: ModelFiles) -> int:
    """Parameters stored in the safetensors weights (tied matrices once), from the headers only."""
    total = 0
    for name in files.published:
        if name.endswith(".safetensors"):
            with safe_open(files.model_dir / name, framework="pt") as weights:
                for key in weights.keys():  # noqa: SIM118 (safe_open is not iterable)
                    total += math.prod(weights.get_slice(key).get_shape())
    return total


def preset_name(config: dict) -> str | None:
    """The preset (``ErnieVilConfig.from_preset``) whose architecture ``config`` has, if any."""
    for name in PRESETS:
        preset = ErnieVilConfig.from_preset(name).to_dict()
        if all(config.get(field) == preset.get(field) for field in ARCHITECTURE_FIELDS):
            return name
    return None


def architecture_section(config: dict, files: ModelFiles) -> str:
    """What the model is: ERNIE-ViL's two streams and co-attention, with this config's numbers."""
    preset = preset_name(config)
    grounded = config.get("model_type") == "ernievil_grounded"
    architecture = (config.get("architectures") or ["ErnieVilModel"])[0]
    co_layers = len(config["text_co_layer_ids"])
    lines = [
        "## Model",
        "",
        "ERNIE-ViL (Yu et al., AAAI 2021) is a two-stream vision-language encoder: a BERT-style text stream "
        "over WordPiece tokens and an image stream over detector region features (with their boxes), joined "
        "by co-attention layers in which each stream attends to the other. It is pretrained with Scene Graph "
        "Prediction: the objects, attributes and relations of the caption's scene graph are masked and "
        "predicted from the text and the image.",
        "",
        f"This checkpoint: `{architecture}` (model type `{config['model_type']}`"
        + (f", preset `{preset}`" if preset else "")
        + f"), {parameter_count(files):,} parameters."
        + (
            " It is the grounded variant of ernievil-ds, which adds to the paper's architecture a "
            "learned box embedding in every co-attention layer, a loss grounding each region in the word "
            "that names it, and a text-to-image attention bias from that grounding."
            if grounded
            else ""
        ),
        "",
        "| stream | layers | hidden size | attention heads | feed-forward size |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| text | {config['num_hidden_layers']} | {config['hidden_size']} | {config['num_attention_heads']} | "
        f"{config['intermediate_size']} |",
        f"| image | {config['v_num_hidden_layers']} | {config['v_hidden_size']} | "
        f"{config['v_num_attention_heads']} | {config['v_intermediate_size']} |",
        f"| co-attention | {co_layers} | {config['co_hidden_size']} | {config['co_num_attention_heads']} | |",
        "",
        f"Inputs: token ids (vocabulary of {config['vocab_size']:,}), {config['v_feature_size']}-d region "
        f"features and {config['v_loc_size']}-d region boxes. The text stream meets the image stream after "
        f"text layers {config['text_co_layer_ids']} and image layers {config['image_co_layer_ids']}.",
    ]
    return "\n".join(lines)


def load_lines(repo_id: str, config: dict) -> list[str]:
    """Python that loads the model with transformers alone, through the code the repository carries."""
    architecture = saved_architecture(config)
    mapping = auto_map(config)
    auto = next((name for name, ref in mapping.items() if ref == class_reference(architecture)), None)
    variable = "encoder" if auto == "AutoModel" else "model"
    if auto is not None:
        lines = [f"from transformers import {', '.join(sorted({'AutoModel', auto}))}", ""]
        lines.append(f'{variable} = {auto}.from_pretrained("{repo_id}", trust_remote_code=True)')
    else:  # a head with no Auto class of its own: its class by name, with the config the Auto class reads
        lines = [
            "from transformers import AutoConfig, AutoModel",
            "from transformers.dynamic_module_utils import get_class_from_dynamic_module",
            "",
            f'config = AutoConfig.from_pretrained("{repo_id}", trust_remote_code=True)',
            f'model_class = get_class_from_dynamic_module("{class_reference(architecture)}", "{repo_id}")',
            f'model = model_class.from_pretrained("{repo_id}", config=config)',
        ]
    if variable != "encoder":
        lines.append(f'encoder = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True)  # no head')
    return lines


def usage_section(repo_id: str, config: dict) -> str:
    """How to load the model with transformers, torch and safetensors only: the repository carries the
    model's code, which ``trust_remote_code=True`` runs."""
    return "\n".join(
        [
            "## Usage",
            "",
            "The repository carries the model's code ("
            + ", ".join(f"`{name}`" for name in model_code_files())
            + "), copied from ernievil-ds, the training code this model came from; `transformers` runs it "
            "with `trust_remote_code=True` (read it first). Nothing beyond `torch` and `transformers` is needed:",
            "",
            "```python",
            *load_lines(repo_id, config),
            "```",
            "",
            "The inputs (token ids, detector region features and boxes) are documented with their shapes in "
            "`ErnieVilModel.forward` (`modeling_ernievil.py`) and in each head's `forward`.",
        ]
    )


def training_section(run: RunRecord | None) -> str:
    if run is None:
        return "## Training\n\nThe folder this model was published from records no training run."
    return "\n".join(
        [
            "## Training data",
            "",
            f"{run.kind.capitalize()} data: {run.data}.",
            "",
            "## Training",
            "",
            "The command that reproduces the run (every flag that differs from its default):",
            "",
            "```bash",
            run.command,
            "```",
        ]
    )


def evaluation_section(evaluation: Evaluation | None) -> str:
    if evaluation is None:
        return "## Evaluation\n\nThe run recorded no final evaluation."
    return "\n".join(
        [
            "## Evaluation",
            "",
            f"{evaluation.task_name} on {evaluation.dataset_name}, split `{evaluation.split}`:",
            "",
            evaluation.table,
        ]
    )


def limitations_section(run: RunRecord | None, config: dict) -> str:
    lines = [
        "## Limitations",
        "",
        f"- The image stream reads {config['v_feature_size']}-d region features from an object detector, not "
        "pixels: use it with features from the detector it was trained on.",
    ]
    if run is not None and run.synthetic:
        lines.append(
            "- Trained on synthetic data: SynthScenes scenes are a few coloured objects with detector-like "
            "features generated from their labels, and captions from a small grammar. The metrics show that "
            "training works end to end; they say nothing about natural images, and the model is not meant "
            "for any use beyond testing the training code."
        )
    if config.get("model_type") == "ernievil_grounded":
        lines.append(
            "- The grounded variant departs from the paper's architecture (its additions are in "
            "`grounding.py`)."
        )
    return "\n".join(lines)


def card_data(repo_id: str, run: RunRecord | None, config: dict) -> ModelCardData:
    """The card's YAML front matter: library, pipeline tag, base model, tags, license and the model-index
    of the final evaluation."""
    evaluation = run.evaluation if run is not None else None
    eval_results = None
    if evaluation is not None:
        eval_results = [
            EvalResult(
                task_type=evaluation.task_type,
                task_name=evaluation.task_name,
                dataset_type=evaluation.dataset_type,
                dataset_name=evaluation.dataset_name,
                dataset_split=evaluation.split,
                metric_type="accuracy",
                metric_name=metric.name,
                metric_value=round(float(metric.value), 6),
            )
            for metric in evaluation.metrics
        ]
    return ModelCardData(
        library_name="transformers",  # the usage snippet loads it with transformers alone
        pipeline_tag=PIPELINE_TAGS.get(saved_architecture(config)),
        base_model=run.base_model if run is not None else None,
        license=LICENSE,
        tags=[*TAGS, run.kind] if run is not None else TAGS,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results,
    )


def build_model_card(repo_id: str, files: ModelFiles, run: RunRecord | None) -> ModelCard:
    """The model card of the model in ``files``, trained by ``run`` (None: no run recorded)."""
    config = json.loads(Path(files.model_dir, CONFIG_FILE).read_text())
    title = f"# {repo_id.split('/')[-1]}\n\nERNIE-ViL, trained with ernievil-ds" + (
        f" ({run.kind})." if run is not None else "."
    )
    sections = [
        title,
        architecture_section(config, files),
        usage_section(repo_id, config),
        training_section(run),
        evaluation_section(run.evaluation if run is not None else None),
        limitations_section(run, config),
        "## Citation\n\n```bibtex\n" + CITATION + "\n```",
    ]
    data = card_data(repo_id, run, config)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")
