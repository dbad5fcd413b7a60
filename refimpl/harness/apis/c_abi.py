"""``c-abi`` — a kernel in C, C++ or Rust (``--target c:lib.so:symbol``, :mod:`..targets.native_kernels`):
``int fn(int dtype_bits, q, k, v, keep, shape[7], scale, out, weights)`` of ``refimpl_attention.h``.

C-contiguous (B, H, S, D) float64 or float32 arrays (float16/bfloat16 cases arrive as float32 values of that
precision), GQA by fewer kv heads, causal, windows, padding and packed lengths folded into the bool keep-mask
(B, Hq, Sq, Sk) of bytes; the scale always given. No additive masks, softcap or ALiBi.
"""
from __future__ import annotations

import math

import numpy as np

from .base import Api, keep_mask

__all__ = ["API"]

_NO = "the C ABI (refimpl_attention.h) has no "


class CAbi(Api):
    def arguments(self, data, conv, layout):
        s = data.spec
        keep = keep_mask(s, data.mask)
        if keep is not None:
            keep = np.broadcast_to(keep, (s.B, s.Hq, s.Sq, s.Sk))
        given = {"q": conv(data.q), "k": conv(data.k), "v": conv(data.v), "keep": conv(keep)}
        scale = s.scale if s.scale is not None else 1.0 / math.sqrt(s.D)
        return given, (given["q"], given["k"], given["v"]), {"keep": given["keep"], "scale": scale}

    def unpack(self, res):
        return res if isinstance(res, tuple) and len(res) == 2 else (res, None)

    def accepts(self, raw, is_array):
        return isinstance(raw, tuple) and len(raw) == 2 and is_array(raw[0])


API = CAbi(
    name="c-abi", spec_prefix="c:", params=("keep", "scale"), tensors=False, layouts=("BHSD",), returns_weights=True,
    signature="int fn(int dtype_bits, const void *q, const void *k, const void *v, const unsigned char *keep, "
              "const int64_t shape[7], double scale, void *out, void *weights)  (refimpl_attention.h)",
    cannot_express={"additive-mask": _NO + "additive masks", "softcap": _NO + "softcap", "alibi": _NO + "ALiBi"},
    returns="return 0 after writing out (B, Hq, Sq, Dv); see refimpl_attention.h",
    arg_names=("q", "k", "v"))
