"""Subcommands that belong to the package as a whole: ``info``."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    info = subparsers.add_parser("info", help="print a preset's parameter count per component")
    info.add_argument(
        "--preset", default="base", help="tiny, tiny-grounded, small, base or large (default: base)"
    )
    info.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForPreTraining

    from ernievil_ds.configuration_ernievil import ErnieVilConfig
    from ernievil_ds.modeling_ernievil import count_parameters_by_component

    config = ErnieVilConfig.from_preset(args.preset)
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        model = AutoModelForPreTraining.from_config(config)
    counts = count_parameters_by_component(model)
    width = max(len(name) for name in counts)
    print(f"ERNIE-ViL {args.preset}: parameters per component")
    for name, count in counts.items():
        print(f"  {name:<{width}}  {count:>14,}  ({count / 1e6:8.2f} M)")
    return 0
