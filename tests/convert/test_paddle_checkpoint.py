"""The converter without Paddle: config mapping, the completeness checks, transposes, the tokenizer, the CLI.

The files here are written by ``lod_tensor_writer`` from the name table itself, so these tests check the
converter's bookkeeping; that the table matches the official graph is ``test_paddle_equivalence``'s job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ernievil_ds  # noqa: F401  (registers the Auto classes)
from ernievil_ds import ErnieVilConfig, ErnieVilModel
from ernievil_ds.cli import build_parser
from ernievil_ds.convert.paddle_checkpoint import (
    TASK_HEADS,
    config_kwargs_from_official,
    convert_paddle_checkpoint,
    load_official_vocab,
    parameter_mappings,
)
from tests.convert.lod_tensor_writer import write_lod_tensor
from tests.convert.official_release import SMALL_FEATURE_SIZE, SMALL_OFFICIAL_CONFIG, write_vocab

REPO = Path(__file__).resolve().parents[2]


def official_shapes(official: dict, feature_size: int) -> dict[str, tuple[int, ...]]:
    """The shape of every official variable, from the shapes of the project's parameters."""
    kwargs = config_kwargs_from_official(official, feature_size, 5, pad_token_id=0)
    config = ErnieVilConfig(**kwargs)
    with torch.device("meta"):
        shapes = {name: tuple(t.shape) for name, t in ErnieVilModel(config).state_dict().items()}
    mappings = parameter_mappings(config.num_hidden_layers, config.v_num_hidden_layers, config.num_co_layers)
    return {
        name: shapes[m.project][::-1] if m.transpose else shapes[m.project] for name, m in mappings.items()
    }


@pytest.fixture
def release(tmp_path) -> dict[str, Path]:
    """A release-shaped folder of the small model: params/ with random weights, the config and vocab.txt."""
    rng = np.random.default_rng(0)
    params = tmp_path / "params"
    params.mkdir()
    for name, shape in official_shapes(SMALL_OFFICIAL_CONFIG, SMALL_FEATURE_SIZE).items():
        write_lod_tensor(params / name, rng.standard_normal(shape).astype(np.float32))
    config = tmp_path / "ernie_vil.small.json"
    config.write_text(json.dumps(SMALL_OFFICIAL_CONFIG))
    vocab = write_vocab(
        tmp_path / "vocab.txt", SMALL_OFFICIAL_CONFIG["vocab_size"], ["hello", "world", "cafe"]
    )
    return {"params": params, "config": config, "vocab": vocab, "output": tmp_path / "hf_model"}


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

    from ernievil_ds.convert.lod_tensor import read_lod_tensor

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
    with pytest.raises(ValueError, match=r"does not use: \['vqa_fc_0\.w_0'\].*--allow-unused"):
        convert_paddle_checkpoint(release["params"], release["config"], release["vocab"], release["output"])
    convert_paddle_checkpoint(
        release["params"], release["config"], release["vocab"], release["output"], allow_unused=True
    )
    assert (release["output"] / "model.safetensors").is_file()


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
    convert = build_parser()._subparsers._group_actions[0].choices["convert-paddle"]
    task = next(action for action in convert._actions if action.dest == "task")
    assert set(task.choices) == set(TASK_HEADS)
    result = subprocess.run(
        [sys.executable, "-m", "ernievil_ds.cli", "convert-paddle", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    )
    for head in TASK_HEADS.values():
        assert head.model_class in result.stdout
    assert "--answers" in result.stdout and "trainval_label2ans.pkl" in result.stdout
