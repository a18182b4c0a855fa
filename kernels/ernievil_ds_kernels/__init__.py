"""Fused Triton kernels for ERNIE-ViL (installed as ``ernievil_ds_kernels``).

The package lives one level below the repository's ``kernels/`` folder, which has no ``__init__.py``:
with the repository root on ``sys.path`` (``python -m pytest``, a REPL started there) ``import kernels``
still finds the unrelated PyPI distribution ``kernels`` that transformers imports.

- ``ernievil_ds_kernels.co_attention.co_attention``: fused non-causal attention with key padding mask,
  additive bias and dropout; importing this package registers it with transformers as
  ``attn_implementation="triton"`` (``ernievil_ds_kernels.attention``).
- ``ernievil_ds_kernels.masked_token_loss.masked_token_loss``: the masked-token cross-entropy from hidden
  states and the tied embedding matrix, chunked so that no (positions x vocabulary) float32 logits
  tensor exists; importing this package registers it with the model as
  ``masked_token_loss_implementation="triton"`` (``ernievil_ds_kernels.model_loss``).

The model (``ernievil_ds``) never imports this package: ``import ernievil_ds_kernels`` and then
``model.set_attn_implementation("triton")`` and ``config.masked_token_loss_implementation = "triton"``.
"""

from ernievil_ds_kernels.attention import register_attention, triton_attention_forward
from ernievil_ds_kernels.model_loss import register_masked_token_loss, triton_masked_token_loss

register_attention()
register_masked_token_loss()

__all__ = [
    "register_attention",
    "register_masked_token_loss",
    "triton_attention_forward",
    "triton_masked_token_loss",
]
