"""The scores as the bug models build them (:mod:`refimpl.bugs`, :mod:`refimpl.bugs_scores` and the modules beside
them): GQA's kv heads expanded to the query heads, the scaled, softcapped and biased scores with their keep-mask,
and a softmax over the kept entries (a line with nothing kept gives zeros). Nothing in them is a mistake; each
model changes one step. Imports nothing above refimpl's kernel pieces, so every bug-model module can stand on it."""
from __future__ import annotations

import math

import numpy as np

from ._kernel import make_band

__all__ = ["_expand_heads", "_parts", "_softmax"]


def _expand_heads(q, k, v, enable_gqa, by_modulo=False):
    """k, v (B, Hkv, Sk, *) -> (B, Hq, Sk, *): query head h uses kv head h // (Hq // Hkv) (h % Hkv if by_modulo)."""
    if not enable_gqa or q.shape[-3] == k.shape[-3]:
        return k, v
    Hq, Hkv = q.shape[-3], k.shape[-3]
    idx = np.arange(Hq) % Hkv if by_modulo else np.arange(Hq) // (Hq // Hkv)
    return np.take(k, idx, axis=-3), np.take(v, idx, axis=-3)


def _parts(q, k, v, mask, scale, is_causal, alignment, window, softcap, enable_gqa, cap_before_scale=False,
           dtype=np.float64):
    """(S, keep, v): raw scores S (B..., Sq, Sk) with softcap and finite additive terms applied, keep (B..., Sq, Sk)
    bool (False where the mask, -inf additive entries, causal or window exclude the key), v expanded for GQA."""
    q, k, v = (np.asarray(a, dtype) for a in (q, k, v))
    k, v = _expand_heads(q, k, v, enable_gqa)
    Sq, Sk = q.shape[-2], k.shape[-2]
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    with np.errstate(over="ignore", invalid="ignore"):
        # (B..., Sq, D) x (B..., D, Sk) -> (B..., Sq, Sk)
        s = q @ np.swapaxes(k, -1, -2)
        if softcap is not None and cap_before_scale:
            s = softcap * np.tanh(s / softcap) * sc
        else:
            s = s * dtype(sc)
            if softcap is not None:
                s = softcap * np.tanh(s / softcap)
    keep = np.ones(s.shape, bool)
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype == bool:
            keep = keep & m
        else:
            keep = keep & (m != -np.inf)
            s = s + np.where(np.isneginf(m), 0.0, m).astype(dtype)
    band = make_band(Sq, Sk, is_causal=is_causal, window=window, alignment=alignment)   # causal caps the right edge
    if band is not None:
        keep = keep & band.keep(0, Sq, 0, Sk)
    return s, keep, v


def _softmax(s, keep, axis=-1):
    """exp(s - max) / sum over ``axis`` where kept; a line with nothing kept -> zeros."""
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=axis, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
    z = e.sum(axis=axis, keepdims=True)
    return e / np.where(z == 0, 1.0, z)
