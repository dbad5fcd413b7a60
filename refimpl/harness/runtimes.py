"""Built-in columns for production kernels written by others: ONNX Runtime's ``Attention`` (opset 23, CPU, through
one Node process per run: :mod:`.onnx_runtime`) and torch's fused ``_native_multi_head_attention`` (:mod:`.torch_mha`).

Each factory returns the keyword arguments of a :class:`~.targets.Target` (targets.py builds it: this module
stays below it). Both take refimpl's native keyword arguments (the ``native`` API of :mod:`.apis`) and map each case's features
onto what the runtime can express; what it cannot is ``n/a`` through ``Target.expressible``:

* onnxruntime — float32 (float16 cases arrive as float32 values; float64 is n/a: the CPU kernel has no float64);
  top-left causal through the operator's ``is_causal``, bottom-right with Sk >= Sq through a past length (the
  operator's only offset), every other band (windows, bottom-right with Sq > Sk) folded into a bool mask; bool and
  float masks, ALiBi as a float mask, softcap, scale, GQA (``q_num_heads``/``kv_num_heads``).
* torch-mha — equal query/key/value shapes only (Sq == Sk, D == Dv, Hq == Hkv), bool masks (causal, windows and
  padding folded in), float32/float64; no additive masks, softcap or ALiBi.
"""
from __future__ import annotations

import numpy as np

from ..errors import Unavailable
from ..masks import band_mask
__all__ = ["onnxruntime_target", "torch_mha_target"]


def _band(sq: int, sk: int, is_causal: bool, alignment: str, window) -> np.ndarray | None:
    return band_mask(sq, sk, is_causal=is_causal, window=window, alignment=alignment)


def _fold(mask, keep):
    """``mask`` (None, bool keep or float additive) with the bool ``keep`` band folded in."""
    if keep is None:
        return mask
    if mask is None:
        return keep
    if mask.dtype == bool:
        return mask & keep
    return np.where(keep, mask, -np.inf)


def onnxruntime_target() -> dict:
    from . import onnx_runtime as ort
    from .ort_case import ORT_TYPES, OrtCase
    ok, why = ort.availability()
    if not ok:
        raise Unavailable(why)
    session = ort.OrtSession(timeout=60.0)

    def fn(q, k, v, mask=None, scale=None, *, is_causal=False, alignment="top-left", window=None, softcap=None,
           enable_gqa=False):
        q, k, v = (np.asarray(a, dtype=np.float32) for a in (q, k, v))
        lead = 4 - q.ndim                                # fixture rows: (S, D) or (H, S, D) -> (B, H, S, D)
        if lead > 0:
            q, k, v = (a[(None,) * lead] for a in (q, k, v))
            mask = None if mask is None else np.asarray(mask)[(None,) * lead]
        sq, sk = q.shape[-2], k.shape[-2]
        native_causal = is_causal and window is None and (alignment == "top-left" or sk >= sq)
        if not native_causal:
            mask = _fold(None if mask is None else np.asarray(mask), _band(sq, sk, is_causal, alignment, window))
        elif mask is not None:
            mask = np.asarray(mask)
        if mask is not None and mask.dtype != bool:
            mask = mask.astype(np.float32)
        case = OrtCase(q, k, v, attn_mask=mask, is_causal=native_causal, scale=scale, softcap=softcap,
                       alignment=alignment)
        res = session.run([case])[0]
        if isinstance(res, Exception):
            raise res
        return res[(0,) * lead] if lead > 0 else res

    def expressible(spec) -> str | None:
        return None if spec.dtype in ORT_TYPES else f"ORT's CPU Attention kernel has no {spec.dtype}"

    fn.close = session.close
    return dict(name="onnxruntime", fn=fn, api="native", expressible=expressible, precision="float32",
                note=f"ONNX Attention-23 on {why}")


def torch_mha_target() -> dict:
    try:
        from .torch_mha import torch_mha_target as mha
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
        keep = _fold(None if mask is None else np.asarray(mask), _band(q.shape[-2], k.shape[-2], is_causal,
                                                                          alignment, window))
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
    return dict(name="torch-mha", fn=fn, api="native", expressible=expressible,
                note=f"torch {torch.__version__} _native_multi_head_attention, identity projections")
