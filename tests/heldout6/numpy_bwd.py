"""Held-out attention backward kernels for the `numpy-backward` API.

fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv): gradients of O = softmax(scale * q k^T, keep-mask) v
for loss = sum(d_out * O). k/v may carry a head axis of size 1 (multi-query) broadcast against q's heads; dk/dv
come back with k/v's shape. Rows with no kept key have zero output and zero gradients.
"""
import math

import numpy as np


def _sum_to(g, shape):
    """Reduce a broadcast gradient back to `shape`."""
    extra = g.ndim - len(shape)
    if extra > 0:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g


def _prep(q, k, v, d_out, mask, scale):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2], d_out.shape[:-2])
    shape = batch + (q.shape[-2], k.shape[-2])
    keep = np.ones(shape, dtype=bool) if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), shape)
    f = [t.astype(np.float64) for t in (q, k, v, d_out)]
    return f, keep, scale


def _probs(qf, kf, keep, scale):
    s = np.matmul(qf, np.swapaxes(kf, -1, -2)) * scale
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(s - m)
    z = p.sum(axis=-1, keepdims=True)
    return p / np.where(z > 0, z, 1.0)


def _cast(q, k, v, dq, dk, dv):
    return (dq.astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype), _sum_to(dv, v.shape).astype(v.dtype))


# ---------------------------------------------------------------------------------------------------------
# Levanter-style flash backward for GQA/MQA, dK/dV written per query head (marin-community/levanter#449)
def levanter_flash_bwd(q, k, v, d_out, mask=None, scale=None):
    (qf, kf, vf, dof), keep, scale = _prep(q, k, v, d_out, mask, scale)
    p = _probs(qf, kf, keep, scale)
    o = np.matmul(p, vf)
    delta = (dof * o).sum(axis=-1, keepdims=True)
    dp = np.matmul(dof, np.swapaxes(vf, -1, -2))
    ds = p * (dp - delta)
    dq = scale * np.matmul(ds, kf)
    if q.ndim < 3:
        return _cast(q, k, v, dq, scale * np.matmul(ds.T, qf), np.matmul(p.T, dof))
    hq, hk, hv = q.shape[-3], k.shape[-3], v.shape[-3]
    dk = np.zeros(ds.shape[:-3] + (hk,) + kf.shape[-2:])
    dv = np.zeros(ds.shape[:-3] + (hv,) + vf.shape[-2:])
    for h in range(ds.shape[-3]):
        dk_h = scale * np.matmul(np.swapaxes(ds[..., h, :, :], -1, -2), qf[..., h % hq, :, :])
        dv_h = np.matmul(np.swapaxes(p[..., h, :, :], -1, -2), dof[..., h % dof.shape[-3], :, :])
        # BUG: dK_j / dV_j stored per query head into the shared kv slot (=) instead of summed over the group (+=)
        dk[..., h % hk, :, :] = dk_h
        dv[..., h % hv, :, :] = dv_h
    return _cast(q, k, v, dq, dk, dv)


# ---------------------------------------------------------------------------------------------------------
# NSA-triton style split backward: dkdv pass, then dq pass (XunhaoLai/native-sparse-attention-triton#27)
def nsa_split_bwd(q, k, v, d_out, mask=None, scale=None):
    (qf, kf, vf, dof), keep, scale = _prep(q, k, v, d_out, mask, scale)
    qk_head_dim = q.shape[-1]
    p = _probs(qf, kf, keep, scale)
    o = np.matmul(p, vf)
    delta = (o * dof).sum(axis=-1, keepdims=True)
    # backward_dkdv
    dv = np.matmul(np.swapaxes(p, -1, -2), dof)
    ds = p * (np.matmul(dof, np.swapaxes(vf, -1, -2)) - delta)
    dk = scale * np.matmul(np.swapaxes(ds, -1, -2), qf)
    # backward_dq
    # BUG: v / dO extents declared with qk_head_dim, so value channels beyond it are dropped from dp
    dp_q = np.matmul(dof[..., :qk_head_dim], np.swapaxes(vf[..., :qk_head_dim], -1, -2))
    dq = scale * np.matmul(p * (dp_q - delta), kf)
    return _cast(q, k, v, dq, dk, dv)


# ---------------------------------------------------------------------------------------------------------
# nn.MultiheadAttention need_weights path: softmax + bmm, backward by hand (pytorch/pytorch#41508)
def mha_weights_bwd(q, k, v, d_out, mask=None, scale=None):
    (qf, kf, vf, dof), keep, scale = _prep(q, k, v, d_out, mask, scale)
    attn = np.matmul(qf, np.swapaxes(kf, -1, -2)) * scale
    attn = np.where(keep, attn, -np.inf)
    with np.errstate(invalid='ignore'):
        # BUG: plain softmax: a fully masked row is 0/0 = NaN and its NaN flows into every gradient
        attn = np.exp(attn - attn.max(axis=-1, keepdims=True))
        attn = attn / attn.sum(axis=-1, keepdims=True)
        out = np.matmul(attn, vf)
        dv = np.matmul(np.swapaxes(attn, -1, -2), dof)
        d_attn = np.matmul(dof, np.swapaxes(vf, -1, -2))
        d_scores = attn * (d_attn - (dof * out).sum(axis=-1, keepdims=True))
        dq = scale * np.matmul(d_scores, kf)
        dk = scale * np.matmul(np.swapaxes(d_scores, -1, -2), qf)
    return _cast(q, k, v, dq, dk, dv)


# ---------------------------------------------------------------------------------------------------------
# cTensor-style GradFn_softmax (pocketpy/cTensor#31)
def ctensor_softmax_bwd(q, k, v, d_out, mask=None, scale=None):
    (qf, kf, vf, dof), keep, scale = _prep(q, k, v, d_out, mask, scale)
    y = _probs(qf, kf, keep, scale)
    dv = np.matmul(np.swapaxes(y, -1, -2), dof)
    g = np.matmul(dof, np.swapaxes(vf, -1, -2))
    # BUG: only the Jacobian diagonal y * (1 - y) is used; the full JVP is y * (g - sum(g * y))
    dx = y * (1.0 - y) * g
    dq = scale * np.matmul(dx, kf)
    dk = scale * np.matmul(np.swapaxes(dx, -1, -2), qf)
    return _cast(q, k, v, dq, dk, dv)


# ---------------------------------------------------------------------------------------------------------
# Triton fused-attention tutorial backward: P recomputed from the saved LSE (triton-lang/triton#4541)
def triton_tutorial_bwd(q, k, v, d_out, mask=None, scale=None):
    (qf, kf, vf, dof), keep, scale = _prep(q, k, v, d_out, mask, scale)
    # forward: O and M (= logsumexp), mask honoured
    qk = np.matmul(qf, np.swapaxes(kf, -1, -2)) * scale
    s = np.where(keep, qk, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    alive = np.isfinite(m)
    mm = np.where(alive, m, 0.0)
    lse = np.where(alive, mm + np.log(np.where(alive, np.exp(s - mm).sum(axis=-1, keepdims=True), 1.0)), np.inf)
    o = np.matmul(np.exp(s - lse), vf)
    # backward
    delta = (o * dof).sum(axis=-1, keepdims=True)
    # BUG: the backward kernel recomputes P without the mask the forward pass applied
    p = np.exp(qk - lse)
    dv = np.matmul(np.swapaxes(p, -1, -2), dof)
    dp = np.matmul(dof, np.swapaxes(vf, -1, -2))
    ds = p * (dp - delta)
    dq = np.matmul(ds, kf) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), qf) * scale
    return _cast(q, k, v, dq, dk, dv)


# ---------------------------------------------------------------------------------------------------------
# picotron ring attention: two kv shards, per-step forward stats, backward per step (huggingface/picotron#37)
def picotron_ring_bwd(q, k, v, d_out, mask=None, scale=None):
    (qf, kf, vf, dof), keep, scale = _prep(q, k, v, d_out, mask, scale)
    sk = k.shape[-2]
    cut = (sk + 1) // 2
    shards = [slice(0, cut), slice(cut, sk)]
    block_out, block_lse = [], []
    for sl in shards:
        s = np.matmul(qf, np.swapaxes(kf[..., sl, :], -1, -2)) * scale
        s = np.where(keep[..., sl], s, -np.inf)
        m = s.max(axis=-1, keepdims=True)
        ok = np.isfinite(m)
        e = np.exp(s - np.where(ok, m, 0.0))
        z = e.sum(axis=-1, keepdims=True)
        block_out.append(np.matmul(e / np.where(z > 0, z, 1.0), vf[..., sl, :]))
        block_lse.append(np.where(ok, np.where(ok, m, 0.0) + np.log(np.where(ok, z, 1.0)), -np.inf))
    lse_max = np.maximum(block_lse[0], block_lse[1])
    alive = np.isfinite(lse_max)
    ref = np.where(alive, lse_max, 0.0)
    lse = np.where(alive, ref + np.log(np.exp(block_lse[0] - ref) + np.exp(block_lse[1] - ref)), np.inf)
    dq = np.zeros_like(np.broadcast_to(qf, keep.shape[:-1] + (qf.shape[-1],)))
    dks, dvs = [], []
    for sl, o_blk in zip(shards, block_out):
        s = np.matmul(qf, np.swapaxes(kf[..., sl, :], -1, -2)) * scale
        p = np.where(keep[..., sl], np.exp(s - lse), 0.0)
        dp = np.matmul(dof, np.swapaxes(vf[..., sl, :], -1, -2))
        # BUG: delta = rowsum(dO * O) taken with this step's block output instead of the final merged output
        delta = (dof * o_blk).sum(axis=-1, keepdims=True)
        ds = p * (dp - delta)
        dq = dq + scale * np.matmul(ds, kf[..., sl, :])
        dks.append(scale * np.matmul(np.swapaxes(ds, -1, -2), qf))
        dvs.append(np.matmul(np.swapaxes(p, -1, -2), dof))
    return _cast(q, k, v, dq, np.concatenate(dks, axis=-2), np.concatenate(dvs, axis=-2))


# ---------------------------------------------------------------------------------------------------------
# tiny-flash-attention style tiled backward over key blocks (66RING/tiny-flash-attention#12)
def tiny_flash_bwd(q, k, v, d_out, mask=None, scale=None):
    Bc = 32
    (qf, kf, vf, dof), keep, scale = _prep(q, k, v, d_out, mask, scale)
    sk = k.shape[-2]
    p_full = _probs(qf, kf, keep, scale)
    o = np.matmul(p_full, vf)
    s_all = np.where(keep, np.matmul(qf, np.swapaxes(kf, -1, -2)) * scale, -np.inf)
    m = s_all.max(axis=-1, keepdims=True)
    ok = np.isfinite(m)
    lse = np.where(ok, np.where(ok, m, 0.0) + np.log(np.where(ok, np.exp(s_all - np.where(ok, m, 0.0)).sum(
        axis=-1, keepdims=True), 1.0)), np.inf)
    D = (dof * o).sum(axis=-1, keepdims=True)
    dq = np.zeros(keep.shape[:-1] + (qf.shape[-1],))
    dk = np.zeros(keep.shape[:-2] + kf.shape[-2:])
    dv = np.zeros(keep.shape[:-2] + vf.shape[-2:])
    # BUG: Tc = seqlen // Bc, so keys past the last full block never get dK/dV and never feed dQ
    Tc = sk // Bc
    for j in range(Tc):
        sl = slice(j * Bc, (j + 1) * Bc)
        Pij = np.exp(s_all[..., sl] - lse)
        dv[..., sl, :] = np.matmul(np.swapaxes(Pij, -1, -2), dof)
        dPij = np.matmul(dof, np.swapaxes(vf[..., sl, :], -1, -2))
        dSij = Pij * (dPij - D)
        dq += scale * np.matmul(dSij, kf[..., sl, :])
        dk[..., sl, :] = scale * np.matmul(np.swapaxes(dSij, -1, -2), qf)
    return _cast(q, k, v, dq, dk, dv)


# ---------------------------------------------------------------------------------------------------------
# XLM-style attention that pre-scales q (q / sqrt(dim_per_head)), gradients by hand (facebookresearch/XLM#357)
def xlm_prescaled_bwd(q, k, v, d_out, mask=None, scale=None):
    (qf, kf, vf, dof), keep, scale = _prep(q, k, v, d_out, mask, scale)
    q_scaled = qf * scale
    scores = np.matmul(q_scaled, np.swapaxes(kf, -1, -2))
    scores = np.where(keep, scores, -np.inf)
    mx = scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores - np.where(np.isfinite(mx), mx, 0.0))
    tot = weights.sum(axis=-1, keepdims=True)
    weights = weights / np.where(tot > 0, tot, 1.0)
    context = np.matmul(weights, vf)
    dv = np.matmul(np.swapaxes(weights, -1, -2), dof)
    d_weights = np.matmul(dof, np.swapaxes(vf, -1, -2))
    d_scores = weights * (d_weights - (dof * context).sum(axis=-1, keepdims=True))
    dq = np.matmul(d_scores, kf) * scale
    # BUG: dK taken against the unscaled q, the forward multiplied K with q * scale
    dk = np.matmul(np.swapaxes(d_scores, -1, -2), qf)
    return _cast(q, k, v, dq, dk, dv)


# ---------------------------------------------------------------------------------------------------------
# Triton (2022) flash backward port: `dv += tl.dot(p.to(tl.float16), do)` (triton-lang/triton#919)
def triton_fp16_p_bwd(q, k, v, d_out, mask=None, scale=None):
    (qf, kf, vf, dof), keep, scale = _prep(q, k, v, d_out, mask, scale)
    p = _probs(qf, kf, keep, scale)
    o = np.matmul(p, vf)
    # BUG: P rounded to float16 before the dV product (the kernel's fp16 cast kept for fp32/fp64 inputs)
    dv = np.matmul(np.swapaxes(p.astype(np.float16).astype(np.float64), -1, -2), dof)
    dp = np.matmul(dof, np.swapaxes(vf, -1, -2))
    Di = (o * dof).sum(axis=-1, keepdims=True)
    ds = p * (dp - Di) * scale
    dq = np.matmul(ds, kf)
    dk = np.matmul(np.swapaxes(ds, -1, -2), qf)
    return _cast(q, k, v, dq, dk, dv)


# ---------------------------------------------------------------------------------------------------------
# correct: dense backward with delta = rowsum(dO * O)
def dense_attention_bwd(q, k, v, d_out, mask=None, scale=None):
    (qf, kf, vf, dof), keep, scale = _prep(q, k, v, d_out, mask, scale)
    p = _probs(qf, kf, keep, scale)
    o = np.matmul(p, vf)
    dv = np.matmul(np.swapaxes(p, -1, -2), dof)
    dp = np.matmul(dof, np.swapaxes(vf, -1, -2))
    ds = p * (dp - (dof * o).sum(axis=-1, keepdims=True))
    dq = scale * np.matmul(ds, kf)
    dk = scale * np.matmul(np.swapaxes(ds, -1, -2), qf)
    return _cast(q, k, v, dq, dk, dv)


# ---------------------------------------------------------------------------------------------------------
# correct: FlashAttention-2 style tiled backward (LSE recompute, key blocks incl. the partial tail)
def flash2_tiled_bwd(q, k, v, d_out, mask=None, scale=None):
    block_n = 24
    (qf, kf, vf, dof), keep, scale = _prep(q, k, v, d_out, mask, scale)
    sk = k.shape[-2]
    m = np.full(keep.shape[:-1] + (1,), -np.inf)
    for n0 in range(0, sk, block_n):
        s = np.matmul(qf, np.swapaxes(kf[..., n0:n0 + block_n, :], -1, -2)) * scale
        m = np.maximum(m, np.where(keep[..., n0:n0 + block_n], s, -np.inf).max(axis=-1, keepdims=True))
    alive = np.isfinite(m)
    mref = np.where(alive, m, 0.0)
    l_sum = np.zeros_like(mref)
    acc = np.zeros(keep.shape[:-1] + (vf.shape[-1],))
    for n0 in range(0, sk, block_n):
        s = np.matmul(qf, np.swapaxes(kf[..., n0:n0 + block_n, :], -1, -2)) * scale
        e = np.where(keep[..., n0:n0 + block_n], np.exp(s - mref), 0.0)
        l_sum += e.sum(axis=-1, keepdims=True)
        acc += np.matmul(e, vf[..., n0:n0 + block_n, :])
    lse = np.where(alive, mref + np.log(np.where(alive, l_sum, 1.0)), np.inf)
    o = acc / np.where(l_sum > 0, l_sum, 1.0)
    delta = (dof * o).sum(axis=-1, keepdims=True)
    dq = np.zeros(keep.shape[:-1] + (qf.shape[-1],))
    dk_blocks, dv_blocks = [], []
    for n0 in range(0, sk, block_n):
        n1 = min(sk, n0 + block_n)
        s = np.matmul(qf, np.swapaxes(kf[..., n0:n1, :], -1, -2)) * scale
        p = np.where(keep[..., n0:n1], np.exp(s - lse), 0.0)
        dv_blocks.append(np.matmul(np.swapaxes(p, -1, -2), dof))
        ds = p * (np.matmul(dof, np.swapaxes(vf[..., n0:n1, :], -1, -2)) - delta)
        dq += scale * np.matmul(ds, kf[..., n0:n1, :])
        dk_blocks.append(scale * np.matmul(np.swapaxes(ds, -1, -2), qf))
    dk = np.concatenate(dk_blocks, axis=-2)
    dv = np.concatenate(dv_blocks, axis=-2)
    return _cast(q, k, v, dq, dk, dv)


def _entry(name, fn, bug=None, parameter=None, source=None, kind="issues", dtype="float64"):
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
        "features": ["mask", "dv-ne-d"],
    }


CATALOG = [
    _entry("bwd-levanter-mqa-overwrite", "levanter_flash_bwd", "mqa-dkdv-not-summed-over-heads",
           "dK/dV of the broadcast kv head assigned per query head instead of summed over the heads",
           "marin-community/levanter#449", "pull"),
    _entry("bwd-nsa-dq-qk-extent", "nsa_split_bwd", "dq-dp-truncated-to-qk-head-dim",
           "dq's dP = dO V^T computed over the first qk_head_dim value channels only (Dv > D)",
           "XunhaoLai/native-sparse-attention-triton#27"),
    _entry("bwd-mha-dead-row-nan", "mha_weights_bwd", "fully-masked-row-nan-gradients",
           "fully masked rows produce NaN weights that flow into dq, dk, dv",
           "pytorch/pytorch#41508"),
    _entry("bwd-ctensor-diag-jacobian", "ctensor_softmax_bwd", "softmax-jacobian-diagonal-only",
           "softmax backward y * (1 - y) * g instead of y * (g - sum(g * y))",
           "pocketpy/cTensor#31", "pull"),
    _entry("bwd-triton-mask-not-recomputed", "triton_tutorial_bwd", "backward-ignores-mask",
           "P recomputed in the backward without the forward's mask",
           "triton-lang/triton#4541"),
    _entry("bwd-picotron-ring-delta", "picotron_ring_bwd", "ring-delta-uses-block-output",
           "delta = rowsum(dO * O) uses the ring step's partial output instead of the final output",
           "huggingface/picotron#37"),
    _entry("bwd-tiny-flash-tail", "tiny_flash_bwd", "tail-key-block-dropped",
           "number of key blocks Tc = Sk // Bc drops the partial last block",
           "66RING/tiny-flash-attention#12"),
    _entry("bwd-xlm-dk-unscaled-q", "xlm_prescaled_bwd", "dk-missing-scale",
           "dK computed against unscaled q although the forward used q * scale",
           "facebookresearch/XLM#357", "pull"),
    _entry("bwd-triton-fp16-p", "triton_fp16_p_bwd", "dv-probabilities-rounded-to-fp16",
           "P rounded to float16 before dV = P^T dO",
           "triton-lang/triton#919"),
    _entry("bwd-dense", "dense_attention_bwd"),
    _entry("bwd-flash2-tiled", "flash2_tiled_bwd"),
]
