"""Held-out attention kernels for the `refimpl` API: fn(q, k, v, mask=None, scale=None), NumPy.

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); `mask` is None or a bool keep-mask (True = attend)
broadcastable to (..., Sq, Sk); `scale=None` means 1/sqrt(D). A row with no kept key returns zeros and
the result has the input dtype. Broken kernels carry one mistake each, adapted from the public report
named in CATALOG; the correct ones are alternative formulations of the same contract.
"""
import math

import numpy as np


def _scale_of(q, scale):
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def _keep_for(mask, shape):
    if mask is None:
        return np.ones(shape, dtype=bool)
    return np.broadcast_to(np.asarray(mask, dtype=bool), shape)


# -------------------------------------------------------------------------------------------------------
# ABMIL-style masked attention pooling generalised to queries (georg-wolflein/good-features#1)
def attend_mask_multiply(q, k, v, mask=None, scale=None):
    a = np.matmul(q, np.swapaxes(k, -1, -2)) * _scale_of(q, scale)
    if mask is not None:
        keep = _keep_for(mask, a.shape)
        a = a * keep  # BUG: multiplying by the binary mask sets dropped scores to 0 instead of -inf
        dead = ~keep.any(axis=-1, keepdims=True)
    else:
        dead = np.zeros(a.shape[:-1] + (1,), dtype=bool)
    a = a - a.max(axis=-1, keepdims=True)
    w = np.exp(a)
    w = w / w.sum(axis=-1, keepdims=True)
    w = np.where(dead, 0.0, w)
    return np.matmul(w, v).astype(q.dtype, copy=False)


# -------------------------------------------------------------------------------------------------------
# Protenix-style dispatcher: a fused path and an eager fallback (bytedance/Protenix#159)
def _fused_available():
    return False


def _fused_sdpa(q, k, v, mask, sm_scale):
    raise NotImplementedError("fused kernel is not built in this environment")


def attend_protenix_fallback(q, k, v, mask=None, scale=None):
    sm_scale = _scale_of(q, scale)
    if _fused_available():
        return _fused_sdpa(q, k, v, mask, sm_scale)
    # eager fallback
    logits = np.einsum("...qd,...kd->...qk", q, k)  # BUG: the fallback never multiplies by sm_scale
    if mask is not None:
        logits = np.where(_keep_for(mask, logits.shape), logits, -np.inf)
    mx = logits.max(axis=-1, keepdims=True)
    mx = np.where(np.isneginf(mx), 0.0, mx)
    p = np.exp(logits - mx)
    z = p.sum(axis=-1, keepdims=True)
    p = p / np.where(z == 0.0, 1.0, z)
    return np.einsum("...qk,...kd->...qd", p, v).astype(q.dtype, copy=False)


# -------------------------------------------------------------------------------------------------------
# tinygrad-style: intermediates in the framework's default float (tinygrad/tinygrad#5100)
DEFAULT_FLOAT = np.float32


def attend_default_float(q, k, v, mask=None, scale=None):
    in_dtype = q.dtype
    qf, kf, vf = (t.astype(DEFAULT_FLOAT) for t in (q, k, v))  # BUG: always the default float32
    s = (qf @ np.swapaxes(kf, -1, -2)) * DEFAULT_FLOAT(_scale_of(q, scale))
    if mask is not None:
        s = np.where(_keep_for(mask, s.shape), s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0).astype(DEFAULT_FLOAT)
    e = np.exp(s - m)
    z = e.sum(axis=-1, keepdims=True)
    e = e / np.where(z > 0, z, 1).astype(DEFAULT_FLOAT)
    return (e @ vf).astype(in_dtype)


# -------------------------------------------------------------------------------------------------------
# uTensor-style row loop softmax; the running max starts at 0 (uTensor/uTensor#176)
def attend_row_loop_softmax(q, k, v, mask=None, scale=None):
    sc = _scale_of(q, scale)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    qb = np.broadcast_to(q, lead + q.shape[-2:]).reshape(-1, sq, q.shape[-1])
    kb = np.broadcast_to(k, lead + k.shape[-2:]).reshape(-1, sk, k.shape[-1])
    vb = np.broadcast_to(v, lead + v.shape[-2:]).reshape(-1, sk, dv)
    keep = _keep_for(mask, lead + (sq, sk)).reshape(-1, sq, sk)
    out = np.zeros((qb.shape[0], sq, dv), dtype=np.float64)
    for b in range(qb.shape[0]):
        scores = (qb[b] @ kb[b].T) * sc
        for r in range(sq):
            row = scores[r]
            row_keep = keep[b, r]
            mx = 0.0  # BUG: the row max starts at 0, not -inf, so an all-negative row is not shifted up
            for c in range(sk):
                if row_keep[c] and row[c] > mx:
                    mx = row[c]
            ex = np.where(row_keep, np.exp(np.where(row_keep, row - mx, 0.0)), 0.0)
            total = ex.sum()
            if total > 0.0:
                out[b, r] = (ex / total) @ vb[b]
    return out.reshape(lead + (sq, dv)).astype(q.dtype)


# -------------------------------------------------------------------------------------------------------
# pointer-generator style: softmax first, then zero the padding and renormalise (abisee/pointer-generator#88)
def attend_softmax_then_mask(q, k, v, mask=None, scale=None):
    e = np.matmul(q, np.swapaxes(k, -1, -2)) * _scale_of(q, scale)
    e = e - e.max(axis=-1, keepdims=True)
    attn_dist = np.exp(e)
    attn_dist = attn_dist / attn_dist.sum(axis=-1, keepdims=True)
    if mask is not None:
        attn_dist = attn_dist * _keep_for(mask, attn_dist.shape)  # BUG: mask after softmax, then renormalised
        masked_sums = attn_dist.sum(axis=-1, keepdims=True)
        attn_dist = attn_dist / masked_sums
    return np.matmul(attn_dist, v).astype(q.dtype, copy=False)


# -------------------------------------------------------------------------------------------------------
# AttnGAN-style: heads folded into the batch, mask repeated to match (taoxugit/AttnGAN#93)
def attend_folded_heads(q, k, v, mask=None, scale=None):
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, sk = q.shape[-2], k.shape[-2]
    qf = np.broadcast_to(q, lead + q.shape[-2:]).reshape((-1,) + q.shape[-2:])
    kf = np.broadcast_to(k, lead + k.shape[-2:]).reshape((-1,) + k.shape[-2:])
    vf = np.broadcast_to(v, lead + v.shape[-2:]).reshape((-1,) + v.shape[-2:])
    attn = np.matmul(qf, np.swapaxes(kf, 1, 2)) * _scale_of(q, scale)
    if mask is not None:
        m = _keep_for(mask, lead + (sq, sk))
        if len(lead) == 2:
            m = np.swapaxes(m, 0, 1)  # BUG: mask folded head-major while q/k/v are folded batch-major
        m = m.reshape((-1, sq, sk))
        attn = np.where(m, attn, -np.inf)
    mx = attn.max(axis=2, keepdims=True)
    mx[~np.isfinite(mx)] = 0.0
    attn = np.exp(attn - mx)
    s = attn.sum(axis=2, keepdims=True)
    s[s == 0] = 1.0
    out = np.matmul(attn / s, vf)
    return out.reshape(lead + (sq, v.shape[-1])).astype(q.dtype, copy=False)


# -------------------------------------------------------------------------------------------------------
# memory-compressed-attention style masked_fill (lucidrains/memory-compressed-attention#2)
def attend_masked_fill_value(q, k, v, mask=None, scale=None):
    dots = np.einsum("...id,...jd->...ij", q, k) * _scale_of(q, scale)
    mask_value = -float("-inf")  # BUG: double negation gives +inf as the fill for dropped positions
    if mask is not None:
        keep = _keep_for(mask, dots.shape)
        dots = np.where(keep, dots, mask_value)
        dead = ~keep.any(axis=-1, keepdims=True)
    else:
        dead = np.zeros(dots.shape[:-1] + (1,), dtype=bool)
    dots = np.where(dead, 0.0, dots)
    with np.errstate(invalid="ignore"):
        dots = dots - dots.max(axis=-1, keepdims=True)
        attn = np.exp(dots)
        attn = attn / attn.sum(axis=-1, keepdims=True)
    attn = np.where(dead, 0.0, attn)
    return np.einsum("...ij,...jd->...id", attn, v).astype(q.dtype, copy=False)


# -------------------------------------------------------------------------------------------------------
# CUDA-tutorial flash v1 port: key tiles of 32 with running (m, l) (PaddleJitLab/CUDATutorial#69)
def attend_tiled_running_sum(q, k, v, mask=None, scale=None):
    Bc = 32
    sc = _scale_of(q, scale)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, sk = q.shape[-2], k.shape[-2]
    keep = _keep_for(mask, lead + (sq, sk))
    row_m = np.full(lead + (sq, 1), -np.inf)
    row_l = np.zeros(lead + (sq, 1))
    acc = np.zeros(lead + (sq, v.shape[-1]))
    for j in range(0, sk, Bc):
        kj, vj = k[..., j:j + Bc, :], v[..., j:j + Bc, :]
        S = (q @ np.swapaxes(kj, -1, -2)) * sc
        S = np.where(keep[..., j:j + Bc], S, -np.inf)
        m_new = np.maximum(row_m, S.max(axis=-1, keepdims=True))
        m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
        P = np.exp(S - m_safe)
        alpha = np.exp(np.where(np.isfinite(row_m), row_m, -np.inf) - m_safe)
        row_l = row_l + P.sum(axis=-1, keepdims=True)  # BUG: previous row_l is not rescaled by alpha
        acc = alpha * acc + P @ vj
        row_m = m_new
    out = acc / np.where(row_l > 0, row_l, 1.0)
    return out.astype(q.dtype, copy=False)


# -------------------------------------------------------------------------------------------------------
# deepmd segment-softmax style: max over kept entries, exp over raw data, then mask (deepmodeling/deepmd-kit#5717)
def attend_segment_softmax(q, k, v, mask=None, scale=None):
    data = np.matmul(q, np.swapaxes(k, -1, -2)) * _scale_of(q, scale)
    keep = _keep_for(mask, data.shape)
    data_for_max = np.where(keep, data, -np.inf)
    seg_max = data_for_max.max(axis=-1, keepdims=True)
    seg_max = np.where(np.isinf(seg_max), 0.0, seg_max)
    with np.errstate(over="ignore", invalid="ignore"):
        ex = np.exp(data - seg_max)  # BUG: exp of raw scores; a dropped score >> kept max gives inf * 0
        ex = ex * keep.astype(ex.dtype)
    denom = ex.sum(axis=-1, keepdims=True)
    safe = np.where(denom > 0, denom, 1.0)
    return np.matmul(ex / safe, v).astype(q.dtype, copy=False)


# -------------------------------------------------------------------------------------------------------
# correct: flash-style online softmax over key tiles of 48
def attend_online_tiles(q, k, v, mask=None, scale=None):
    tile = 48
    sc = _scale_of(q, scale)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, sk = q.shape[-2], k.shape[-2]
    keep = _keep_for(mask, lead + (sq, sk))
    m = np.full(lead + (sq, 1), -np.inf)
    den = np.zeros(lead + (sq, 1))
    acc = np.zeros(lead + (sq, v.shape[-1]))
    for j0 in range(0, sk, tile):
        s = (q @ np.swapaxes(k[..., j0:j0 + tile, :], -1, -2)) * sc
        s = np.where(keep[..., j0:j0 + tile], s, -np.inf)
        m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
        ref = np.where(np.isfinite(m_new), m_new, 0.0)
        corr = np.exp(m - ref)
        p = np.exp(s - ref)
        den = corr * den + p.sum(axis=-1, keepdims=True)
        acc = corr * acc + p @ v[..., j0:j0 + tile, :]
        m = m_new
    out = np.where(den > 0, acc / np.where(den > 0, den, 1.0), 0.0)
    return out.astype(q.dtype, copy=False)


# -------------------------------------------------------------------------------------------------------
# correct: two passes over key chunks of 40 (row max/denominator first, weighted values second)
def attend_two_pass_chunks(q, k, v, mask=None, scale=None):
    chunk = 40
    sc = _scale_of(q, scale)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, sk = q.shape[-2], k.shape[-2]
    keep = _keep_for(mask, lead + (sq, sk))
    blocks = []
    for j0 in range(0, sk, chunk):
        s = (q @ np.swapaxes(k[..., j0:j0 + chunk, :], -1, -2)) * sc
        blocks.append(np.where(keep[..., j0:j0 + chunk], s, -np.inf))
    m = np.full(lead + (sq, 1), -np.inf)
    for s in blocks:
        m = np.maximum(m, s.max(axis=-1, keepdims=True))
    live = np.isfinite(m)
    m = np.where(live, m, 0.0)
    den = np.zeros(lead + (sq, 1))
    for s in blocks:
        den = den + np.exp(s - m).sum(axis=-1, keepdims=True)
    den = np.where(live, den, 1.0)
    out = np.zeros(lead + (sq, v.shape[-1]))
    for idx, s in enumerate(blocks):
        j0 = idx * chunk
        out = out + (np.exp(s - m) / den) @ v[..., j0:j0 + chunk, :]
    return out.astype(q.dtype, copy=False)


# -------------------------------------------------------------------------------------------------------
# correct: exp2 formulation, scores pre-multiplied by scale * log2(e)
def attend_exp2(q, k, v, mask=None, scale=None):
    log2e = 1.4426950408889634
    s2 = np.matmul(q, np.swapaxes(k, -1, -2)) * (_scale_of(q, scale) * log2e)
    keep = _keep_for(mask, s2.shape)
    s2 = np.where(keep, s2, -np.inf)
    m2 = s2.max(axis=-1, keepdims=True)
    m2 = np.where(np.isfinite(m2), m2, 0.0)
    p = np.exp2(s2 - m2)
    z = p.sum(axis=-1, keepdims=True)
    p = p / np.where(z > 0, z, 1.0)
    return np.matmul(p, v).astype(q.dtype, copy=False)


def _entry(name, fn, bug=None, parameter=None, source=None, kind="issues", dtype="float64",
           features=("mask", "dv-ne-d")):
    report = None
    if source is not None:
        repo, num = source.split("#")
        report = "https://github.com/{}/{}/{}".format(repo, kind, num)
    return {
        "name": name,
        "api": "refimpl",
        "fn": fn,
        "correct": bug is None,
        "bug": bug,
        "parameter": parameter,
        "source": source,
        "report": report,
        "dtype": dtype,
        "features": list(features),
    }


CATALOG = [
    _entry("np-abmil-mask-multiply", "attend_mask_multiply", "mask-multiplied-into-scores",
           "bool keep-mask multiplied into the scores (dropped scores become 0, not -inf)",
           "georg-wolflein/good-features#1", "pull"),
    _entry("np-protenix-fallback-unscaled", "attend_protenix_fallback", "fallback-path-unscaled-logits",
           "eager fallback path omits the softmax scale (scores q.k unscaled)",
           "bytedance/Protenix#159"),
    _entry("np-tinygrad-default-float", "attend_default_float", "intermediates-in-default-float32",
           "float64 inputs computed in the default float32 and cast back",
           "tinygrad/tinygrad#5100", "pull"),
    _entry("np-utensor-max-init-zero", "attend_row_loop_softmax", "row-max-initialised-to-zero",
           "softmax row max initialised to 0 instead of -inf (rows of very negative scores underflow)",
           "uTensor/uTensor#176", "pull"),
    _entry("np-pointergen-mask-after-softmax", "attend_softmax_then_mask", "mask-after-softmax-renormalised",
           "mask applied after an unmasked softmax and renormalised (0/0 on fully masked rows)",
           "abisee/pointer-generator#88"),
    _entry("np-attngan-mask-fold-order", "attend_folded_heads", "mask-folded-head-major",
           "mask folded (heads, batch) while q/k/v are folded (batch, heads)",
           "taoxugit/AttnGAN#93"),
    _entry("np-mca-fill-plus-inf", "attend_masked_fill_value", "mask-fill-positive-infinity",
           "masked_fill value -float('-inf') = +inf for dropped positions",
           "lucidrains/memory-compressed-attention#2"),
    _entry("np-cudatutorial-running-sum", "attend_tiled_running_sum", "online-denominator-not-rescaled",
           "running softmax denominator l not multiplied by exp(m_old - m_new) between key tiles",
           "PaddleJitLab/CUDATutorial#69"),
    _entry("np-deepmd-exp-raw-scores", "attend_segment_softmax", "masked-exp-overflow-inf-times-zero",
           "exp taken of raw scores before masking; a dropped score far above the kept max gives inf * 0",
           "deepmodeling/deepmd-kit#5717", "pull"),
    _entry("np-online-tiles", "attend_online_tiles"),
    _entry("np-two-pass-chunks", "attend_two_pass_chunks"),
    _entry("np-exp2-log2-scores", "attend_exp2"),
]
