"""Operators that make the host wait for the device, and a dispatch mode that finds them in a step.

A training step that the host can queue without waiting runs as fast as the GPU allows and can be
captured as a CUDA graph. Two kinds of operator break that:

- those that copy a tensor's value to the host (``.item()``, ``bool(tensor)``, ``int(tensor)``,
  ``.tolist()`` all reach ``aten._local_scalar_dense``; ``torch.equal`` returns a Python bool);
- those whose output shape depends on tensor values (``nonzero``, ``masked_select``, ``unique``,
  indexing with a boolean mask, ...): the host must read the size before it can allocate the output.

``HostSyncAudit`` sees every operator a block of code dispatches (below autograd, so the backward's too)
on any device, the CPU included: a CPU test proves what the GPU step will do.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten

#: Operators that read a value on the host or return a tensor whose size depends on tensor values.
HOST_SYNC_OPERATORS = frozenset(
    {
        _aten._local_scalar_dense.default,
        _aten.is_nonzero.default,
        _aten.equal.default,
        _aten.nonzero.default,
        _aten.nonzero_numpy.default,
        _aten.argwhere.default,
        _aten.masked_select.default,
        _aten._unique.default,
        _aten._unique2.default,
        _aten.unique_dim.default,
        _aten.unique_consecutive.default,
        _aten.unique_dim_consecutive.default,
        _aten.bincount.default,
    }
)

#: Indexing operators that sync when an index is a boolean mask (its ``nonzero`` runs inside the kernel).
_INDEXING_OPERATORS = frozenset(
    {_aten.index.Tensor, _aten.index_put.default, _aten.index_put_.default, _aten._index_put_impl_.default}
)


def syncs_the_host(func, args, kwargs) -> bool:
    """Whether the operator ``func`` called with ``args`` and ``kwargs`` makes the host wait for values."""
    if func in HOST_SYNC_OPERATORS:
        return True
    if func is _aten.repeat_interleave.Tensor:  # its output size is the repeats' sum unless given
        return kwargs.get("output_size") is None
    if func in _INDEXING_OPERATORS:
        indices = args[1]
        return any(index is not None and index.dtype in (torch.bool, torch.uint8) for index in indices)
    return False


class HostSyncError(RuntimeError):
    """An operator that syncs the host ran inside a ``HostSyncAudit(strict=True)``."""


class HostSyncAudit(TorchDispatchMode):
    """Count the operators dispatched inside the ``with`` block, and those that sync the host.

    Args:
        strict: raise ``HostSyncError``, naming the operator, at the first one that syncs.

    After the block, ``operators`` counts every operator by name and ``syncs`` those of
    ``syncs_the_host``, in the order they ran.
    """

    def __init__(self, strict: bool = False) -> None:
        super().__init__()
        self.strict = strict
        self.operators: Counter[str] = Counter()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket.__name__) + (
            "" if func._overloadname == "default" else f".{func._overloadname}"
        )
        self.operators[name] += 1
        kwargs = kwargs or {}
        if syncs_the_host(func, args, kwargs):
            if self.strict:
                raise HostSyncError(f"aten.{name} syncs the host (a value read or a data-dependent shape)")
            self.syncs.append(name)
        return func(*args, **kwargs)

    @property
    def num_operators(self) -> int:
        return sum(self.operators.values())


__all__ = ["HOST_SYNC_OPERATORS", "HostSyncAudit", "HostSyncError", "syncs_the_host"]
