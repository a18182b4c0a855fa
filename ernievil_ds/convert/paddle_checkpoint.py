"""Convert an official ERNIE-ViL release (Paddle 1.8: ``params/``, config JSON, ``vocab.txt``) to a Hugging Face
``hf_model/`` folder that ``AutoModel.from_pretrained`` loads as ``ErnieVilModel``.

The official graph is ``ernie-vil/model/ernie_vil.py`` (``ErnieVilModel._build_model``,
``get_pooled_output``) and ``ernie-vil/model/vl_transformer_encoder.py`` (``encoder``, ``encoder_layer``,
``encoder_co_layer``, ``multi_head_attention``, ``positionwise_feed_forward``) of PaddlePaddle/ERNIE, branch
``repro``. Its parameter names come from the ``name`` arguments of those functions; ``PARAMETER_TABLE`` below
maps each to this project's state dict. Conversion reads with numpy (``lod_tensor``) and writes with
safetensors; neither Paddle nor torch is needed for the weights.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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

#: Variables that training adds beside the parameters (Adam moments, learning-rate counters): skipped.
OPTIMIZER_STATE_MARKERS = ("_moment1_", "_moment2_", "_beta1_pow_acc_", "_beta2_pow_acc_", "learning_rate_")
OPTIMIZER_STATE_NAMES = ("@LR_DECAY_COUNTER@",)


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
    num_text_layers: int, num_image_layers: int, num_co_layers: int
) -> dict[str, ParameterMapping]:
    """Every parameter of the official encoder and pooler -> its mapping, for a model of these depths."""
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
    return {m.official: m for m in mappings}


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


def is_optimizer_state(name: str) -> bool:
    return name in OPTIMIZER_STATE_NAMES or any(marker in name for marker in OPTIMIZER_STATE_MARKERS)


def expected_parameter_shapes(config) -> dict[str, tuple[int, ...]]:
    """The state-dict names and shapes of ``ErnieVilModel(config)``, built on the meta device (no memory)."""
    import torch

    from ernievil_ds.modeling_ernievil import ErnieVilModel

    with torch.device("meta"):
        model = ErnieVilModel(config)
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
    leftover = sorted(name for name in variables if name not in mappings and not is_optimizer_state(name))
    problems = []
    if missing:
        problems.append(f"official encoder variables missing from {params_dir}: {missing}")
    if unfilled:
        problems.append(f"project parameters that no official variable fills: {unfilled}")
    if leftover and not allow_unused:
        problems.append(
            f"variables in {params_dir} that the encoder does not use: {leftover} (fine-tuning and pretraining "
            "heads are not converted yet; pass --allow-unused to convert the encoder and leave them out)"
        )
    if problems:
        raise ValueError("Cannot convert the Paddle checkpoint:\n  - " + "\n  - ".join(problems))
    if leftover:
        logger.warning("Left out %d variables the encoder does not use: %s", len(leftover), leftover)

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


def convert_paddle_checkpoint(
    params_dir: str | Path,
    config_path: str | Path,
    vocab_path: str | Path,
    output_dir: str | Path,
    allow_unused: bool = False,
) -> Path:
    """Convert an official release to ``output_dir`` (``config.json``, ``model.safetensors``, tokenizer,
    and the model's code, ``ernievil_ds.hub.model_code``).

    Args:
        params_dir: the release's ``params/``, one LoDTensor file per variable.
        config_path: the release's config JSON (the keys ``ernie_vil.py`` reads).
        vocab_path: the release's ``vocab.txt``.
        output_dir: created if needed; loads with ``AutoModel.from_pretrained`` once ``ernievil_ds`` is imported.
        allow_unused: convert even when ``params_dir`` holds variables the encoder does not use (heads),
            logging their names; by default such variables are an error.
    """
    from safetensors.numpy import save_file

    from ernievil_ds.configuration_ernievil import ErnieVilConfig
    from ernievil_ds.hub.model_code import write_model_code

    params_dir, output_dir = Path(params_dir), Path(output_dir)
    official = load_official_config(config_path)
    vocab = load_official_vocab(vocab_path)
    variables = read_variables(params_dir)

    image_weight = _variable(variables, "image_emb.w_0", params_dir)
    location_weight = _variable(variables, "image_loc.w_0", params_dir)
    word_embedding = _variable(variables, "word_embedding", params_dir)
    rows = word_embedding.shape[0]
    if official["vocab_size"] != rows or len(vocab) > rows:
        raise ValueError(
            f"{config_path} says vocab_size={official['vocab_size']} and {vocab_path} has {len(vocab)} tokens, "
            f"but {params_dir / 'word_embedding'} has {rows} rows"
        )
    if len(vocab) < rows:
        logger.warning(
            "%s has %d tokens for %d embedding rows; the rest stay unreachable", vocab_path, len(vocab), rows
        )
    config = ErnieVilConfig(
        **config_kwargs_from_official(
            official,
            feature_size=image_weight.shape[0],
            location_size=location_weight.shape[0],
            pad_token_id=vocab["[PAD]"],
            source=str(config_path),
        )
    )
    mappings = parameter_mappings(config.num_hidden_layers, config.v_num_hidden_layers, config.num_co_layers)
    state_dict = map_variables(
        variables, mappings, expected_parameter_shapes(config), params_dir, allow_unused=allow_unused
    )

    output_dir.mkdir(parents=True, exist_ok=True)
    config.architectures = ["ErnieVilModel"]
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
    "ParameterMapping",
    "config_kwargs_from_official",
    "convert_paddle_checkpoint",
    "load_official_config",
    "load_official_vocab",
    "map_variables",
    "parameter_mappings",
]
