"""``flash-attn-varlen`` — ``flash_attn_varlen_func``'s signature: ``fn(q, k, v, cu_seqlens_q, cu_seqlens_k,
max_seqlen_q, max_seqlen_k, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
alibi_slopes=None, deterministic=False, return_attn_probs=False)``.

A batch's sequences packed one after another: q (total_q, Hq, D), k (total_k, Hkv, D), v (total_k, Hkv, Dv)
torch tensors, ``cu_seqlens_q`` / ``cu_seqlens_k`` int32 tensors (B + 1,) of cumulative lengths (a length may be
0), the output (total_q, Hq, Dv). Causal, windows and ALiBi are bottom-right within each sequence. A dense case
is a packed batch of equal lengths; a ``varlen`` family case has its own lengths (:attr:`CaseSpec.seqlens`).
The output is scattered back to (B, Hq, Sq, Dv); a padding row (no sequence's query) stays 0 and is not judged.

Dropout (``--dropout P``): called with ``dropout_p=P, return_attn_probs=True`` it returns ``(out, softmax_lse,
S_dmask)``, S_dmask (B, Hq, round128(max_seqlen_q), round128(max_seqlen_k)) as flash-attn's ``mha_varlen_fwd``
allocates it: sequence b's query i (0..lq-1) and key j (0..lk-1) at ``S_dmask[b, h, i, j]``, negative where that
weight was dropped (flash-attn's tests/test_flash_attn.py reads it so, padding masks left-aligned). That is the
packed case's dense form; the rest (padding) is not judged.
"""
from __future__ import annotations

import numpy as np

from .base import Api, flash_band
from .flash_attn import s_dmask

__all__ = ["API"]


def lengths(spec) -> list[tuple[int, int]]:
    """Each sequence's (lq, lk): the packed case's own, or B sequences of (Sq, Sk)."""
    return list(spec.seqlens) if spec.seqlens is not None else [(spec.Sq, spec.Sk)] * spec.B


def _pack(a: np.ndarray, lens: list[int]) -> np.ndarray:
    """(B, H, S, X) -> (sum(lens), H, X): sequence b's first lens[b] rows, one sequence after another."""
    return np.concatenate([np.swapaxes(a[b, :, :n], 0, 1) for b, n in enumerate(lens)], axis=0)    # B >= 1 parts


class FlashAttnVarlen(Api):
    def arguments(self, data, conv, layout):
        import torch as th
        s = data.spec
        lens = lengths(s)
        causal, window_size = flash_band(s)
        lq, lk = [a for a, _ in lens], [b for _, b in lens]
        given = {"q": conv(_pack(data.q, lq)), "k": conv(_pack(data.k, lk)), "v": conv(_pack(data.v, lk)),
                 "cu_seqlens_q": th.tensor(np.cumsum([0] + lq), dtype=th.int32),
                 "cu_seqlens_k": th.tensor(np.cumsum([0] + lk), dtype=th.int32)}
        slopes = None if not s.alibi else th.tensor(data.slopes, dtype=th.float32)
        kwargs = dict(dropout_p=0.0, softmax_scale=s.scale, causal=causal,
                      window_size=window_size, softcap=s.softcap or 0.0,
                      alibi_slopes=slopes, deterministic=True, return_attn_probs=False)
        args = (given["q"], given["k"], given["v"], given["cu_seqlens_q"], given["cu_seqlens_k"], max(lq), max(lk))
        return given, args, kwargs

    def place(self, output, data):
        s = data.spec
        lq = [a for a, _ in lengths(s)]
        if output.shape != (sum(lq), s.Hq, s.Dv):
            return output                             # the judge reports the shape
        dense = np.zeros((s.B, s.Hq, s.Sq, s.Dv))
        at = np.cumsum([0] + lq)
        for b, n in enumerate(lq):
            dense[b, :, :n] = np.swapaxes(output[at[b]:at[b + 1]], 0, 1)
        return dense

    def place_lse(self, lse, data):
        s = data.spec
        lq = [a for a, _ in lengths(s)]
        if lse.shape != (s.Hq, sum(lq)):
            return lse                                # the judge reports the shape
        dense = np.full((s.B, s.Hq, s.Sq), np.nan)   # padding rows: no sequence's query, never judged
        at = np.cumsum([0] + lq)
        for b, n in enumerate(lq):
            dense[b, :, :n] = lse[:, at[b]:at[b + 1]]
        return dense

    def accepts(self, raw, is_array):
        return bool(is_array(raw)) or (isinstance(raw, tuple) and len(raw) > 0 and is_array(raw[0]))

    def dropout_kwargs(self, p, keep=None):
        return {"dropout_p": p, "return_attn_probs": True, "deterministic": True}

    def unpack_dropout(self, res, data):
        """S_dmask (B, Hq, >= max lq, >= max lk) -> the dense form's keep (B, Hq, Sq, Sk): sequence b's own rows and
        keys, False on padding (never judged: no weight there)."""
        s = data.spec
        lens = lengths(s)
        longest = (max(lq for lq, _ in lens), max(lk for _, lk in lens))           # B >= 1 sequences
        dmask = s_dmask(res, self.dropout_returns, (s.B, s.Hq) + longest)
        keep = np.zeros((s.B, s.Hq, s.Sq, s.Sk), bool)
        for b, (lq, lk) in enumerate(lens):
            keep[b, :, :lq, :lk] = dmask[b, :, :lq, :lk] >= 0
        return res[0], res[1], keep


_NO_MASK = "flash_attn_varlen_func takes no {} mask (ragged lengths are its cu_seqlens)"
API = FlashAttnVarlen(
    name="flash-attn-varlen", params=("cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q", "softmax_scale"), tensors=True,
    layouts=("packed",), arg_names=("q", "k", "v", "cu_seqlens_q", "cu_seqlens_k"),
    signature="fn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0, "
              "softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, "
              "deterministic=False, return_attn_probs=False)",
    cannot_express={**{f"{m}-mask": _NO_MASK.format(m) for m in ("bool", "additive", "padding")},
                    "top-left-band": "flash_attn_varlen_func aligns causal and windows bottom-right"},
    lse_kwargs={"return_attn_probs": True},
    dropout_returns="(out, softmax_lse, S_dmask) with S_dmask (B, Hq, >= max_seqlen_q, >= max_seqlen_k), sequence "
                    "b's query i and key j at [b, h, i, j], negative where a weight was dropped",
    lse_returns="(out, softmax_lse (Hq, total_q) float32, S_dmask) as with return_attn_probs=True",
    returns="return the output tensor (total_q, Hq, Dv), as flash_attn_varlen_func does",
    causal_flag="bottom-right")
