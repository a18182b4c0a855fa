"""A reference ERNIE-ViL encoder in Paddle's static graph, for the converter's equivalence test.

Where the structure comes from: PaddlePaddle/ERNIE, branch ``repro``, ``ernie-vil/model/ernie_vil.py``
(``ErnieVilModel._build_model``: embeddings, masks and the call to ``encoder``; ``get_pooled_output``) and
``ernie-vil/model/vl_transformer_encoder.py`` (``multi_head_attention``, ``positionwise_feed_forward``,
``pre_post_process_layer``, ``encoder_layer``, ``encoder_co_layer``, ``encoder``). The functions below have
the same names, take the same arguments and create their parameters under the same names, op for op, in
Paddle 3's API (``paddle.static.create_parameter`` + ``paddle.nn.functional`` + ``paddle.matmul``), because
the ``fluid`` API of Paddle 1.8 is gone. The graph is the inference one: the official dropouts
(``upscale_in_train``) are the identity at test time and are left out.

Feeds follow the official readers (``reader/vqa_finetuning.py``, ``batching/finetune_batching.py``): token,
position and segment ids padded with 0, float masks of shape (B, L, 1), the [IMG] region (mean of the
record's regions, location [0, 0, 1, 1, 1]) already prepended, padded regions zero. Token ids are fed as
(B, T) rather than fluid's (B, T, 1); ``paddle.nn.functional.embedding`` takes them that way.

Run as a script it builds the graph for a config JSON, fills every parameter with seeded random values,
saves them with ``paddle.static.save_vars`` (one file per variable, the release's format), and writes the
inputs and the graph's outputs:

    python -m tests.convert.paddle_reference --config CONFIG.json --output DIR [--seed 0] [--heads]

    DIR/params/<official variable name>
    DIR/inputs.npz     input_ids, token_type_ids, attention_mask (B, T); region_features (B, R, F),
                       region_locations (B, R, 5), region_mask (B, R): without [IMG], as ErnieVilModel takes them
    DIR/official.npz   text (B, T, Ct), image (B, R + 1, Cv), pooled_text, pooled_image, fused (B, Co)

With ``--heads`` the fine-tuning heads of the official ``finetune.py`` (``vqa_classifier_loss``,
``create_vcr_model``, ``create_refcoco_plus_model``, ``create_flickr_model``) are built on the same encoder
too, each task's checkpoint (the encoder and that head) is saved as ``DIR/params_<task>/``, and
``official.npz`` also holds vqa (B, NUM_ANSWERS), vcr_qa and vcr_qar (1, B: the batch's examples as the
choices of one question), refcoco (B, R + 1) and retrieval (B, 1).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F

#: Batch layout of the generated inputs: real tokens and real regions (without [IMG]) per example; every
#: example but the first is padded on both streams.
TEXT_LENGTHS = (9, 6, 3)
REGION_COUNTS = (7, 4, 1)


# ------------------------------------------------------------------------------------------------------------
# Parameters and the two op kinds that own them (fluid.layers.fc, fluid.layers.layer_norm)
# ------------------------------------------------------------------------------------------------------------


def create_parameter(shape: list[int], name: str, is_bias: bool = False):
    return paddle.static.create_parameter(shape=shape, dtype="float32", name=name, is_bias=is_bias)


def fc(x, size: int, name: str, act: str | None = None, weight_name: str = "", bias_name: str = ""):
    """``fluid.layers.fc(input=x, size=size, num_flatten_dims=2, param_attr=name + '.w_0',
    bias_attr=name + '.b_0', act=act)``: weight [in, size], x @ w + b, then the activation. The fine-tuning
    heads name their parameters otherwise (``weight_name``, ``bias_name``)."""
    weight = create_parameter([x.shape[-1], size], weight_name or f"{name}.w_0")
    bias = create_parameter([size], bias_name or f"{name}.b_0", is_bias=True)
    out = F.linear(x, weight, bias)
    if act == "relu":
        return F.relu(out)
    if act == "gelu":
        return F.gelu(out, approximate=False)  # fluid's gelu op computes the erf form by default
    if act is not None:
        raise ValueError(f"unsupported activation {act!r}")
    return out


def layer_norm(x, name: str):
    """``fluid.layers.layer_norm(x, begin_norm_axis=rank - 1, param_attr=name + '_layer_norm_scale',
    bias_attr=name + '_layer_norm_bias')`` with fluid's default epsilon 1e-5."""
    width = x.shape[-1]
    scale = create_parameter([width], f"{name}_layer_norm_scale")
    bias = create_parameter([width], f"{name}_layer_norm_bias", is_bias=True)
    return F.layer_norm(x, width, weight=scale, bias=bias, epsilon=1e-5)


def embedding(ids, rows: int, width: int, name: str):
    table = create_parameter([rows, width], name)
    return F.embedding(ids, table)


# ------------------------------------------------------------------------------------------------------------
# vl_transformer_encoder.py
# ------------------------------------------------------------------------------------------------------------


def multi_head_attention(queries, keys, values, attn_bias, d_key, d_value, d_model, n_head, name):
    """``multi_head_attention``: q/k/v fc, split heads, q * d_key**-0.5 @ k^T + bias, softmax, @ v, combine
    heads, output fc back to ``d_model``."""
    keys = queries if keys is None else keys
    values = keys if values is None else values
    q = fc(queries, d_key * n_head, name + "_query_fc")
    k = fc(keys, d_key * n_head, name + "_key_fc")
    v = fc(values, d_value * n_head, name + "_value_fc")

    def split_heads(x):
        hidden = x.shape[-1]
        return paddle.transpose(paddle.reshape(x, [0, 0, n_head, hidden // n_head]), [0, 2, 1, 3])

    q, k, v = split_heads(q), split_heads(k), split_heads(v)
    product = paddle.matmul(paddle.scale(q, scale=d_key**-0.5), k, transpose_y=True)
    if attn_bias is not None:
        product = product + attn_bias
    weights = F.softmax(product)
    context = paddle.matmul(weights, v)
    context = paddle.transpose(context, [0, 2, 1, 3])
    context = paddle.reshape(context, [0, 0, context.shape[2] * context.shape[3]])
    return fc(context, d_model, name + "_output_fc")


def positionwise_feed_forward(x, d_inner_hid, d_hid, hidden_act, name):
    hidden = fc(x, d_inner_hid, name + "_fc_0", act=hidden_act)
    return fc(hidden, d_hid, name + "_fc_1")


def post_process_layer(prev_out, out, name):
    """``pre_post_process_layer`` with the encoder's ``postprocess_cmd="dan"``: dropout (identity here),
    residual add, layer norm. (The encoder's ``preprocess_cmd`` is ``""``: its pre-process steps do nothing.)"""
    return layer_norm(out + prev_out, name)


def encoder_layer(enc_input, attn_bias, n_head, d_key, d_value, d_model, d_inner_hid, hidden_act, name):
    attn_output = multi_head_attention(
        enc_input, None, None, attn_bias, d_key, d_value, d_model, n_head, name + "_multi_head_att"
    )
    attn_output = post_process_layer(enc_input, attn_output, name + "_post_att")
    ffd_output = positionwise_feed_forward(attn_output, d_inner_hid, d_model, hidden_act, name + "_ffn")
    return post_process_layer(attn_output, ffd_output, name + "_post_ffn")


def encoder_co_layer(
    enc_input, enc_vl_input, attn_vl_bias, co_head, co_key, co_value, d_model, d_inner_hid, v_model,
    v_inner_hid, hidden_act, name,
):  # fmt: skip
    """``encoder_co_layer``: text queries attend the image (bias transposed to (B, H, T, R)), image queries
    attend the text, each with a post-att add+norm; then each stream's FFN with add+norm."""
    attn_output = multi_head_attention(
        enc_input, enc_vl_input, enc_vl_input, paddle.transpose(attn_vl_bias, [0, 1, 3, 2]),
        co_key, co_value, d_model, co_head, name + "_multi_head_att",
    )  # fmt: skip
    attn_vl_output = multi_head_attention(
        enc_vl_input, enc_input, enc_input, attn_vl_bias,
        co_key, co_value, v_model, co_head, name + "_vl_multi_head_att",
    )  # fmt: skip
    attn_output = post_process_layer(enc_input, attn_output, name + "_post_att")
    attn_vl_output = post_process_layer(enc_vl_input, attn_vl_output, name + "_vl_post_att")
    ffd_output = positionwise_feed_forward(attn_output, d_inner_hid, d_model, hidden_act, name + "_ffn")
    ffd_vl_output = positionwise_feed_forward(
        attn_vl_output, v_inner_hid, v_model, hidden_act, name + "_vl_ffn"
    )
    enc_output = post_process_layer(attn_output, ffd_output, name + "_post_ffn")
    enc_vl_output = post_process_layer(attn_vl_output, ffd_vl_output, name + "_vl_post_ffn")
    return enc_output, enc_vl_output


def encoder(
    enc_input, enc_vl_input, attn_bias, attn_image_bias, attn_vl_bias, n_head, d_model, d_inner_hid,
    v_head, v_model, v_inner_hid, co_head, co_model, hidden_act, v_biattention_id, t_biattention_id, name,
):  # fmt: skip
    """``encoder``: for each co-layer, the text layers ``t_start .. t_end - 1``, the image layers
    ``v_start .. v_end - 1``, the co-layer; then exactly one more text layer (``_layer_{t_end}``) and one
    more image layer (``_vlayer_{v_end}``)."""
    d_key = d_model // n_head
    v_key = v_model // v_head
    co_key = co_model // co_head
    v_start = t_start = 0
    for block, (v_end, t_end) in enumerate(zip(v_biattention_id, t_biattention_id)):
        for idx in range(t_start, t_end):
            enc_input = encoder_layer(
                enc_input, attn_bias, n_head, d_key, d_key, d_model, d_inner_hid, hidden_act,
                f"{name}_layer_{idx}",
            )  # fmt: skip
        for idx in range(v_start, v_end):
            enc_vl_input = encoder_layer(
                enc_vl_input, attn_image_bias, v_head, v_key, v_key, v_model, v_inner_hid, hidden_act,
                f"{name}_vlayer_{idx}",
            )  # fmt: skip
        enc_input, enc_vl_input = encoder_co_layer(
            enc_input, enc_vl_input, attn_vl_bias, co_head, co_key, co_key, d_model, d_inner_hid,
            v_model, v_inner_hid, hidden_act, f"{name}_colayer_{block}",
        )  # fmt: skip
        v_start, t_start = v_end, t_end
    enc_output = encoder_layer(
        enc_input, attn_bias, n_head, d_key, d_key, d_model, d_inner_hid, hidden_act, f"{name}_layer_{t_end}"
    )
    enc_vl_output = encoder_layer(
        enc_vl_input, attn_image_bias, v_head, v_key, v_key, v_model, v_inner_hid, hidden_act,
        f"{name}_vlayer_{v_end}",
    )  # fmt: skip
    return enc_output, enc_vl_output


# ------------------------------------------------------------------------------------------------------------
# ernie_vil.py
# ------------------------------------------------------------------------------------------------------------


def mask_to_bias(row_mask, column_mask, n_head: int):
    """``matmul(row_mask, column_mask, transpose_y=True)`` then ``scale(x, 10000, bias=-1,
    bias_after_scale=False)`` = 10000 * (x - 1), stacked over heads: (B, H, Lrow, Lcol), 0 where both
    positions are real and -10000 elsewhere."""
    pair_mask = paddle.matmul(row_mask, column_mask, transpose_y=True)
    bias = paddle.scale(pair_mask, scale=10000.0, bias=-1.0, bias_after_scale=False)
    return paddle.stack([bias] * n_head, axis=1)


def build_ernie_vil(feeds: dict, config: dict) -> dict:
    """``ErnieVilModel._build_model`` + ``get_sequence_output`` + ``get_pooled_output`` + ``get_match_score``
    (mode "mul")."""
    emb_size = config["hidden_size"]
    emb_out = embedding(feeds["src_ids"], config["vocab_size"], emb_size, "word_embedding")
    emb_out = emb_out + embedding(
        feeds["position_ids"], config["max_position_embeddings"], emb_size, "pos_embedding"
    )
    emb_out = emb_out + embedding(
        feeds["sentence_ids"], config["sent_type_vocab_size"], emb_size, "sent_embedding"
    )
    emb_out = layer_norm(emb_out, "pre_encoder")  # pre_process_layer 'nd' (dropout: identity)

    v_emb_size = config["v_hidden_size"]
    image_embeddings = fc(feeds["image_embeddings"], v_emb_size, "image_emb")
    loc_emb_out = fc(feeds["image_loc"], v_emb_size, "image_loc")
    emb_vl_out = layer_norm(image_embeddings + loc_emb_out, "vl_pre_encoder")

    text_mask, image_mask = feeds["input_mask"], feeds["input_image_mask"]
    enc_out, enc_vl_out = encoder(
        emb_out, emb_vl_out,
        attn_bias=mask_to_bias(text_mask, text_mask, config["num_attention_heads"]),
        attn_image_bias=mask_to_bias(image_mask, image_mask, config["v_num_attention_heads"]),
        attn_vl_bias=mask_to_bias(image_mask, text_mask, config["co_num_attention_heads"]),
        n_head=config["num_attention_heads"], d_model=emb_size, d_inner_hid=emb_size * 4,
        v_head=config["v_num_attention_heads"], v_model=v_emb_size, v_inner_hid=config["v_intermediate_size"],
        co_head=config["co_num_attention_heads"], co_model=config["co_hidden_size"],
        hidden_act=config["hidden_act"], v_biattention_id=config["v_biattention_id"],
        t_biattention_id=config["t_biattention_id"], name="encoder",
    )  # fmt: skip

    co_emb_size = config["co_hidden_size"]
    text_cls = paddle.slice(enc_out, axes=[1], starts=[0], ends=[1])
    pooled_text = fc(text_cls, co_emb_size, "pooled_fc_text", act="relu")
    image_cls = paddle.slice(enc_vl_out, axes=[1], starts=[0], ends=[1])
    pooled_image = fc(image_cls, co_emb_size, "pooled_fc_image", act="relu")
    return {
        "text": enc_out,
        "image": enc_vl_out,
        "pooled_text": pooled_text,
        "pooled_image": pooled_image,
        "fused": pooled_text * pooled_image,
    }


# ------------------------------------------------------------------------------------------------------------
# finetune.py: the heads, at inference (their dropouts are the identity)
# ------------------------------------------------------------------------------------------------------------

#: The heads' sizes in the tests: the VQA hidden width of ``conf/vqa/task_vqa.json`` (``classifier_hid_size``),
#: a small answer count, the VCR task prefixes of ``conf/vcr/task_vcr.json`` (the batch's examples are the
#: choices of one question).
VQA_HIDDEN_SIZE = 2048
NUM_ANSWERS = 13
VCR_TASK_PREFIXES = ("vcr_qa", "vcr_qar")


def vqa_classifier(emb_fuse, hidden_size: int, num_class: int):
    """``vqa_classifier_loss`` up to ``pred``: fc relu "vqa_fc_w_0"/"vqa_fc_b_0", dropout 0.5, fc
    "vqa_fc_w_1"/"vqa_fc_b_1"."""
    hidden = fc(emb_fuse, hidden_size, "", act="relu", weight_name="vqa_fc_w_0", bias_name="vqa_fc_b_0")
    return fc(hidden, num_class, "", weight_name="vqa_fc_w_1", bias_name="vqa_fc_b_1")


def vcr_scores(fusion_fea, num_choice: int) -> dict:
    """``create_vcr_model``: per task of the group, fc(fusion_fea, 1) "{task_prefix}_fc" reshaped to
    (questions, num_choice)."""
    return {
        prefix: paddle.reshape(fc(fusion_fea, 1, f"{prefix}_fc"), [-1, num_choice])
        for prefix in VCR_TASK_PREFIXES
    }


def refcoco_plus_logits(enc_vl_out):
    """``create_refcoco_plus_model``: fc(enc_vl_out, 1, num_flatten_dims=2) "cls_seq_label_vl_out_w"/"_b",
    ``reduce_mean`` over the last axis: (B, R + 1)."""
    logits = fc(enc_vl_out, 1, "", weight_name="cls_seq_label_vl_out_w", bias_name="cls_seq_label_vl_out_b")
    return paddle.mean(logits, axis=-1)


def flickr_match_score(match_emb):
    """``create_flickr_model`` at prediction: fc(match_emb, 1) "match_fc", reshaped to (B, 1)."""
    return paddle.reshape(fc(match_emb, 1, "match_fc"), [-1, 1])


def build_heads(outputs: dict, batch: int) -> dict[str, tuple[dict, list[str]]]:
    """Each task's head on the encoder's outputs -> {task: ({output name: tensor}, its parameter names)}.
    The fused vector is flattened to (B, Co) as ``get_pooled_output``'s fc (``num_flatten_dims=1``) leaves
    it."""
    fused = paddle.reshape(outputs["fused"], [-1, outputs["fused"].shape[-1]])  # (B, Co)
    builders = {
        "vqa": lambda: {"vqa": vqa_classifier(fused, VQA_HIDDEN_SIZE, NUM_ANSWERS)},
        "vcr": lambda: vcr_scores(fused, num_choice=batch),
        "refcoco": lambda: {"refcoco": refcoco_plus_logits(outputs["image"])},
        "retrieval": lambda: {"retrieval": flickr_match_score(fused)},
    }
    block = paddle.static.default_main_program().global_block()
    heads = {}
    for task, build in builders.items():
        before = {p.name for p in block.all_parameters()}
        head_outputs = build()
        heads[task] = (head_outputs, sorted(p.name for p in block.all_parameters() if p.name not in before))
    return heads


# ------------------------------------------------------------------------------------------------------------
# Random weights and inputs, the run, the files
# ------------------------------------------------------------------------------------------------------------


#: The fc parameters of the heads that ``vqa_classifier_loss`` and ``create_refcoco_plus_model`` name
#: themselves ("vqa_fc_w_0", "cls_seq_label_vl_out_b").
HEAD_WEIGHT = re.compile(r"(_w_\d|_out_w)$")
HEAD_BIAS = re.compile(r"(_b_\d|_out_b)$")


def random_parameter(name: str, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    """Values that make every parameter matter: fan-in scaled weights (attention logits of order 1),
    non-zero biases, LayerNorm scales away from 1."""
    if name.endswith("_layer_norm_scale"):
        values = rng.uniform(0.5, 1.5, shape)
    elif name.endswith(("_layer_norm_bias", ".b_0")) or HEAD_BIAS.search(name):
        values = rng.normal(0.0, 0.2, shape)
    elif name.endswith(".w_0") or HEAD_WEIGHT.search(name):
        values = rng.normal(0.0, shape[0] ** -0.5, shape)
    else:  # embedding tables
        values = rng.normal(0.0, 1.0, shape)
    return values.astype(np.float32)


def random_inputs(config: dict, feature_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A padded batch (``TEXT_LENGTHS`` tokens, ``REGION_COUNTS`` regions) in ErnieVilModel's layout."""
    batch, text_len, regions = len(TEXT_LENGTHS), max(TEXT_LENGTHS), max(REGION_COUNTS)
    attention_mask = (np.arange(text_len)[None] < np.array(TEXT_LENGTHS)[:, None]).astype(np.int64)
    region_mask = (np.arange(regions)[None] < np.array(REGION_COUNTS)[:, None]).astype(np.int64)
    input_ids = rng.integers(1, config["vocab_size"], (batch, text_len)) * attention_mask
    token_type_ids = rng.integers(0, config["sent_type_vocab_size"], (batch, text_len)) * attention_mask
    # Detector features are non-negative (pooled after a ReLU); boxes lie inside images of varied sizes.
    features = (rng.gamma(1.0, 1.0, (batch, regions, feature_size)) * region_mask[..., None]).astype(
        np.float32
    )
    sizes = rng.uniform(300, 800, (batch, 1, 2))
    corner = rng.uniform(0, 0.6, (batch, regions, 2)) * sizes
    extent = rng.uniform(0.1, 0.4, (batch, regions, 2)) * sizes
    boxes = np.concatenate([corner, corner + extent], -1) / np.tile(sizes, 2)
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    locations = (np.concatenate([boxes, area[..., None]], -1) * region_mask[..., None]).astype(np.float32)
    return {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
        "region_features": features,
        "region_locations": locations,
        "region_mask": region_mask,
    }


def official_feeds(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """ErnieVilModel's inputs -> the official graph's feeds, as the readers and ``pad_batch_data`` /
    ``pad_feature_data`` build them: position ids 0 .. n-1 then 0, the [IMG] region prepended (mean of the
    record's regions, location [0, 0, 1, 1, 1]), padding zero, masks (B, L, 1) float32."""
    attention_mask, region_mask = inputs["attention_mask"], inputs["region_mask"]
    batch, text_len = attention_mask.shape
    position_ids = np.tile(np.arange(text_len), (batch, 1)) * attention_mask
    features, locations = inputs["region_features"], inputs["region_locations"]
    image_features = np.zeros((batch, features.shape[1] + 1, features.shape[2]), np.float32)
    image_locations = np.zeros((batch, features.shape[1] + 1, 5), np.float32)
    for b, count in enumerate(region_mask.sum(1)):
        image_features[b, 0] = features[b, :count].mean(0)
        image_features[b, 1 : count + 1] = features[b, :count]
        image_locations[b, 0] = [0.0, 0.0, 1.0, 1.0, 1.0]
        image_locations[b, 1 : count + 1] = locations[b, :count]
    image_mask = np.concatenate([np.ones((batch, 1), np.int64), region_mask], 1)
    return {
        "src_ids": inputs["input_ids"].astype(np.int64),
        "position_ids": position_ids.astype(np.int64),
        "sentence_ids": inputs["token_type_ids"].astype(np.int64),
        "input_mask": attention_mask[..., None].astype(np.float32),
        "image_embeddings": image_features,
        "image_loc": image_locations,
        "input_image_mask": image_mask[..., None].astype(np.float32),
    }


def run_reference(
    config: dict, feature_size: int, output_dir: Path, seed: int = 0, heads: bool = False
) -> None:
    """Build the graph (with ``heads``, every task's head on it too), fill it with random weights, save them,
    run it on random inputs, write the files."""
    rng = np.random.default_rng(seed)
    inputs = random_inputs(config, feature_size, rng)
    feeds = official_feeds(inputs)

    paddle.enable_static()
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        placeholders = {
            name: paddle.static.data(name, [None, *value.shape[1:]], str(value.dtype))
            for name, value in feeds.items()
        }
        outputs = build_ernie_vil(placeholders, config)
        head_graphs = build_heads(outputs, len(TEXT_LENGTHS)) if heads else {}
    executor = paddle.static.Executor(paddle.CPUPlace())
    executor.run(startup)

    parameters = main.global_block().all_parameters()
    scope = paddle.static.global_scope()
    for parameter in sorted(parameters, key=lambda p: p.name):
        value = random_parameter(parameter.name, list(parameter.shape), rng)
        scope.var(parameter.name).get_tensor().set(value, paddle.CPUPlace())
    head_names = {name for _, names in head_graphs.values() for name in names}
    encoder = [p for p in parameters if p.name not in head_names]
    paddle.static.save_vars(executor, str(output_dir / "params"), main, vars=encoder)
    for task, (head_outputs, names) in head_graphs.items():
        head = [p for p in parameters if p.name in names]
        paddle.static.save_vars(executor, str(output_dir / f"params_{task}"), main, vars=encoder + head)
        outputs.update(head_outputs)

    names = list(outputs)
    fetched = executor.run(main, feed=feeds, fetch_list=[outputs[n] for n in names])
    official = {name: np.asarray(value) for name, value in zip(names, fetched)}
    for name in ("pooled_text", "pooled_image", "fused"):
        official[name] = official[name][:, 0]  # (B, 1, Co) -> (B, Co)
    np.savez(output_dir / "inputs.npz", **inputs)
    np.savez(output_dir / "official.npz", **official)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="an official-format ERNIE-ViL config JSON")
    parser.add_argument("--feature-size", type=int, default=2048, help="region feature width")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heads", action="store_true", help="build and save the fine-tuning heads too")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    run_reference(json.loads(args.config.read_text()), args.feature_size, args.output, args.seed, args.heads)


if __name__ == "__main__":
    main()
