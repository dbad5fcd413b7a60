"""``flash-attn`` — ``flash_attn_func``'s signature: ``fn(q, k, v, dropout_p=0.0, softmax_scale=None,
causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
return_attn_probs=False)``.

Tensors (B, S, H, D), GQA by fewer kv heads, causal and windows bottom-right, ALiBi as float32 slopes; no
masks.
"""
from __future__ import annotations

import numpy as np

from .base import Api, flash_band, to_numpy

__all__ = ["API", "s_dmask"]


class FlashAttn(Api):
    def arguments(self, data, conv, layout):
        import torch as th
        s = data.spec
        causal, window_size = flash_band(s)
        given = {n: conv(np.swapaxes(a, 1, 2)) for n, a in (("q", data.q), ("k", data.k), ("v", data.v))}
        slopes = None if not s.alibi else th.tensor(data.slopes, dtype=th.float32)
        kwargs = dict(dropout_p=0.0, softmax_scale=s.scale, causal=causal, window_size=window_size,
                      softcap=s.softcap or 0.0,
                      alibi_slopes=slopes, deterministic=True, return_attn_probs=False)
        return given, (given["q"], given["k"], given["v"]), kwargs

    def accepts(self, raw, is_array):
        return bool(is_array(raw)) or (isinstance(raw, tuple) and len(raw) > 0 and is_array(raw[0]))

    def dropout_kwargs(self, p, keep=None):
        return {"dropout_p": p, "return_attn_probs": True, "deterministic": True}

    def unpack_dropout(self, res, data):
        """FlashAttention's S_dmask (B, H, Sq', Sk'), Sq' >= Sq and Sk' >= Sk (rounded up): negative where a weight
        was dropped, non-negative where it was kept."""
        s = data.spec
        dmask = s_dmask(res, self.dropout_returns, (s.B, s.Hq, s.Sq, s.Sk))
        return res[0], res[1], dmask[:, :, :s.Sq, :s.Sk] >= 0


def s_dmask(res, returns: str, least: tuple) -> np.ndarray:
    """The S_dmask of ``(out, softmax_lse, S_dmask)`` (float64), at least ``least`` = (B, Hq, Sq, Sk) in its last
    two dimensions (FlashAttention rounds them up to multiples of 128); TypeError saying what was expected."""
    if not (isinstance(res, tuple) and len(res) == 3):
        raise TypeError(f"with dropout_p > 0 and return_attn_probs=True the target returned {type(res).__name__}"
                        f"; expected {returns}")
    dmask, _ = to_numpy(res[2], "S_dmask")
    if dmask.ndim != 4 or dmask.shape[:2] != least[:2] or dmask.shape[2] < least[2] or dmask.shape[3] < least[3]:
        raise TypeError(f"S_dmask has shape {dmask.shape}; expected (B, Hq, Sq, Sk) = {least} (or rounded up)")
    return dmask


_NO_MASK = "flash_attn_func takes no {} mask"
API = FlashAttn(
    name="flash-attn", params=("softmax_scale", "causal", "window_size"), tensors=True, layouts=("BSHD",),
    signature="fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, "
              "alibi_slopes=None, deterministic=False, return_attn_probs=False)",
    cannot_express={**{f"{m}-mask": _NO_MASK.format(m) for m in ("bool", "additive", "padding")},
                    "top-left-band": "flash_attn_func aligns causal and windows bottom-right",
                    "sequence-lengths": "flash_attn_func's sequences share one length; packed batches are "
                                        "--api flash-attn-varlen's"},
    lse_kwargs={"return_attn_probs": True},
    dropout_returns="(out, softmax_lse, S_dmask) with S_dmask (B, Hq, Sq, Sk) negative where a weight was dropped",
    lse_returns="(out, softmax_lse (B, Hq, Sq) float32, S_dmask) as with return_attn_probs=True",
    returns="return the output tensor (B, Sq, H, Dv), as flash_attn_func does",
    causal_flag="bottom-right")
