"""``refimpl`` — refimpl's own protocol: ``fn(q, k, v, mask=None, scale=None)`` -> output or (output, weights).

NumPy arrays (..., S, D) (``--layout BSHD`` transposes q, k, v and the output; ``--torch-tensors`` hands
tensors); a bool keep-mask carries causal, window and padding, and under BHSD/BSHD it arrives in full,
(B, H, Sq, Sk). No additive mask, softcap, ALiBi or GQA.

Dropout (``--dropout P``) in its given form: refimpl draws the keep-mask itself (:func:`.base.dropout_draw`: each
weight kept with probability 1 - P, seeded by the case) and calls ``fn(q, k, v, mask=..., scale=..., dropout_p=P,
dropout_mask=KEEP)``, KEEP bool (B, H, Sq, Sk) in every layout (True = kept; a tensor with ``--torch-tensors``).
The target must drop the weights KEEP drops, after the softmax, and scale the kept ones by 1 / (1 - P): its output
is judged by the replay of the returned form (flash-attn's), without the keep-rate test (the draw is refimpl's).
Without ``--dropout`` it is called without these keywords.
"""
from __future__ import annotations

import numpy as np

from .base import Api, keep_mask

__all__ = ["API"]

_NO = "the refimpl protocol has no "


class RefimplProtocol(Api):
    def arguments(self, data, conv, layout):
        s = data.spec
        q, k, v = data.q, data.k, data.v
        mask = keep_mask(s, data.mask)
        if layout in ("BHSD", "BSHD") and mask is not None:     # the mask stays (B, H, Sq, Sk), in full
            mask = np.broadcast_to(mask, (s.B, s.Hq, s.Sq, s.Sk))
        if layout == "BSHD":                                   # q, k, v (B, S, H, D), FlashAttention's layout
            q, k, v = (np.swapaxes(a, 1, 2) for a in (q, k, v))
        given = {"q": conv(q), "k": conv(k), "v": conv(v), "mask": conv(mask)}
        return given, (given["q"], given["k"], given["v"]), {"mask": given["mask"], "scale": s.scale}

    def unpack(self, res):
        return res if isinstance(res, tuple) and len(res) == 2 else (res, None)

    def accepts(self, raw, is_array):
        return bool(is_array(raw)) or (isinstance(raw, tuple) and len(raw) == 2 and is_array(raw[0])
                                       and (raw[1] is None or is_array(raw[1])))

    def dropout_kwargs(self, p, keep=None):
        return {"dropout_p": p, "dropout_mask": keep}

    def unpack_dropout(self, res, data):
        return self.unpack(res)[0], None, None            # the mask was refimpl's (apis.call keeps it)

    def repro_unpack(self):
        return ["    if isinstance(res, tuple) and len(res) == 2:", "        res, w = res"]


API = RefimplProtocol(
    name="refimpl", signature="fn(q, k, v, mask=None, scale=None)", params=("mask", "scale"), tensors=False,
    cannot_express={"additive-mask": _NO + "additive float masks", "softcap": _NO + "softcap",
                    "alibi": _NO + "ALiBi biases", "gqa": _NO + "GQA (Hq != Hkv)"},
    layouts=("SD", "BHSD", "BSHD"), returns_weights=True,
    dropout_given="fn(q, k, v, mask=..., scale=..., dropout_p=P, dropout_mask=KEEP), KEEP bool (B, H, Sq, Sk), "
                  "True = kept: applied after the softmax, the kept weights scaled by 1/(1 - P)",
    returns="return the output as a NumPy array or torch tensor (B, H, Sq, Dv), or the tuple (output, weights)")
