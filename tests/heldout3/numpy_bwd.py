"""Held-out attention backward kernels for the ``numpy-backward`` API (NumPy).

Contract: ``fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv)``, the gradients of the refimpl forward
(q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); bool keep-mask or additive float mask; scale=None means
1/sqrt(D)) given the output gradient d_out (..., Sq, Dv). k/v may have size-1 head axes broadcast against q; their
gradients are summed back to their own shapes. Rows with no kept key have zero output and zero gradients.

Each broken kernel carries exactly one mistake, marked ``# BUG:``; see CATALOG at the end.
"""
import math

import numpy as np


# ----------------------------------------------------------------------------------------------------------------
# shared helpers (correct)
# ----------------------------------------------------------------------------------------------------------------

def _default_scale(q, scale):
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale


def _swap(x):
    return np.swapaxes(x, -1, -2)


def _apply_mask(scores, mask):
    if mask is None:
        return scores
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        return np.where(mask, scores, -np.inf)
    return scores + mask.astype(scores.dtype, copy=False)


def _expand_mask(mask, sq, sk):
    mask = np.asarray(mask)
    if mask.ndim < 2:
        mask = mask.reshape((1,) * (2 - mask.ndim) + mask.shape)
    return np.broadcast_to(mask, mask.shape[:-2] + (sq, sk))


def _softmax(s):
    """Row softmax; an all -inf row gives zeros."""
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isneginf(m), 0.0, m)
    p = np.exp(s - m)
    denom = np.sum(p, axis=-1, keepdims=True)
    return p / np.where(denom == 0.0, 1.0, denom)


def _sum_to_shape(g, shape):
    """Reduce a broadcast gradient back to `shape` (sum over the broadcast axes)."""
    shape = tuple(shape)
    extra = g.ndim - len(shape)
    if extra > 0:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(ax for ax, n in enumerate(shape) if n == 1 and g.shape[ax] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return np.broadcast_to(g, shape)


def _finish(grads, inputs):
    return tuple(np.ascontiguousarray(_sum_to_shape(g, x.shape)).astype(x.dtype, copy=False)
                 for g, x in zip(grads, inputs))


def _round_to_bf16(x):
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    bits = x32.view(np.uint32)
    bits = (bits + (((bits >> 16) & np.uint32(1)) + np.uint32(0x7FFF))) & np.uint32(0xFFFF0000)
    return bits.view(np.float32).astype(x.dtype)


def _lead(q, k, v, d_out, mask):
    shapes = [q.shape[:-2], k.shape[:-2], v.shape[:-2], d_out.shape[:-2]]
    if mask is not None:
        shapes.append(mask.shape[:-2])
    return np.broadcast_shapes(*shapes)


# ----------------------------------------------------------------------------------------------------------------
# correct kernels
# ----------------------------------------------------------------------------------------------------------------

def attention_backward(q, k, v, d_out, mask=None, scale=None):
    """Materialised backward: P, dV = P^T dO, dS = P * (dP - rowsum(P * dP)), dQ = dS K s, dK = dS^T Q s."""
    scale = _default_scale(q, scale)
    s = _apply_mask(np.matmul(q, _swap(k)) * scale, mask)
    p = _softmax(s)
    dv = np.matmul(_swap(p), d_out)
    dp = np.matmul(d_out, _swap(v))
    delta = np.sum(p * dp, axis=-1, keepdims=True)
    ds = p * (dp - delta)
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(_swap(ds), q) * scale
    return _finish((dq, dk, dv), (q, k, v))


def flash_attention_backward(q, k, v, d_out, mask=None, scale=None, block_m=16, block_n=32):
    """FlashAttention-2 backward: forward statistics (LSE, O), delta = rowsum(dO * O), then KV-tile-outer loops."""
    dtype = q.dtype
    sq, sk, d, dv_dim = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    scale = _default_scale(q, scale)
    if mask is not None:
        mask = _expand_mask(mask, sq, sk)
    lead = _lead(q, k, v, d_out, mask)
    # forward pass statistics
    m_i = np.full(lead + (sq, 1), -np.inf, dtype=dtype)
    l_i = np.zeros(lead + (sq, 1), dtype=dtype)
    acc = np.zeros(lead + (sq, dv_dim), dtype=dtype)
    for n0 in range(0, sk, block_n):
        n1 = min(n0 + block_n, sk)
        s = np.matmul(q, _swap(k[..., n0:n1, :])) * scale
        if mask is not None:
            s = _apply_mask(s, mask[..., n0:n1])
        m_new = np.maximum(m_i, np.max(s, axis=-1, keepdims=True))
        m_use = np.where(np.isneginf(m_new), 0.0, m_new)
        alpha = np.exp(m_i - m_use)
        p = np.exp(s - m_use)
        l_i = l_i * alpha + np.sum(p, axis=-1, keepdims=True)
        acc = acc * alpha + np.matmul(p, v[..., n0:n1, :])
        m_i = m_new
    safe_l = np.where(l_i == 0.0, 1.0, l_i)
    out = acc / safe_l
    lse = np.where(l_i == 0.0, np.inf, np.log(safe_l) + np.where(np.isneginf(m_i), 0.0, m_i))
    delta = np.sum(d_out * out, axis=-1, keepdims=True)
    # backward
    dq = np.zeros(lead + (sq, d), dtype=dtype)
    dk = np.zeros(lead + (sk, d), dtype=dtype)
    dv = np.zeros(lead + (sk, dv_dim), dtype=dtype)
    for n0 in range(0, sk, block_n):
        n1 = min(n0 + block_n, sk)
        k_j, v_j = k[..., n0:n1, :], v[..., n0:n1, :]
        for m0 in range(0, sq, block_m):
            m1 = min(m0 + block_m, sq)
            q_i, do_i = q[..., m0:m1, :], d_out[..., m0:m1, :]
            s = np.matmul(q_i, _swap(k_j)) * scale
            if mask is not None:
                s = _apply_mask(s, mask[..., m0:m1, n0:n1])
            p = np.exp(s - lse[..., m0:m1, :])
            dv[..., n0:n1, :] += np.matmul(_swap(p), do_i)
            dp = np.matmul(do_i, _swap(v_j))
            ds = p * (dp - delta[..., m0:m1, :])
            dq[..., m0:m1, :] += np.matmul(ds, k_j) * scale
            dk[..., n0:n1, :] += np.matmul(_swap(ds), q_i) * scale
    return _finish((dq, dk, dv), (q, k, v))


# ----------------------------------------------------------------------------------------------------------------
# broken kernels
# ----------------------------------------------------------------------------------------------------------------

def backward_dq_double_scale(q, k, v, d_out, mask=None, scale=None):
    scale = _default_scale(q, scale)
    s = _apply_mask(np.matmul(q, _swap(k)) * scale, mask)
    p = _softmax(s)
    dv = np.matmul(_swap(p), d_out)
    dp = np.matmul(d_out, _swap(v))
    ds = p * (dp - np.sum(p * dp, axis=-1, keepdims=True)) * scale     # softmax scale folded into dS once
    dq = np.matmul(ds, k) * scale  # BUG: dS already carries the softmax scale: dQ is scaled twice
    dk = np.matmul(_swap(ds), q)
    return _finish((dq, dk, dv), (q, k, v))


def backward_padded_head_dim_scale(q, k, v, d_out, mask=None, scale=None, pad_to=16):
    """Backward runner that pads the head dimension to the MMA tile width before launching."""
    d_padded = -(-q.shape[-1] // pad_to) * pad_to
    if scale is None:
        scale = 1.0 / math.sqrt(d_padded)  # BUG: default scale from the padded head dim, not the logical D
    s = _apply_mask(np.matmul(q, _swap(k)) * scale, mask)
    p = _softmax(s)
    dv = np.matmul(_swap(p), d_out)
    dp = np.matmul(d_out, _swap(v))
    ds = p * (dp - np.sum(p * dp, axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(_swap(ds), q) * scale
    return _finish((dq, dk, dv), (q, k, v))


def flash_backward_delta_grid(q, k, v, d_out, mask=None, scale=None, block_m_fwd=32, block_bwd=16):
    """Triton-style backward: a preprocess pass writes delta = rowsum(O * dO) one row tile per program."""
    dtype = q.dtype
    sq = q.shape[-2]
    scale = _default_scale(q, scale)
    s = _apply_mask(np.matmul(q, _swap(k)) * scale, mask)
    p = _softmax(s)
    out = np.matmul(p, v)
    lead = np.broadcast_shapes(out.shape[:-2], d_out.shape[:-2])
    delta = np.zeros(lead + (sq, 1), dtype=dtype)
    n_programs = -(-sq // block_m_fwd)  # BUG: grid sized with the forward BLOCK_M, but a program covers block_bwd rows
    for pid in range(n_programs):
        r0, r1 = pid * block_bwd, min((pid + 1) * block_bwd, sq)
        delta[..., r0:r1, :] = np.sum(out[..., r0:r1, :] * d_out[..., r0:r1, :], axis=-1, keepdims=True)
    dv = np.matmul(_swap(p), d_out)
    dp = np.matmul(d_out, _swap(v))
    ds = p * (dp - delta)
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(_swap(ds), q) * scale
    return _finish((dq, dk, dv), (q, k, v))


def backward_plain_softmax(q, k, v, d_out, mask=None, scale=None):
    scale = _default_scale(q, scale)
    s = _apply_mask(np.matmul(q, _swap(k)) * scale, mask)
    with np.errstate(invalid="ignore"):
        e = np.exp(s - np.max(s, axis=-1, keepdims=True))
        p = e / np.sum(e, axis=-1, keepdims=True)  # BUG: no guard: a fully masked row gives NaN P and NaN gradients
        dv = np.matmul(_swap(p), d_out)
        dp = np.matmul(d_out, _swap(v))
        ds = p * (dp - np.sum(p * dp, axis=-1, keepdims=True))
        dq = np.matmul(ds, k) * scale
        dk = np.matmul(_swap(ds), q) * scale
    return _finish((dq, dk, dv), (q, k, v))


def backward_broadcast_kv_mean(q, k, v, d_out, mask=None, scale=None):
    """Backward for K/V shared across query heads (MQA) through a size-1 head axis."""
    scale = _default_scale(q, scale)
    s = _apply_mask(np.matmul(q, _swap(k)) * scale, mask)
    p = _softmax(s)
    dv = np.matmul(_swap(p), d_out)
    dp = np.matmul(d_out, _swap(v))
    ds = p * (dp - np.sum(p * dp, axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(_swap(ds), q) * scale
    grads = []
    for g, x in ((dk, k), (dv, v)):
        extra = g.ndim - x.ndim
        if extra > 0:
            g = g.sum(axis=tuple(range(extra)))
        axes = tuple(ax for ax, n in enumerate(x.shape) if n == 1 and g.shape[ax] != 1)
        if axes:
            g = g.mean(axis=axes, keepdims=True)  # BUG: shared K/V receive the sum of the heads' gradients, not mean
        grads.append(g)
    return _finish((dq, grads[0], grads[1]), (q, k, v))


def backward_recompute_bool_mask_only(q, k, v, d_out, mask=None, scale=None):
    """Recompute-style backward whose score recomputation only knows keep-masks."""
    scale = _default_scale(q, scale)
    s = np.matmul(q, _swap(k)) * scale
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == np.bool_:
            s = np.where(mask, s, -np.inf)
        # BUG: an additive float mask (bias / ALiBi / -inf) is not re-applied when P is recomputed for the backward
    p = _softmax(s)
    dv = np.matmul(_swap(p), d_out)
    dp = np.matmul(d_out, _swap(v))
    ds = p * (dp - np.sum(p * dp, axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(_swap(ds), q) * scale
    return _finish((dq, dk, dv), (q, k, v))


def flash_backward_query_tail(q, k, v, d_out, mask=None, scale=None, block_m=16):
    """Backward that walks query tiles (recomputing P from the forward LSE) and accumulates into dK/dV."""
    dtype = q.dtype
    sq, sk, d, dv_dim = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    scale = _default_scale(q, scale)
    if mask is not None:
        mask = _expand_mask(mask, sq, sk)
    lead = _lead(q, k, v, d_out, mask)
    s_full = _apply_mask(np.matmul(q, _swap(k)) * scale, mask)
    m = np.max(s_full, axis=-1, keepdims=True)
    m = np.where(np.isneginf(m), 0.0, m)
    l_sum = np.sum(np.exp(s_full - m), axis=-1, keepdims=True)
    lse = np.where(l_sum == 0.0, np.inf, np.log(np.where(l_sum == 0.0, 1.0, l_sum)) + m)
    out = np.matmul(np.exp(s_full - lse), v)
    delta = np.sum(d_out * out, axis=-1, keepdims=True)
    dq = np.zeros(lead + (sq, d), dtype=dtype)
    dk = np.zeros(lead + (sk, d), dtype=dtype)
    dv = np.zeros(lead + (sk, dv_dim), dtype=dtype)
    n_m_blocks = max(1, sq // block_m)  # BUG: floor drops the ragged last query tile once Sq > block_m
    for blk in range(n_m_blocks):
        m0, m1 = blk * block_m, min((blk + 1) * block_m, sq)
        q_i, do_i = q[..., m0:m1, :], d_out[..., m0:m1, :]
        s = np.matmul(q_i, _swap(k)) * scale
        if mask is not None:
            s = _apply_mask(s, mask[..., m0:m1, :])
        p = np.exp(s - lse[..., m0:m1, :])
        dv += np.matmul(_swap(p), do_i)
        dp = np.matmul(do_i, _swap(v))
        ds = p * (dp - delta[..., m0:m1, :])
        dq[..., m0:m1, :] = np.matmul(ds, k) * scale
        dk += np.matmul(_swap(ds), q_i) * scale
    return _finish((dq, dk, dv), (q, k, v))


def backward_bf16_ds(q, k, v, d_out, mask=None, scale=None):
    scale = _default_scale(q, scale)
    s = _apply_mask(np.matmul(q, _swap(k)) * scale, mask)
    p = _softmax(s)
    dv = np.matmul(_swap(p), d_out)
    dp = np.matmul(d_out, _swap(v))
    ds = p * (dp - np.sum(p * dp, axis=-1, keepdims=True))
    ds = _round_to_bf16(ds)  # BUG: dS narrowed to the 16-bit MMA operand type; dQ/dK need it in float32
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(_swap(ds), q) * scale
    return _finish((dq, dk, dv), (q, k, v))


def flash_backward_lse_merge(q, k, v, d_out, mask=None, scale=None, block_n=32):
    """Backward whose softmax LSE is assembled from per-KV-block LSEs (as in ring / context-parallel attention)."""
    sq, sk = q.shape[-2], k.shape[-2]
    scale = _default_scale(q, scale)
    if mask is not None:
        mask = _expand_mask(mask, sq, sk)
    lse = None
    with np.errstate(over="ignore", invalid="ignore"):
        for n0 in range(0, sk, block_n):
            n1 = min(n0 + block_n, sk)
            s = np.matmul(q, _swap(k[..., n0:n1, :])) * scale
            if mask is not None:
                s = _apply_mask(s, mask[..., n0:n1])
            m = np.max(s, axis=-1, keepdims=True)
            m_use = np.where(np.isneginf(m), 0.0, m)
            blk_sum = np.sum(np.exp(s - m_use), axis=-1, keepdims=True)
            blk_lse = np.where(blk_sum == 0.0, -np.inf, np.log(np.where(blk_sum == 0.0, 1.0, blk_sum)) + m_use)
            if lse is None:
                lse = blk_lse
            else:
                merged = lse + np.log1p(np.exp(blk_lse - lse))  # BUG: exp(blk_lse - lse) overflows; use logaddexp
                lse = np.where(np.isneginf(lse), blk_lse, merged)
        lse = np.where(np.isneginf(lse), np.inf, lse)
        s = _apply_mask(np.matmul(q, _swap(k)) * scale, mask)
        p = np.exp(s - lse)
        dv = np.matmul(_swap(p), d_out)
        dp = np.matmul(d_out, _swap(v))
        ds = p * (dp - np.sum(p * dp, axis=-1, keepdims=True))
        dq = np.matmul(ds, k) * scale
        dk = np.matmul(_swap(ds), q) * scale
    return _finish((dq, dk, dv), (q, k, v))


# ----------------------------------------------------------------------------------------------------------------

_ALL = ["mask", "causal", "window", "alibi", "gqa", "dv-ne-d"]


def _entry(name, fn, bug=None, parameter=None, source=None, report=None, dtype="float64"):
    return {
        "name": name, "api": "numpy-backward", "fn": fn, "correct": bug is None, "bug": bug,
        "parameter": parameter, "source": source, "report": report, "dtype": dtype, "features": list(_ALL),
    }


CATALOG = [
    _entry("bwd-reference", "attention_backward"),
    _entry("bwd-flash-blocked", "flash_attention_backward"),
    _entry("bwd-dq-double-scale", "backward_dq_double_scale", "dq-scaled-twice", "dQ = (dS*scale) K * scale",
           "HKUSTDial/flash-sparse-attention#203", "https://github.com/HKUSTDial/flash-sparse-attention/pull/203"),
    _entry("bwd-padded-dim-scale", "backward_padded_head_dim_scale", "scale-from-padded-head-dim",
           "1/sqrt(ceil(D/16)*16)", "tile-ai/tilelang-ascend#1670",
           "https://github.com/tile-ai/tilelang-ascend/pull/1670"),
    _entry("bwd-delta-grid", "flash_backward_delta_grid", "delta-rows-missing", "cdiv(Sq,32) programs x 16 rows",
           "triton-lang/triton#2020", "https://github.com/triton-lang/triton/pull/2020"),
    _entry("bwd-plain-softmax", "backward_plain_softmax", "masked-row-nan-grad", "softmax without zero-row guard",
           "pytorch/pytorch#41508", "https://github.com/pytorch/pytorch/issues/41508"),
    _entry("bwd-broadcast-mean", "backward_broadcast_kv_mean", "broadcast-grad-mean", "mean over broadcast heads",
           "marin-community/levanter#449", "https://github.com/marin-community/levanter/pull/449"),
    _entry("bwd-bool-mask-only", "backward_recompute_bool_mask_only", "float-mask-dropped-in-backward",
           "additive mask ignored in recompute", "triton-lang/triton#4541",
           "https://github.com/triton-lang/triton/issues/4541"),
    _entry("bwd-query-tail", "flash_backward_query_tail", "query-tail-block-dropped", "n_m_blocks=Sq//16",
           "pytorch/pytorch#153799", "https://github.com/pytorch/pytorch/issues/153799"),
    _entry("bwd-bf16-ds", "backward_bf16_ds", "bf16-ds", "dS in bfloat16",
           "NVIDIA/cudnn-frontend#1046", "https://github.com/NVIDIA/cudnn-frontend/pull/1046", dtype="float32"),
    _entry("bwd-lse-merge-overflow", "flash_backward_lse_merge", "lse-merge-overflow", "lse + log1p(exp(b - lse))",
           "zhuzilin/ring-flash-attention#30", "https://github.com/zhuzilin/ring-flash-attention/pull/30"),
]
