"""``--deterministic``: the same command, seed and thread count give bitwise-equal weights on one machine.

What is already fixed by ``--seed`` in every run: the initial weights (``torch.manual_seed``), the sample
order (``ResumableDistributedSampler``), the masking (``SGPCollator`` draws from seed, epoch and the batch's
pair ids, whichever worker builds it) and the DataLoader workers' seeds (the loader's own seeded
generator: each worker seeds ``random``, ``numpy`` and ``torch`` from it). What this adds are the settings
that can still change the floating-point result: kernels that may pick a non-deterministic algorithm
(``torch.use_deterministic_algorithms``; cuBLAS also needs ``CUBLAS_WORKSPACE_CONFIG``) and the number of
threads a reduction is split over.
"""

from __future__ import annotations

import argparse
import os

import torch

#: ``--torch-threads`` under ``--deterministic`` when it is not given.
DETERMINISTIC_TORCH_THREADS = 1


def apply_determinism(args: argparse.Namespace) -> None:
    """Apply ``--deterministic`` and ``--torch-threads`` to this process, before any computation.

    ``args.torch_threads`` is set to the count in force, so that ``run.json`` records it.
    """
    if args.deterministic:
        # Read by cuBLAS when it creates its first handle; a value set by the user is kept.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        if args.torch_threads is None:
            args.torch_threads = DETERMINISTIC_TORCH_THREADS
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    args.torch_threads = torch.get_num_threads()
