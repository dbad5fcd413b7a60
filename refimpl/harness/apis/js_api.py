"""``js`` — a JavaScript function (``--target js:kernel.mjs:fn``, :mod:`..targets.js_targets`):
``fn({q, k, v, keep, scale, shape, dtype})`` -> Float64Array | Float32Array (B, Hq, Sq, Dv) or {out, weights}.

The same arrays as the C ABI's (:mod:`.c_abi`): row-major (B, H, S, D) float64 or float32 (float16/bfloat16 cases
as float32 values of that precision), GQA by fewer kv heads, causal, windows, padding and packed lengths folded
into the keep-mask (B, Hq, Sq, Sk) of bytes; the scale always given. No additive masks, softcap or ALiBi.
"""
from __future__ import annotations

from dataclasses import replace

from .c_abi import API as C_ABI

__all__ = ["API"]

_NO = "a JavaScript target (fn({q, k, v, keep, scale, shape, dtype})) has no "
API = replace(
    C_ABI, name="js", spec_prefix="js:",
    signature="fn({q, k, v, keep, scale, shape, dtype}) -> Float64Array | Float32Array | {out, weights}  "
              "(row-major (B, H, S, D), keep a Uint8Array (B, Hq, Sq, Sk) or null)",
    cannot_express={"additive-mask": _NO + "additive masks", "softcap": _NO + "softcap", "alibi": _NO + "ALiBi"},
    returns="return a Float64Array or Float32Array (B, Hq, Sq, Dv), or {out, weights}")
