"""One ONNX Attention-23 call: :class:`OrtCase`, what ONNX can express, and the one-node model.

Models are built with the ``onnx`` package (Debian's python3-onnx 1.12, which has no schema for
Attention-23: the checker is not run) with symbolic dimensions, so one ORT session serves every case
with the same dtype, mask kind and attributes. See :mod:`refimpl.harness.runtimes.onnx_runtime` for the
operator's formula and the divergences found.
"""
from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

import numpy as np


__all__ = ["OrtCase", "OrtCaseError", "encode", "ORT_TYPES"]

OPSET = 23
IR_VERSION = 11                   # the IR version that came with opset 23; ORT 1.30 reads it
ORT_TYPES = ("float32", "float16")   # what ORT's CPU Attention kernel registers (precision names)


class OrtCaseError(ValueError):
    """A case ONNX Attention cannot take as given (shapes, dtypes, arguments); nothing was sent to ORT."""


@dataclass
class OrtCase:
    """One attention call, checked by :func:`encode` (an :class:`OrtCaseError` names what is wrong).

    q (B, Hq, Sq, D), k (B, Hkv, Sk, D), v (B, Hkv, Sk, Dv): all float32 or all float16, Hq a multiple
    of Hkv. attn_mask: bool (True = attend) or float (added to the scores), broadcastable to
    (B, Hq, Sq, Sk), rank 1..4. scale, softcap: positive floats or None (1/sqrt(D); no softcap).
    alignment applies to is_causal: "top-left" (j <= i) or "bottom-right" (j <= i + Sk - Sq, Sk >= Sq).

    Decided: a float mask is cast to q's dtype (the operator types attn_mask as bool or T); with
    ``broadcast_mask`` (default) the mask's last two axes are broadcast to (Sq, Sk) before sending,
    leading axes kept (ORT refuses masks broadcast along those axes, divergence O2).
    """
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    attn_mask: np.ndarray | None = None
    is_causal: bool = False
    scale: float | None = None
    softcap: float | None = None
    alignment: str = "top-left"
    broadcast_mask: bool = True


def _mask_tag(m: np.ndarray | None) -> str:
    return "none" if m is None else f"{'bool' if m.dtype == bool else 'float'}{m.ndim}"


def _tensor_type(dtype: np.dtype) -> int:
    """The ONNX TensorProto type of a NumPy dtype: ``helper.np_dtype_to_tensor_dtype`` (onnx >= 1.13), else the
    ``onnx.mapping`` table of older releases (removed in onnx 1.19)."""
    from onnx import helper
    if hasattr(helper, "np_dtype_to_tensor_dtype"):
        return int(helper.np_dtype_to_tensor_dtype(dtype))
    from onnx import mapping
    return int(mapping.NP_TYPE_TO_TENSOR_TYPE[dtype])


@functools.lru_cache(maxsize=256)
def _model(dtype: str, mask: str, is_causal: bool, scale: float | None, softcap: float | None,
           past: bool) -> bytes:
    """A one-node Attention-23 model with symbolic dims. ``mask``: "none", "bool<r>" or "float<r>"."""
    from onnx import TensorProto, helper
    t = _tensor_type(np.dtype(dtype))                       # ORT_TYPES are NumPy dtypes too
    vi = helper.make_tensor_value_info
    inputs = [vi("Q", t, ["B", "Hq", "Sq", "D"]), vi("K", t, ["B", "Hkv", "Sk", "D"]),
              vi("V", t, ["B", "Hkv", "Sk", "Dv"])]
    names = ["Q", "K", "V", ""]
    if mask != "none":
        rank = int(mask[-1])
        inputs.append(vi("attn_mask", TensorProto.BOOL if mask.startswith("bool") else t,
                         [f"M{i}" for i in range(rank - 2)] + ["Sq", "T"]))
        names[3] = "attn_mask"
    outputs = [vi("Y", t, ["B", "Hq", "Sq", "Dv"])]
    if past:
        inputs += [vi("past_key", t, ["B", "Hkv", "P", "D"]), vi("past_value", t, ["B", "Hkv", "P", "Dv"])]
        names += ["past_key", "past_value"]
        outputs += [vi("present_key", t, ["B", "Hkv", "T", "D"]), vi("present_value", t, ["B", "Hkv", "T", "Dv"])]
    attrs: dict[str, int | float] = {"is_causal": int(is_causal)}
    if scale is not None:
        attrs["scale"] = float(scale)
    if softcap is not None:
        attrs["softcap"] = float(softcap)
    node = helper.make_node("Attention", names, [o.name for o in outputs], **attrs)
    model = helper.make_model(helper.make_graph([node], "attention", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model.SerializeToString()


def _positive(x, name: str) -> float | None:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float, np.floating, np.integer)) or not (
            math.isfinite(float(x)) and float(x) > 0):
        raise OrtCaseError(f"{name} must be a positive finite float or None, got {x!r}")
    return float(x)


def encode(case: OrtCase) -> tuple[str, bytes, list[tuple[str, np.ndarray]]]:
    """Validate ``case``; return ``(model key, model bytes, [(input name, array), ...])``; output "Y"."""
    q, k, v = (np.asarray(a) for a in (case.q, case.k, case.v))
    for name, a in (("q", q), ("k", k), ("v", v)):
        if a.ndim != 4:
            raise OrtCaseError(f"{name} must be 4-D (B, H, S, D), got shape {a.shape}")
    dt = q.dtype.name
    if dt not in ORT_TYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise OrtCaseError(f"q, k, v must all be float32 or all float16, got {q.dtype}, {k.dtype}, {v.dtype}")
    (b, hq, sq, d), (bk, hkv, sk, dk), (bv, hv, skv, _) = q.shape, k.shape, v.shape
    if not (b == bk == bv and hkv == hv and sk == skv and d == dk) or hkv < 1 or hq % hkv:
        raise OrtCaseError(f"expected q (B, Hq, Sq, D), k (B, Hkv, Sk, D), v (B, Hkv, Sk, Dv) with Hq a multiple "
                           f"of Hkv, got q {q.shape}, k {k.shape}, v {v.shape}")
    if case.alignment not in ("top-left", "bottom-right"):
        raise OrtCaseError(f"alignment must be 'top-left' or 'bottom-right', got {case.alignment!r}")
    if not isinstance(case.is_causal, (bool, np.bool_)):
        raise OrtCaseError(f"is_causal must be a bool, got {case.is_causal!r}")
    scale, softcap = _positive(case.scale, "scale"), _positive(case.softcap, "softcap")
    m = None if case.attn_mask is None else np.asarray(case.attn_mask)
    if m is not None:
        if m.dtype.kind not in "bf" or not 1 <= m.ndim <= 4:
            raise OrtCaseError(f"attn_mask must be a bool or float array of rank 1..4, got {m.dtype} {m.shape}")
        try:
            ok = np.broadcast_shapes(m.shape, (b, hq, sq, sk)) == (b, hq, sq, sk)
        except ValueError:
            ok = False
        if not ok:
            raise OrtCaseError(f"attn_mask must broadcast to (B, Hq, Sq, Sk) = {(b, hq, sq, sk)}, got {m.shape}")
        if m.dtype.kind == "f":
            m = m.astype(q.dtype)
        if case.broadcast_mask:
            m = np.broadcast_to(m, m.shape[:-2] + (sq, sk)) if m.ndim >= 2 else np.broadcast_to(m, (sq, sk))
    past = bool(case.is_causal) and case.alignment == "bottom-right" and sk != sq
    if past and sk < sq:
        raise OrtCaseError(f"bottom-right causal needs Sk >= Sq in ONNX (a past length), got Sq={sq}, Sk={sk}")
    feeds = [("Q", q), ("K", k[:, :, sk - sq:] if past else k), ("V", v[:, :, sk - sq:] if past else v)]
    if m is not None:
        feeds.append(("attn_mask", m))
    if past:
        feeds += [("past_key", k[:, :, :sk - sq]), ("past_value", v[:, :, :sk - sq])]
    sig = (dt, _mask_tag(m), bool(case.is_causal), scale, softcap, past)
    key = hashlib.sha1(repr(sig).encode()).hexdigest()[:16]
    return key, _model(*sig), feeds
