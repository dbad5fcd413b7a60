"""The divergence catalogue as data: every catalogued way a reference implementation differs from refimpl.

``D*``: the R package (measured in :mod:`refimpl.r.compat`); ``T*``: torch; ``O*``: ONNX Runtime's Attention
(tests/test_onnx_runtime.py); ``M*``: torch's fused multi-head attention kernel (tests/test_torch_mha.py). docs/divergences.md describes
each entry; tests/test_divergences.py keeps the two in agreement and asserts every entry on an example.
"""
from __future__ import annotations

from ..r.compat import DIVERGENCES as R_DIVERGENCES

__all__ = ["TARGET_DIVERGENCES", "ORT_DIVERGENCES", "TORCH_MHA_DIVERGENCES", "DIVERGENCE_TITLES"]

TARGET_DIVERGENCES = {"T1": "torch gives NaN weights for a fully masked query (softmax of all -inf); refimpl gives zeros"}
ORT_DIVERGENCES = {
    "O1": "fully masked query row (bool mask all False, or float mask all -inf): ORT gives an all-zero output "
          "row, as refimpl does; the ONNX reference implementation (softmax of all -inf) gives NaN",
    "O2": "attn_mask broadcast along its last two axes (e.g. shape (1, Sk), (B, 1, 1, Sk) or (Sq, 1)) is refused "
          "by ORT ('inconsistent q_sequence_length' / 'total_sequence_length'); the spec allows any mask "
          "broadcastable to (B, Hq, Sq, Sk)",
    "O3": "a float attn_mask value equal to float32's lowest finite number (-3.4028235e38, ORT's own mask "
          "sentinel) counts as masked: a row of them gives zeros; refimpl (and the math: a constant shift) "
          "gives the uniform average of V",
}
TORCH_MHA_DIVERGENCES = {
    "M1": "fused MHA gives NaN weights and output for a query whose keys are all masked; refimpl gives zeros",
    "M2": "fused MHA treats a float mask as boolean (nonzero = masked out) instead of adding it to the scores",
}
DIVERGENCE_TITLES = {**R_DIVERGENCES, **TARGET_DIVERGENCES, **ORT_DIVERGENCES, **TORCH_MHA_DIVERGENCES}
