"""Held-out set 24, API refimpl: fn(q, k, v, mask=None, scale=None) on NumPy arrays (..., S, D)."""
import numpy as np


def _default_scale(q, scale):
    return 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale


def _softmax_rows(scores):
    m = np.max(scores, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(scores - m)
    s = np.sum(e, axis=-1, keepdims=True)
    return e / np.where(s == 0, 1.0, s)


# --- kernel: mha_unscaled_scores ---
def mha_unscaled_scores(q, k, v, mask=None, scale=None):
    """Plain multi-head attention; the scores are meant to be divided by sqrt(d_k)."""
    scores = q @ np.swapaxes(k, -1, -2)  # BUG: the scores are never multiplied by the scale
    if mask is not None:
        scores = np.where(np.asarray(mask, dtype=bool), scores, -np.inf)
    attn = _softmax_rows(scores)
    return (attn @ v).astype(q.dtype, copy=False)


# --- kernel: naive_attention_strict_mask ---
def _check_mask_shape(mask, shape):
    if mask.shape != shape:
        raise ValueError("attention_naive: mask shape mismatch: %s vs %s" % (mask.shape, shape))
    return mask


def naive_attention_strict_mask(q, k, v, mask=None, scale=None):
    """attention_naive: q (batch.., seq_q, d), k (batch.., seq_kv, d); the mask must match the scores."""
    scale = _default_scale(q, scale)
    scores = (q @ np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        mask = _check_mask_shape(mask, scores.shape)  # BUG: asserts the full shape instead of broadcasting
        scores = np.where(mask, scores, -np.inf)
    attn = _softmax_rows(scores)
    return (attn @ v).astype(q.dtype, copy=False)


# --- kernel: augmented_attn_out_reshape ---
def augmented_attn_out_reshape(q, k, v, mask=None, scale=None):
    """Computes the output channel-major (dv, positions) as the conv layout wants, then restores it."""
    scale = _default_scale(q, scale)
    logits = (q @ np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        logits = np.where(np.asarray(mask, dtype=bool), logits, -np.inf)
    weights = _softmax_rows(logits)
    attn_out = np.swapaxes(v, -1, -2) @ np.swapaxes(weights, -1, -2)  # (..., dv, sq)
    sq, dv = q.shape[-2], v.shape[-1]
    attn_out = np.reshape(attn_out, attn_out.shape[:-2] + (sq, dv))  # BUG: reshaped without the transpose
    return attn_out.astype(q.dtype, copy=False)


# --- kernel: unfused_attention_finite_fill ---
def unfused_attention_finite_fill(q, k, v, mask=None, scale=None):
    """UnfusedDotProductAttention-style: masked logits are filled before the softmax."""
    scale = _default_scale(q, scale)
    scores = (q @ np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), scores.shape)
        scores = np.where(keep, scores, -10000.0)  # BUG: finite fill; a row with no kept key becomes uniform
    attn = _softmax_rows(scores)
    return (attn @ v).astype(q.dtype, copy=False)


# --- kernel: ext_attention_mask_transposed ---
def ext_attention_mask_transposed(q, k, v, mask=None, scale=None):
    """Flash path of an attention_ext wrapper: the mask is re-laid out for the fused kernel."""
    scale = _default_scale(q, scale)
    kq = (q @ np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        mask_in = np.swapaxes(np.asarray(mask, dtype=bool), -1, -2)  # BUG: transposed, keys on the query axis
        kq = np.where(mask_in, kq, -np.inf)
    kq = _softmax_rows(kq)
    return (kq @ v).astype(q.dtype, copy=False)


# --- kernel: mha_mask_expand_axis ---
def mha_mask_expand_axis(q, k, v, mask=None, scale=None):
    """Expands a lower-rank mask before adding it to the scores, as _compute_attention_mask does."""
    scale = _default_scale(q, scale)
    scores = (q @ np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        keep = np.asarray(mask, dtype=bool)
        while keep.ndim < scores.ndim:
            keep = keep[:, np.newaxis]  # BUG: new axis inserted after the first axis instead of in front
        scores = np.where(keep, scores, -np.inf)
    attn = _softmax_rows(scores)
    return (attn @ v).astype(q.dtype, copy=False)


# --- kernel: attend_base2_key_tiles ---
def attend_base2_key_tiles(q, k, v, mask=None, scale=None):
    """Online softmax in base 2 over key tiles of 24 (running max, rescaled sum and accumulator)."""
    scale = _default_scale(q, scale)
    log2e = 1.4426950408889634
    sq, sk = q.shape[-2], k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    keep = None
    if mask is not None:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    m = np.full(lead + (sq, 1), -np.inf, dtype=q.dtype)
    den = np.zeros(lead + (sq, 1), dtype=q.dtype)
    acc = np.zeros(lead + (sq, v.shape[-1]), dtype=q.dtype)
    for j0 in range(0, sk, 24):
        j1 = min(j0 + 24, sk)
        s2 = (q @ np.swapaxes(k[..., j0:j1, :], -1, -2)) * (scale * log2e)
        if keep is not None:
            s2 = np.where(keep[..., j0:j1], s2, -np.inf)
        m_new = np.maximum(m, np.max(s2, axis=-1, keepdims=True))
        m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
        alpha = np.exp2(np.where(np.isfinite(m), m, m_safe) - m_safe)
        p = np.exp2(s2 - m_safe)
        den = den * alpha + np.sum(p, axis=-1, keepdims=True)
        acc = acc * alpha + p @ v[..., j0:j1, :]
        m = m_new
    out = acc / np.where(den == 0, 1.0, den)
    return out.astype(q.dtype, copy=False)


# --- kernel: attend_query_chunks_lse ---
def attend_query_chunks_lse(q, k, v, mask=None, scale=None):
    """Query chunks of 7; weights exp(s - lse) with the row log-sum-exp taken per chunk."""
    scale = _default_scale(q, scale)
    sq, sk = q.shape[-2], k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    keep = None
    if mask is not None:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    qb = np.broadcast_to(q, lead + q.shape[-2:])
    out = np.zeros(lead + (sq, v.shape[-1]), dtype=q.dtype)
    for i0 in range(0, sq, 7):
        i1 = min(i0 + 7, sq)
        s = (qb[..., i0:i1, :] @ np.swapaxes(k, -1, -2)) * scale
        if keep is not None:
            s = np.where(keep[..., i0:i1, :], s, -np.inf)
        mx = np.max(s, axis=-1, keepdims=True)
        mx = np.where(np.isfinite(mx), mx, 0.0)
        with np.errstate(divide="ignore"):
            lse = mx + np.log(np.sum(np.exp(s - mx), axis=-1, keepdims=True))
        w = np.where(np.isfinite(lse), np.exp(s - np.where(np.isfinite(lse), lse, 0.0)), 0.0)
        out[..., i0:i1, :] = w @ v
    return out


CATALOG = [
    dict(name="np-ethen-unscaled-scores", api="refimpl", fn="mha_unscaled_scores", correct=False,
         bug="scale-missing",
         parameter="the scores q k^T are never multiplied by the scale (neither 1/sqrt(D) nor an explicit scale): "
                   "the softmax runs on unscaled scores. Triggers: an effective scale other than 1 with a row of "
                   "two or more kept keys",
         source="ethen8181/machine-learning#13",
         report="https://github.com/ethen8181/machine-learning/issues/13", dtype="float64",
         features=["mask", "dv-ne-d"]),
    dict(name="np-burn-mask-shape-assert", api="refimpl", fn="naive_attention_strict_mask", correct=False,
         bug="broadcast-mask-rejected",
         parameter="the mask must have exactly the full score shape (..., Sq, Sk): a broadcastable mask "
                   "(a padding mask (B, 1, 1, Sk), a 2-D or per-head mask) raises ValueError. Triggers: a mask "
                   "whose shape differs from the full score shape",
         source="tracel-ai/burn#4772", report="https://github.com/tracel-ai/burn/issues/4772", dtype="float64",
         features=["mask", "dv-ne-d"]),
    dict(name="np-aug-conv-out-reshape", api="refimpl", fn="augmented_attn_out_reshape", correct=False,
         bug="output-reshape-without-transpose",
         parameter="the output is computed channel-major (..., Dv, Sq) and reshaped to (..., Sq, Dv) without "
                   "the transpose, so values land on the wrong query rows and channels. Triggers: Sq > 1",
         source="leaderj1001/Attention-Augmented-Conv2d#21",
         report="https://github.com/leaderj1001/Attention-Augmented-Conv2d/issues/21", dtype="float64",
         features=["mask", "dv-ne-d"]),
    dict(name="np-te-finite-mask-fill", api="refimpl", fn="unfused_attention_finite_fill", correct=False,
         bug="finite-mask-fill-masked-row-uniform",
         parameter="dropped keys are filled with -10000 instead of -inf: a row with no kept key gets uniform "
                   "weights (the mean of V) instead of zeros; rows with a kept key are unaffected at ordinary "
                   "magnitudes. Triggers: a row with no kept key",
         source="NVIDIA/TransformerEngine#1268",
         report="https://github.com/NVIDIA/TransformerEngine/pull/1268", dtype="float64",
         features=["mask", "dv-ne-d"]),
    dict(name="np-sdcpp-mask-transposed", api="refimpl", fn="ext_attention_mask_transposed", correct=False,
         bug="mask-transposed",
         parameter="the mask is transposed (last two axes swapped) before it is applied: a key mask becomes a "
                   "query mask (or a shape error when Sq != Sk). Triggers: a mask that is not symmetric in its "
                   "last two axes",
         source="leejet/stable-diffusion.cpp#1625",
         report="https://github.com/leejet/stable-diffusion.cpp/pull/1625", dtype="float64",
         features=["mask", "dv-ne-d"]),
    dict(name="np-keras-mask-expand-axis", api="refimpl", fn="mha_mask_expand_axis", correct=False,
         bug="mask-expanded-on-wrong-axis",
         parameter="a mask of lower rank than the scores is expanded with mask[:, newaxis] (after its first "
                   "axis) instead of new leading axes, so its axes no longer line up (wrong broadcast or a "
                   "shape error). Triggers: a mask with fewer dimensions than q",
         source="tensorflow/tensorflow#60626",
         report="https://github.com/tensorflow/tensorflow/issues/60626", dtype="float64",
         features=["mask", "dv-ne-d"]),
    dict(name="np-base2-key-tiles", api="refimpl", fn="attend_base2_key_tiles", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-query-chunks-lse", api="refimpl", fn="attend_query_chunks_lse", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "dv-ne-d"]),
]
