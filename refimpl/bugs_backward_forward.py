"""Backward bug models of a wrong forward: the backward differentiates a forward with one mistake of its own.

A backward that recomputes the weights (every backward given no P: FlashAttention's, a tutorial's, a NumPy
port's) rebuilds the forward inside it, and a mistake there is a mistake of the gradients alone: the forward the
user checked is right, the gradients are those of another forward. Each model here takes refimpl's inputs and
keywords plus the upstream gradient and returns ``(dq, dk, dv)`` like :mod:`refimpl.bugs_backward`'s::

    fn(q, k, v, d_out, *, mistake, kept="", **kw) -> (dq (B, Hq, Sq, D), dk (B, Hkv, Sk, D), dv (B, Hkv, Sk, Dv))

The gradients follow the wrong forward's weights P' (B, Hq, Sq, Sk) through the textbook steps, written once in
:func:`_grads`: dV = P'^T dO, dP = dO V^T, dS = P' * (dP - rowsum(dO * O)) (for a softmax over the queries, its own
Jacobian: the sum over the queries), dR = dS * (1 - tanh^2(R / cap)) under a softcap, dQ = s dR K, dK = s dR^T Q,
summed over the query heads a kv head serves. O is the wrong forward's (P' V: the exact gradient of that forward)
or, ``kept="o"``, the right forward's (a backward handed the forward's output); ``kept="lse"`` also recomputes
P' = exp(S' - LSE) from the wrong scores S' and the right forward's LSE (FlashAttention's recompute: P' is not
renormalised). The mistakes (``MISTAKES``):

    causal-top-left / causal-bottom-right   a causal band the case does not have (a stale causal line)
    causal-flipped                          the case's causal band aligned the other way
    mask-inverted                           the bool keep-mask read as a drop-mask
    band-mask-inverted                      ... the keep-mask with the causal band or window folded in (as a
                                            NumPy backward receives it) read as a drop-mask
    mask-transposed                         the mask's (Sq, Sk) read as (Sk, Sq) (square cases)
    softmax-queries                         the softmax over the queries (axis -2), with its own Jacobian
    softmax-queries-row-jacobian            ... with the row softmax's Jacobian (delta = rowsum(dO * O))
    softmax-flat                            the softmax over a batch's (heads, queries, keys) at once (the
                                            scores reshaped to (B, -1)), with the row softmax's Jacobian
    softmax-size-1                          the softmax over a size-1 axis: every kept weight 1, a masked one 0
                                            (a guarded softmax of a lone -inf), with the row softmax's Jacobian
    gqa-interleaved                         query head h reads kv head h % Hkv, not h // (Hq / Hkv)
    lse-of-weights                          (bwd-recompute) P = exp(S - log sum exp(P)): the LSE of the weights
    lse-base2-recomputed-o                  (bwd-recompute) P = exp(S - LSE / ln 2): an exp2 forward's LSE in log2
                                            units read as natural, O = P V and delta recomputed from those weights
    p-untransposed-dv                       (bwd-ds-transposed) dV = P dO (square cases; a shape error elsewhere)
    lse-first-head / lse-first-batch        (bwd-recompute) P = exp(S - LSE) with the LSE rows of the first (batch,
                                            head) for every one (a flat LSE buffer's pointer never advanced), or of
                                            batch 0's same head; O the right forward's (``kept="lse"``)
    softmax-all-rowmax                      exp(S - each row's max) over its sum across the whole (B, H, Sq, Sk)
                                            tensor (a ``sum()`` without its axis), the row softmax's Jacobian
    scale-after-softmax                     P = s * softmax(q k^T): the weights of the unscaled scores times s

A mistake the case cannot show (no causal band to flip, no bool mask, Sq != Sk, no grouping; a causal band the
case has already) gives the right gradients: no variant explains such a failing case; a passing one refutes none.

``scale_backward``: the whole backward (weights, dQ, dK) with another scale (1, 1/sqrt(Dv), 1/D, s**2), the exact
gradient of a forward with that scale; :mod:`refimpl.bugs_backward` lists its variants under ``bwd-scale``.
"""
from __future__ import annotations

import math
from functools import partial

import numpy as np

from ._kernel import make_band
from .bug_model import BugModel, Variant, _kw

__all__ = ["MISTAKES", "MODEL", "RECOMPUTE_VARIANTS", "SCALE_VARIANTS", "TRANSPOSED_VARIANTS", "forward_mistake",
           "scale_backward"]

MISTAKES = ("none", "causal-top-left", "causal-bottom-right", "causal-flipped", "mask-inverted", "band-mask-inverted",
            "mask-transposed", "softmax-queries", "softmax-queries-row-jacobian", "gqa-interleaved",
            "lse-of-weights", "p-untransposed-dv", "softmax-flat", "softmax-size-1", "lse-base2-recomputed-o",
            "lse-first-head", "lse-first-batch", "softmax-all-rowmax", "scale-after-softmax")
SCALES = ("1", "1/sqrt(Dv)", "1/D", "s**2")


def _grads(q, ke, ve, g, p, o, s, softcap, *, query_axis=False):
    """(dq, dk, dv) per query head from weights ``p`` (B, Hq, Sq, Sk), output ``o`` (B, Hq, Sq, Dv) and the kv
    heads expanded to the query heads (``ke`` (B, Hq, Sk, D), ``ve`` (B, Hq, Sk, Dv))."""
    with np.errstate(all="ignore"):
        dv = np.swapaxes(p, -1, -2) @ g                                   # (.., Sk, Sq) x (.., Sq, Dv) -> (.., Sk, Dv)
        dp = g @ np.swapaxes(ve, -1, -2)                                  # (.., Sq, Dv) x (.., Dv, Sk) -> (.., Sq, Sk)
        if query_axis:                                                    # a softmax over the queries: its Jacobian
            ds = p * (dp - np.sum(p * dp, axis=-2, keepdims=True))
        else:
            ds = p * (dp - np.sum(g * o, axis=-1, keepdims=True))
        if softcap is not None:
            r = s * (q @ np.swapaxes(ke, -1, -2))                         # (B, Hq, Sq, Sk)
            ds = ds * (1.0 - np.tanh(r / softcap) ** 2)
        dq = s * (ds @ ke)                                                # (.., Sq, Sk) x (.., Sk, D) -> (.., Sq, D)
        dk = s * (np.swapaxes(ds, -1, -2) @ q)                            # (.., Sk, Sq) x (.., Sq, D) -> (.., Sk, D)
    return dq, dk, dv


def _band(Sq: int, Sk: int, **band) -> np.ndarray:
    """The (Sq, Sk) keep-mask of a causal band or window (all True when ``band`` keeps every key)."""
    b = make_band(Sq, Sk, **band)
    return np.ones((Sq, Sk), bool) if b is None else b.keep(0, Sq, 0, Sk)


def _scores(q, ke, kw: dict) -> np.ndarray:
    """The forward's scores (B, Hq, Sq, Sk) for the keywords ``kw``, the kv heads already expanded (``ke``): scaled,
    softcapped and biased, -inf where the mask, band or window drops the key. Written here on refimpl's kernel pieces
    alone, so that refimpl.bugs_backward can stand on this module."""
    Sq, Sk = q.shape[-2], ke.shape[-2]
    s = 1.0 / math.sqrt(q.shape[-1]) if kw["scale"] is None else float(kw["scale"])
    scores = s * (q @ np.swapaxes(ke, -1, -2))                            # (B, Hq, Sq, Sk)
    if kw["softcap"] is not None:
        scores = kw["softcap"] * np.tanh(scores / kw["softcap"])
    keep = _band(Sq, Sk, is_causal=kw["is_causal"], window=kw["window"], alignment=kw["alignment"])
    mask = None if kw["mask"] is None else np.asarray(kw["mask"])
    if mask is not None and mask.dtype == bool:
        keep = keep & mask
    elif mask is not None:
        keep, scores = keep & (mask != -np.inf), scores + np.where(np.isneginf(mask), 0.0, mask)
    return np.where(keep, scores, -np.inf)


def _lse(scores: np.ndarray, axis: int | tuple[int, ...] = -1) -> np.ndarray:
    """log sum exp over ``axis`` (keepdims); +inf for a line with no key, so that exp(S - LSE) is 0 there."""
    m = scores.max(axis=axis, keepdims=True)
    z = np.exp(scores - np.where(np.isfinite(m), m, 0.0)).sum(axis=axis, keepdims=True)
    return np.where(z > 0, np.where(np.isfinite(m), m, 0.0) + np.log(np.where(z > 0, z, 1.0)), np.inf)


def _to_kv(x: np.ndarray, idx: np.ndarray, Hkv: int) -> np.ndarray:
    """(B, Hq, Sk, X) -> (B, Hkv, Sk, X): kv head j's gradient, the sum over the query heads h with idx[h] == j."""
    return np.stack([x[..., idx == j, :, :].sum(axis=-3) for j in range(Hkv)], axis=-3)


def _wrong(mistake: str, kw: dict, Sq: int, Sk: int) -> dict | None:
    """The keywords of the wrong forward, or None where the case cannot show ``mistake``."""
    mask, causal = kw["mask"], kw["is_causal"]
    if mistake in ("causal-top-left", "causal-bottom-right"):            # the case's keys AND the band
        band = _band(Sq, Sk, is_causal=True, alignment=mistake[len("causal-"):])
        if mask is None:
            return dict(kw, mask=band)
        m = np.asarray(mask)
        return dict(kw, mask=m & band if m.dtype == bool else np.where(band, m, -np.inf))
    if mistake == "causal-flipped":
        other = "bottom-right" if kw["alignment"] == "top-left" else "top-left"
        return dict(kw, alignment=other) if causal and Sq != Sk else None
    if mistake == "mask-inverted":
        return dict(kw, mask=~mask) if mask is not None and np.asarray(mask).dtype == bool else None
    if mistake == "band-mask-inverted":                                   # a keep-mask with the band folded in
        if mask is not None and np.asarray(mask).dtype != bool or mask is None and not causal and not kw["window"]:
            return None
        keep = _band(Sq, Sk, is_causal=causal, window=kw["window"], alignment=kw["alignment"])
        return dict(kw, mask=~(keep if mask is None else keep & mask), is_causal=False, window=None)
    if mistake == "mask-transposed":
        return dict(kw, mask=np.swapaxes(mask, -1, -2)) if mask is not None and Sq == Sk else None
    if mistake == "scale-after-softmax":                                  # the softmax of q k^T (scale 1)
        return dict(kw, scale=1.0)
    return dict(kw)


def forward_mistake(q, k, v, d_out, *, mistake: str, kept: str = "", **kw):
    """``(dq, dk, dv)`` in float64: the gradients of the forward with ``mistake`` (one of ``MISTAKES``; "none" is
    the correct backward); ``kept`` "o": O the right forward's, "lse": also P = exp(S' - the right forward's LSE)."""
    if mistake not in MISTAKES:
        raise ValueError(f"mistake must be one of {MISTAKES}, got {mistake!r}")
    kw = _kw(kw)
    q, k, v, g = (np.asarray(a, np.float64) for a in (q, k, v, d_out))
    Sq, Sk, Hq, Hkv = q.shape[-2], k.shape[-2], q.shape[-3], k.shape[-3]
    s = 1.0 / math.sqrt(q.shape[-1]) if kw["scale"] is None else float(kw["scale"])
    grouped = Hq != Hkv                                                   # GQA, or a kv head axis of 1 broadcast
    wrong = _wrong(mistake, kw, Sq, Sk)
    interleaved = mistake == "gqa-interleaved" and grouped and Hkv > 1
    if wrong is None or (mistake == "gqa-interleaved" and not interleaved):
        mistake, wrong = "none", dict(kw)
    idx = (np.arange(Hq) % Hkv if interleaved else np.arange(Hq) // (Hq // Hkv)) if grouped else np.arange(Hq)
    ke, ve = np.take(k, idx, axis=-3), np.take(v, idx, axis=-3)          # (B, Hq, Sk, D), (B, Hq, Sk, Dv)
    axis: int | tuple[int, ...] = (-2 if mistake.startswith("softmax-queries")
                                   else (-3, -2, -1) if mistake == "softmax-flat" else -1)
    at = np.arange(Hq) // (Hq // Hkv)                                     # the right kv head of each query head
    with np.errstate(all="ignore"):
        scores = _scores(q, ke, wrong)                                    # (B, Hq, Sq, Sk)
        right = _scores(q, np.take(k, at, axis=-3), kw)
        p = np.exp(scores - _lse(right if kept == "lse" else scores, axis))   # (B, Hq, Sq, Sk)
        if mistake == "softmax-size-1":                                   # each score its own softmax: exp(0) = 1
            p = np.isfinite(scores).astype(np.float64)
        if mistake == "lse-of-weights":                                   # LSE taken of the probabilities themselves
            p = np.exp(scores - _lse(np.where(np.isfinite(scores), p, -np.inf)))
        if mistake == "lse-base2-recomputed-o":                           # log2(sum e^S) = LSE / ln 2, read as natural
            p = np.exp(scores - _lse(scores) / math.log(2.0))
        if mistake in ("lse-first-head", "lse-first-batch"):              # (B, Hq, Sq, 1): another slice's LSE rows
            lse = _lse(right)
            p = np.exp(scores - (lse[:1, :1] if mistake == "lse-first-head" else lse[:1]))
        if mistake == "softmax-all-rowmax":                               # each row's max, one sum for the tensor
            m = scores.max(axis=-1, keepdims=True)
            e = np.exp(scores - np.where(np.isfinite(m), m, 0.0))
            p = e / (e.sum() or 1.0)
        if mistake == "scale-after-softmax":                              # softmax of the unscaled scores, times s
            p = s * np.exp(scores - _lse(scores))
        o = np.exp(right - _lse(right)) @ np.take(v, at, axis=-3) if kept else p @ ve   # (B, Hq, Sq, Dv)
    dq, dk, dv = _grads(q, ke, ve, g, p, o, s, kw["softcap"], query_axis=mistake == "softmax-queries")
    if mistake == "p-untransposed-dv":
        if Sq != Sk:
            raise ValueError(f"dV = P dO needs Sq == Sk, got Sq={Sq}, Sk={Sk} (a shape error, as the mistake gives)")
        dv = p @ g                                                        # (.., Sq, Sk) x (.., Sq, Dv): P, not P^T
    return tuple(_sum_to(x, a.shape) for x, a in ((dq, q), (_to_kv(dk, idx, Hkv), k), (_to_kv(dv, idx, Hkv), v)))


def _sum_to(x: np.ndarray, shape: tuple) -> np.ndarray:
    """``x`` summed over the leading axes an input of ``shape`` was broadcast along (a batch of 1 shared)."""
    lead = tuple(i for i, n in enumerate(shape[:-3]) if n == 1 and x.shape[i] != 1)
    return x.sum(axis=lead, keepdims=True) if lead else x


def scale_backward(q, k, v, d_out, *, form: str, **kw):
    """``(dq, dk, dv)``: the exact gradient of the forward with the scale ``form`` (one of ``SCALES``) instead of
    the case's s, in float64."""
    if form not in SCALES:
        raise ValueError(f"form must be one of {SCALES}, got {form!r}")
    kw = _kw(kw)
    D, Dv = np.shape(q)[-1], np.shape(v)[-1]
    s = 1.0 / math.sqrt(D) if kw["scale"] is None else float(kw["scale"])
    other = {"1": 1.0, "1/sqrt(Dv)": 1.0 / math.sqrt(Dv), "1/D": 1.0 / D, "s**2": s * s}[form]
    return forward_mistake(q, k, v, d_out, mistake="none", **dict(kw, scale=other))


def _fm(label: str, mistake: str, kept: str = "") -> Variant:
    return Variant(label, partial(forward_mistake, mistake=mistake, kept=kept))


_KEPT = {"o": "; O the right forward's", "lse": "; P = exp(S - the right forward's LSE), its O"}
RECOMPUTE_VARIANTS = (_fm("LSE of the probabilities, log sum exp(P), in exp(S - LSE); O and delta from those weights",
                          "lse-of-weights"),
                      _fm("every (batch, head) reads the first's LSE rows (the LSE pointer never advanced); O the "
                          "right forward's", "lse-first-head", "lse"),
                      _fm("every batch reads batch 0's LSE rows of its head; O the right forward's", "lse-first-batch",
                          "lse"),
                      _fm("LSE in base 2 (an exp2 forward's) read as natural, exp(S - LSE / ln 2); O and delta from "
                          "those weights", "lse-base2-recomputed-o"))
TRANSPOSED_VARIANTS = (_fm("dV = P dO: the weights untransposed in dV", "p-untransposed-dv"),)
SCALE_VARIANTS = tuple(Variant(f"scale {f}", partial(scale_backward, form=f)) for f in SCALES)
MODEL = BugModel(
    "bwd-forward-mistake",
    "the backward differentiates a forward with one mistake of its own (its recomputed weights wrong, the forward "
    "itself right): a causal band the case does not have or aligned the other way, the bool mask inverted or "
    "transposed, the softmax over another extent, the scale after the softmax, or query heads reading kv head "
    "h % Hkv",
    tuple(_fm(label + _KEPT.get(kept, ""), m, kept)
          for label, m in (("a causal band the case does not have, top-left", "causal-top-left"),
                           ("a causal band the case does not have, bottom-right", "causal-bottom-right"),
                           ("the causal band aligned the other way", "causal-flipped"),
                           ("the bool mask inverted (True read as masked)", "mask-inverted"),
                           ("the keep-mask with the band folded in inverted", "band-mask-inverted"),
                           ("the mask transposed", "mask-transposed"),
                           ("query head h reads kv head h % Hkv (interleaved, not grouped)", "gqa-interleaved"))
          for kept in ("", "o", "lse"))
    + (_fm("the softmax over the queries, with its own Jacobian", "softmax-queries"),
       _fm("the softmax over the queries, with the row softmax's Jacobian", "softmax-queries-row-jacobian"),
       _fm("the softmax over a batch's heads, queries and keys at once (scores reshaped to (B, -1)), with the row "
           "softmax's Jacobian", "softmax-flat"),
       _fm("the softmax over a size-1 axis: every kept weight 1, with the row softmax's Jacobian", "softmax-size-1"),
       _fm("each row's exp(S - max) over one sum across the whole (B, H, Sq, Sk) tensor, with the row softmax's "
           "Jacobian", "softmax-all-rowmax"),
       _fm("the scale applied after the softmax: s * softmax(q k^T)", "scale-after-softmax")))
