"""Held-out attention backward kernels for the `numpy-backward` API.

fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv): the gradients of the `refimpl` forward
O = softmax(scale * q k^T masked by the keep-mask) v for loss = sum(d_out * O). q (..., Sq, D),
k (..., Sk, D), v (..., Sk, Dv); k/v may have a head axis of size 1 broadcast against q's heads (dk, dv come
back with k/v's shape, summed over the broadcast axis); rows with no kept key have zero output and zero
gradients; results in the input dtype. Broken kernels carry one mistake each, adapted from the public
report named in CATALOG.
"""
import math

import numpy as np

LOG2E = 1.4426950408889634


def _scale_of(q, scale):
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def _lead(q, k, v):
    return np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])


def _keep_for(mask, shape):
    if mask is None:
        return np.ones(shape, dtype=bool)
    return np.broadcast_to(np.asarray(mask, dtype=bool), shape)


def _sum_to(x, shape):
    """Reduce a broadcast gradient back to `shape`."""
    extra = x.ndim - len(shape)
    if extra > 0:
        x = x.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    if axes:
        x = x.sum(axis=axes, keepdims=True)
    return x


def _forward_lse(q, k, v, keep, sc):
    """Output and natural-log LSE (-inf on rows with no kept key)."""
    s = np.where(keep, (q @ np.swapaxes(k, -1, -2)) * sc, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(s - m)
    z = p.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        lse = np.log(z) + m
    out = (p / np.where(z > 0, z, 1.0)) @ v
    return out, lse


def _probs_from_lse(s, lse):
    # +inf for dead rows, as FlashAttention stores it, so exp(-inf - inf) = 0
    return np.exp(s - np.where(np.isneginf(lse), np.inf, lse))


# -------------------------------------------------------------------------------------------------------
# Triton fused-attention tutorial backward: per key block, queries walked from `lo` (triton-lang/triton#5660)
def bwd_triton_tutorial(q, k, v, d_out, mask=None, scale=None):
    BLOCK_M, BLOCK_N = 32, 32
    sm_scale = _scale_of(q, scale)
    lead = _lead(q, k, v)
    n_ctx_q, n_ctx_k = q.shape[-2], k.shape[-2]
    keep = _keep_for(mask, lead + (n_ctx_q, n_ctx_k))
    o, lse = _forward_lse(q, k, v, keep, sm_scale)
    delta = (o * d_out).sum(axis=-1, keepdims=True)
    dq = np.zeros(lead + q.shape[-2:])
    dk = np.zeros(lead + k.shape[-2:])
    dv = np.zeros(lead + v.shape[-2:])
    for start_n in range(0, n_ctx_k, BLOCK_N):
        k_blk, v_blk = k[..., start_n:start_n + BLOCK_N, :], v[..., start_n:start_n + BLOCK_N, :]
        lo = start_n  # BUG: causal-only start; without a causal mask queries above the key block are skipped
        for start_m in range(lo, n_ctx_q, BLOCK_M):
            rows = slice(start_m, start_m + BLOCK_M)
            qk = (q[..., rows, :] @ np.swapaxes(k_blk, -1, -2)) * sm_scale
            qk = np.where(keep[..., rows, start_n:start_n + BLOCK_N], qk, -np.inf)
            p = _probs_from_lse(qk, lse[..., rows, :])
            do = d_out[..., rows, :]
            dv[..., start_n:start_n + BLOCK_N, :] += np.swapaxes(p, -1, -2) @ do
            dp = do @ np.swapaxes(v_blk, -1, -2)
            ds = p * (dp - delta[..., rows, :]) * sm_scale
            dk[..., start_n:start_n + BLOCK_N, :] += np.swapaxes(ds, -1, -2) @ q[..., rows, :]
            dq[..., rows, :] += ds @ k_blk
    return (_sum_to(dq, q.shape).astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype),
            _sum_to(dv, v.shape).astype(v.dtype))


# -------------------------------------------------------------------------------------------------------
# gluon-prefill style: exp2 fast path stores a base-2 LSE that the backward reads (lightseekorg/tokenspeed#571)
def bwd_exp2_lse(q, k, v, d_out, mask=None, scale=None):
    sc = _scale_of(q, scale)
    lead = _lead(q, k, v)
    keep = _keep_for(mask, lead + (q.shape[-2], k.shape[-2]))
    # forward in base 2
    s2 = np.where(keep, (q @ np.swapaxes(k, -1, -2)) * (sc * LOG2E), -np.inf)
    m2 = s2.max(axis=-1, keepdims=True)
    m2 = np.where(np.isfinite(m2), m2, 0.0)
    p2 = np.exp2(s2 - m2)
    l2 = p2.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        lse = m2 + np.log2(l2)
    o = (p2 / np.where(l2 > 0, l2, 1.0)) @ v
    # backward
    s = np.where(keep, (q @ np.swapaxes(k, -1, -2)) * sc, -np.inf)
    p = _probs_from_lse(s, lse)  # BUG: natural-log recompute exp(s - lse) fed a base-2 LSE
    dv = np.swapaxes(p, -1, -2) @ d_out
    dp = d_out @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (o * d_out).sum(axis=-1, keepdims=True))
    dq = (ds @ k) * sc
    dk = (np.swapaxes(ds, -1, -2) @ q) * sc
    return (_sum_to(dq, q.shape).astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype),
            _sum_to(dv, v.shape).astype(v.dtype))


# -------------------------------------------------------------------------------------------------------
# FlashAttention-2 backward sketch: key tiles of 64, dQ written per tile (Dao-AILab/flash-attention#359)
def bwd_key_tiles_dq(q, k, v, d_out, mask=None, scale=None):
    kBlockN = 64
    sc = _scale_of(q, scale)
    lead = _lead(q, k, v)
    seqlen_k = k.shape[-2]
    keep = _keep_for(mask, lead + (q.shape[-2], seqlen_k))
    o, lse = _forward_lse(q, k, v, keep, sc)
    dpsum = (o * d_out).sum(axis=-1, keepdims=True)
    dq = np.zeros(lead + q.shape[-2:])
    dk = np.zeros(lead + k.shape[-2:])
    dv = np.zeros(lead + v.shape[-2:])
    for n_block in range(0, seqlen_k, kBlockN):
        cols = slice(n_block, n_block + kBlockN)
        scores = np.where(keep[..., cols], (q @ np.swapaxes(k[..., cols, :], -1, -2)) * sc, -np.inf)
        P = _probs_from_lse(scores, lse)
        dv[..., cols, :] = np.swapaxes(P, -1, -2) @ d_out
        dP = d_out @ np.swapaxes(v[..., cols, :], -1, -2)
        dS = P * (dP - dpsum)
        dk[..., cols, :] = (np.swapaxes(dS, -1, -2) @ q) * sc
        dq[...] = (dS @ k[..., cols, :]) * sc  # BUG: dQ stored for each key tile instead of accumulated
    return (_sum_to(dq, q.shape).astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype),
            _sum_to(dv, v.shape).astype(v.dtype))


# -------------------------------------------------------------------------------------------------------
# splash-style fused backward: dK/dV scratch accumulated over q steps (AI-Hypercomputer/maxdiffusion#485)
def bwd_splash_scratch(q, k, v, d_out, mask=None, scale=None):
    block_q, block_kv = 32, 48
    sc = _scale_of(q, scale)
    lead = _lead(q, k, v)
    q_len, kv_len = q.shape[-2], k.shape[-2]
    keep = _keep_for(mask, lead + (q_len, kv_len))
    o, lse = _forward_lse(q, k, v, keep, sc)
    di = (o * d_out).sum(axis=-1, keepdims=True)
    dq = np.zeros(lead + q.shape[-2:])
    dk = np.zeros(lead + k.shape[-2:])
    dv = np.zeros(lead + v.shape[-2:])
    for j in range(0, kv_len, block_kv):
        kv = slice(j, j + block_kv)
        for step_q in range(0, q_len, block_q):
            dk_scratch = np.zeros(lead + k[..., kv, :].shape[-2:])  # BUG: scratch re-initialised every q step
            dv_scratch = np.zeros(lead + v[..., kv, :].shape[-2:])
            qs = slice(step_q, step_q + block_q)
            s = np.where(keep[..., qs, kv], (q[..., qs, :] @ np.swapaxes(k[..., kv, :], -1, -2)) * sc, -np.inf)
            p = _probs_from_lse(s, lse[..., qs, :])
            dv_scratch = dv_scratch + np.swapaxes(p, -1, -2) @ d_out[..., qs, :]
            ds = p * (d_out[..., qs, :] @ np.swapaxes(v[..., kv, :], -1, -2) - di[..., qs, :])
            dk_scratch = dk_scratch + (np.swapaxes(ds, -1, -2) @ q[..., qs, :]) * sc
            dq[..., qs, :] += (ds @ k[..., kv, :]) * sc
        dk[..., kv, :] = dk_scratch
        dv[..., kv, :] = dv_scratch
    return (_sum_to(dq, q.shape).astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype),
            _sum_to(dv, v.shape).astype(v.dtype))


# -------------------------------------------------------------------------------------------------------
# layer-library softmax backward grad_in = y * (g - sum(g)) (RoboticsClubIITJ/ML-DL-implementation#153)
def _softmax_backward(y, g):
    return y * (g - g.sum(axis=-1, keepdims=True))  # BUG: the sum must be sum(g * y), not sum(g)


def bwd_softmax_layer(q, k, v, d_out, mask=None, scale=None):
    sc = _scale_of(q, scale)
    lead = _lead(q, k, v)
    keep = _keep_for(mask, lead + (q.shape[-2], k.shape[-2]))
    z = np.where(keep, (q @ np.swapaxes(k, -1, -2)) * sc, -np.inf)
    zmax = z.max(axis=-1, keepdims=True)
    y = np.exp(z - np.where(np.isfinite(zmax), zmax, 0.0))
    tot = y.sum(axis=-1, keepdims=True)
    y = y / np.where(tot > 0, tot, 1.0)
    dv = np.swapaxes(y, -1, -2) @ d_out
    dy = d_out @ np.swapaxes(v, -1, -2)
    dz = _softmax_backward(y, dy) * sc
    dq = dz @ k
    dk = np.swapaxes(dz, -1, -2) @ q
    return (_sum_to(dq, q.shape).astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype),
            _sum_to(dv, v.shape).astype(v.dtype))


# -------------------------------------------------------------------------------------------------------
# engine-level SDPA backward with its own dScores path (ooples/AiDotNet.Tensors#49)
def bwd_engine_sdpa(q, k, v, d_out, mask=None, scale=None):
    scale_f = _scale_of(q, scale)
    lead = _lead(q, k, v)
    keep = _keep_for(mask, lead + (q.shape[-2], k.shape[-2]))
    scores = np.where(keep, (q @ np.swapaxes(k, -1, -2)) * scale_f, -np.inf)
    mx = scores.max(axis=-1, keepdims=True)
    attn_w = np.exp(scores - np.where(np.isfinite(mx), mx, 0.0))
    den = attn_w.sum(axis=-1, keepdims=True)
    attn_w = attn_w / np.where(den > 0, den, 1.0)
    d_v = np.swapaxes(attn_w, -1, -2) @ d_out
    d_attn_w = d_out @ np.swapaxes(v, -1, -2)
    d_scores = attn_w * (d_attn_w - (attn_w * d_attn_w).sum(axis=-1, keepdims=True))
    d_q = d_scores @ k  # BUG: the softmax scale is not applied to dQ
    d_k = (np.swapaxes(d_scores, -1, -2) @ q) * scale_f
    return (_sum_to(d_q, q.shape).astype(q.dtype), _sum_to(d_k, k.shape).astype(k.dtype),
            _sum_to(d_v, v.shape).astype(v.dtype))


# -------------------------------------------------------------------------------------------------------
# kernl-style backward: masked scores clamped to a finite minimum to avoid NaN (ELS-RD/kernl#200)
def bwd_clamped_mask(q, k, v, d_out, mask=None, scale=None):
    sm_scale = _scale_of(q, scale)
    lead = _lead(q, k, v)
    keep = _keep_for(mask, lead + (q.shape[-2], k.shape[-2]))
    min_clamp_value = np.finfo(np.float64).min
    qk = (q @ np.swapaxes(k, -1, -2)) * sm_scale
    qk = np.where(keep, qk, min_clamp_value)  # BUG: finite fill; a fully masked row becomes uniform, not zero
    m = qk.max(axis=-1, keepdims=True)
    p = np.exp(qk - m)
    p = p / p.sum(axis=-1, keepdims=True)
    o = p @ v
    dv = np.swapaxes(p, -1, -2) @ d_out
    dp = d_out @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (o * d_out).sum(axis=-1, keepdims=True)) * sm_scale
    dq = ds @ k
    dk = np.swapaxes(ds, -1, -2) @ q
    return (_sum_to(dq, q.shape).astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype),
            _sum_to(dv, v.shape).astype(v.dtype))


# -------------------------------------------------------------------------------------------------------
# ROCm Triton flash backward: probabilities recomputed from the raw dot product (ROCm/triton#514)
def bwd_recompute_qk(q, k, v, d_out, mask=None, scale=None):
    sm_scale = _scale_of(q, scale)
    lead = _lead(q, k, v)
    keep = _keep_for(mask, lead + (q.shape[-2], k.shape[-2]))
    o, L = _forward_lse(q, k, v, keep, sm_scale)
    D = (o * d_out).sum(axis=-1, keepdims=True)
    qk = np.where(keep, q @ np.swapaxes(k, -1, -2), -np.inf)
    p = _probs_from_lse(qk, L)  # BUG: qk not multiplied by sm_scale before exp(qk - L)
    dv = np.swapaxes(p, -1, -2) @ d_out
    dp = d_out @ np.swapaxes(v, -1, -2) - D
    ds = p * dp * sm_scale
    dk = np.swapaxes(ds, -1, -2) @ q
    dq = ds @ k
    return (_sum_to(dq, q.shape).astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype),
            _sum_to(dv, v.shape).astype(v.dtype))


# -------------------------------------------------------------------------------------------------------
# early Triton tutorial layout: forward keeps (acc, l, m) and the preprocess builds Delta (triton-lang/triton#1934)
def bwd_tutorial_preprocess(q, k, v, d_out, mask=None, scale=None):
    sc = _scale_of(q, scale)
    lead = _lead(q, k, v)
    keep = _keep_for(mask, lead + (q.shape[-2], k.shape[-2]))
    qk = np.where(keep, (q @ np.swapaxes(k, -1, -2)) * sc, -np.inf)
    m = qk.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p_unnorm = np.exp(qk - m)
    l_i = p_unnorm.sum(axis=-1, keepdims=True)
    acc = p_unnorm @ v
    denom = np.where(l_i > 0, l_i, 1.0)
    delta = (acc * d_out).sum(axis=-1, keepdims=True)  # BUG: uses the unnormalised accumulator, not acc / l
    p = p_unnorm / denom
    dv = np.swapaxes(p, -1, -2) @ d_out
    ds = p * (d_out @ np.swapaxes(v, -1, -2) - delta)
    dq = (ds @ k) * sc
    dk = (np.swapaxes(ds, -1, -2) @ q) * sc
    return (_sum_to(dq, q.shape).astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype),
            _sum_to(dv, v.shape).astype(v.dtype))


# -------------------------------------------------------------------------------------------------------
# correct: dense backward with a safe softmax
def bwd_dense(q, k, v, d_out, mask=None, scale=None):
    sc = _scale_of(q, scale)
    lead = _lead(q, k, v)
    keep = _keep_for(mask, lead + (q.shape[-2], k.shape[-2]))
    s = np.where(keep, (q @ np.swapaxes(k, -1, -2)) * sc, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    p = np.exp(s - np.where(np.isfinite(m), m, 0.0))
    z = p.sum(axis=-1, keepdims=True)
    p = p / np.where(z > 0, z, 1.0)
    o = p @ v
    dv = np.swapaxes(p, -1, -2) @ d_out
    dp = d_out @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (d_out * o).sum(axis=-1, keepdims=True))
    dq = (ds @ k) * sc
    dk = (np.swapaxes(ds, -1, -2) @ q) * sc
    return (_sum_to(dq, q.shape).astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype),
            _sum_to(dv, v.shape).astype(v.dtype))


# -------------------------------------------------------------------------------------------------------
# correct: FlashAttention-2 style tiled backward (key blocks of 40 outer, query blocks of 24 inner)
def bwd_flash2_tiled(q, k, v, d_out, mask=None, scale=None):
    BM, BN = 24, 40
    sc = _scale_of(q, scale)
    lead = _lead(q, k, v)
    sq, sk = q.shape[-2], k.shape[-2]
    keep = _keep_for(mask, lead + (sq, sk))
    o, lse = _forward_lse(q, k, v, keep, sc)
    delta = (o * d_out).sum(axis=-1, keepdims=True)
    dq = np.zeros(lead + q.shape[-2:])
    dk = np.zeros(lead + k.shape[-2:])
    dv = np.zeros(lead + v.shape[-2:])
    for n0 in range(0, sk, BN):
        cols = slice(n0, n0 + BN)
        dk_acc = np.zeros(lead + k[..., cols, :].shape[-2:])
        dv_acc = np.zeros(lead + v[..., cols, :].shape[-2:])
        for m0 in range(0, sq, BM):
            rows = slice(m0, m0 + BM)
            s = np.where(keep[..., rows, cols], (q[..., rows, :] @ np.swapaxes(k[..., cols, :], -1, -2)) * sc,
                         -np.inf)
            p = _probs_from_lse(s, lse[..., rows, :])
            dv_acc = dv_acc + np.swapaxes(p, -1, -2) @ d_out[..., rows, :]
            ds = p * (d_out[..., rows, :] @ np.swapaxes(v[..., cols, :], -1, -2) - delta[..., rows, :])
            dk_acc = dk_acc + np.swapaxes(ds, -1, -2) @ q[..., rows, :]
            dq[..., rows, :] += (ds @ k[..., cols, :]) * sc
        dk[..., cols, :] = dk_acc * sc
        dv[..., cols, :] = dv_acc
    return (_sum_to(dq, q.shape).astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype),
            _sum_to(dv, v.shape).astype(v.dtype))


def _entry(name, fn, bug=None, parameter=None, source=None, kind="issues", dtype="float64",
           features=("mask", "gqa", "dv-ne-d")):
    report = None
    if source is not None:
        repo, num = source.split("#")
        report = "https://github.com/{}/{}/{}".format(repo, kind, num)
    return {
        "name": name,
        "api": "numpy-backward",
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
    _entry("bwd-triton-causal-lo", "bwd_triton_tutorial", "query-loop-starts-at-key-block",
           "per key block the query loop starts at lo = start_n (causal assumption) without a causal mask",
           "triton-lang/triton#5660"),
    _entry("bwd-tokenspeed-base2-lse", "bwd_exp2_lse", "lse-base-mismatch",
           "base-2 LSE from an exp2 forward consumed by a natural-exp probability recompute",
           "lightseekorg/tokenspeed#571", "pull"),
    _entry("bwd-fa2-dq-stored-per-tile", "bwd_key_tiles_dq", "dq-overwritten-per-key-tile",
           "dQ assigned for each key tile instead of accumulated over key tiles",
           "Dao-AILab/flash-attention#359"),
    _entry("bwd-splash-scratch-reset", "bwd_splash_scratch", "dkdv-scratch-reset-per-query-step",
           "dK/dV scratch zeroed at every query step instead of once per key block",
           "AI-Hypercomputer/maxdiffusion#485", "pull"),
    _entry("bwd-layer-softmax-grad-sum", "bwd_softmax_layer", "softmax-grad-rowsum-without-probs",
           "softmax backward uses y * (g - sum(g)) instead of y * (g - sum(g * y))",
           "RoboticsClubIITJ/ML-DL-implementation#153", "pull"),
    _entry("bwd-engine-dq-unscaled", "bwd_engine_sdpa", "dq-missing-scale",
           "dQ = dScores @ K without the softmax scale",
           "ooples/AiDotNet.Tensors#49"),
    _entry("bwd-kernl-finite-clamp", "bwd_clamped_mask", "dead-row-uniform-gradients",
           "masked scores clamped to finfo.min: fully masked rows get uniform weights and non-zero gradients",
           "ELS-RD/kernl#200"),
    _entry("bwd-rocm-recompute-unscaled", "bwd_recompute_qk", "recompute-without-softmax-scale",
           "probabilities recomputed as exp(q.k - lse) without multiplying q.k by the softmax scale",
           "ROCm/triton#514"),
    _entry("bwd-tutorial-delta-unnormalised", "bwd_tutorial_preprocess", "delta-from-unnormalised-output",
           "Delta = rowsum(dO * acc) with the unnormalised accumulator instead of O = acc / l",
           "triton-lang/triton#1934"),
    _entry("bwd-dense", "bwd_dense"),
    _entry("bwd-flash2-tiled", "bwd_flash2_tiled"),
]
