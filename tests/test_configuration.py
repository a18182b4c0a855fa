import pytest
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import AutoConfig

from ernievil_ds import PRESETS, ErnieVilConfig, ErnieVilGroundedConfig


def test_base_defaults_are_the_official_numbers():
    config = ErnieVilConfig()
    assert (
        config.num_hidden_layers,
        config.hidden_size,
        config.num_attention_heads,
        config.intermediate_size,
    ) == (
        12,
        768,
        12,
        3072,
    )
    assert (config.v_num_hidden_layers, config.v_hidden_size, config.v_num_attention_heads) == (6, 1024, 8)
    assert config.v_intermediate_size == 1024
    assert (config.co_hidden_size, config.co_num_attention_heads) == (1024, 8)
    assert config.text_co_layer_ids == [6, 7, 8, 9, 10, 11]
    assert config.image_co_layer_ids == [0, 1, 2, 3, 4, 5]
    assert (config.vocab_size, config.num_region_classes, config.num_region_attributes) == (30522, 1601, 401)
    assert (config.v_feature_size, config.v_loc_size) == (2048, 5)


def test_large_preset():
    config = ErnieVilConfig.from_preset("large")
    assert (
        config.num_hidden_layers,
        config.hidden_size,
        config.num_attention_heads,
        config.intermediate_size,
    ) == (
        24,
        1024,
        16,
        4096,
    )
    assert (config.v_num_attention_heads, config.v_intermediate_size, config.co_num_attention_heads) == (
        16,
        4096,
        16,
    )
    assert config.text_co_layer_ids == [18, 19, 20, 21, 22, 23]


def test_small_preset_has_the_minilm_text_shape():
    """MiniLM's layer shape, and its first three layers (the checkpoint has six)."""
    config = ErnieVilConfig.from_preset("small")
    assert (
        config.num_hidden_layers,
        config.hidden_size,
        config.num_attention_heads,
        config.intermediate_size,
    ) == (
        3,
        384,
        12,
        1536,
    )


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_save_and_load_round_trip(tmp_path, name):
    config = ErnieVilConfig.from_preset(name)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is type(config)
    assert loaded.to_diff_dict() == config.to_diff_dict()


def test_the_preset_decides_the_config_class():
    assert {name: type(ErnieVilConfig.from_preset(name)).__name__ for name in PRESETS} == {
        "base": "ErnieVilConfig",
        "large": "ErnieVilConfig",
        "tiny": "ErnieVilConfig",
        "small": "ErnieVilGroundedConfig",
        "tiny-grounded": "ErnieVilGroundedConfig",
    }
    assert ErnieVilConfig.from_preset("small").task_loss_weights["grounding"] == 1.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_size": 100}, r"text hidden size \(100\) is not a multiple of .* \(12\)"),
        ({"v_hidden_size": 1000, "v_num_attention_heads": 16}, r"image hidden size \(1000\)"),
        ({"co_num_attention_heads": 7}, r"co-attention hidden size \(1024\)"),
        ({"text_co_layer_ids": [6, 6, 8, 9, 10, 11]}, "strictly increasing"),
        ({"text_co_layer_ids": [6, 7, 8, 9, 10, 13]}, r"must lie in \[0, 12\]"),
        ({"image_co_layer_ids": [0, 1, 2]}, "same length"),
        ({"masked_region_target": "pixels"}, "masked_region_target='pixels'"),
        ({"task_loss_weights": {"nsp": 1.0}}, "unknown tasks"),
        ({"task_loss_weights": {"grounding": 1.0}}, r"unknown tasks \['grounding'\]"),
    ],
)
def test_invalid_configs_raise_errors_that_name_the_problem(overrides, message):
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        ErnieVilConfig(**overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"grounding_co_layers": [0, 6]},
            r"grounding_co_layers=\[0, 6\] must name distinct co-layers of the 6",
        ),
        ({"grounding_co_layers": [1, 1]}, r"grounding_co_layers=\[1, 1\] must name distinct"),
        ({"grounded_position_span": 0}, "grounded_position_span must be >= 1"),
        ({"grounding_co_layers": [0]}, r"set attention_probs_dropout_prob to 0 \(got 0.1\)"),
        ({"hidden_size": 100}, r"text hidden size \(100\)"),
    ],
)
def test_invalid_grounded_configs_raise_errors_that_name_the_problem(overrides, message):
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        ErnieVilGroundedConfig(**overrides)


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown ERNIE-ViL preset 'huge'.*'base'"):
        ErnieVilConfig.from_preset("huge")
