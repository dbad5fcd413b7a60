"""``torch-mha`` — torch's fused ``_native_multi_head_attention`` (:mod:`..torch_mha`) with identity projections.

Equal query/key/value shapes only (Sq == Sk, D == Dv, Hq == Hkv), bool masks (causal, windows and padding
folded in), float32/float64; no additive masks, softcap or ALiBi. Divergences ``M*`` (tests/test_torch_mha.py).
"""
from __future__ import annotations

import numpy as np

from ...errors import Unavailable
from ..targets.target import Target
from .base import Column, fold_band
from .torch_column import torch_version

__all__ = ["COLUMN"]

DIVERGENCES = {
    "M1": "fused MHA gives NaN weights and output for a query whose keys are all masked; refimpl gives zeros",
    "M2": "fused MHA treats a float mask as boolean (nonzero = masked out) instead of adding it to the scores",
}


def _make() -> Target:
    try:
        from ..runtimes.torch_mha import torch_mha_target as mha
    except ImportError as e:
        raise Unavailable(f"torch is not importable ({e})") from None

    def fn(q, k, v, mask=None, scale=None, *, is_causal=False, alignment="top-left", window=None, softcap=None,
           enable_gqa=False):
        q, k, v = (np.asarray(a) for a in (q, k, v))
        if not (q.shape == k.shape == v.shape):
            raise Unavailable(f"torch's fused MHA needs equal query, key and value shapes, got {q.shape}, {k.shape}, "
                              f"{v.shape}")
        lead = 4 - q.ndim
        if lead > 0:
            q, k, v = (a[(None,) * lead] for a in (q, k, v))
            mask = None if mask is None else np.asarray(mask)[(None,) * lead]
        keep = fold_band(None if mask is None else np.asarray(mask), q.shape[-2], k.shape[-2], is_causal,
                         alignment, window)
        if keep is not None:
            keep = np.broadcast_to(keep, q.shape[:-1] + (k.shape[-2],))
        out, w = mha(q, k, v, keep, scale)
        return (out[(0,) * lead], w[(0,) * lead]) if lead > 0 else (out, w)

    def expressible(spec) -> str | None:
        if spec.Sq != spec.Sk or spec.D != spec.Dv or spec.gqa:
            return "torch's fused MHA needs equal query, key and value shapes"
        if spec.mask == "additive" or spec.softcap is not None or spec.alibi:
            return "torch's fused MHA takes bool masks only (no additive mask, softcap or ALiBi)"
        if spec.long:
            return "torch's fused MHA forms the S x S weights"
        return None

    import torch
    return Target(name="torch-mha", fn=fn, api="native", expressible=expressible,
                  note=f"torch {torch.__version__} _native_multi_head_attention, identity projections")


COLUMN = Column("torch-mha", _make, "torch's fused _native_multi_head_attention, equal-shape cases", DIVERGENCES,
                versions=torch_version)
