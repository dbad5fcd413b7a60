"""Held-out attention kernels for the `refimpl` API: fn(q, k, v, mask=None, scale=None), NumPy.

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); mask is None or a bool keep-mask (True = attend)
broadcastable to (..., Sq, Sk). A row with no kept key returns zeros. Each broken kernel carries exactly
one mistake adapted from a public report (see CATALOG); the correct ones are alternative formulations.
"""
import math

import numpy as np


def _keep(mask, shape):
    if mask is None:
        return np.ones(shape, dtype=bool)
    return np.broadcast_to(np.asarray(mask, dtype=bool), shape)


# ---------------------------------------------------------------------------------------------------------
# lucidrains-style einsum attention; scale taken from the model width (lucidrains/vit-pytorch#65)
def attend_vit_style(q, k, v, mask=None, scale=None):
    dim_head = q.shape[-1]
    heads = q.shape[-3] if q.ndim >= 3 else 1
    if scale is None:
        # BUG: scale from the full model width heads * dim_head instead of the per-head dim
        scale = (heads * dim_head) ** -0.5
    sim = np.einsum('...id,...jd->...ij', q, k) * scale
    keep = _keep(mask, sim.shape)
    sim = np.where(keep, sim, -np.inf)
    row_max = np.max(sim, axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    attn = np.exp(sim - row_max)
    denom = attn.sum(axis=-1, keepdims=True)
    attn = attn / np.where(denom > 0, denom, 1.0)
    out = np.einsum('...ij,...jd->...id', attn, v)
    return out.astype(q.dtype, copy=False)


# ---------------------------------------------------------------------------------------------------------
# RibonanzaNet-style masked_fill; the fill value is a tiny negative (Shujun-He/RibonanzaNet#5)
def attend_masked_fill(q, k, v, mask=None, scale=None):
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = _keep(mask, scores.shape)
    # BUG: padding fill -1e-9 is ~0, so masked keys keep almost their full weight (should be -1e9 / -inf)
    scores = np.where(keep, scores, -1e-9)
    scores = scores - scores.max(axis=-1, keepdims=True)
    w = np.exp(scores)
    w = w / w.sum(axis=-1, keepdims=True)
    w = np.where(keep.any(axis=-1, keepdims=True), w, 0.0)
    return np.matmul(w, v).astype(q.dtype, copy=False)


# ---------------------------------------------------------------------------------------------------------
# apex ScaledMaskedSoftmax-style: finite fill, dead rows not zeroed (NVIDIA/apex#1390)
def attend_scaled_masked_softmax(q, k, v, mask=None, scale=None):
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    x = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = _keep(mask, x.shape)
    # BUG: masked scores set to the dtype's lowest value and fully masked rows never zeroed -> mean of V
    x = np.where(keep, x, np.finfo(x.dtype).min)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    probs = e / e.sum(axis=-1, keepdims=True)
    return np.matmul(probs, v).astype(q.dtype, copy=False)


# ---------------------------------------------------------------------------------------------------------
# Triton-blog style softmax written by hand (triton-lang/triton#230)
def attend_naive_softmax(q, k, v, mask=None, scale=None):
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    x = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = _keep(mask, x.shape)
    x = np.where(keep, x, -np.inf)
    x_max = np.max(x, axis=-1, keepdims=True)
    z = x - np.where(np.isfinite(x_max), x_max, 0.0)
    with np.errstate(over='ignore', invalid='ignore'):
        # BUG: numerator uses exp(x) of the unshifted scores instead of exp(z); overflows for large logits
        numerator = np.exp(x)
        denominator = numerator.sum(axis=-1, keepdims=True)
        p = numerator / np.where(denominator > 0, denominator, 1.0)
    del z
    return np.matmul(p, v).astype(q.dtype, copy=False)


# ---------------------------------------------------------------------------------------------------------
# CPU flash attention (lazy softmax over key blocks), no guard for -inf - -inf (pytorch/pytorch#130014)
def attend_cpu_flash(q, k, v, mask=None, scale=None):
    block_n = 16
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    keep = _keep(mask, batch + (sq, sk))
    acc = np.zeros(batch + (sq, dv), dtype=np.float64)
    row_max = np.full(batch + (sq, 1), -np.inf)
    row_sum = np.zeros(batch + (sq, 1))
    with np.errstate(invalid='ignore'):
        for n0 in range(0, sk, block_n):
            n1 = min(n0 + block_n, sk)
            s = np.matmul(q, np.swapaxes(k[..., n0:n1, :], -1, -2)).astype(np.float64) * scale
            s = np.where(keep[..., n0:n1], s, -np.inf)
            new_max = np.maximum(row_max, s.max(axis=-1, keepdims=True))
            # BUG: no check for a fully masked block: exp(-inf - (-inf)) = NaN poisons the running sums
            alpha = np.exp(row_max - new_max)
            p = np.exp(s - new_max)
            row_sum = row_sum * alpha + p.sum(axis=-1, keepdims=True)
            acc = acc * alpha + np.matmul(p, v[..., n0:n1, :])
            row_max = new_max
        out = acc / np.where(row_sum > 0, row_sum, 1.0)
    return out.astype(q.dtype)


# ---------------------------------------------------------------------------------------------------------
# SYCL-TLA style prefill: only full QK_BLK_N tiles are visited (intel/sycl-tla#489)
def attend_prefill_tiles(q, k, v, mask=None, scale=None):
    blk_n = 32
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    keep = _keep(mask, batch + (sq, sk))
    acc = np.zeros(batch + (sq, dv))
    m = np.full(batch + (sq, 1), -np.inf)
    l_sum = np.zeros(batch + (sq, 1))
    # BUG: the loop bound drops the remainder tile when Sk % QK_BLK_N != 0
    n_tiles = sk // blk_n
    for t in range(n_tiles):
        sl = slice(t * blk_n, (t + 1) * blk_n)
        s = np.matmul(q, np.swapaxes(k[..., sl, :], -1, -2)) * scale
        s = np.where(keep[..., sl], s, -np.inf)
        m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
        m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
        alpha = np.where(np.isfinite(m), np.exp(m - m_safe), 0.0)
        p = np.exp(s - m_safe)
        l_sum = l_sum * alpha + p.sum(axis=-1, keepdims=True)
        acc = acc * alpha + np.matmul(p, v[..., sl, :])
        m = m_new
    out = acc / np.where(l_sum > 0, l_sum, 1.0)
    return out.astype(q.dtype)


# ---------------------------------------------------------------------------------------------------------
# x-transformers style: flash path expects True = masked (lucidrains/x-transformers#160)
def attend_xtransformers(q, k, v, mask=None, scale=None):
    d = q.shape[-1]
    scale = d ** -0.5 if scale is None else scale
    sim = np.einsum('...id,...jd->...ij', q, k) * scale
    if mask is not None:
        m = np.broadcast_to(np.asarray(mask, dtype=bool), sim.shape)
        # BUG: the keep-mask is used with the "True = masked out" convention, so kept keys are dropped
        sim = np.where(m, -np.inf, sim)
    mx = sim.max(axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    attn = np.exp(sim - mx)
    z = attn.sum(axis=-1, keepdims=True)
    attn = attn / np.where(z > 0, z, 1.0)
    return np.einsum('...ij,...jd->...id', attn, v).astype(q.dtype, copy=False)


# ---------------------------------------------------------------------------------------------------------
# TileLang flash example: running max keeps only the current tile's max (tile-ai/tilelang#1148)
def attend_tilelang_flash(q, k, v, mask=None, scale=None):
    block_n = 32
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    keep = _keep(mask, batch + (sq, sk))
    acc_o = np.zeros(batch + (sq, dv))
    scores_max = np.full(batch + (sq, 1), -np.inf)
    logsum = np.zeros(batch + (sq, 1))
    with np.errstate(over='ignore', invalid='ignore'):
        for n0 in range(0, sk, block_n):
            n1 = min(sk, n0 + block_n)
            acc_s = np.matmul(q, np.swapaxes(k[..., n0:n1, :], -1, -2)) * scale
            acc_s = np.where(keep[..., n0:n1], acc_s, -np.inf)
            scores_max_prev = scores_max
            tile_max = acc_s.max(axis=-1, keepdims=True)
            # BUG: the new max is the tile's max only, not max(previous max, tile max)
            scores_max = np.where(np.isfinite(tile_max), tile_max, scores_max_prev)
            ref = np.where(np.isfinite(scores_max), scores_max, 0.0)
            scale_prev = np.where(np.isfinite(scores_max_prev), np.exp(scores_max_prev - ref), 0.0)
            p = np.exp(acc_s - ref)
            logsum = logsum * scale_prev + p.sum(axis=-1, keepdims=True)
            acc_o = acc_o * scale_prev + np.matmul(p, v[..., n0:n1, :])
        out = acc_o / np.where(logsum > 0, logsum, 1.0)
    return out.astype(q.dtype)


# ---------------------------------------------------------------------------------------------------------
# correct: FlashAttention-2 style online softmax over key blocks, guarded for empty blocks and rows
def attend_online_softmax(q, k, v, mask=None, scale=None):
    block_n = 24
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    keep = _keep(mask, batch + (sq, sk))
    qf, kf, vf = (t.astype(np.float64) for t in (q, k, v))
    acc = np.zeros(batch + (sq, dv))
    m_i = np.full(batch + (sq, 1), -np.inf)
    l_i = np.zeros(batch + (sq, 1))
    for n0 in range(0, sk, block_n):
        n1 = min(sk, n0 + block_n)
        s = np.matmul(qf, np.swapaxes(kf[..., n0:n1, :], -1, -2)) * scale
        kb = keep[..., n0:n1]
        s = np.where(kb, s, -np.inf)
        m_new = np.maximum(m_i, s.max(axis=-1, keepdims=True))
        m_use = np.where(np.isfinite(m_new), m_new, 0.0)
        alpha = np.where(np.isfinite(m_i), np.exp(m_i - m_use), 0.0)
        p = np.where(kb, np.exp(s - m_use), 0.0)
        l_i = alpha * l_i + p.sum(axis=-1, keepdims=True)
        acc = alpha * acc + np.matmul(p, vf[..., n0:n1, :])
        m_i = m_new
    out = np.where(l_i > 0, acc / np.where(l_i > 0, l_i, 1.0), 0.0)
    return out.astype(q.dtype)


# ---------------------------------------------------------------------------------------------------------
# correct: two-pass key-chunked attention (global log-sum-exp first, then normalised weights per chunk)
def attend_two_pass_chunked(q, k, v, mask=None, scale=None):
    chunk = 40
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    keep = _keep(mask, batch + (sq, sk))
    qf, kf, vf = (t.astype(np.float64) for t in (q, k, v))
    starts = list(range(0, sk, chunk))

    def logits(c0):
        c1 = min(sk, c0 + chunk)
        s = np.matmul(qf, np.swapaxes(kf[..., c0:c1, :], -1, -2)) * scale
        return np.where(keep[..., c0:c1], s, -np.inf), c1

    row_max = np.full(batch + (sq, 1), -np.inf)
    for c0 in starts:
        s, _ = logits(c0)
        row_max = np.maximum(row_max, s.max(axis=-1, keepdims=True))
    alive = np.isfinite(row_max)
    shift = np.where(alive, row_max, 0.0)
    total = np.zeros(batch + (sq, 1))
    for c0 in starts:
        s, _ = logits(c0)
        total += np.exp(s - shift).sum(axis=-1, keepdims=True)
    lse = np.where(alive, shift + np.log(np.where(alive, total, 1.0)), np.inf)
    out = np.zeros(batch + (sq, dv))
    for c0 in starts:
        s, c1 = logits(c0)
        out += np.matmul(np.exp(s - lse), vf[..., c0:c1, :])
    return out.astype(q.dtype)


def _entry(name, fn, bug=None, parameter=None, source=None, kind="issues", dtype="float64"):
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
        "features": ["mask", "dv-ne-d"],
    }


CATALOG = [
    _entry("np-vit-model-dim-scale", "attend_vit_style", "scale-uses-model-width",
           "default softmax scale (heads * head_dim) ** -0.5 instead of head_dim ** -0.5",
           "lucidrains/vit-pytorch#65"),
    _entry("np-ribonanza-tiny-fill", "attend_masked_fill", "mask-fill-value-too-small",
           "masked score fill value -1e-9 (effectively 0) instead of -inf",
           "Shujun-He/RibonanzaNet#5"),
    _entry("np-apex-dead-row-uniform", "attend_scaled_masked_softmax", "fully-masked-row-uniform",
           "fully masked rows averaged over all values instead of returning zeros",
           "NVIDIA/apex#1390"),
    _entry("np-triton-blog-unshifted-exp", "attend_naive_softmax", "softmax-without-max-subtraction",
           "softmax numerator exp(x) uses the unshifted scores (overflow for large logits)",
           "triton-lang/triton#230"),
    _entry("np-cpu-flash-inf-minus-inf", "attend_cpu_flash", "online-softmax-nan-on-masked-block",
           "rescale factor exp(m_old - m_new) not guarded when a key block is fully masked",
           "pytorch/pytorch#130014", "pull"),
    _entry("np-sycl-prefill-tail", "attend_prefill_tiles", "tail-key-tile-dropped",
           "key-tile loop bound Sk // BLOCK_N drops the last partial tile",
           "intel/sycl-tla#489", "pull"),
    _entry("np-xtransformers-inverted-mask", "attend_xtransformers", "keep-mask-inverted",
           "bool keep-mask applied with the True = masked-out convention",
           "lucidrains/x-transformers#160"),
    _entry("np-tilelang-tile-max", "attend_tilelang_flash", "online-softmax-running-max-not-kept",
           "running row max replaced by the current tile max instead of max(previous, tile)",
           "tile-ai/tilelang#1148", "pull"),
    _entry("np-online-softmax", "attend_online_softmax"),
    _entry("np-two-pass-chunked", "attend_two_pass_chunked"),
]
