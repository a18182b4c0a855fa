"""The converter without Paddle: config mapping, the completeness checks, transposes, the tokenizer, the CLI.

The files here are written by ``lod_tensor_writer`` from the name table itself, so these tests check the
converter's bookkeeping; that the table matches the official graph is ``test_paddle_equivalence``'s job.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import ernievil_ds  # noqa: F401  (registers the Auto classes)
from ernievil_ds import ErnieVilConfig, ErnieVilModel
from ernievil_ds.cli import build_parser
from ernievil_ds.convert.lod_tensor import read_lod_tensor
from ernievil_ds.convert.paddle_checkpoint import (
    TASK_HEADS,
    config_kwargs_from_official,
    convert_paddle_checkpoint,
    expected_parameter_shapes,
    load_official_vocab,
    model_class,
    parameter_mappings,
)
from tests.convert.lod_tensor_writer import write_lod_tensor
from tests.convert.official_release import SMALL_FEATURE_SIZE, SMALL_OFFICIAL_CONFIG, write_vocab


def official_shapes(official: dict, feature_size: int, task: str | None = None) -> dict[str, tuple[int, ...]]:
    """The shape of every official variable (of ``task``'s checkpoint: the encoder and the head), from the
    shapes of the project's parameters; VQA has ``len(ANSWERS)`` classes."""
    kwargs = config_kwargs_from_official(official, feature_size, 5, pad_token_id=0)
    config = ErnieVilConfig(**kwargs, num_labels=len(ANSWERS))
    shapes = expected_parameter_shapes(config, task)
    mappings = parameter_mappings(
        config.num_hidden_layers, config.v_num_hidden_layers, config.num_co_layers, task=task
    )
    return {
        name: shapes[m.project][::-1] if m.transpose else shapes[m.project] for name, m in mappings.items()
    }


#: The answers of the VQA checkpoints written here.
ANSWERS = ["no", "yes", "2"]


def write_release(folder: Path, task: str | None = None) -> dict[str, Path]:
    """A release-shaped folder of the small model (with ``task``'s head): params/ with random weights, the
    config and vocab.txt."""
    rng = np.random.default_rng(0)
    params = folder / "params"
    params.mkdir()
    for name, shape in official_shapes(SMALL_OFFICIAL_CONFIG, SMALL_FEATURE_SIZE, task).items():
        write_lod_tensor(params / name, rng.standard_normal(shape).astype(np.float32))
    config = folder / "ernie_vil.small.json"
    config.write_text(json.dumps(SMALL_OFFICIAL_CONFIG))
    vocab = write_vocab(folder / "vocab.txt", SMALL_OFFICIAL_CONFIG["vocab_size"], ["hello", "world", "cafe"])
    return {"params": params, "config": config, "vocab": vocab, "output": folder / "hf_model"}


@pytest.fixture
def release(tmp_path) -> dict[str, Path]:
    return write_release(tmp_path)


def convert(release: dict[str, Path], **options) -> Path:
    return convert_paddle_checkpoint(
        release["params"], release["config"], release["vocab"], release["output"], **options
    )


def test_config_follows_the_official_graph_not_its_unused_keys():
    base = {
        **SMALL_OFFICIAL_CONFIG,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 1234,  # not read by the official graph: it builds 4 * hidden_size
        "t_biattention_id": [6, 7, 8, 9, 10, 11],
        "v_biattention_id": [0, 1, 2, 3, 4, 5],
        "v_hidden_size": 1024,
        "v_num_attention_heads": 8,
        "v_intermediate_size": 1024,
        "co_hidden_size": 1024,
        "co_num_attention_heads": 8,
        "sent_type_vocab_size": 4,
        "hidden_act": "gelu",
    }
    kwargs = config_kwargs_from_official(base, feature_size=2048, location_size=5, pad_token_id=0)
    config = ErnieVilConfig(**kwargs)
    assert (config.num_hidden_layers, config.intermediate_size, config.v_num_hidden_layers) == (12, 3072, 6)
    assert (config.type_vocab_size, config.layer_norm_eps, config.hidden_act) == (4, 1e-5, "gelu")
    assert (config.num_region_classes, config.num_region_attributes) == (11, 7)
    assert config.text_co_layer_ids == [6, 7, 8, 9, 10, 11] and config.image_co_layer_ids == [
        0,
        1,
        2,
        3,
        4,
        5,
    ]
    # Only the paper's architecture: none of the project's extras, whether or not the config class has them.
    extras = ("co_layer_box_embeddings", "grounded_position_bias", "grounding_co_layers")
    assert not set(kwargs) & set(extras)
    assert not any(getattr(config, extra, None) for extra in extras)


def test_head_counts_come_from_the_config_given():
    large_like = {
        **SMALL_OFFICIAL_CONFIG,
        "num_attention_heads": 6,
        "v_num_attention_heads": 10,
        "co_num_attention_heads": 9,
    }
    kwargs = config_kwargs_from_official(large_like, SMALL_FEATURE_SIZE, 5, pad_token_id=0)
    assert (
        kwargs["num_attention_heads"],
        kwargs["v_num_attention_heads"],
        kwargs["co_num_attention_heads"],
    ) == (
        6,
        10,
        9,
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_hidden_layers": 6}, r"num_hidden_layers=6 but the official encoder builds .* 4 text layers"),
        ({"hidden_act": "tanh"}, r"hidden_act='tanh'"),
        ({"t_biattention_id": [1, 2, 3]}, r"one entry per co-layer"),
        ({"v_biattention_id": []}, r"v_biattention_id must be a non-empty list"),
    ],
)
def test_config_errors(change, message):
    with pytest.raises(ValueError, match=message):
        config_kwargs_from_official(
            {**SMALL_OFFICIAL_CONFIG, **change}, SMALL_FEATURE_SIZE, 5, pad_token_id=0
        )


def test_the_table_fills_every_project_parameter_once():
    kwargs = config_kwargs_from_official(SMALL_OFFICIAL_CONFIG, SMALL_FEATURE_SIZE, 5, pad_token_id=0)
    config = ErnieVilConfig(**kwargs)
    with torch.device("meta"):
        names = set(ErnieVilModel(config).state_dict())
    mappings = parameter_mappings(config.num_hidden_layers, config.v_num_hidden_layers, config.num_co_layers)
    projects = [m.project for m in mappings.values()]
    assert len(projects) == len(set(projects))
    assert set(projects) == names


def test_conversion_transposes_fc_weights_and_loads_through_automodel(release):
    from transformers import AutoModel

    out = convert_paddle_checkpoint(release["params"], release["config"], release["vocab"], release["output"])
    model, info = AutoModel.from_pretrained(out, output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert type(model).__name__ == "ErnieVilModel"
    assert model.config.layer_norm_eps == 1e-5 and model.config.v_feature_size == SMALL_FEATURE_SIZE

    def official(name):
        return torch.from_numpy(read_lod_tensor(release["params"] / name))

    state = model.state_dict()
    torch.testing.assert_close(state["text_pooler.weight"], official("pooled_fc_text.w_0").T, rtol=0, atol=0)
    torch.testing.assert_close(
        state["co_layers.1.image_attention.self.key.weight"],
        official("encoder_colayer_1_vl_multi_head_att_key_fc.w_0").T,
        rtol=0,
        atol=0,
    )
    torch.testing.assert_close(
        state["image_layers.2.output.LayerNorm.weight"],
        official("encoder_vlayer_2_post_ffn_layer_norm_scale"),
        rtol=0,
        atol=0,
    )
    torch.testing.assert_close(
        state["text_embeddings.token_type_embeddings.weight"], official("sent_embedding"), rtol=0, atol=0
    )


def test_a_missing_variable_is_listed(release):
    (release["params"] / "encoder_colayer_0_vl_post_ffn_layer_norm_bias").unlink()
    (release["params"] / "pos_embedding").unlink()
    with pytest.raises(
        ValueError, match=r"missing .*\['encoder_colayer_0_vl_post_ffn_layer_norm_bias', 'pos_embedding'\]"
    ):
        convert_paddle_checkpoint(release["params"], release["config"], release["vocab"], release["output"])
    assert not release["output"].exists()


def test_left_over_variables_are_listed_unless_allowed(release):
    write_lod_tensor(release["params"] / "vqa_fc_0.w_0", np.zeros((36, 7), np.float32))
    write_lod_tensor(
        release["params"] / "encoder_layer_0_ffn_fc_0.w_0_moment1_0", np.zeros((48, 192), np.float32)
    )
    with pytest.raises(
        ValueError, match=r"does not use: \['vqa_fc_0\.w_0'\] \(pass the --task .*--allow-unused"
    ):
        convert_paddle_checkpoint(release["params"], release["config"], release["vocab"], release["output"])
    convert_paddle_checkpoint(
        release["params"], release["config"], release["vocab"], release["output"], allow_unused=True
    )
    assert (release["output"] / "model.safetensors").is_file()


@pytest.mark.parametrize("task", sorted(TASK_HEADS))
def test_each_task_converts_its_head_into_the_task_model(tmp_path, task):
    release = write_release(tmp_path, task)
    if task == "vqa":
        (tmp_path / "trainval_label2ans.pkl").write_bytes(pickle.dumps(ANSWERS, protocol=0))
    model, info = model_class(task).from_pretrained(convert(release, task=task), output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert model.config.architectures == [TASK_HEADS[task].model_class]
    state = model.state_dict()
    for weight, bias, module in TASK_HEADS[task].fcs:
        official_weight = torch.from_numpy(read_lod_tensor(release["params"] / weight))
        torch.testing.assert_close(state[f"{module}.weight"], official_weight.T, rtol=0, atol=0)
        official_bias = torch.from_numpy(read_lod_tensor(release["params"] / bias))
        torch.testing.assert_close(state[f"{module}.bias"], official_bias, rtol=0, atol=0)
    official_pooler = torch.from_numpy(read_lod_tensor(release["params"] / "pooled_fc_image.w_0"))
    torch.testing.assert_close(state["ernievil.image_pooler.weight"], official_pooler.T, rtol=0, atol=0)


def test_vqa_answers_come_from_the_official_file_beside_params_or_answers(tmp_path):
    release = write_release(tmp_path, "vqa")
    with pytest.raises(FileNotFoundError, match=r"trainval_label2ans\.pkl: pass --answers"):
        convert(release, task="vqa")
    (tmp_path / "trainval_label2ans.pkl").write_bytes(pickle.dumps(ANSWERS, protocol=0))
    config = json.loads((convert(release, task="vqa") / "config.json").read_text())
    assert config["id2label"] == {"0": "no", "1": "yes", "2": "2"}
    assert config["label2id"] == {"no": 0, "yes": 1, "2": 2}
    four = tmp_path / "four.pkl"
    four.write_bytes(pickle.dumps([*ANSWERS, "maybe"]))
    with pytest.raises(ValueError, match=r"four\.pkl lists 4 answers, but .*vqa_fc_w_1 scores 3 classes"):
        convert(release, task="vqa", answers_path=four)
    with pytest.raises(ValueError, match=r"go with task 'vqa', not 'vcr'"):
        convert(release, task="vcr", answers_path=four)


def test_training_state_is_skipped_and_listed_in_one_line(tmp_path, caplog):
    release = write_release(tmp_path, "retrieval")
    training_state = {
        "scheduled_learning_rate": np.array([1e-4], np.float32),
        "@LR_DECAY_COUNTER@": np.array([1200], np.int64),
        "learning_rate_0": np.array([1e-4], np.float32),
        "match_fc.w_0_moment1_0": np.zeros((36, 1), np.float32),
        "match_fc.w_0_beta2_pow_acc_0": np.ones(1, np.float32),
        "mean_0.tmp_0": np.ones(1, np.float32),
        "tmp_3": np.ones(1, np.float32),
    }
    for name, value in training_state.items():
        write_lod_tensor(release["params"] / name, value)
    with caplog.at_level(logging.INFO, logger="ernievil_ds.convert.paddle_checkpoint"):
        convert(release, task="retrieval")
    lines = [r.getMessage() for r in caplog.records if "training-state" in r.getMessage()]
    assert lines == [f"Skipped 7 training-state variables: {sorted(training_state)}"]


def test_a_shape_that_does_not_fit_names_the_file(release):
    write_lod_tensor(release["params"] / "image_loc.w_0", np.zeros((5, 41), np.float32))
    with pytest.raises(ValueError, match=r"image_loc\.w_0: shape \(5, 41\) does not fit"):
        convert_paddle_checkpoint(release["params"], release["config"], release["vocab"], release["output"])


def test_a_truncated_variable_file_names_it(release):
    path = release["params"] / "encoder_layer_2_ffn_fc_1.b_0"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match=r"encoder_layer_2_ffn_fc_1\.b_0: truncated"):
        convert_paddle_checkpoint(release["params"], release["config"], release["vocab"], release["output"])


def test_vocab_is_read_as_the_official_loader_does(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\t0\n[CLS]\t1\n[SEP]\t2\n[MASK]\t3\n[UNK]\t4\nhello\t5\n")
    assert load_official_vocab(path)["hello"] == 5
    path.write_text("[PAD]\n[CLS]\n[SEP]\n[MASK]\nhello\n")
    with pytest.raises(
        ValueError, match=r"vocab\.txt: the vocabulary lacks the special tokens \['\[UNK\]'\]"
    ):
        load_official_vocab(path)
    path.write_text("[PAD]\t0\n[CLS]\t1\n[SEP]\t2\n[MASK]\t3\n[UNK]\t7\n")
    with pytest.raises(ValueError, match=r"token ids must be 0 \.\. 4"):
        load_official_vocab(path)


def test_the_tokenizer_lower_cases_and_strips_accents(release):
    from transformers import AutoTokenizer

    convert_paddle_checkpoint(release["params"], release["config"], release["vocab"], release["output"])
    tokenizer = AutoTokenizer.from_pretrained(release["output"])
    # The official BasicTokenizer(do_lower_case=True) lower-cases, strips accents and splits punctuation.
    assert tokenizer.tokenize("Hello, WORLD café CAFÉ!") == [
        "hello",
        "[UNK]",
        "world",
        "cafe",
        "cafe",
        "[UNK]",
    ]
    encoded = tokenizer("HELLO world")["input_ids"]
    assert encoded == [2, 5, 6, 3]  # [CLS] hello world [SEP]


def test_cli_help_documents_each_task_head():
    # The command itself runs as ``python -m ernievil_ds.cli convert-paddle`` in test_paddle_equivalence.
    convert = build_parser()._subparsers._group_actions[0].choices["convert-paddle"]
    task = next(action for action in convert._actions if action.dest == "task")
    assert set(task.choices) == set(TASK_HEADS)
    help_text = convert.format_help()
    for head in TASK_HEADS.values():
        assert head.model_class in help_text
    assert "--answers" in help_text and "trainval_label2ans.pkl" in help_text
