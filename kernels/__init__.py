"""Fused Triton kernels for ERNIE-ViL (installed as ``ernievil_ds_kernels``).

This folder is mapped to the import name ``ernievil_ds_kernels`` in ``pyproject.toml`` so that it
never shadows the unrelated PyPI distribution ``kernels``. The fused co-attention and masked-token
loss kernels land here with the kernels issue; until then the model runs on ``eager``/``sdpa``.
"""
