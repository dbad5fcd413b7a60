"""``jax`` — ``jax.nn.dot_product_attention``'s signature: ``fn(query, key, value, bias=None, mask=None, *,
scale=None, is_causal=False, query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None)``.

NumPy arrays in (a JAX user calls ``jnp.asarray`` inside), layout (B, T, N, H) = (B, S, H, D); GQA by fewer
kv heads; ``bias`` additive and finite (additive masks and ALiBi arrive there), ``mask`` bool (True = attend:
bool masks, padding, and the keys an additive mask drops with -inf); ``is_causal`` top-left,
``local_window_size=(left, right)`` top-left (query i sees keys i - left .. i + right); bottom-right bands
and windows with an unbounded edge arrive folded into ``mask``. No softcap; value's head size must be the key's
(Dv == D). Sequence lengths are not used (padding arrives as a mask).
"""
from __future__ import annotations

import numpy as np

from .base import Api, keep_mask

__all__ = ["API"]


class Jax(Api):
    def band_as_flags(self, data):                  # as arguments() decides: its own flags, else the band in the mask
        s = data.spec
        if not (s.is_causal or s.window is not None):
            return True
        return (s.alignment == "top-left" or s.Sq == s.Sk) and (s.window is None or min(s.window) >= 0)

    def arguments(self, data, conv, layout):
        s = data.spec
        bias, mask, causal, window = None, data.mask, False, None
        if s.alibi or (mask is not None and mask.dtype != bool):
            bias, mask = data.reference_kwargs()["mask"], None      # additive, ALiBi folded in (-inf = dropped)
        top_left = s.alignment == "top-left" or s.Sq == s.Sk
        if top_left and (s.window is None or min(s.window) >= 0):
            causal, window = s.is_causal, s.window                  # the API's own flags
        else:
            band = keep_mask(s, None)                               # (Sq, Sk): the band as a keep-mask
            mask = band if mask is None else (mask & band)
        if bias is not None and not np.isfinite(bias).all():     # -inf drops a key: JAX says that with the mask
            dropped = np.isfinite(bias)
            mask = dropped if mask is None else (mask & dropped)
            bias = np.where(dropped, bias, 0.0)
        given = {"query": conv(np.swapaxes(data.q, 1, 2)), "key": conv(np.swapaxes(data.k, 1, 2)),
                 "value": conv(np.swapaxes(data.v, 1, 2)), "bias": conv(bias), "mask": conv(mask)}
        kwargs = dict(bias=given["bias"], mask=given["mask"], scale=s.scale, is_causal=causal)
        if window is not None:
            kwargs["local_window_size"] = tuple(int(w) for w in window)
        return given, (given["query"], given["key"], given["value"]), kwargs


API = Jax(
    name="jax", tensors=False, layouts=("BSHD",), params=("bias", "mask", "is_causal", "scale"),
    signature="fn(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False, "
              "query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None)",
    cannot_express={"softcap": "jax.nn.dot_product_attention has no softcap",
                    "dv-ne-d": "jax.nn.dot_product_attention takes value with the key's head size (Dv == D)"},
    returns="return the output (B, T, N, H) = (B, Sq, Hq, Dv), as jax.nn.dot_product_attention does",
    causal_flag="top-left", arg_names=("query", "key", "value"))
