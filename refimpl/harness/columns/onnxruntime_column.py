"""``onnxruntime`` — the ONNX ``Attention`` operator (opset 23) on ONNX Runtime's CPU kernel, through one Node
process per run (:mod:`..onnx_runtime`), float32.

Takes refimpl's native keywords and maps each case's features onto what the operator can express (float16 cases
arrive as float32 values; float64 and bfloat16 are n/a: the CPU kernel has neither); top-left causal through the
operator's ``is_causal``, bottom-right with Sk >= Sq through a past length (the operator's only offset), every other
band (windows, bottom-right with Sq > Sk) folded into a bool mask; bool and float masks, ALiBi as a float mask,
softcap, scale, GQA (``q_num_heads``/``kv_num_heads``). Divergences ``O*`` (tests/test_onnx_runtime.py).
"""
from __future__ import annotations

import json

import numpy as np

from ...errors import Unavailable
from ..targets.target import Target
from .base import Column, fold_band

__all__ = ["COLUMN"]

DIVERGENCES = {
    "O1": "fully masked query row (bool mask all False, or float mask all -inf): ORT gives an all-zero output "
          "row, as refimpl does; the ONNX reference implementation (softmax of all -inf) gives NaN",
    "O2": "attn_mask broadcast along its last two axes (e.g. shape (1, Sk), (B, 1, 1, Sk) or (Sq, 1)) is refused "
          "by ORT ('inconsistent q_sequence_length' / 'total_sequence_length'); the spec allows any mask "
          "broadcastable to (B, Hq, Sq, Sk)",
    "O3": "a float attn_mask value equal to float32's lowest finite number (-3.4028235e38, ORT's own mask "
          "sentinel) counts as masked: a row of them gives zeros; refimpl (and the math: a constant shift) "
          "gives the uniform average of V",
}


def _make() -> Target:
    from ..runtimes import onnx_runtime as ort
    from ..runtimes.ort_case import ORT_TYPES, OrtCase
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
            mask = fold_band(None if mask is None else np.asarray(mask), sq, sk, is_causal, alignment, window)
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

    setattr(fn, "close", session.close)           # runner.close_targets ends the Node process
    return Target(name="onnxruntime", fn=fn, api="native", expressible=expressible, precision="float32",
                  note=f"ONNX Attention-23 on {why}")


def _versions() -> dict[str, str]:
    """onnxruntime-node's version from its package.json (no Node process is started to ask)."""
    from ..runtimes.onnx_runtime import ort_dir
    try:
        return {"onnxruntime-node": json.loads((ort_dir() / "node_modules" / "onnxruntime-node" / "package.json")
                                               .read_text())["version"]}
    except (OSError, ValueError, KeyError):
        return {"onnxruntime-node": "not installed"}


COLUMN = Column("onnxruntime", _make, "ONNX Attention-23 in ONNX Runtime's CPU kernel (Node), float32", DIVERGENCES,
                versions=_versions)
