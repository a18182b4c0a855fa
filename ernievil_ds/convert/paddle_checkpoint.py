"""Convert an official ERNIE-ViL release (Paddle 1.8: ``params/``, config JSON, ``vocab.txt``) to a Hugging Face
``hf_model/`` folder that ``AutoModel.from_pretrained`` loads as ``ErnieVilModel``.

The official graph is ``ernie-vil/model/ernie_vil.py`` (``ErnieVilModel._build_model``,
``get_pooled_output``) and ``ernie-vil/model/vl_transformer_encoder.py`` (``encoder``, ``encoder_layer``,
``encoder_co_layer``, ``multi_head_attention``, ``positionwise_feed_forward``) of PaddlePaddle/ERNIE, branch
``repro``. Its parameter names come from the ``name`` arguments of those functions; ``PARAMETER_TABLE`` below
maps each to this project's state dict. With a ``task``, the fine-tuning head that the official
``ernie-vil/finetune.py`` builds for it (``TASK_HEADS``) is mapped too, onto the project's fine-tuning model of
that task (``ernievil_ds.finetuning.modeling``). Conversion reads with numpy (``lod_tensor``) and writes with
safetensors; neither Paddle nor torch is needed for the weights.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ernievil_ds.convert.answers import OFFICIAL_ANSWERS_FILE, load_official_answers
from ernievil_ds.convert.lod_tensor import read_variables

logger = logging.getLogger(__name__)

#: LayerNorm epsilon of the official graph: ``fluid.layers.layer_norm``'s default.
OFFICIAL_LAYER_NORM_EPS = 1e-5

#: Activations the official ``positionwise_feed_forward`` passes to ``fc(act=...)`` that the project's model
#: computes identically (Paddle's ``gelu`` is the exact, erf form, as ``ACT2FN["gelu"]``).
SUPPORTED_ACTIVATIONS = ("gelu", "relu")

#: Keys of the official config that ``ernie_vil.py`` reads and the converted model needs.
REQUIRED_CONFIG_KEYS = (
    "hidden_size",
    "num_attention_heads",
    "v_hidden_size",
    "v_num_attention_heads",
    "v_intermediate_size",
    "co_hidden_size",
    "co_num_attention_heads",
    "vocab_size",
    "max_position_embeddings",
    "sent_type_vocab_size",
    "hidden_act",
    "v_biattention_id",
    "t_biattention_id",
)

#: Variables that training saves beside the parameters, skipped: Adam's moments and beta powers, the learning
#: rate (``scheduled_learning_rate`` of the official ``optim/optimization.py``, or ``learning_rate_0``) and its
#: decay counter, and the task outputs (loss, accuracy: ``mean_0.tmp_0``, ``tmp_3``) that the official
#: ``finetune.py`` marks persistable, so that its ``fluid.io.save_persistables`` checkpoints hold them too.
TRAINING_STATE_MARKERS = ("_moment1_", "_moment2_", "_beta1_pow_acc_", "_beta2_pow_acc_", "learning_rate_")
TRAINING_STATE_NAMES = ("@LR_DECAY_COUNTER@", "scheduled_learning_rate")
SAVED_ACTIVATION = re.compile(r"(^|\.)tmp_\d+$")


# --------------------------------------------------------------------------------------------------------------
# The name table
# --------------------------------------------------------------------------------------------------------------

#: How a Paddle op stores its parameters, and how each becomes a torch parameter.
#:   fc:         "{name}.w_0" [in, out] -> "{module}.weight" [out, in] (transposed), "{name}.b_0" -> ".bias"
#:   layer_norm: "{name}_layer_norm_scale" -> "{module}.weight", "{name}_layer_norm_bias" -> ".bias"
#:   embedding:  "{name}" [rows, width] -> "{module}.weight", as is
MODULE_KINDS = ("fc", "layer_norm", "embedding")

#: Outside the layers: (official name stem, project module, kind). Names from ``ErnieVilModel._build_model``
#: and ``get_pooled_output``.
EMBEDDING_AND_POOLER_TABLE: tuple[tuple[str, str, str], ...] = (
    ("word_embedding", "text_embeddings.word_embeddings", "embedding"),
    ("pos_embedding", "text_embeddings.position_embeddings", "embedding"),
    ("sent_embedding", "text_embeddings.token_type_embeddings", "embedding"),
    ("pre_encoder", "text_embeddings.LayerNorm", "layer_norm"),
    ("image_emb", "image_embeddings.feature_projection", "fc"),
    ("image_loc", "image_embeddings.location_projection", "fc"),
    ("vl_pre_encoder", "image_embeddings.LayerNorm", "layer_norm"),
    ("pooled_fc_text", "text_pooler", "fc"),
    ("pooled_fc_image", "image_pooler", "fc"),
)

#: One stream layer (``encoder_layer``, named ``encoder_layer_{i}`` in the text stream and ``encoder_vlayer_{i}``
#: in the image stream): (suffix of the official name, submodule of ``text_layers.{i}``/``image_layers.{i}``, kind).
STREAM_LAYER_TABLE: tuple[tuple[str, str, str], ...] = (
    ("_multi_head_att_query_fc", "attention.self.query", "fc"),
    ("_multi_head_att_key_fc", "attention.self.key", "fc"),
    ("_multi_head_att_value_fc", "attention.self.value", "fc"),
    ("_multi_head_att_output_fc", "attention.output.dense", "fc"),
    ("_post_att", "attention.output.LayerNorm", "layer_norm"),
    ("_ffn_fc_0", "intermediate.dense", "fc"),
    ("_ffn_fc_1", "output.dense", "fc"),
    ("_post_ffn", "output.LayerNorm", "layer_norm"),
)

#: One co-layer (``encoder_co_layer``, named ``encoder_colayer_{i}``): the un-prefixed names are the text side
#: (text queries attending the image), the ``_vl`` names the image side.
CO_LAYER_TABLE: tuple[tuple[str, str, str], ...] = (
    ("_multi_head_att_query_fc", "text_attention.self.query", "fc"),
    ("_multi_head_att_key_fc", "text_attention.self.key", "fc"),
    ("_multi_head_att_value_fc", "text_attention.self.value", "fc"),
    ("_multi_head_att_output_fc", "text_attention.output.dense", "fc"),
    ("_post_att", "text_attention.output.LayerNorm", "layer_norm"),
    ("_vl_multi_head_att_query_fc", "image_attention.self.query", "fc"),
    ("_vl_multi_head_att_key_fc", "image_attention.self.key", "fc"),
    ("_vl_multi_head_att_value_fc", "image_attention.self.value", "fc"),
    ("_vl_multi_head_att_output_fc", "image_attention.output.dense", "fc"),
    ("_vl_post_att", "image_attention.output.LayerNorm", "layer_norm"),
    ("_ffn_fc_0", "text_feed_forward.intermediate.dense", "fc"),
    ("_ffn_fc_1", "text_feed_forward.output.dense", "fc"),
    ("_post_ffn", "text_feed_forward.output.LayerNorm", "layer_norm"),
    ("_vl_ffn_fc_0", "image_feed_forward.intermediate.dense", "fc"),
    ("_vl_ffn_fc_1", "image_feed_forward.output.dense", "fc"),
    ("_vl_post_ffn", "image_feed_forward.output.LayerNorm", "layer_norm"),
)


@dataclass(frozen=True)
class TaskHead:
    """A fine-tuning task: the project model that holds its head, and the official ``fc`` ops of the head as
    (weight name, bias name, project ``nn.Linear``)."""

    model_class: str
    fcs: tuple[tuple[str, str, str], ...]


#: The heads of the official ``finetune.py``, by ``--task``:
#:   vqa:       ``vqa_classifier_loss``: fc(Co, 2048, relu) "vqa_fc_w_0"/"vqa_fc_b_0", dropout 0.5,
#:              fc(2048, num_class) "vqa_fc_w_1"/"vqa_fc_b_1", on the fused vector h_CLS * h_IMG;
#:   vcr:       ``create_vcr_model``: fc(Co, 1) "{task_prefix}_fc.w_0"/".b_0" per task of the task group,
#:              prefixes "vcr_qa" (Q->A) and "vcr_qar" (QA->R) in ``conf/vcr/task_vcr.json``;
#:   refcoco:   ``create_refcoco_plus_model``: fc(Cv, 1) "cls_seq_label_vl_out_w"/"_b" on every final region
#:              state (``num_flatten_dims=2``);
#:   retrieval: ``create_flickr_model``: fc(Co, 1) "match_fc.w_0"/".b_0" on the fused vector.
TASK_HEADS: dict[str, TaskHead] = {
    "vqa": TaskHead(
        "ErnieVilForVisualQuestionAnswering",
        (("vqa_fc_w_0", "vqa_fc_b_0", "classifier.0"), ("vqa_fc_w_1", "vqa_fc_b_1", "classifier.3")),
    ),
    "vcr": TaskHead(
        "ErnieVilForMultipleChoice",
        (
            ("vcr_qa_fc.w_0", "vcr_qa_fc.b_0", "choice_scorers.q2a"),
            ("vcr_qar_fc.w_0", "vcr_qar_fc.b_0", "choice_scorers.qa2r"),
        ),
    ),
    "refcoco": TaskHead(
        "ErnieVilForReferringExpressions",
        (("cls_seq_label_vl_out_w", "cls_seq_label_vl_out_b", "region_scorer"),),
    ),
    "retrieval": TaskHead(
        "ErnieVilForImageTextRetrieval", (("match_fc.w_0", "match_fc.b_0", "match_scorer"),)
    ),
}
#: Where a fine-tuning model holds the encoder.
ENCODER_PREFIX = "ernievil."


@dataclass(frozen=True)
class ParameterMapping:
    """One official variable and the project parameter it fills."""

    official: str
    project: str
    transpose: bool  # an fc weight: Paddle stores [in, out], torch.nn.Linear [out, in]


def _module_parameters(official: str, project: str, kind: str) -> Iterator[ParameterMapping]:
    if kind == "fc":
        yield ParameterMapping(f"{official}.w_0", f"{project}.weight", transpose=True)
        yield ParameterMapping(f"{official}.b_0", f"{project}.bias", transpose=False)
    elif kind == "layer_norm":
        yield ParameterMapping(f"{official}_layer_norm_scale", f"{project}.weight", transpose=False)
        yield ParameterMapping(f"{official}_layer_norm_bias", f"{project}.bias", transpose=False)
    elif kind == "embedding":
        yield ParameterMapping(official, f"{project}.weight", transpose=False)
    else:
        raise AssertionError(f"unknown module kind {kind!r}; expected one of {MODULE_KINDS}")


def parameter_mappings(
    num_text_layers: int, num_image_layers: int, num_co_layers: int, task: str | None = None
) -> dict[str, ParameterMapping]:
    """Every parameter of the official encoder and pooler -> its mapping, for a model of these depths; with a
    ``task`` (a key of ``TASK_HEADS``), the encoder under ``ENCODER_PREFIX`` and the task's head too."""
    modules: list[tuple[str, str, str]] = list(EMBEDDING_AND_POOLER_TABLE)
    for prefix, module, count, table in (
        ("encoder_layer_", "text_layers.", num_text_layers, STREAM_LAYER_TABLE),
        ("encoder_vlayer_", "image_layers.", num_image_layers, STREAM_LAYER_TABLE),
        ("encoder_colayer_", "co_layers.", num_co_layers, CO_LAYER_TABLE),
    ):
        for i in range(count):
            modules.extend(
                (f"{prefix}{i}{suffix}", f"{module}{i}.{sub}", kind) for suffix, sub, kind in table
            )
    mappings = [m for official, project, kind in modules for m in _module_parameters(official, project, kind)]
    if task is None:
        return {m.official: m for m in mappings}
    head = [
        mapping
        for weight, bias, module in _task_head(task).fcs
        for mapping in (
            ParameterMapping(weight, f"{module}.weight", transpose=True),
            ParameterMapping(bias, f"{module}.bias", transpose=False),
        )
    ]
    encoder = [ParameterMapping(m.official, ENCODER_PREFIX + m.project, m.transpose) for m in mappings]
    return {m.official: m for m in encoder + head}


def _task_head(task: str) -> TaskHead:
    if task not in TASK_HEADS:
        raise ValueError(f"unknown fine-tuning task {task!r}; expected one of {sorted(TASK_HEADS)}")
    return TASK_HEADS[task]


# --------------------------------------------------------------------------------------------------------------
# The config
# --------------------------------------------------------------------------------------------------------------


def load_official_config(path: str | Path) -> dict:
    """Read an official ERNIE-ViL config JSON, checking that the keys the converter needs are there."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No ERNIE-ViL config file at {path}")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a JSON config ({error})") from error
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object of config keys, got {type(config).__name__}")
    missing = [key for key in REQUIRED_CONFIG_KEYS if key not in config]
    if missing:
        raise ValueError(f"{path}: the ERNIE-ViL config lacks the keys {missing}")
    return config


def _check_co_layer_ids(official: dict, key: str, source: str) -> list[int]:
    ids = official[key]
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids):
        raise ValueError(f"{source}: {key} must be a non-empty list of layer indices, got {ids!r}")
    return ids


def config_kwargs_from_official(
    official: dict, feature_size: int, location_size: int, pad_token_id: int, source: str = "config"
) -> dict:
    """The ``ErnieVilConfig`` keyword arguments that reproduce the official graph built from ``official``.

    The official graph takes some sizes from elsewhere than the config's keys of the same name, and the
    arguments follow the graph (``ernie_vil.py``, ``vl_transformer_encoder.encoder``):
      - text FFN width: ``4 * hidden_size`` (``d_inner_hid=self._emb_size * 4``; ``intermediate_size``, if
        present, is not read);
      - layer counts: ``encoder`` runs the layers before each co-layer, then exactly one text layer
        (``_layer_{t_biattention_id[-1]}``) and one image layer (``_vlayer_{v_biattention_id[-1]}``), so the
        streams have ``t_biattention_id[-1] + 1`` and ``v_biattention_id[-1] + 1`` layers; a
        ``num_hidden_layers`` that disagrees is an error;
      - co-layer FFNs: each stream's own (``co_intermediate_size`` is read but never used);
      - region feature and location widths: those of the ``image_emb``/``image_loc`` weights;
      - LayerNorm epsilon: Paddle's default 1e-5.
    """
    text_ids = _check_co_layer_ids(official, "t_biattention_id", source)
    image_ids = _check_co_layer_ids(official, "v_biattention_id", source)
    if len(text_ids) != len(image_ids):
        raise ValueError(
            f"{source}: t_biattention_id {text_ids} and v_biattention_id {image_ids} must have one entry per "
            "co-layer (the official encoder zips them)"
        )
    num_text_layers = text_ids[-1] + 1
    if "num_hidden_layers" in official and official["num_hidden_layers"] != num_text_layers:
        raise ValueError(
            f"{source}: num_hidden_layers={official['num_hidden_layers']} but the official encoder builds "
            f"t_biattention_id[-1] + 1 = {num_text_layers} text layers from t_biattention_id={text_ids}"
        )
    activation = official["hidden_act"]
    if activation not in SUPPORTED_ACTIVATIONS:
        raise ValueError(
            f"{source}: hidden_act={activation!r} is not one this converter maps; expected one of "
            f"{SUPPORTED_ACTIVATIONS}"
        )
    kwargs = {
        "vocab_size": official["vocab_size"],
        "hidden_size": official["hidden_size"],
        "num_hidden_layers": num_text_layers,
        "num_attention_heads": official["num_attention_heads"],
        "intermediate_size": 4 * official["hidden_size"],
        "hidden_act": activation,
        "max_position_embeddings": official["max_position_embeddings"],
        "type_vocab_size": official["sent_type_vocab_size"],
        "pad_token_id": pad_token_id,
        "v_feature_size": feature_size,
        "v_loc_size": location_size,
        "v_hidden_size": official["v_hidden_size"],
        "v_num_hidden_layers": image_ids[-1] + 1,
        "v_num_attention_heads": official["v_num_attention_heads"],
        "v_intermediate_size": official["v_intermediate_size"],
        "co_hidden_size": official["co_hidden_size"],
        "co_num_attention_heads": official["co_num_attention_heads"],
        "text_co_layer_ids": list(text_ids),
        "image_co_layer_ids": list(image_ids),
        "layer_norm_eps": OFFICIAL_LAYER_NORM_EPS,
    }
    optional = {
        "hidden_dropout_prob": "hidden_dropout_prob",
        "attention_probs_dropout_prob": "attention_probs_dropout_prob",
        "initializer_range": "initializer_range",
        "class_size": "num_region_classes",
        "class_attr_size": "num_region_attributes",
    }
    kwargs.update({ours: official[theirs] for theirs, ours in optional.items() if theirs in official})
    return kwargs


# --------------------------------------------------------------------------------------------------------------
# The vocabulary
# --------------------------------------------------------------------------------------------------------------

SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")


def load_official_vocab(path: str | Path) -> dict[str, int]:
    """Read ``vocab.txt`` as the official ``tokenization.load_vocab`` does: one token per line, or
    ``token<TAB>id``; reading stops at the first line with more than two tab-separated fields.

    Raises:
        ValueError: naming the file, when ids are not exactly 0 .. N-1 or a BERT special token is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No vocabulary file at {path}")
    vocab: dict[str, int] = {}
    with path.open(encoding="utf-8", errors="ignore") as lines:
        for number, line in enumerate(lines):
            items = line.strip().split("\t")
            if len(items) > 2:
                break
            try:
                vocab[items[0].strip()] = int(items[1]) if len(items) == 2 else number
            except ValueError as error:
                raise ValueError(
                    f"{path}, line {number + 1}: the id {items[1]!r} is not an integer"
                ) from error
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError(f"{path}: token ids must be 0 .. {len(vocab) - 1}, each once")
    missing = [token for token in SPECIAL_TOKENS if token not in vocab]
    if missing:
        raise ValueError(f"{path}: the vocabulary lacks the special tokens {missing}")
    return vocab


def save_tokenizer(vocab: dict[str, int], max_length: int, output_dir: Path) -> None:
    """Write a BERT WordPiece tokenizer over ``vocab`` that lower-cases and strips accents, as the official
    ``FullTokenizer(do_lower_case=True)`` of ``PreprocessorBasic`` does."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=max_length)
    tokenizer.save_pretrained(output_dir)


# --------------------------------------------------------------------------------------------------------------
# The weights
# --------------------------------------------------------------------------------------------------------------


def is_training_state(name: str) -> bool:
    """Whether an official variable is training state rather than a model parameter (``TRAINING_STATE_*``)."""
    return (
        name in TRAINING_STATE_NAMES
        or any(marker in name for marker in TRAINING_STATE_MARKERS)
        or SAVED_ACTIVATION.search(name) is not None
    )


def model_class(task: str | None):
    """``ErnieVilModel``, or the fine-tuning model of ``task`` (a key of ``TASK_HEADS``)."""
    if task is None:
        from ernievil_ds.modeling_ernievil import ErnieVilModel

        return ErnieVilModel
    from ernievil_ds.finetuning import modeling

    return getattr(modeling, _task_head(task).model_class)


def expected_parameter_shapes(config, task: str | None = None) -> dict[str, tuple[int, ...]]:
    """The state-dict names and shapes of ``model_class(task)(config)``, built on the meta device (no
    memory)."""
    import torch

    with torch.device("meta"):
        model = model_class(task)(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def map_variables(
    variables: dict[str, np.ndarray],
    mappings: dict[str, ParameterMapping],
    expected_shapes: dict[str, tuple[int, ...]],
    params_dir: Path,
    allow_unused: bool = False,
) -> dict[str, np.ndarray]:
    """Official variables -> the project's state dict (float32, fc weights transposed).

    Raises:
        ValueError: listing every official encoder variable that is missing, every project parameter left
            unfilled, every variable left over (unless ``allow_unused``), or the first shape that disagrees.
    """
    missing = sorted(name for name in mappings if name not in variables)
    unfilled = sorted(set(expected_shapes) - {m.project for m in mappings.values()})
    unused = sorted(name for name in variables if name not in mappings)
    training_state = [name for name in unused if is_training_state(name)]
    leftover = [name for name in unused if not is_training_state(name)]
    problems = []
    if missing:
        problems.append(f"official variables missing from {params_dir}: {missing}")
    if unfilled:
        problems.append(f"project parameters that no official variable fills: {unfilled}")
    if leftover and not allow_unused:
        problems.append(
            f"variables in {params_dir} that the converted model does not use: {leftover} (pass the --task "
            "whose head they are, or --allow-unused to leave them out)"
        )
    if problems:
        raise ValueError("Cannot convert the Paddle checkpoint:\n  - " + "\n  - ".join(problems))
    if training_state:
        logger.info("Skipped %d training-state variables: %s", len(training_state), training_state)
    if leftover:
        logger.warning("Left out %d variables the converted model does not use: %s", len(leftover), leftover)

    state_dict = {}
    for name, mapping in mappings.items():
        array = variables[name]
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"{params_dir / name}: expected a floating-point parameter, got {array.dtype}")
        if mapping.transpose:
            if array.ndim != 2:
                raise ValueError(
                    f"{params_dir / name}: an fc weight must be 2-d [in, out], got {array.shape}"
                )
            array = array.T
        expected = expected_shapes[mapping.project]
        if tuple(array.shape) != expected:
            raise ValueError(
                f"{params_dir / name}: shape {tuple(variables[name].shape)} does not fit {mapping.project} "
                f"{expected}{' (transposed from [in, out])' if mapping.transpose else ''}; does the config "
                "match these params?"
            )
        state_dict[mapping.project] = np.ascontiguousarray(array, dtype=np.float32)
    return state_dict


def _variable(variables: dict[str, np.ndarray], name: str, params_dir: Path) -> np.ndarray:
    if name not in variables:
        raise ValueError(f"{params_dir} has no variable {name!r}: is this an ERNIE-ViL params directory?")
    return variables[name]


def _model_config(
    official: dict,
    variables: dict[str, np.ndarray],
    vocab: dict[str, int],
    *,
    params_dir: Path,
    config_path: str | Path,
    vocab_path: str | Path,
):
    """The ``ErnieVilConfig`` of the official graph, its sizes checked against the weights."""
    from ernievil_ds.configuration_ernievil import ErnieVilConfig

    image_weight = _variable(variables, "image_emb.w_0", params_dir)
    location_weight = _variable(variables, "image_loc.w_0", params_dir)
    rows = _variable(variables, "word_embedding", params_dir).shape[0]
    if official["vocab_size"] != rows or len(vocab) > rows:
        raise ValueError(
            f"{config_path} says vocab_size={official['vocab_size']} and {vocab_path} has {len(vocab)} "
            f"tokens, but {params_dir / 'word_embedding'} has {rows} rows"
        )
    if len(vocab) < rows:
        logger.warning(
            "%s has %d tokens for %d embedding rows; the rest stay unreachable",
            vocab_path,
            len(vocab),
            rows,
        )
    kwargs = config_kwargs_from_official(
        official,
        feature_size=image_weight.shape[0],
        location_size=location_weight.shape[0],
        pad_token_id=vocab["[PAD]"],
        source=str(config_path),
    )
    return ErnieVilConfig(**kwargs)


def _vqa_answers(
    variables: dict[str, np.ndarray], params_dir: Path, answers_path: Path | None
) -> dict[int, str]:
    """The answers of the VQA classifier's classes: ``answers_path``, or else the official
    ``trainval_label2ans.pkl`` beside ``params/``; as many as the classifier has outputs."""
    path = params_dir.parent / OFFICIAL_ANSWERS_FILE if answers_path is None else Path(answers_path)
    if answers_path is None and not path.is_file():
        raise FileNotFoundError(
            f"--task vqa needs the answer list of the classifier's classes, and there is no {path}: pass "
            f"--answers with the official repository's data/vqa/{OFFICIAL_ANSWERS_FILE} (the pickle_file of "
            "conf/vqa/task_vqa_eval.json)"
        )
    id2label = load_official_answers(path)
    classes = _variable(variables, "vqa_fc_w_1", params_dir).shape[-1]
    if len(id2label) != classes:
        raise ValueError(
            f"{path} lists {len(id2label)} answers, but {params_dir / 'vqa_fc_w_1'} scores {classes} classes"
        )
    logger.info("Read %d VQA answers from %s", len(id2label), path)
    return id2label


def convert_paddle_checkpoint(
    params_dir: str | Path,
    config_path: str | Path,
    vocab_path: str | Path,
    output_dir: str | Path,
    allow_unused: bool = False,
    task: str | None = None,
    answers_path: str | Path | None = None,
) -> Path:
    """Convert an official release to ``output_dir`` (``config.json``, ``model.safetensors``, tokenizer,
    and the model's code, ``ernievil_ds.hub.model_code``).

    Args:
        params_dir: the release's ``params/``, one LoDTensor file per variable.
        config_path: the release's config JSON (the keys ``ernie_vil.py`` reads).
        vocab_path: the release's ``vocab.txt``.
        output_dir: created if needed; loads with ``AutoModel.from_pretrained`` once ``ernievil_ds`` is imported
            (or, with a ``task``, with that task's fine-tuning model class).
        allow_unused: convert even when ``params_dir`` holds variables the model does not use (heads),
            logging their names; by default such variables are an error.
        task: a key of ``TASK_HEADS``: convert the official fine-tuned head too, into the task's model.
        answers_path: ``task="vqa"`` only: the official answer list (``load_official_answers``); by default
            ``trainval_label2ans.pkl`` beside ``params_dir``.
    """
    from safetensors.numpy import save_file

    from ernievil_ds.hub.model_code import write_model_code

    params_dir, output_dir = Path(params_dir), Path(output_dir)
    if task is not None:
        _task_head(task)
    if answers_path is not None and task != "vqa":
        raise ValueError(
            f"answers ({answers_path}) name the VQA classes; they go with task 'vqa', not {task!r}"
        )
    official = load_official_config(config_path)
    vocab = load_official_vocab(vocab_path)
    variables = read_variables(params_dir)
    config = _model_config(
        official, variables, vocab, params_dir=params_dir, config_path=config_path, vocab_path=vocab_path
    )
    if task == "vqa":
        config.id2label = _vqa_answers(variables, params_dir, answers_path)
        config.label2id = {answer: index for index, answer in config.id2label.items()}
    mappings = parameter_mappings(
        config.num_hidden_layers, config.v_num_hidden_layers, config.num_co_layers, task=task
    )
    state_dict = map_variables(
        variables, mappings, expected_parameter_shapes(config, task), params_dir, allow_unused=allow_unused
    )

    output_dir.mkdir(parents=True, exist_ok=True)
    config.architectures = [model_class(task).__name__]
    config.save_pretrained(output_dir)
    save_file(state_dict, str(output_dir / "model.safetensors"), metadata={"format": "pt"})
    save_tokenizer(vocab, official["max_position_embeddings"], output_dir)
    write_model_code(output_dir)
    logger.info("Converted %d official variables from %s to %s", len(state_dict), params_dir, output_dir)
    return output_dir


__all__ = [
    "CO_LAYER_TABLE",
    "EMBEDDING_AND_POOLER_TABLE",
    "OFFICIAL_LAYER_NORM_EPS",
    "STREAM_LAYER_TABLE",
    "TASK_HEADS",
    "ParameterMapping",
    "TaskHead",
    "config_kwargs_from_official",
    "convert_paddle_checkpoint",
    "load_official_config",
    "load_official_vocab",
    "map_variables",
    "model_class",
    "parameter_mappings",
]
