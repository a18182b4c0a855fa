"""ZeRO-2 arithmetic for pretraining: FLOPs per pair by part, operators per step, and expected throughput.

    python benchmarks/zero2_arithmetic.py                 # base, 40 text tokens, 36 regions + [IMG]
    python benchmarks/zero2_arithmetic.py --count-ops     # also count one forward + backward's operators (CPU)
    python benchmarks/zero2_arithmetic.py --preset large --text-len 24

Nothing here is measured on a GPU: the tables follow from the model's FLOP count
(``training_flops_per_sample``), its parameter count, and the assumptions printed with them (MFU, link
bandwidths, gradient dtype). ``--count-ops`` runs the model once on the CPU and counts the ATen operators
it dispatches, each of which is at least one kernel launch on a GPU.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ernievil_ds import ErnieVilConfig
from ernievil_ds.modeling_ernievil import ErnieVilForPreTraining, training_flops_per_sample

#: Share of the text tokens and of the regions that carry a prediction target (SGP + MLM, masked regions).
MASKED_TOKEN_SHARE, MASKED_REGION_SHARE = 0.25, 0.15
#: Backward FLOPs are twice the forward's: the reduce-scatter can hide behind 2/3 of a micro-batch.
BACKWARD_SHARE = 2 / 3
#: The largest micro batch assumed to fit (ds_configs/README.md: ~2.5 GB of activations per 64 pairs).
MAX_MICRO_BATCH = 256
#: Bytes per gradient and per parameter element in the collectives (bf16 or fp16).
COMM_BYTES = 2


@dataclass(frozen=True)
class Accelerator:
    name: str
    peak_tflops: float  # dense bf16/fp16 tensor-core peak
    mfu: float  # assumed share of that peak the model reaches
    nvlink_gbps: float  # assumed NCCL bus bandwidth inside a node, GB/s


H100 = Accelerator("H100 SXM (bf16)", 989.0, 0.30, 360.0)
V100 = Accelerator("V100 SXM2 (fp16)", 125.0, 0.30, 130.0)


@dataclass(frozen=True)
class Cluster:
    name: str
    accelerator: Accelerator
    gpus: int
    link_gbps: float | None  # bus bandwidth of the slowest ring link, GB/s (None: one GPU)


def inter_node_gbps(gbit_per_s: float, nics_per_node: int, efficiency: float = 0.8) -> float:
    """The bus bandwidth of a ring that crosses nodes: NCCL runs one ring per NIC, each at ``efficiency``
    of the line rate, so a node's inter-node links carry ``nics_per_node`` times one NIC's bytes."""
    return gbit_per_s / 8 * efficiency * nics_per_node


def clusters() -> list[Cluster]:
    return [
        Cluster("1 x H100", H100, 1, None),
        Cluster("8 x H100, NVLink", H100, 8, H100.nvlink_gbps),
        Cluster("8 nodes x 8 H100, 400 Gb/s per GPU", H100, 64, inter_node_gbps(400, 8)),
        Cluster("8 nodes x 8 H100, 100 Gb/s per GPU", H100, 64, inter_node_gbps(100, 8)),
        Cluster("8 nodes x 8 H100, 400 Gb/s per node", H100, 64, inter_node_gbps(400, 1)),
        Cluster("8 nodes x 8 H100, 100 Gb/s per node", H100, 64, inter_node_gbps(100, 1)),
        Cluster("1 x V100", V100, 1, None),
        Cluster("8 x V100, NVLink", V100, 8, V100.nvlink_gbps),
    ]


def flops_by_part(config: ErnieVilConfig, text_len: int, num_regions: int) -> dict[str, float]:
    """Training FLOPs per pair (forward + backward) of the text layers, image layers, co-layers and heads.

    The encoder parts come from ``training_flops_per_sample`` with the other layer kinds set to zero; the
    heads (not in that count) are their matmuls on the positions that have targets: the token head's
    transform and vocabulary decoder, the region head's transform and class decoder, and the ITM head.
    """

    def encoder(text_layers: int, image_layers: int, co_layers: int) -> float:
        layers = SimpleNamespace(
            **{k: getattr(config, k) for k in ("hidden_size", "v_hidden_size", "co_hidden_size")},
            intermediate_size=config.intermediate_size,
            v_intermediate_size=config.v_intermediate_size,
            num_hidden_layers=text_layers,
            v_num_hidden_layers=image_layers,
            num_co_layers=co_layers,
        )
        return training_flops_per_sample(layers, text_len, num_regions)

    ct, cv, co = config.hidden_size, config.v_hidden_size, config.co_hidden_size
    token_head = MASKED_TOKEN_SHARE * text_len * (ct * ct + ct * config.vocab_size)
    region_head = MASKED_REGION_SHARE * (num_regions - 1) * (cv * cv + cv * config.num_region_classes)
    itm_head = 2 * co * co + 2 * co
    return {
        "text layers": encoder(config.num_hidden_layers, 0, 0),
        "image layers": encoder(0, config.v_num_hidden_layers, 0),
        "co-layers": encoder(0, 0, config.num_co_layers),
        "heads": 3 * 2 * (token_head + region_head + itm_head),
    }


class OperatorCounter(TorchDispatchMode):
    """Counts the ATen operators dispatched while it is active (forward and autograd's backward alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def random_batch(config: ErnieVilConfig, batch: int, text_len: int, regions: int) -> dict[str, torch.Tensor]:
    """A pretraining batch of the collator's keys and shapes, with targets on the usual shares."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000, config.vocab_size, (batch, text_len), generator=generator)
    labels = torch.where(
        torch.rand(batch, text_len, generator=generator) < MASKED_TOKEN_SHARE, input_ids, -100
    )
    corners = torch.rand(batch, regions, 2, 2, generator=generator) * 400
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones(batch, text_len, dtype=torch.long),
        "token_type_ids": torch.zeros(batch, text_len, dtype=torch.long),
        "region_features": torch.rand(batch, regions, config.v_feature_size, generator=generator),
        "region_boxes": torch.cat([corners.amin(2), corners.amax(2)], -1),
        "image_sizes": torch.full((batch, 2), 400.0),
        "region_mask": torch.ones(batch, regions, dtype=torch.long),
        "masked_regions": torch.rand(batch, regions, generator=generator) < MASKED_REGION_SHARE,
        "region_class_targets": torch.softmax(torch.randn(batch, regions, config.num_region_classes), -1),
        "labels": labels,
        "task_ids": torch.where(labels >= 0, torch.randint(0, 4, labels.shape, generator=generator), -100),
        "itm_labels": torch.randint(0, 2, (batch,), generator=generator),
    }


def count_operators(config: ErnieVilConfig, text_len: int, regions: int) -> tuple[int, int]:
    """ATen operators of one forward and of its backward (micro batch 2; the count does not depend on it)."""
    torch.manual_seed(0)
    model = ErnieVilForPreTraining(config)
    batch = random_batch(config, 2, text_len, regions)
    with OperatorCounter() as forward:
        loss = model(**batch).loss
    with OperatorCounter() as backward:
        loss.backward()
    return forward.count, backward.count


#: The share of the compute-bound rate that the "batch to hide communication" column aims for.
TARGET_EFFICIENCY = 0.9


def step_time(micro_batch: int, accumulation: int, t_sample: float, t_collective: float) -> float:
    """Seconds per optimizer step: each micro-batch's reduce-scatter overlaps its backward, the all-gather
    after the optimizer step does not (ZeRO-2 reduces every micro-batch, since a rank keeps only its
    partition of the gradients)."""
    compute = micro_batch * t_sample
    micro_step = compute * (1 - BACKWARD_SHARE) + max(compute * BACKWARD_SHARE, t_collective)
    return accumulation * micro_step + t_collective


def hiding_batch(t_sample: float, t_collective: float) -> tuple[int, int]:
    """(micro batch, accumulation steps) of the smallest step that reaches ``TARGET_EFFICIENCY``: compute
    per step amortises the all-gather, each micro-batch hides its reduce-scatter behind its backward, and
    micro-batches above ``MAX_MICRO_BATCH`` become accumulation steps."""
    share = TARGET_EFFICIENCY / (1 - TARGET_EFFICIENCY)  # compute per step, in all-gathers
    per_gpu = math.ceil(share * t_collective / t_sample)
    even_split = math.ceil(per_gpu / math.ceil(per_gpu / MAX_MICRO_BATCH))
    micro_batch = max(math.ceil(t_collective / (BACKWARD_SHARE * t_sample)), even_split)
    return micro_batch, max(1, math.ceil(per_gpu / micro_batch))


def cluster_row(cluster: Cluster, flops: float, parameters: int, global_batch: int) -> str:
    """One table row: compute-bound rate, communication per step, the batch that hides it, throughputs."""
    gpu = cluster.accelerator
    t_sample = flops / (gpu.peak_tflops * 1e12 * gpu.mfu)  # seconds per pair on one GPU
    n = cluster.gpus
    if cluster.link_gbps is None:
        return f"| {cluster.name} | {n / t_sample:,.0f} | 0 | - | - | - | {n / t_sample:,.0f} |"
    ring_bytes = (n - 1) / n * COMM_BYTES * parameters  # sent per GPU by one reduce-scatter or all-gather
    t_collective = ring_bytes / (cluster.link_gbps * 1e9)
    micro_batch, accumulation = hiding_batch(t_sample, t_collective)
    hidden = n * micro_batch * accumulation / step_time(micro_batch, accumulation, t_sample, t_collective)
    paper_micro = max(1, global_batch // n)
    paper = n * paper_micro / step_time(paper_micro, 1, t_sample, t_collective)
    return (
        f"| {cluster.name} | {n / t_sample:,.0f} | {2 * ring_bytes / 1e9:.2f} | {cluster.link_gbps:,.0f} "
        f"| {1e3 * t_collective:.1f} | {micro_batch} x {accumulation} x {n} = "
        f"{n * micro_batch * accumulation:,} ({hidden:,.0f}/s) | {paper:,.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base")
    parser.add_argument(
        "--text-len", type=int, default=40, help="text tokens per pair, [CLS] and [SEP] included"
    )
    parser.add_argument("--regions", type=int, default=36, help="regions per image ([IMG] added)")
    parser.add_argument("--global-batch", type=int, default=512, help="the paper's 512 pairs per step")
    parser.add_argument("--count-ops", action="store_true", help="count one forward + backward's operators")
    args = parser.parse_args()

    config = ErnieVilConfig.from_preset(args.preset)
    with torch.device("meta"):
        parameters = sum(p.numel() for p in ErnieVilForPreTraining(config).parameters())
    parts = flops_by_part(config, args.text_len, args.regions + 1)
    flops = sum(parts.values())
    print(
        f"{args.preset}: {parameters / 1e6:.1f} M parameters; {args.text_len} text tokens, {args.regions} regions"
    )
    print("\n| part | GFLOP per pair (forward + backward) | share |\n| --- | ---: | ---: |")
    for name, value in parts.items():
        print(f"| {name} | {value / 1e9:.2f} | {value / flops:.0%} |")
    print(f"| **total** | **{flops / 1e9:.2f}** | |")
    if args.count_ops:
        forward, backward = count_operators(config, args.text_len, args.regions)
        print(
            f"\nATen operators per micro-batch: {forward:,} forward + {backward:,} backward = {forward + backward:,}"
        )
    print(
        f"\nAssumptions: MFU {H100.mfu:.0%} of {H100.peak_tflops:.0f} TFLOP/s (H100 bf16 dense) and of "
        f"{V100.peak_tflops:.0f} TFLOP/s (V100 fp16); NCCL bus bandwidth {H100.nvlink_gbps:.0f} GB/s over "
        f"H100 NVLink, {V100.nvlink_gbps:.0f} GB/s over V100 NVLink, 80 % of line rate between nodes; "
        f"gradients and parameters exchanged in {8 * COMM_BYTES}-bit; ring collectives, each sending "
        f"(N-1)/N x {COMM_BYTES} bytes x parameters per GPU; the reduce-scatter (every micro-batch) overlaps "
        "the backward, the all-gather (after the optimizer step) does not; micro batches up to "
        f"{MAX_MICRO_BATCH}, accumulation beyond."
    )
    print(
        "\n| setup | compute-bound pairs/s | GB sent per GPU per step | link GB/s | one collective, ms | "
        f"micro x accumulation x GPUs for {TARGET_EFFICIENCY:.0%} of compute-bound (pairs/s) | pairs/s at "
        f"{args.global_batch} |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for cluster in clusters():
        print(cluster_row(cluster, flops, parameters, args.global_batch))


if __name__ == "__main__":
    main()
