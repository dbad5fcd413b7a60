"""Backward bug models: the gradients of attention computed with one classic mistake each, for diagnosing
a target whose ``grad:<family>`` row fails (refimpl.harness.rows.grad_cases).

Every model takes refimpl's inputs and keywords plus the upstream gradient and returns ``(dq, dk, dv)``::

    fn(q, k, v, d_out, *, mask=None, scale=None, is_causal=False, alignment="top-left", window=None,
       softcap=None, enable_gqa=False) -> (dq (B, Hq, Sq, D), dk (B, Hkv, Sk, D), dv (B, Hkv, Sk, Dv))

with q (B, Hq, Sq, D), k (B, Hkv, Sk, D), v (B, Hkv, Sk, Dv), d_out (B, Hq, Sq, Dv), float64. The correct
computation (refimpl.backward), with P the forward's weights (a fully masked row: P = 0), s the scale:

    dV = P^T dO,   dP = dO V^T,   delta = rowsum(dO * O) (= rowsum(P * dP)),   dS = P * (dP - delta)
    dR = dS * (1 - tanh^2(R / cap))   (dR = dS without a softcap; R = s Q K^T)
    dQ = s dR K,   dK = s dR^T Q;   under GQA dK, dV of a kv head = the SUM over its Hq / Hkv query heads

The models (each changes exactly one step):

    bwd-delta-term     dS = P * dP                    (rowsum(dO * O) dropped; or P (1 - P) dP: the diagonal only)
    bwd-scale-dq       dQ = dR K  or  s^2 dR K        (s forgotten in dQ, or applied twice)
    bwd-scale-dk       dK = dR^T Q  or  s^2 dR^T Q    (s forgotten in dK, or applied twice)
    bwd-ds-transposed  dQ = s dR^T K  or  dK = s dR Q (dS transposed; where Sq != Sk it raises, as the mistake)
    bwd-gqa-sum        dK, dV of a kv head from the first (or last) query head of its group, or the group's mean
    bwd-masked-nan     P = exp(S - max S) / sum: NaN on fully masked rows, into dQ there and dK, dV of the head
    bwd-delta-axis     dS = P * (dP - sum over the queries of P * dP), or delta[j] at (i, j) (bugs_backward_shapes)
    bwd-mask-not-reapplied  P recomputed without the mask, causal band and window (O kept; or O too: unmasked
                       attention's exact gradient, with or without a has-key guard zeroing a row with no key)
    bwd-masked-uniform P = 1 / Sk on fully masked rows (a finite fill such as finfo.min), O and every gradient too
    bwd-recompute      P = exp(S - LSE) with the LSE in base 2, from the scores without the scale, or no max
    bwd-tile-accumulation  dQ per key tile; dK/dV reset per query block; a query loop from the key block's first
                       key; the partial last key (or query) tile never walked
    bwd-value-dims     dP = dO V^T over the first D value dims only (everywhere, or in the dQ pass)
    bwd-scale          the whole backward with another scale: D padded to a multiple of N, 1, 1/sqrt(Dv), 1/D, s^2
    bwd-low-precision  P for dV, dS, or P everywhere rounded to float16 or bfloat16
    bwd-forward-mistake  the gradients of a wrong forward (refimpl.bugs_backward_forward): a stale causal band, ...

(``bwd-delta-term`` also: dS = P (dP - rowsum(dP)); the rowsum from l * O; dS = dP where P > 0; the rowsum of P * dP
over all (Sq, Sk). ``bwd-tile-accumulation``: ceil(Sk / block) query tiles; ``bwd-low-precision``: dO * O rounded.)
The models from ``bwd-masked-uniform`` on are :func:`steps_backward`'s, written from P, O and the forward's LSE, and
:func:`kernel_backward`'s (refimpl.bugs_backward_kernels' steps, their labels in its ``KERNEL_VARIANTS``): dS = 0,
or delta over O's and dO's rows in two layouts (``bwd-delta-term``); dK or dV of a kv head from its group's first
query head alone (``bwd-gqa-sum``); the partial last key tile's zero padding kept as keys, the dK/dV pass alone
starting a key block's query loop at its first key, dQ accumulated with a (batch, head) stride of 0, or a key chunk
recomputed with chunk 0's stale K/V (``bwd-tile-accumulation``); delta accumulated in a 16-bit register, the
pre-scaled K operand or the recomputed scores rounded to 16 bits (``bwd-low-precision``). ``MODELS`` maps a model
id to its :class:`refimpl.bugs.BugModel` row (explanation, variants).
"""
from __future__ import annotations

import math
from functools import partial

import numpy as np

from .attention import scaled_dot_product_attention
from .bug_model import BugModel, Variant
from .bugs_backward_forward import MODEL as FORWARD_MISTAKE, RECOMPUTE_VARIANTS, SCALE_VARIANTS, TRANSPOSED_VARIANTS
from .bugs_backward_kernels import BLOCKS, KERNEL_VARIANTS, kernel_steps, padded_keys
from .bugs_backward_shapes import shape_models
from .lse import sdpa_lse
from .masks import band_mask
from .precision import get as precision

__all__ = ["MODELS", "backward_with", "steps_backward"]

MISTAKES = ("none", "delta", "scale-dq", "scale-dk", "scale-dq-twice", "scale-dk-twice", "ds-transposed-dq",
            "ds-transposed-dk", "gqa-first", "gqa-last", "gqa-mean", "masked-nan", "delta-axis", "unmasked",
            "unmasked-lse", "unmasked-dqdk", "delta-diagonal", "delta-no-p", "ds-no-p", "delta-matrix", "unmasked-po",
            "unmasked-po-guarded")


def backward_with(q, k, v, d_out, *, mistake: str = "none", mask=None, scale=None, is_causal=False,
                  alignment="top-left", window=None, softcap=None, enable_gqa=False):
    """``(dq, dk, dv)`` in float64 with one ``mistake`` (one of ``MISTAKES``; "none" is the correct backward).

    The weights P come from refimpl's forward (every mask, band, softcap and GQA feature); the rest is the
    textbook backward of the module docstring, written out so that each mistake changes one line."""
    if mistake not in MISTAKES:
        raise ValueError(f"mistake must be one of {MISTAKES}, got {mistake!r}")
    q, k, v, g = (np.asarray(a, np.float64) for a in (q, k, v, d_out))
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    o, p = scaled_dot_product_attention(q, k, v, mask=mask, scale=scale, is_causal=is_causal, alignment=alignment,
                                        window=window, softcap=softcap, enable_gqa=enable_gqa)   # (B, Hq, Sq, Sk)
    pv = p                                      # the weights dV is taken with
    if mistake == "unmasked-po":                # P and O recomputed with no mask at all: unmasked attention's backward
        return backward_with(q, k, v, d_out, scale=scale, softcap=softcap, enable_gqa=enable_gqa)
    unmasked = mistake in ("unmasked", "unmasked-lse", "unmasked-dqdk")
    if unmasked or mistake == "unmasked-po-guarded":      # P recomputed without mask, causal band, window
        add = None if mask is None or np.asarray(mask).dtype == bool else np.where(np.isneginf(mask), 0.0, mask)
        pu = scaled_dot_product_attention(q, k, v, mask=add, scale=scale, softcap=softcap, enable_gqa=enable_gqa)[1]
        if not unmasked:                        # O recomputed from it below; a row with no key zeroed (a guard)
            p = pv = np.where((p > 0).any(axis=-1, keepdims=True), pu, 0.0)
    if unmasked:                                # the forward's O kept
        if mistake == "unmasked-lse":           # exp(S - the masked forward's LSE) on every key: Z / Z_masked
            kept = (pu * (p > 0)).sum(axis=-1, keepdims=True)
            with np.errstate(all="ignore"):
                pu = np.where(kept > 0, pu / np.where(kept > 0, kept, 1.0), 0.0)
        if mistake == "unmasked-dqdk":          # only the dQ/dK pass recomputes (rows with no key kept at zero)
            pu = np.where((p > 0).any(axis=-1, keepdims=True), pu, 0.0)
        else:
            pv = pu
        p = pu
    group = q.shape[-3] // k.shape[-3] if enable_gqa else 1             # kv head h serves query heads hG .. hG+G-1
    ke, ve = (np.repeat(a, group, axis=-3) for a in (k, v))              # (B, Hq, Sk, D), (B, Hq, Sk, Dv)
    with np.errstate(all="ignore"):
        if mistake == "masked-nan":
            p = np.where(~(p > 0).any(axis=-1, keepdims=True), np.nan, p)   # 0/0 on rows with no key
        o = o if unmasked else p @ ve                                     # (B, Hq, Sq, Dv)
        pv = p if mistake == "masked-nan" else pv
        dv = np.swapaxes(pv, -1, -2) @ g                                  # (.., Sk, Sq) x (.., Sq, Dv) -> (.., Sk, Dv)
        dp = g @ np.swapaxes(ve, -1, -2)                                  # (.., Sq, Dv) x (.., Dv, Sk) -> (.., Sq, Sk)
        if mistake == "delta-axis":                                       # sum(P * dP) over the queries
            ds = p * (dp - np.sum(p * dp, axis=-2, keepdims=True))
        else:
            ds = {"delta": p * dp, "delta-diagonal": p * (1.0 - p) * dp,
                  "delta-no-p": p * (dp - np.sum(dp, axis=-1, keepdims=True)), "ds-no-p": dp * (p > 0),
                  "delta-matrix": p * (dp - np.sum(p * dp, axis=(-2, -1), keepdims=True))}.get(
                mistake, p * (dp - np.sum(g * o, axis=-1, keepdims=True)))
        if softcap is not None:
            r = s * (q @ np.swapaxes(ke, -1, -2))                         # (B, Hq, Sq, Sk)
            ds = ds * (1.0 - np.tanh(r / softcap) ** 2)
        dst = np.swapaxes(ds, -1, -2)                                     # (B, Hq, Sk, Sq)
        if mistake == "ds-transposed-dq":
            dq = s * (_square(dst, "dS^T K") @ ke)
        else:
            dq = (ds @ ke) * _factor(s, mistake, "dq")                   # (.., Sq, Sk) x (.., Sk, D) -> (.., Sq, D)
        if mistake == "ds-transposed-dk":
            dk = s * (_square(ds, "dS Q") @ q)
        else:
            dk = (dst @ q) * _factor(s, mistake, "dk")                   # (.., Sk, Sq) x (.., Sq, D) -> (.., Sk, D)
    return dq, _reduce(dk, group, mistake), _reduce(dv, group, mistake)


def _factor(s: float, mistake: str, grad: str) -> float:
    """The scale dQ (``grad`` "dq") or dK ("dk") is multiplied by: s, or 1 (forgotten) or s * s (applied twice)."""
    return {f"scale-{grad}": 1.0, f"scale-{grad}-twice": s * s}.get(mistake, s)


def _square(a: np.ndarray, what: str) -> np.ndarray:
    if a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{what} needs Sq == Sk, got dS of shape {a.shape[-2:]}")
    return a


def _reduce(g: np.ndarray, group: int, mistake: str) -> np.ndarray:
    """(B, Hq, Sk, X) -> (B, Hkv, Sk, X): the group's sum (correct), its first head, its last (a per-head
    assignment that overwrites), or its mean."""
    if group == 1:
        return g
    sh = g.shape
    grouped = g.reshape(sh[:-3] + (sh[-3] // group, group) + sh[-2:])   # (B, Hkv, G, Sk, X)
    if mistake in ("gqa-first", "gqa-last"):
        return grouped[..., 0 if mistake == "gqa-first" else -1, :, :]
    return grouped.mean(axis=-3) if mistake == "gqa-mean" else grouped.sum(axis=-3)


STEP_MISTAKES = ("lse-base2", "recompute-unscaled", "dead-uniform", "delta-unnormalised", "dq-last-key-tile",
                 "dkdv-last-query-block", "query-loop-from-key-block", "key-tail-dropped", "query-tail-dropped",
                 "dp-value-dims", "dp-value-dims-dq", "padded-scale", "p-for-dv-16bit", "ds-16bit", "p-16bit",
                 "delta-16bit", "query-tiles-from-sk", "lse-natural-exp2", "lse-no-max")


def steps_backward(q, k, v, d_out, *, mistake: str, block: int = 64, dtype: str = "float16", **kw):
    """``(dq, dk, dv)`` in float64 with one ``mistake`` of ``STEP_MISTAKES``, the mistakes of a backward that
    recomputes the weights from the forward's log-sum-exp and walks tiles of ``block``:

    * "lse-base2": P = exp(S - LSE2), the LSE in base 2 (log2 l + m log2 e, an exp2 forward's) read as natural;
    * "recompute-unscaled": P = exp(q k^T - LSE), the scores recomputed without the scale; "lse-natural-exp2":
      P = exp2(S log2 e - LSE), a natural LSE in an exp2 recompute; "lse-no-max": P = exp(S - (LSE - max S));
    * "dead-uniform": rows with no key get uniform weights 1 / Sk (a finite fill such as finfo.min), in O too;
    * "delta-unnormalised": rowsum(dO * l O), the accumulator before its division by l = sum exp(S - max);
    * "dq-last-key-tile": dQ assigned, not accumulated, per key tile: only the last tile's contribution;
    * "dkdv-last-query-block": dK, dV scratch reset every query block: only the last block's contribution;
    * "query-loop-from-key-block": a key block's query loop starts at its first key index (a causal-only
      shortcut): query i and key j meet only when i >= (j // block) * block;
    * "key-tail-dropped" / "query-tail-dropped": Sk // block key tiles (Sq // block query tiles, at least one)
      walked: the partial last tile gives and gets no gradient;
    * "dp-value-dims": dP = dO V^T over the first D value dims only (tiles sized with the q/k head dim);
      "dp-value-dims-dq": so in the dQ pass only;
    * "padded-scale": the whole backward with the default scale of a head dim padded to a multiple of ``block``;
    * "query-tiles-from-sk": ceil(Sk / block) query tiles walked (the bound taken from the key length);
    * "p-for-dv-16bit", "ds-16bit", "p-16bit", "delta-16bit": P for dV, dS, P everywhere, or dO * O before delta's
      sum rounded to ``dtype``.

    P, O and LSE are refimpl's (P = exp(S - LSE)); log P + LSE is S on kept keys, and l = 1 / max P."""
    if mistake not in STEP_MISTAKES:
        raise ValueError(f"mistake must be one of {STEP_MISTAKES}, got {mistake!r}")
    q, k, v, g = (np.asarray(a, np.float64) for a in (q, k, v, d_out))
    kw = dict(dict(mask=None, scale=None, is_causal=False, alignment="top-left", window=None, softcap=None,
                   enable_gqa=False), **kw)
    if mistake == "padded-scale" and kw["scale"] is None:
        kw["scale"] = 1.0 / math.sqrt(-(-q.shape[-1] // block) * block)
    s = 1.0 / math.sqrt(q.shape[-1]) if kw["scale"] is None else float(kw["scale"])
    r = precision(dtype).round
    o, p = scaled_dot_product_attention(q, k, v, **kw)                   # (B, Hq, Sq, Dv), (B, Hq, Sq, Sk)
    lse = sdpa_lse(q, k, v, **kw)[..., None]                              # (B, Hq, Sq, 1); -inf: no key
    group = q.shape[-3] // k.shape[-3] if kw["enable_gqa"] else 1
    ke, ve = (np.repeat(a, group, axis=-3) for a in (k, v))              # (B, Hq, Sk, D), (B, Hq, Sk, Dv)
    Sq, Sk = p.shape[-2:]
    dead = np.isneginf(lse)
    with np.errstate(all="ignore"):
        if mistake == "dead-uniform":
            p = np.where(dead, 1.0 / Sk, p)
            o = p @ ve
        delta = np.sum(r(g * o) if mistake == "delta-16bit" else g * o, axis=-1, keepdims=True)   # (B, Hq, Sq, 1)
        if mistake == "delta-unnormalised":
            delta = np.where(dead, 0.0, delta / p.max(axis=-1, keepdims=True))
        if mistake in ("lse-base2", "lse-natural-exp2", "lse-no-max"):          # S = log P + LSE on kept keys
            wrong = {"lse-base2": lse / math.log(2.0), "lse-natural-exp2": lse * math.log(2.0),
                     "lse-no-max": -np.log(p.max(axis=-1, keepdims=True))}[mistake]
            p = np.where(dead, 0.0, np.exp(np.log(p) + lse - wrong))
        if mistake == "recompute-unscaled":
            mask = kw["mask"]
            keep = band_mask(Sq, Sk, is_causal=kw["is_causal"], window=kw["window"], alignment=kw["alignment"],
                             mask=mask if mask is None or np.asarray(mask).dtype == bool else ~np.isneginf(mask))
            keep = np.ones(p.shape, bool) if keep is None else np.broadcast_to(keep, p.shape)
            p = np.where(keep & ~dead, np.exp(q @ np.swapaxes(ke, -1, -2) - lse), 0.0)
        walked = np.ones((Sq, Sk), bool)                                  # the (query, key) pairs the loops visit
        if mistake == "query-loop-from-key-block":
            walked = np.arange(Sq)[:, None] >= (np.arange(Sk) // block * block)[None, :]
        if mistake == "key-tail-dropped":
            walked = np.broadcast_to(np.arange(Sk) < Sk // block * block, (Sq, Sk))
        if mistake == "query-tiles-from-sk":                          # ceil(Sk / block) query tiles walked
            walked = np.broadcast_to((np.arange(Sq) < -(-Sk // block) * block)[:, None], (Sq, Sk))
        if mistake == "query-tail-dropped":
            walked = np.broadcast_to((np.arange(Sq) < max(1, Sq // block) * block)[:, None], (Sq, Sk))
        p = r(p) if mistake == "p-16bit" else p * walked
        dp = g @ np.swapaxes(ve, -1, -2)                                  # (.., Sq, Dv) x (.., Dv, Sk)
        D = q.shape[-1]
        dp_head = g[..., :D] @ np.swapaxes(ve[..., :D], -1, -2)           # over the first D value dims only
        ds = p * ((dp_head if mistake == "dp-value-dims" else dp) - delta)   # (.., Sq, Sk)
        ds = r(ds) if mistake == "ds-16bit" else ds
        ds_q = p * (dp_head - delta) if mistake == "dp-value-dims-dq" else ds
        if kw["softcap"] is not None:
            cap = 1.0 - np.tanh(s * (q @ np.swapaxes(ke, -1, -2)) / kw["softcap"]) ** 2
            ds, ds_q = ds * cap, ds_q * cap
        ds_kv, p_kv = ds, p
        if mistake == "dq-last-key-tile":
            ds_q = ds * (np.arange(Sk) >= (Sk - 1) // block * block)
        if mistake == "dkdv-last-query-block":
            last = (np.arange(Sq) >= (Sq - 1) // block * block)[:, None]
            ds_kv, p_kv = ds * last, p * last
        dq = s * (ds_q @ ke)                                              # (.., Sq, Sk) x (.., Sk, D)
        dk = s * (np.swapaxes(ds_kv, -1, -2) @ q)                         # (.., Sk, Sq) x (.., Sq, D)
        p_kv = r(p_kv) if mistake == "p-for-dv-16bit" else p_kv
        dv = np.swapaxes(p_kv, -1, -2) @ g                                # (.., Sk, Sq) x (.., Sq, Dv)
    return dq, _reduce(dk, group, "none"), _reduce(dv, group, "none")


def _model(mistake: str):
    return partial(backward_with, mistake=mistake)


def _v(label: str, mistake: str) -> Variant:
    return Variant(label, _model(mistake))


def _st(label: str, mistake: str, **param) -> Variant:          # a mistake of steps_backward
    return Variant(label, partial(steps_backward, mistake=mistake, **param))


def kernel_backward(q, k, v, d_out, *, mistake: str, block: int = 32, dtype: str = "float16", layout: str = "",
                    chunks: int = 0, **kw):
    """``(dq, dk, dv)`` with one mistake of :mod:`refimpl.bugs_backward_kernels`, its steps run from this forward."""
    Sk = np.shape(k)[-2]
    k, v, kw = padded_keys(q, k, v, kw, block) if mistake == "padded-keys" else (k, v, kw)
    o, p = scaled_dot_product_attention(q, k, v, **kw)                   # (B, Hq, Sq, Dv), (B, Hq, Sq, Sk)
    dq, dk, dv = kernel_steps(q, k, v, d_out, o, p, mistake=mistake, block=block, dtype=dtype, layout=layout,
                              chunks=chunks, **kw)
    return dq, dk[..., :Sk, :], dv[..., :Sk, :]


def _kbs(model: str) -> tuple[Variant, ...]:      # the variants of ``model`` that are mistakes of kernel_backward
    return tuple(Variant(label, partial(kernel_backward, mistake=m, **kw)) for label, m, kw in KERNEL_VARIANTS[model])


DELTA_SHAPES, LAYOUT_MODEL = shape_models(scaled_dot_product_attention)
MODELS: dict[str, BugModel] = {m.name: m for m in (
    BugModel("bwd-delta-term",
             "the softmax Jacobian's rowsum(dO * O) term is wrong: dropped (dS = P * dP) or taken from another "
             "quantity (dQ, dK wrong)",
             (_v("dS = P * dP", "delta"), _v("dS = P (1 - P) dP: the Jacobian's diagonal only", "delta-diagonal"),
              _v("dS = P (dP - rowsum(dP)): P missing from the rowsum", "delta-no-p"),
              _v("dS = dP where P > 0: the softmax's Jacobian dropped (an identity backward)", "ds-no-p"),
              _v("the rowsum of P * dP taken over the whole (Sq, Sk) matrix", "delta-matrix"),
              _st("rowsum(dO * l O): the unnormalised output (the accumulator before / l)", "delta-unnormalised"))
             + _kbs("bwd-delta-term")),
    BugModel("bwd-scale-dq", "the softmax scale of dQ is wrong: not applied (dQ = dS K) or applied twice "
             "(scale**2 dS K), instead of scale * dS K",
             (_v("dQ = dS K", "scale-dq"), _v("dQ = scale**2 dS K", "scale-dq-twice"))),
    BugModel("bwd-scale-dk", "the softmax scale of dK is wrong: not applied (dK = dS^T Q) or applied twice "
             "(scale**2 dS^T Q), instead of scale * dS^T Q",
             (_v("dK = dS^T Q", "scale-dk"), _v("dK = scale**2 dS^T Q", "scale-dk-twice"))),
    BugModel("bwd-ds-transposed",
             "dS is used transposed in dQ or dK, or P in dV (only runs when Sq == Sk; a shape error otherwise)",
             (_v("dQ = s dS^T K", "ds-transposed-dq"), _v("dK = s dS Q", "ds-transposed-dk")) + TRANSPOSED_VARIANTS),
    BugModel("bwd-gqa-sum",
             "GQA: the gradient of a key/value head is not the sum over the query heads that share it",
             (_v("first head of each group", "gqa-first"),
              _v("last head of each group (overwritten per head)", "gqa-last"), _v("mean over the group", "gqa-mean"))
             + _kbs("bwd-gqa-sum")),
    BugModel("bwd-delta-axis", "the softmax Jacobian's row sum on the wrong axis: rowsum(P * dP) summed over the "
             "queries (axis -2), or delta (B, H, Sq) broadcast without its kept axis (delta[j] at (i, j))",
             (_v("sum over queries", "delta-axis"), *DELTA_SHAPES)),
    BugModel("bwd-mask-not-reapplied", "the backward recomputes the weights without the mask, causal band or window "
             "(the forward's output kept, or recomputed unmasked too): masked keys get gradients",
             (_v("P without the mask", "unmasked"),
              _v("P = exp(S - the masked forward's LSE) on every key", "unmasked-lse"),
              _v("P without the mask in the dQ, dK pass only (dV right)", "unmasked-dqdk"),
              _v("P and O both without the mask (unmasked attention's exact gradient)", "unmasked-po"),
              _v("P and O without the mask, a row with no key zeroed (a has-key guard)", "unmasked-po-guarded"))),
    BugModel("bwd-masked-nan", "fully masked query rows give NaN weights in the backward (softmax of all -inf), "
                               "NaN gradients where zeros are expected",
             (_v("NaN weights on fully masked rows", "masked-nan"),)),
    BugModel("bwd-masked-uniform", "fully masked query rows get uniform weights 1 / Sk (masked scores filled with a "
             "finite value such as finfo.min): their output and gradients are not zero, every key gets some",
             (_st("uniform weights on fully masked rows", "dead-uniform"),)),
    BugModel("bwd-recompute", "the backward recomputes the weights as exp(S - LSE) from the wrong scores or LSE",
             (_st("LSE in base 2 (from an exp2 forward) read as natural", "lse-base2"),
              _st("natural LSE in an exp2 recompute: exp2(S log2 e - LSE)", "lse-natural-exp2"),
              _st("LSE without the row max: exp(S - log sum exp(S - max))", "lse-no-max"),
              _st("scores without the softmax scale (nor softcap or additive terms): exp(q k^T - LSE)",
                  "recompute-unscaled")) + RECOMPUTE_VARIANTS + _kbs("bwd-recompute")),
    BugModel("bwd-tile-accumulation", "a tiled backward gets its tiles wrong: a gradient is assigned per tile "
             "instead of accumulated (or into another slice's slot), a loop skips tiles or reads another tile's keys, "
             "or the partial last key tile's zero padding counts as keys",
             tuple(_st(f"dQ assigned per key tile of {b}: the last tile's only", "dq-last-key-tile", block=b)
                   for b in BLOCKS)
             + tuple(_st(f"dK, dV scratch reset per query block of {b}: the last block's only", "dkdv-last-query-block",
                         block=b) for b in BLOCKS)
             + tuple(_st(f"query loop of a key block of {b} starting at its first key (queries before it skipped)",
                         "query-loop-from-key-block", block=b) for b in BLOCKS)
             + tuple(_st(f"Sk // {b} key tiles: the partial last one gets and gives no gradient", "key-tail-dropped",
                         block=b) for b in BLOCKS)
             + tuple(_st(f"Sq // {b} query tiles: the partial last one gets and gives no gradient",
                         "query-tail-dropped", block=b) for b in BLOCKS)
             + tuple(_st(f"ceil(Sk / {b}) query tiles of {b} (the loop bound from the key length)",
                         "query-tiles-from-sk", block=b) for b in BLOCKS)
             + _kbs("bwd-tile-accumulation")),
    BugModel("bwd-value-dims", "dP = dO V^T is taken over the first D value dims only (value tiles sized with the "
             "q/k head dim; wrong when Dv > D)", (_st("first D of Dv", "dp-value-dims"),
                                                  _st("first D of Dv in the dQ pass only", "dp-value-dims-dq"))),
    BugModel("bwd-scale", "the whole backward (weights, dQ, dK) uses another scale: 1/sqrt of the head dim padded to "
             "a multiple of N, 1, 1/sqrt(Dv), 1/D or s**2", tuple(_st(f"D padded to a multiple of {b}", "padded-scale",
                                                                      block=b) for b in (8, 16, 32, 64, 128))
             + SCALE_VARIANTS),
    BugModel("bwd-low-precision", "an intermediate of the backward is rounded to a 16-bit float",
             tuple(_st(f"{what} in {dt}", m, dtype=dt) for dt in ("float16", "bfloat16")
                   for what, m in (("P for dV", "p-for-dv-16bit"), ("dS", "ds-16bit"), ("P", "p-16bit"),
                                   ("dO * O before delta's row sum", "delta-16bit")))
             + _kbs("bwd-low-precision")), FORWARD_MISTAKE, LAYOUT_MODEL)}
