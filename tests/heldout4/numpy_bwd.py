"""Held-out NumPy attention backward kernels (API `numpy-backward`).

fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv): gradients of O = softmax(q k^T * scale, masked) v for
loss = sum(d_out * O).  mask is a bool keep-mask broadcastable to (..., Sq, Sk); k/v may have a head axis of size 1
broadcast against q's heads (dk, dv are summed back to k/v's shape).  Rows with no kept key have zero gradients.
"""
import math

import numpy as np


def _sum_to_shape(g, shape):
    """Reduce a broadcast gradient back to `shape` (what autograd's ExpandBackward does)."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for ax, n in enumerate(shape):
        if n == 1 and g.shape[ax] != 1:
            g = g.sum(axis=ax, keepdims=True)
    return g


def _keep_full(mask, s_shape):
    if mask is None:
        return None
    return np.broadcast_to(np.asarray(mask, dtype=bool), s_shape)


def _T(x):
    return np.swapaxes(x, -1, -2)


# ----------------------------------------------------------------------------------------------------------------
# correct kernels
# ----------------------------------------------------------------------------------------------------------------

def attention_backward_dense(q, k, v, d_out, mask=None, scale=None):
    """Textbook backward: recompute P, then dV = P^T dO, dS = P * (dP - rowsum(dO * O)), dQ = dS K, dK = dS^T Q."""
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ _T(k)) * sm_scale
    keep = _keep_full(mask, s.shape)
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = e.sum(axis=-1, keepdims=True)
    p = e / np.where(z > 0, z, 1.0)
    o = p @ v
    dv = _T(p) @ d_out
    dp = d_out @ _T(v)
    delta = (d_out * o).sum(axis=-1, keepdims=True)
    ds = p * (dp - delta)
    dq = (ds @ k) * sm_scale
    dk = (_T(ds) @ q) * sm_scale
    return (_sum_to_shape(dq, q.shape).astype(q.dtype), _sum_to_shape(dk, k.shape).astype(k.dtype),
            _sum_to_shape(dv, v.shape).astype(v.dtype))


def flash_backward_tiled(q, k, v, d_out, mask=None, scale=None):
    """FlashAttention style: forward keeps only the softmax statistics; backward walks 32-key tiles recomputing P."""
    BLOCK_N = 32
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    seqlen_k = k.shape[-2]
    bshape = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    s_shape = bshape + (q.shape[-2], seqlen_k)
    keep = _keep_full(mask, s_shape)
    # forward: running max / sum over tiles -> out, lse
    m_i = np.full(bshape + (q.shape[-2], 1), -np.inf, dtype=q.dtype)
    l_i = np.zeros_like(m_i)
    acc = np.zeros(bshape + (q.shape[-2], v.shape[-1]), dtype=q.dtype)
    for n0 in range(0, seqlen_k, BLOCK_N):
        n1 = min(n0 + BLOCK_N, seqlen_k)
        s = (q @ _T(k[..., n0:n1, :])) * sm_scale
        if keep is not None:
            s = np.where(keep[..., n0:n1], s, -np.inf)
        m_new = np.maximum(m_i, s.max(axis=-1, keepdims=True))
        m_use = np.where(np.isfinite(m_new), m_new, 0.0)
        alpha = np.exp(m_i - m_use)
        p = np.exp(s - m_use)
        l_i = l_i * alpha + p.sum(axis=-1, keepdims=True)
        acc = acc * alpha + p @ v[..., n0:n1, :]
        m_i = m_new
    alive = l_i > 0
    o = np.where(alive, acc / np.where(alive, l_i, 1.0), 0.0)
    # softmax statistics kept as (row max, log of the rescaled sum): P = exp((S - m) - log l) stays accurate in
    # float32 even when m itself is in the thousands
    m_row = np.where(np.isfinite(m_i), m_i, 0.0)
    log_l = np.where(alive, np.log(np.where(alive, l_i, 1.0)), np.inf)
    # backward
    delta = (d_out * o).sum(axis=-1, keepdims=True)
    dq = np.zeros(bshape + q.shape[-2:], dtype=q.dtype)
    dk = np.zeros(bshape + k.shape[-2:], dtype=q.dtype)
    dv = np.zeros(bshape + v.shape[-2:], dtype=q.dtype)
    for n0 in range(0, seqlen_k, BLOCK_N):
        n1 = min(n0 + BLOCK_N, seqlen_k)
        k_blk, v_blk = k[..., n0:n1, :], v[..., n0:n1, :]
        s = (q @ _T(k_blk)) * sm_scale
        if keep is not None:
            s = np.where(keep[..., n0:n1], s, -np.inf)
        p = np.exp((s - m_row) - log_l)
        dv[..., n0:n1, :] = _T(p) @ d_out
        dp = d_out @ _T(v_blk)
        ds = p * (dp - delta)
        dq += (ds @ k_blk) * sm_scale
        dk[..., n0:n1, :] = (_T(ds) @ q) * sm_scale
    return (_sum_to_shape(dq, q.shape).astype(q.dtype), _sum_to_shape(dk, k.shape).astype(k.dtype),
            _sum_to_shape(dv, v.shape).astype(v.dtype))


# ----------------------------------------------------------------------------------------------------------------
# broken kernels
# ----------------------------------------------------------------------------------------------------------------

def _probs(s):
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = e.sum(axis=-1, keepdims=True)
    return e / np.where(z > 0, z, 1.0)


def ascend_padded_dim_bwd(q, k, v, d_out, mask=None, scale=None):
    """tilelang-ascend style run_bwd: head dim padded to a multiple of 16 for the cube unit buffers."""
    D_qk = q.shape[-1]
    dim_qk_padded = -(-D_qk // 16) * 16
    # BUG: default softmax scale taken from the padded head dim (1/sqrt(dim_qk_padded)) instead of the logical D_qk
    sm_scale = 1.0 / math.sqrt(dim_qk_padded) if scale is None else scale
    s = (q @ _T(k)) * sm_scale
    keep = _keep_full(mask, s.shape)
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    p = _probs(s)
    o = p @ v
    dv = _T(p) @ d_out
    ds = p * (d_out @ _T(v) - (d_out * o).sum(-1, keepdims=True))
    dq = ds @ k * sm_scale
    dk = _T(ds) @ q * sm_scale
    return (_sum_to_shape(dq, q.shape).astype(q.dtype), _sum_to_shape(dk, k.shape).astype(k.dtype),
            _sum_to_shape(dv, v.shape).astype(v.dtype))


def levanter_gqa_bwd(q, k, v, d_out, mask=None, scale=None):
    """levanter flash-attention style: K/V broadcast over the query-head group in the forward."""
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ _T(k)) * sm_scale
    keep = _keep_full(mask, s.shape)
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    p_ij = _probs(s)
    o = p_ij @ v
    dV_j = _T(p_ij) @ d_out
    dAttn = p_ij * (d_out @ _T(v) - (d_out * o).sum(-1, keepdims=True))
    dQ_i = dAttn @ k * sm_scale
    dK_j = _T(dAttn) @ q * sm_scale
    # BUG: the broadcast q_heads_per_group axis is dropped by taking one head's gradient instead of summing over it
    while dK_j.ndim > k.ndim:
        dK_j, dV_j = dK_j[0], dV_j[0]
    for ax, n in enumerate(k.shape):
        if n == 1 and dK_j.shape[ax] != 1:
            dK_j = np.take(dK_j, [0], axis=ax)
            dV_j = np.take(dV_j, [0], axis=ax)
    return dQ_i.astype(q.dtype), dK_j.astype(k.dtype), dV_j.astype(v.dtype)


def native_torch_attn_bwd(q, k, v, d_out, mask=None, scale=None):
    """Pure-PyTorch-reference style (NativeAttentionOp): masked_fill(-inf) -> softmax -> matmul, hand-written VJP."""
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ _T(k)) * sm_scale
    keep = _keep_full(mask, scores.shape)
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)
    with np.errstate(invalid="ignore"):
        # BUG: no guard for fully masked rows: softmax of all -inf is NaN and poisons dV / dK of the whole head
        probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = probs / probs.sum(axis=-1, keepdims=True)
        out = probs @ v
        dv = _T(probs) @ d_out
        ds = probs * (d_out @ _T(v) - (d_out * out).sum(-1, keepdims=True))
        dq = ds @ k * sm_scale
        dk = _T(ds) @ q * sm_scale
    return (_sum_to_shape(dq, q.shape).astype(q.dtype), _sum_to_shape(dk, k.shape).astype(k.dtype),
            _sum_to_shape(dv, v.shape).astype(v.dtype))


def triton_fused_attention_bwd(q, k, v, d_out, mask=None, scale=None):
    """Triton tutorial 06 style: _attn_fwd stores M = LSE, _attn_bwd recomputes p = exp(qk * sm_scale - M)."""
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    qk = (q @ _T(k)) * sm_scale
    keep = _keep_full(mask, qk.shape)
    # _attn_fwd
    qk_fwd = np.where(keep, qk, -np.inf) if keep is not None else qk
    m = qk_fwd.max(axis=-1, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    l_sum = np.exp(qk_fwd - m_safe).sum(axis=-1, keepdims=True)
    o = (np.exp(qk_fwd - m_safe) @ v) / np.where(l_sum > 0, l_sum, 1.0)
    with np.errstate(divide="ignore"):
        M = np.where(l_sum > 0, m_safe + np.log(np.where(l_sum > 0, l_sum, 1.0)), np.inf)
    # _attn_bwd_preprocess
    Di = (o * d_out).sum(axis=-1, keepdims=True)
    # _attn_bwd
    # BUG: the backward recomputes p from the raw scores without re-applying the mask the forward used
    p = np.exp(qk - M)
    dv = _T(p) @ d_out
    dp = d_out @ _T(v)
    ds = p * (dp - Di)
    dq = ds @ k * sm_scale
    dk = _T(ds) @ q * sm_scale
    return (_sum_to_shape(dq, q.shape).astype(q.dtype), _sum_to_shape(dk, k.shape).astype(k.dtype),
            _sum_to_shape(dv, v.shape).astype(v.dtype))


_COMPUTE_DTYPE = {np.dtype(np.float32): np.float16}


def levanter_streaming_bwd(q, k, v, d_out, mask=None, scale=None):
    """Custom-VJP style: forward runs the score matmul in the compute dtype, backward recomputes it at full width."""
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    compute_dtype = _COMPUTE_DTYPE.get(q.dtype, q.dtype)
    # forward: logits emitted in the compute dtype, lse / out from them
    logits_fwd = ((q @ _T(k)) * sm_scale).astype(compute_dtype).astype(q.dtype)
    keep = _keep_full(mask, logits_fwd.shape)
    if keep is not None:
        logits_fwd = np.where(keep, logits_fwd, -np.inf)
    mx = logits_fwd.max(axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    z = np.exp(logits_fwd - mx).sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        lse = np.where(z > 0, mx + np.log(np.where(z > 0, z, 1.0)), np.inf)
    out = (np.exp(logits_fwd - lse)) @ v
    # backward: logits recomputed at full width
    logits = (q @ _T(k)) * sm_scale
    if keep is not None:
        logits = np.where(keep, logits, -np.inf)
    # BUG: probs = exp(logits - lse) mixes full-width logits with the LSE of the rounded forward logits
    probs = np.exp(logits - lse)
    dv = _T(probs) @ d_out
    ds = probs * (d_out @ _T(v) - (d_out * out).sum(-1, keepdims=True))
    dq = ds @ k * sm_scale
    dk = _T(ds) @ q * sm_scale
    return (_sum_to_shape(dq, q.shape).astype(q.dtype), _sum_to_shape(dk, k.shape).astype(k.dtype),
            _sum_to_shape(dv, v.shape).astype(v.dtype))


def pallas_mha_bwd(q, k, v, d_out, mask=None, scale=None):
    """Pallas mha_backward style: grid over key blocks of block_k, each computing dk/dv for its block and adding
    its share of dq."""
    block_k = 64
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    seq_len = k.shape[-2]
    s_full = (q @ _T(k)) * sm_scale
    keep = _keep_full(mask, s_full.shape)
    if keep is not None:
        s_full = np.where(keep, s_full, -np.inf)
    mx = s_full.max(axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    ssum = np.exp(s_full - mx).sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        lse = np.where(ssum > 0, mx + np.log(np.where(ssum > 0, ssum, 1.0)), np.inf)
    o = np.exp(s_full - lse) @ v
    delta = (o * d_out).sum(-1, keepdims=True)
    bshape = s_full.shape[:-2]
    dq = np.zeros(bshape + q.shape[-2:], dtype=q.dtype)
    dk = np.zeros(bshape + k.shape[-2:], dtype=q.dtype)
    dv = np.zeros(bshape + v.shape[-2:], dtype=q.dtype)
    # BUG: grid = seq_len // block_k drops the last partial key block when seq_len is not a multiple of block_k
    for j in range(seq_len // block_k):
        sl = slice(j * block_k, (j + 1) * block_k)
        p = np.exp(s_full[..., sl] - lse)
        dv[..., sl, :] = _T(p) @ d_out
        ds = p * (d_out @ _T(v[..., sl, :]) - delta)
        dk[..., sl, :] = _T(ds) @ q * sm_scale
        dq += ds @ k[..., sl, :] * sm_scale
    return (_sum_to_shape(dq, q.shape).astype(q.dtype), _sum_to_shape(dk, k.shape).astype(k.dtype),
            _sum_to_shape(dv, v.shape).astype(v.dtype))


def nd4j_softmax_derivative_bwd(q, k, v, d_out, mask=None, scale=None):
    """Layer-by-layer backprop: softmax layer's derivative applied elementwise to the incoming gradient."""
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ _T(k)) * sm_scale
    keep = _keep_full(mask, s.shape)
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    out = _probs(s)
    dv = _T(out) @ d_out
    eps = d_out @ _T(v)
    # BUG: only the Jacobian diagonal out * (1 - out) is used; the off-diagonal -out_i * out_j terms are dropped
    ds = eps * out * (1.0 - out)
    dq = ds @ k * sm_scale
    dk = _T(ds) @ q * sm_scale
    return (_sum_to_shape(dq, q.shape).astype(q.dtype), _sum_to_shape(dk, k.shape).astype(k.dtype),
            _sum_to_shape(dv, v.shape).astype(v.dtype))


def nsa_flash_attention_bwd(q, k, v, d_out, mask=None, scale=None):
    """native-sparse-attention style backward split into a preprocess (delta), backward_dkdv and backward_dq."""
    qk_head_dim = q.shape[-1]
    sm_scale = 1.0 / math.sqrt(qk_head_dim) if scale is None else scale
    s = (q @ _T(k)) * sm_scale
    keep = _keep_full(mask, s.shape)
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    p = _probs(s)
    o = p @ v
    delta = (o * d_out).sum(-1, keepdims=True)
    # backward_dkdv (v-space extents taken from v)
    dv = _T(p) @ d_out
    ds_kv = p * (d_out @ _T(v) - delta)
    dk = _T(ds_kv) @ q * sm_scale
    # backward_dq
    # BUG: v / dO tiles declared with qk_head_dim as last extent: value channels beyond it are dropped from dp
    dp = d_out[..., :qk_head_dim] @ _T(v[..., :qk_head_dim])
    ds_q = p * (dp - delta)
    dq = ds_q @ k * sm_scale
    return (_sum_to_shape(dq, q.shape).astype(q.dtype), _sum_to_shape(dk, k.shape).astype(k.dtype),
            _sum_to_shape(dv, v.shape).astype(v.dtype))


def paddle_tiled_dq_bwd(q, k, v, d_out, mask=None, scale=None):
    """Tiled backward over 32-key blocks; each block computes its dS and writes gradients."""
    BLOCK = 32
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s_all = (q @ _T(k)) * sm_scale
    keep = _keep_full(mask, s_all.shape)
    if keep is not None:
        s_all = np.where(keep, s_all, -np.inf)
    p_all = _probs(s_all)
    o = p_all @ v
    delta = (o * d_out).sum(-1, keepdims=True)
    bshape = s_all.shape[:-2]
    dq = np.zeros(bshape + q.shape[-2:], dtype=q.dtype)
    dk = np.zeros(bshape + k.shape[-2:], dtype=q.dtype)
    dv = np.zeros(bshape + v.shape[-2:], dtype=q.dtype)
    for n0 in range(0, k.shape[-2], BLOCK):
        n1 = min(n0 + BLOCK, k.shape[-2])
        p = p_all[..., n0:n1]
        dv[..., n0:n1, :] = _T(p) @ d_out
        ds = p * (d_out @ _T(v[..., n0:n1, :]) - delta)
        dk[..., n0:n1, :] = _T(ds) @ q * sm_scale
        # BUG: dq is assigned per key block (overwritten by the last block) instead of accumulated with +=
        dq = ds @ k[..., n0:n1, :] * sm_scale
    return (_sum_to_shape(dq, q.shape).astype(q.dtype), _sum_to_shape(dk, k.shape).astype(k.dtype),
            _sum_to_shape(dv, v.shape).astype(v.dtype))


_F = ["mask", "dv-ne-d"]

CATALOG = [
    dict(name="bwd-dense", api="numpy-backward", fn="attention_backward_dense", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=list(_F)),
    dict(name="bwd-flash-tiled", api="numpy-backward", fn="flash_backward_tiled", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=list(_F)),
    dict(name="bwd-padded-dim-scale", api="numpy-backward", fn="ascend_padded_dim_bwd", correct=False,
         bug="scale-from-padded-head-dim", parameter="default softmax scale (1/sqrt of the 16-padded head dim)",
         source="tile-ai/tilelang-ascend#1670", report="https://github.com/tile-ai/tilelang-ascend/pull/1670",
         dtype="float64", features=list(_F)),
    dict(name="bwd-mqa-dk-not-summed", api="numpy-backward", fn="levanter_gqa_bwd", correct=False,
         bug="broadcast-kv-grad-not-summed", parameter="dk/dv reduction over the broadcast head axis (first head)",
         source="marin-community/levanter#449", report="https://github.com/marin-community/levanter/pull/449",
         dtype="float64", features=list(_F)),
    dict(name="bwd-masked-rows-nan", api="numpy-backward", fn="native_torch_attn_bwd", correct=False,
         bug="fully-masked-row-nan-gradients", parameter="rows with no kept key (softmax of all -inf = NaN)",
         source="RL-Align/RL-Kernel#188", report="https://github.com/RL-Align/RL-Kernel/pull/188",
         dtype="float64", features=list(_F)),
    dict(name="bwd-recompute-without-mask", api="numpy-backward", fn="triton_fused_attention_bwd", correct=False,
         bug="backward-ignores-mask", parameter="mask in the backward recomputation of P (not applied)",
         source="triton-lang/triton#7216", report="https://github.com/triton-lang/triton/issues/7216",
         dtype="float64", features=list(_F)),
    dict(name="bwd-lse-from-rounded-logits", api="numpy-backward", fn="levanter_streaming_bwd", correct=False,
         bug="fwd-bwd-logit-precision-mismatch", parameter="forward logits precision (float16 LSE vs float32 P)",
         source="marin-community/marin#8217", report="https://github.com/marin-community/marin/pull/8217",
         dtype="float32", features=list(_F)),
    dict(name="bwd-tail-block-dropped", api="numpy-backward", fn="pallas_mha_bwd", correct=False,
         bug="tail-key-block-skipped", parameter="key-block grid size (seq_len // block_k, tail dropped)",
         source="jax-ml/jax#27224", report="https://github.com/jax-ml/jax/issues/27224",
         dtype="float64", features=list(_F)),
    dict(name="bwd-softmax-diagonal-jacobian", api="numpy-backward", fn="nd4j_softmax_derivative_bwd",
         correct=False, bug="softmax-jacobian-diagonal-only",
         parameter="softmax backward (p * (1 - p) * g instead of p * (g - sum(p * g)))",
         source="deeplearning4j/libnd4j#440", report="https://github.com/deeplearning4j/libnd4j/issues/440",
         dtype="float64", features=list(_F)),
    dict(name="bwd-dq-value-extent", api="numpy-backward", fn="nsa_flash_attention_bwd", correct=False,
         bug="dq-uses-qk-dim-for-value", parameter="value/dO extent in dq's dP (qk head dim instead of Dv)",
         source="XunhaoLai/native-sparse-attention-triton#27",
         report="https://github.com/XunhaoLai/native-sparse-attention-triton/issues/27",
         dtype="float64", features=list(_F)),
    dict(name="bwd-dq-overwritten", api="numpy-backward", fn="paddle_tiled_dq_bwd", correct=False,
         bug="gradient-overwritten-not-accumulated", parameter="dq accumulation across key blocks (assigned)",
         source="PaddlePaddle/Paddle#1805", report="https://github.com/PaddlePaddle/Paddle/issues/1805",
         dtype="float64", features=list(_F)),
]
