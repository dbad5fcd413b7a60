"""Backward bug models of kernel bookkeeping (the tables are :data:`refimpl.bugs_backward.MODELS`): mistakes of a
backward that recomputes the forward's statistics, walks key blocks or keeps an operand in a 16-bit format.

:func:`refimpl.bugs_backward.kernel_backward` runs the forward and hands its P and O to :func:`kernel_steps` with
one ``mistake`` of ``KERNEL_MISTAKES``; with s the scale, the textbook backward

    dV = P^T dO,   dP = dO V^T,   delta = rowsum(dO * O),   dS = P * (dP - delta),   dQ = s dS K,   dK = s dS^T Q

changes in one step:

    softmax-no-grad      dS = 0: the softmax passes no gradient (dQ = dK = 0), dV right
    padded-keys          keys zero-padded to a multiple of ``block`` and the pads valid for every query in the
                         recomputed LSE, O and P (score 0, value 0): the exact gradient of that padded forward,
                         the pads' dK, dV dropped
    dkdv-from-key-block  the dK/dV pass only: a key block of ``block``'s query loop starts at its first key, so
                         query i and key j meet there only when i >= (j // block) * block; dQ (its own pass) right
    delta-accumulated    delta summed over the value channels in a ``dtype`` accumulator: every partial sum rounded
    k-operand-exp2       P = exp2(q (K s log2 e)^T - LSE2) with the pre-scaled K rounded to ``dtype`` (the LSE, O
                         and delta from the full-precision forward); "k-operand": so in base e, K s rounded

All in float64 but the rounding the mistake names. Imports only the precisions and the band (refimpl._kernel): the
forward is run by its caller, so the bug tables stay on their import layer.
"""
from __future__ import annotations

import math

import numpy as np

from ._kernel import make_band
from .precision import get as precision

__all__ = ["KERNEL_MISTAKES", "kernel_steps", "padded_keys"]

KERNEL_MISTAKES = ("softmax-no-grad", "padded-keys", "dkdv-from-key-block", "delta-accumulated", "k-operand-exp2",
                   "k-operand")


def padded_keys(q, k, v, kw: dict, block: int):
    """k, v (.., Sk, X) padded with zero keys up to a multiple of ``block``, and refimpl's keywords with the causal
    band and window folded into the mask (bool, or additive with -inf), the pads kept by every query."""
    kw = dict(kw)
    Sq, Sk, m = np.shape(q)[-2], np.shape(k)[-2], kw.get("mask")
    band = make_band(Sq, Sk, is_causal=kw.pop("is_causal", False), window=kw.pop("window", None),
                     alignment=kw.get("alignment", "top-left"))
    keep = np.ones((Sq, Sk), bool) if band is None else band.keep(0, Sq, 0, Sk)            # (Sq, Sk)
    if m is not None:
        m = np.asarray(m)
        keep = (m & keep) if m.dtype == bool else np.where(keep, m, -np.inf)
    pad = (-Sk) % block
    k, v = (np.pad(np.asarray(a, np.float64), [(0, 0)] * (np.ndim(a) - 2) + [(0, pad), (0, 0)]) for a in (k, v))
    kw["mask"] = np.pad(keep, [(0, 0)] * (keep.ndim - 1) + [(0, pad)], constant_values=keep.dtype == bool)
    return k, v, kw


def kernel_steps(q, k, v, g, o, p, *, mistake: str, block: int = 32, dtype: str = "float16", scale=None,
                 softcap=None, enable_gqa=False, **_band):
    """``(dq, dk, dv)`` in float64 from the forward's output ``o`` (B, Hq, Sq, Dv) and weights ``p`` (B, Hq, Sq, Sk)
    with one ``mistake`` of ``KERNEL_MISTAKES`` (module docstring; "padded-keys": the correct steps, on the forward
    of :func:`padded_keys`' inputs); ``block``: the key block, ``dtype``: the 16-bit format; refimpl's keywords (the
    mask and band are in ``p`` already)."""
    if mistake not in KERNEL_MISTAKES:
        raise ValueError(f"mistake must be one of {KERNEL_MISTAKES}, got {mistake!r}")
    q, k, v, g = (np.asarray(a, np.float64) for a in (q, k, v, g))
    group = q.shape[-3] // k.shape[-3] if enable_gqa else 1
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    r = precision(dtype).round
    ke, ve = (np.repeat(a, group, axis=-3) for a in (k, v))             # (B, Hq, Sk, D), (B, Hq, Sk, Dv)
    Sq, Sk = p.shape[-2:]
    raw = s * (q @ np.swapaxes(ke, -1, -2))                              # R = s Q K^T (B, Hq, Sq, Sk)
    cap = (lambda x: x) if softcap is None else (lambda x: softcap * np.tanh(x / softcap))
    with np.errstate(all="ignore"):
        if mistake == "delta-accumulated":                               # acc = round(acc + dO[d] O[d]), d = 0, 1, ..
            delta = np.zeros(o.shape[:-1] + (1,))
            for d in range(o.shape[-1]):
                delta = r(delta + g[..., d:d + 1] * o[..., d:d + 1])
        else:
            delta = np.sum(g * o, axis=-1, keepdims=True)                # (B, Hq, Sq, 1)
        if mistake in ("k-operand-exp2", "k-operand"):                  # P = exp(R' - LSE) = P exp(R' - R), kept keys
            c = s * (math.log2(math.e) if mistake == "k-operand-exp2" else 1.0)
            raw2 = (q @ np.swapaxes(r(ke * c), -1, -2)) * (s / c)        # the scores from the rounded operand
            p = np.where(p > 0, p * np.exp(cap(raw2) - cap(raw)), 0.0)
        dp = g @ np.swapaxes(ve, -1, -2)                                 # (.., Sq, Dv) x (.., Dv, Sk)
        ds = p * (dp - delta)                                            # (.., Sq, Sk)
        if softcap is not None:
            ds = ds * (1.0 - np.tanh(raw / softcap) ** 2)
        if mistake == "softmax-no-grad":
            ds = np.zeros_like(ds)
        ds_kv, p_kv = ds, p
        if mistake == "dkdv-from-key-block":
            walked = np.arange(Sq)[:, None] >= (np.arange(Sk) // block * block)[None, :]   # (Sq, Sk)
            ds_kv, p_kv = ds * walked, p * walked
        dq = s * (ds @ ke)                                               # (.., Sq, Sk) x (.., Sk, D)
        dk = s * (np.swapaxes(ds_kv, -1, -2) @ q)                        # (.., Sk, Sq) x (.., Sq, D)
        dv = np.swapaxes(p_kv, -1, -2) @ g                               # (.., Sk, Sq) x (.., Sq, Dv)
    return dq, _group_sum(dk, group), _group_sum(dv, group)


def _group_sum(x: np.ndarray, group: int) -> np.ndarray:
    """(B, Hq, Sk, X) -> (B, Hkv, Sk, X): a kv head's gradient, the sum over its query heads."""
    sh = x.shape
    return x if group == 1 else x.reshape(sh[:-3] + (sh[-3] // group, group) + sh[-2:]).sum(axis=-3)
