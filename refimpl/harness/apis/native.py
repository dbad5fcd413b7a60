"""``native`` — refimpl's own ``scaled_dot_product_attention`` keywords, every feature (the built-in columns).

``fn(q, k, v, mask=None, scale=None, is_causal=False, alignment="top-left", window=None, softcap=None,
enable_gqa=False)`` with NumPy arrays (B, H, S, D) (or tensors, for a torch-tensor column); ALiBi arrives
folded into an additive mask. A column that cannot run a case says so through its own ``expressible``.
"""
from __future__ import annotations

from .base import Api

__all__ = ["API"]


class Native(Api):
    def arguments(self, data, conv, layout):
        given = {"q": conv(data.q), "k": conv(data.k), "v": conv(data.v)}
        kw = data.reference_kwargs()
        kw["mask"] = conv(kw["mask"])                  # the converters map None to None
        return given, (given["q"], given["k"], given["v"]), kw

    def unpack(self, res):
        return res if isinstance(res, tuple) and len(res) == 2 else (res, None)


API = Native(name="native", signature="fn(q, k, v, **refimpl.scaled_dot_product_attention keywords)", params=(),
             tensors=False, returns_weights=True, causal_flag="top-left", keywords=True,
             band_always_flags=True)
