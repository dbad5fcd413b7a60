"""``torch-sdpa`` — ``torch.nn.functional.scaled_dot_product_attention``'s signature and semantics:
``fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False)``.

Tensors (B, H, S, D); bool masks True = attend, float masks added (ALiBi arrives as one); ``is_causal`` is
top-left (other alignments and windows arrive as masks); GQA with ``enable_gqa=True``; no softcap.
"""
from __future__ import annotations

import numpy as np

from .base import Api, keep_mask

__all__ = ["API"]


class TorchSdpa(Api):
    def arguments(self, data, conv, layout):
        s = data.spec
        mask, causal = data.mask, False
        if s.alibi or (mask is not None and mask.dtype != bool):
            mask = data.reference_kwargs()["mask"]
            extra = keep_mask(s, None)
            if extra is not None:
                mask = np.where(extra, mask, -np.inf)
        elif s.is_causal and s.alignment == "top-left" and s.window is None and mask is None:
            causal = True
        else:
            mask = keep_mask(s, data.mask)
        given = {"query": conv(data.q), "key": conv(data.k), "value": conv(data.v), "attn_mask": conv(mask)}
        kwargs = dict(attn_mask=given["attn_mask"], dropout_p=0.0, is_causal=causal, scale=s.scale)
        if s.gqa:
            kwargs["enable_gqa"] = True
        return given, (given["query"], given["key"], given["value"]), kwargs

    def band_as_flags(self, data):
        s = data.spec
        if not (s.is_causal or s.window is not None):
            return True
        float_mask = data.mask is not None and data.mask.dtype != bool
        return not (s.alibi or float_mask) and s.is_causal and s.alignment == "top-left" and s.window is None \
            and data.mask is None               # the one band is_causal carries; arguments() folds every other

    def unpack(self, res):
        return res, None

    def repro_unpack(self):
        return []


API = TorchSdpa(
    name="torch-sdpa", params=("attn_mask", "is_causal", "scale"), tensors=True,
    signature="fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False)",
    cannot_express={"softcap": "torch's SDPA has no softcap"},
    returns="return the output tensor (B, H, Sq, Dv), as torch's scaled_dot_product_attention does",
    causal_flag="top-left", arg_names=("query", "key", "value"))
