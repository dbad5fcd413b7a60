"""Backward bug models of kernel bookkeeping (the tables are :data:`refimpl.bugs_backward.MODELS`): mistakes of a
backward that recomputes the forward's statistics, walks key blocks or keeps an operand in a 16-bit format.

:func:`refimpl.bugs_backward.kernel_backward` runs the forward and hands its P and O to :func:`kernel_steps` with
one ``mistake`` of ``KERNEL_MISTAKES``; with s the scale, the textbook backward

    dV = P^T dO,   dP = dO V^T,   delta = rowsum(dO * O),   dS = P * (dP - delta),   dQ = s dS K,   dK = s dS^T Q

changes in one step:

    softmax-no-grad      dS = 0: the softmax passes no gradient (dQ = dK = 0), dV right
    delta-negated        dS = P * (dP + delta): the rowsum(dO * O) term's sign flipped
    padded-keys          keys zero-padded to a multiple of ``block`` and the pads valid for every query in the
                         recomputed LSE, O and P (score 0, value 0): the exact gradient of that padded forward,
                         the pads' dK, dV dropped
    dkdv-from-key-block  the dK/dV pass only: a key block of ``block``'s query loop starts at its first key, so
                         query i and key j meet there only when i >= (j // block) * block; dQ (its own pass) right
    delta-accumulated    delta summed over the value channels in a ``dtype`` accumulator: every partial sum rounded
    k-operand-exp2       P = exp2(q (K s log2 e)^T - LSE2) with the pre-scaled K rounded to ``dtype`` (the LSE, O
                         and delta from the full-precision forward); "k-operand": so in base e, K s rounded
    scores-16bit         P = exp(round(s Q K^T) - LSE): the recomputed scores rounded to ``dtype`` against the exact
                         LSE; O recomputed from that P, delta from that O
    delta-rows-layout    delta = rowsum(dO * O) over flat rows with O and dO in two layouts: ``layout`` "o-bshd", O's
                         rows in (B, S, H) order against dO's in (B, H, S) (a kernel's O, the caller's dO); "do-bshd",
                         the reverse: each row pairs O and dO of different (head, position)
    dq-one-slot          dQ accumulated with a stride of 0 over ``layout`` "batch-head" (every (batch, head) slice's
                         dQ summed into slice (0, 0)) or "head" (into head 0, per batch); the other slices zero, dK,
                         dV right (a batch stride of 0 alone is no variant: with B = 1 it is the correct backward)
    stale-kv             key chunk c recomputed with chunk 0's K and V (its first keys; the chunk's own mask and the
                         exact LSE, O, delta): ``chunks`` ring chunks (numpy.array_split), or with ``chunks`` 0 key
                         blocks of ``block``; dQ and every later chunk's dK, dV wrong
    dk-first-head        dK of a kv head from the first query head of its group only (dV summed); "dv-first-head":
                         dV so, dK summed
    p-no-max             P = exp(S) / sum exp(S) (a sum of 0 read as 1: unguarded, it is bwd-masked-nan wherever no
                         score overflows), the row max never subtracted, O and delta from that P: inf / inf = NaN
                         where a kept score passes exp's range (~709.78), zeros where every kept score underflows

All in float64 but the rounding the mistake names. Imports only the precisions and the band (refimpl._kernel): the
forward is run by its caller, so the bug tables stay on their import layer.
"""
from __future__ import annotations

import math

import numpy as np

from ._kernel import make_band
from .precision import get as precision

__all__ = ["BLOCKS", "KERNEL_MISTAKES", "KERNEL_VARIANTS", "kernel_steps", "padded_keys"]

KERNEL_MISTAKES = ("softmax-no-grad", "delta-negated", "padded-keys", "dkdv-from-key-block", "delta-accumulated",
                   "k-operand-exp2", "k-operand", "scores-16bit", "delta-rows-layout", "dq-one-slot", "stale-kv",
                   "dk-first-head", "dv-first-head", "p-no-max")

BLOCKS = (16, 32, 64, 128)
_FIRST = "dK from the first head of each group, dV summed", "dV from the first head of each group, dK summed"
_SLOT = (("batch-head", "(batch, head)", "every slice's dQ summed into slice (0, 0)"),
         ("head", "head", "each batch's dQ summed into head 0"))
_LAYOUTS = (("o-bshd", "(B, S, H)", "(B, H, S)"), ("do-bshd", "(B, H, S)", "(B, S, H)"))
_LOW = (("rowsum(dO * O) accumulated in {}: every partial sum rounded", "delta-accumulated"),
        ("K * scale * log2(e) rounded to {} for an exp2 recompute against the exact LSE", "k-operand-exp2"),
        ("K * scale rounded to {} for the recompute against the exact LSE", "k-operand"),
        ("scale * q k^T rounded to {} in the recompute against the exact LSE (O, delta from that P)", "scores-16bit"))
# model -> its variants that are mistakes here: (label, mistake, keywords of kernel_steps)
KERNEL_VARIANTS: dict[str, tuple[tuple[str, str, dict], ...]] = {
    "bwd-delta-term": (("dS = 0: the softmax passes no gradient (dQ = dK = 0, dV right)", "softmax-no-grad", {}),
                       ("dS = P * (dP + delta): the rowsum(dO * O) term's sign flipped", "delta-negated", {}))
    + tuple((f"rowsum(dO * O) over flat rows, O's in {a} order against dO's in {b}", "delta-rows-layout",
             {"layout": lay}) for lay, a, b in _LAYOUTS),
    "bwd-gqa-sum": ((_FIRST[0], "dk-first-head", {}), (_FIRST[1], "dv-first-head", {})),
    "bwd-tile-accumulation":
        tuple((f"dK/dV pass only: query loop of a key block of {b} starting at its first key (dQ right)",
               "dkdv-from-key-block", {"block": b}) for b in BLOCKS)
        + tuple((f"keys zero-padded to a multiple of {b}, the pads kept in the recomputed LSE, O and P", "padded-keys",
                 {"block": b}) for b in BLOCKS)
        + tuple((f"dQ accumulated with a {w} stride of 0: {x}, the others zero (dK, dV right)", "dq-one-slot",
                 {"layout": lay}) for lay, w, x in _SLOT)
        + tuple((f"ring of {n} key chunks, each recomputed with chunk 0's K and V (stale saved tensors)", "stale-kv",
                 {"chunks": n}) for n in (2, 3, 4))
        + tuple((f"every key block of {b} recomputed with block 0's K and V", "stale-kv", {"block": b})
                for b in BLOCKS),
    "bwd-low-precision": tuple((label.format(dt), m, {"dtype": dt}) for dt in ("float16", "bfloat16")
                               for label, m in _LOW),
    "bwd-recompute": (("P = exp(S) / sum exp(S), the row max never subtracted: NaN where exp(S) overflows", "p-no-max",
                       {}),),
}


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


def kernel_steps(q, k, v, g, o, p, *, mistake: str, block: int = 32, dtype: str = "float16", layout: str = "",
                 chunks: int = 0, scale=None, softcap=None, enable_gqa=False, **_band):
    """``(dq, dk, dv)`` in float64 from the forward's output ``o`` (B, Hq, Sq, Dv) and weights ``p`` (B, Hq, Sq, Sk)
    with one ``mistake`` of ``KERNEL_MISTAKES`` (module docstring; "padded-keys": the correct steps, on the forward
    of :func:`padded_keys`' inputs); ``block``: the key block, ``dtype``: the 16-bit format, ``layout`` and ``chunks``
    as the module docstring says; refimpl's keywords (the mask and band are in ``p`` already)."""
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
        if mistake == "scores-16bit":                                    # exp(round(R) - LSE) = P exp(round(R) - R)
            p = np.where(p > 0, p * np.exp(cap(r(raw)) - cap(raw)), 0.0)
            delta = np.sum(g * (p @ ve), axis=-1, keepdims=True)
        if mistake == "delta-rows-layout":
            delta = _delta_rows(o, g, layout)
        if mistake == "p-no-max":                                        # the scores' own exp, the band folded in
            m = padded_keys(q, k, v, _band, 1)[2]["mask"]
            e = np.exp(cap(raw) + (np.where(m, 0.0, -np.inf) if m.dtype == bool else m))
            z = e.sum(axis=-1, keepdims=True)
            p = e / np.where(z == 0, 1.0, z)
            delta = np.sum(g * (p @ ve), axis=-1, keepdims=True)
        if mistake == "stale-kv":                                        # key j reads key src[j] of chunk 0
            src = np.concatenate([np.arange(c.size) for c in np.array_split(np.arange(Sk), chunks)]) if chunks \
                else np.arange(Sk) % block
            ke, ve = ke[..., src, :], ve[..., src, :]
            stale = s * (q @ np.swapaxes(ke, -1, -2))
            p = np.where(p > 0, p * np.exp(cap(stale) - cap(raw)), 0.0)
            raw = stale
        dp = g @ np.swapaxes(ve, -1, -2)                                 # (.., Sq, Dv) x (.., Dv, Sk)
        ds = p * (dp + delta if mistake == "delta-negated" else dp - delta)   # (.., Sq, Sk)
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
    if mistake == "dq-one-slot":                                         # slices summed into the first, others 0
        axes = {"batch-head": (0, 1), "head": (1,)}[layout]
        one = np.zeros_like(dq)
        one[tuple(slice(0, 1) if a in axes else slice(None) for a in range(dq.ndim))] = dq.sum(axis=axes, keepdims=True)
        dq = one
    return dq, _group_sum(dk, group, mistake == "dk-first-head"), _group_sum(dv, group, mistake == "dv-first-head")


def _delta_rows(o: np.ndarray, g: np.ndarray, layout: str) -> np.ndarray:
    """rowsum(O * dO) over flat rows, one of the two in (B, S, H) order (``layout`` "o-bshd": O; "do-bshd": dO), the
    other in (B, H, S), as (B, H, Sq, 1)."""
    a, b = (np.swapaxes(o, -3, -2), g) if layout == "o-bshd" else (o, np.swapaxes(g, -3, -2))
    rows = np.sum(a.reshape(-1, a.shape[-1]) * b.reshape(-1, b.shape[-1]), axis=-1).reshape(a.shape[:-1])
    return (np.swapaxes(rows, -2, -1) if layout == "o-bshd" else rows)[..., None]


def _group_sum(x: np.ndarray, group: int, first: bool = False) -> np.ndarray:
    """(B, Hq, Sk, X) -> (B, Hkv, Sk, X): a kv head's gradient, the sum over its query heads (``first``: the first
    query head's only)."""
    sh = x.shape
    if group == 1:
        return x
    grouped = x.reshape(sh[:-3] + (sh[-3] // group, group) + sh[-2:])
    return grouped[..., 0, :, :] if first else grouped.sum(axis=-3)
