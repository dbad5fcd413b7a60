"""Held-out NumPy forward kernels (API ``refimpl``): ``fn(q, k, v, mask=None, scale=None)``.

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); ``mask`` is None or a bool keep-mask (True = attend)
broadcastable to (..., Sq, Sk); ``scale=None`` means 1/sqrt(D). A row with no kept key returns zeros.
Six kernels carry exactly one mistake (marked with a BUG comment), two are correct alternatives.
"""
import math

import numpy as np

# --- kernel: attend_online_tiles_no_rescale ---


def attend_online_tiles_no_rescale(q, k, v, mask=None, scale=None):
    """FlashAttention-1 style loop over key tiles of 32 with a running max and running sum."""
    dt = q.dtype
    q64, k64, v64 = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    sq, sk = q.shape[-2], k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    keep = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    row_max = np.full(lead + (sq,), -np.inf)
    row_sum = np.zeros(lead + (sq,))
    acc = np.zeros(lead + (sq, v.shape[-1]))
    for j0 in range(0, sk, 32):
        j1 = min(j0 + 32, sk)
        s = (q64 @ np.swapaxes(k64[..., j0:j1, :], -1, -2)) * sm_scale
        if keep is not None:
            s = np.where(keep[..., j0:j1], s, -np.inf)
        m_new = np.maximum(row_max, s.max(axis=-1))
        m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
        p = np.exp(s - m_safe[..., None])
        alpha = np.exp(np.where(np.isfinite(row_max), row_max - m_safe, -np.inf))
        row_sum = alpha * row_sum + p.sum(axis=-1)
        acc = acc + p @ v64[..., j0:j1, :]  # BUG: previous accumulator not rescaled by alpha when the max grows
        row_max = m_new
    out = np.where(row_sum[..., None] > 0, acc / np.where(row_sum > 0, row_sum, 1.0)[..., None], 0.0)
    return out.astype(dt)


# --- kernel: attend_softmax_no_max_shift ---


def attend_softmax_no_max_shift(q, k, v, mask=None, scale=None):
    """Dense kernel with a hand-written softmax, as in FasterTransformer's early softmax_kernel."""
    dt = q.dtype
    q64, k64, v64 = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    scores = (q64 @ np.swapaxes(k64, -1, -2)) * sm_scale
    if mask is not None:
        scores = np.where(np.asarray(mask, dtype=bool), scores, -np.inf)
    e = np.exp(scores)  # BUG: no row-max subtraction before exp, overflows to inf for large logits
    denom = e.sum(axis=-1, keepdims=True)
    probs = np.where(denom > 0, e / np.where(denom > 0, denom, 1.0), 0.0)
    return (probs @ v64).astype(dt)


# --- kernel: attend_online_masked_leading_tile ---


def attend_online_masked_leading_tile(q, k, v, mask=None, scale=None):
    """Online softmax over key tiles of 32, one pass, running max started at -inf."""
    dt = q.dtype
    q64, k64, v64 = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    sq, sk = q.shape[-2], k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    keep = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    m_i = np.full(lead + (sq,), -np.inf)
    l_i = np.zeros(lead + (sq,))
    o_i = np.zeros(lead + (sq, v.shape[-1]))
    for j0 in range(0, sk, 32):
        j1 = min(j0 + 32, sk)
        s = (q64 @ np.swapaxes(k64[..., j0:j1, :], -1, -2)) * sm_scale
        if keep is not None:
            s = np.where(keep[..., j0:j1], s, -np.inf)
        m_new = np.maximum(m_i, s.max(axis=-1))
        m_use = m_new  # BUG: an all-masked tile leaves m_new = -inf, and exp(-inf - -inf) is NaN (no clamp)
        p = np.exp(s - m_use[..., None])
        alpha = np.exp(m_i - m_use)
        l_i = alpha * l_i + p.sum(axis=-1)
        o_i = alpha[..., None] * o_i + p @ v64[..., j0:j1, :]
        m_i = m_new
    out = np.where(l_i[..., None] > 0, o_i / np.where(l_i > 0, l_i, 1.0)[..., None], 0.0)
    return out.astype(dt)


# --- kernel: attend_scaled_scores_unused ---


def attend_scaled_scores_unused(q, k, v, mask=None, scale=None):
    """Eager reference-style kernel that computes scaled scores and then softmaxes the raw ones."""
    dt = q.dtype
    q64, k64, v64 = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    scores = q64 @ np.swapaxes(k64, -1, -2)
    scaled_scores = scores * sm_scale
    logits = scores  # BUG: softmax is fed the unscaled scores, scaled_scores is dead
    if mask is not None:
        logits = np.where(np.asarray(mask, dtype=bool), logits, -np.inf)
    del scaled_scores
    m = logits.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(logits - m)
    denom = e.sum(axis=-1, keepdims=True)
    probs = np.where(denom > 0, e / np.where(denom > 0, denom, 1.0), 0.0)
    return (probs @ v64).astype(dt)


# --- kernel: attend_qk_half_accumulate ---


def attend_qk_half_accumulate(q, k, v, mask=None, scale=None):
    """Kernel that runs the QK^T product in float16 (TIR-style), softmax and PV in float64."""
    dt = q.dtype
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    qk = np.matmul(q.astype(np.float16), np.swapaxes(k.astype(np.float16), -1, -2))  # BUG: fp16 QK^T
    scores = qk.astype(np.float64) * sm_scale
    if mask is not None:
        scores = np.where(np.asarray(mask, dtype=bool), scores, -np.inf)
    m = scores.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(scores - m)
    denom = e.sum(axis=-1, keepdims=True)
    probs = np.where(denom > 0, e / np.where(denom > 0, denom, 1.0), 0.0)
    return (probs @ np.asarray(v, dtype=np.float64)).astype(dt)


# --- kernel: attend_exp2_query_prescale ---


def attend_exp2_query_prescale(q, k, v, mask=None, scale=None):
    """Base-2 softmax with the scale folded into Q (scale * log2(e)) before the QK^T product."""
    dt = q.dtype
    q64, k64, v64 = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    qk_scale = sm_scale * 1.4426950408889634
    q_scaled = q64 * sm_scale  # BUG: Q scaled by the plain scale, not by qk_scale, yet exp2 is used below
    s2 = q_scaled @ np.swapaxes(k64, -1, -2)
    del qk_scale
    if mask is not None:
        s2 = np.where(np.asarray(mask, dtype=bool), s2, -np.inf)
    m = s2.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp2(s2 - m)
    denom = p.sum(axis=-1, keepdims=True)
    probs = np.where(denom > 0, p / np.where(denom > 0, denom, 1.0), 0.0)
    return (probs @ v64).astype(dt)


# --- kernel: attend_two_pass_logaddexp_chunks ---


def attend_two_pass_logaddexp_chunks(q, k, v, mask=None, scale=None):
    """Correct: pass 1 builds each row's log-sum-exp over key chunks of 24 with np.logaddexp,
    pass 2 accumulates exp(s - lse) @ V chunk by chunk; rows with lse = -inf stay zero."""
    dt = q.dtype
    q64, k64, v64 = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    sq, sk = q.shape[-2], k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    keep = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    chunks = [(j0, min(j0 + 24, sk)) for j0 in range(0, sk, 24)]

    def chunk_scores(j0, j1):
        s = np.broadcast_to((q64 @ np.swapaxes(k64[..., j0:j1, :], -1, -2)) * sm_scale, lead + (sq, j1 - j0))
        return s if keep is None else np.where(keep[..., j0:j1], s, -np.inf)

    lse = np.full(lead + (sq,), -np.inf)
    for j0, j1 in chunks:
        s = chunk_scores(j0, j1)
        cm = s.max(axis=-1)
        cm_safe = np.where(np.isfinite(cm), cm, 0.0)
        with np.errstate(divide="ignore"):
            chunk_lse = cm_safe + np.log(np.exp(s - cm_safe[..., None]).sum(axis=-1))
        lse = np.logaddexp(lse, chunk_lse)
    lse_safe = np.where(np.isfinite(lse), lse, np.inf)
    out = np.zeros(lead + (sq, v.shape[-1]))
    for j0, j1 in chunks:
        w = np.exp(chunk_scores(j0, j1) - lse_safe[..., None])
        out = out + w @ v64[..., j0:j1, :]
    return out.astype(dt)


# --- kernel: attend_reversed_permuted_tiles ---


def attend_reversed_permuted_tiles(q, k, v, mask=None, scale=None):
    """Correct: keys visited in an interleaved permutation (odd positions, then even, reversed) in
    tiles of 17, with an online softmax whose running max is clamped for empty tiles."""
    dt = q.dtype
    q64, k64, v64 = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    sq, sk = q.shape[-2], k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    keep = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    order = np.concatenate([np.arange(1, sk, 2), np.arange(0, sk, 2)])[::-1]
    m_run = np.full(lead + (sq,), -np.inf)
    l_run = np.zeros(lead + (sq,))
    o_run = np.zeros(lead + (sq, v.shape[-1]))
    for t0 in range(0, sk, 17):
        idx = order[t0:t0 + 17]
        s = (q64 @ np.swapaxes(k64[..., idx, :], -1, -2)) * sm_scale
        s = np.broadcast_to(s, lead + (sq, idx.size))
        if keep is not None:
            s = np.where(keep[..., idx], s, -np.inf)
        m_new = np.maximum(m_run, s.max(axis=-1))
        m_ref = np.where(np.isfinite(m_new), m_new, 0.0)
        corr = np.where(np.isfinite(m_run), np.exp(m_run - m_ref), 0.0)
        p = np.exp(s - m_ref[..., None])
        l_run = corr * l_run + p.sum(axis=-1)
        o_run = corr[..., None] * o_run + p @ v64[..., idx, :]
        m_run = m_new
    out = np.where(l_run[..., None] > 0, o_run / np.where(l_run > 0, l_run, 1.0)[..., None], 0.0)
    return out.astype(dt)


CATALOG = [
    dict(name="np-fa1-online-no-rescale", api="refimpl", fn="attend_online_tiles_no_rescale", correct=False,
         bug="online-accumulator-not-rescaled",
         parameter="the output accumulator of the online softmax is not multiplied by exp(m_old - m_new) when a "
                   "later key tile of 32 raises the row max, while the running sum is: earlier tiles are "
                   "over-weighted. Triggers: Sk > 32 with a row whose max grows after its first tile with a kept key",
         source="Dao-AILab/flash-attention#411", report="https://github.com/Dao-AILab/flash-attention/issues/411",
         dtype="float64", features=["mask"]),
    dict(name="np-ft-softmax-no-max-shift", api="refimpl", fn="attend_softmax_no_max_shift", correct=False,
         bug="softmax-missing-max-subtraction",
         parameter="exp is taken of the raw scaled scores without subtracting the row max: equal on ordinary "
                   "logits, but a row with a scaled score above ~709 overflows to inf and gives NaN. "
                   "Triggers: extreme logits (max scaled score > 709)",
         source="NVIDIA/FasterTransformer#43", report="https://github.com/NVIDIA/FasterTransformer/issues/43",
         dtype="float64", features=["mask"]),
    dict(name="np-oasr-empty-tile-nan", api="refimpl", fn="attend_online_masked_leading_tile", correct=False,
         bug="online-softmax-empty-tile-nan",
         parameter="the online max is not clamped when a key tile (of 32) is fully masked for a row that has "
                   "seen no kept key yet: exp(-inf - -inf) = NaN poisons the running sum, and the row comes out "
                   "as zeros. Triggers: a row with a kept key whose first key tile (keys 0..31) is fully masked "
                   "(left padding > 32 keys, sliding-window bands)",
         source="chiendb97/oasr#101", report="https://github.com/chiendb97/oasr/pull/101",
         dtype="float64", features=["mask"]),
    dict(name="np-rabitq-scaled-scores-unused", api="refimpl", fn="attend_scaled_scores_unused", correct=False,
         bug="softmax-on-unscaled-scores",
         parameter="the scaled scores are computed but the softmax is taken of the unscaled q.k, i.e. the scale "
                   "is effectively 1. Triggers: effective scale != 1 (scale=None with D != 1, or explicit "
                   "scale != 1)",
         source="Sakuraaa0/RaBitQCache#1", report="https://github.com/Sakuraaa0/RaBitQCache/pull/1",
         dtype="float64", features=["mask"]),
    dict(name="np-mlc-fp16-qk", api="refimpl", fn="attend_qk_half_accumulate", correct=False,
         bug="qk-product-in-half-precision",
         parameter="q and k are rounded to float16 and Q K^T is computed in float16 before the scale: ~1e-3 "
                   "relative error in the logits. Triggers: always at float32 resolution",
         source="mlc-ai/mlc-llm#1870", report="https://github.com/mlc-ai/mlc-llm/pull/1870",
         dtype="float32", features=["mask"]),
    dict(name="np-iree-exp2-plain-scale", api="refimpl", fn="attend_exp2_query_prescale", correct=False,
         bug="exp2-without-log2e",
         parameter="Q is pre-scaled by the plain scale while the softmax uses exp2, so the log2(e) factor is "
                   "missing: the effective scale is scale * ln 2. Triggers: always (rows with two or more kept "
                   "keys of different scores)",
         source="iree-org/iree#16679", report="https://github.com/iree-org/iree/pull/16679",
         dtype="float64", features=["mask"]),
    dict(name="np-two-pass-logaddexp", api="refimpl", fn="attend_two_pass_logaddexp_chunks", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64", features=["mask"]),
    dict(name="np-permuted-reverse-tiles", api="refimpl", fn="attend_reversed_permuted_tiles", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64", features=["mask"]),
]
