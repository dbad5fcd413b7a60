"""NumPy attention backward kernels for the `numpy-backward` API:
fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv), the gradients of O = softmax(scale * q k^T | mask) v for
loss = sum(d_out * O).

mask is a bool keep-mask (True = attend); k/v may have a head axis of size 1 broadcast against q's heads (dk, dv come
back with k/v's shape, summed over the broadcast axis); rows with no kept key have zero output and zero gradients.
Two kernels are correct alternatives, the others carry one mistake each adapted from a public report (marked with a
BUG comment).
"""
import numpy as np


def _scale(q, scale):
    return 1.0 / np.sqrt(q.shape[-1]) if scale is None else float(scale)


def _setup(q, k, v, d_out, mask):
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2], d_out.shape[:-2],
                               np.shape(mask)[:-2] if mask is not None else ())
    sq, sk = q.shape[-2], k.shape[-2]
    if mask is None:
        keep = np.ones(lead + (sq, sk), dtype=bool)
    else:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    qb = np.broadcast_to(q, lead + q.shape[-2:])
    kb = np.broadcast_to(k, lead + k.shape[-2:])
    vb = np.broadcast_to(v, lead + v.shape[-2:])
    dob = np.broadcast_to(d_out, lead + d_out.shape[-2:])
    return lead, keep, qb, kb, vb, dob


def _unbroadcast(g, shape):
    """Sum g over the axes that were broadcast to reach g.shape from shape."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g


def _probs(s, keep):
    """Masked softmax over the last axis; rows with no kept key are all zeros (no NaN)."""
    s = np.where(keep, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    mx = np.where(np.isneginf(mx), 0.0, mx)
    e = np.exp(s - mx)
    den = e.sum(axis=-1, keepdims=True)
    return e / np.where(den > 0, den, 1.0)


def _finish(q, k, v, dq, dk, dv):
    return (_unbroadcast(dq, q.shape).astype(q.dtype), _unbroadcast(dk, k.shape).astype(k.dtype),
            _unbroadcast(dv, v.shape).astype(v.dtype))


# ----------------------------------------------------------------------------------------------------------------
# correct: dense backward, Delta = rowsum(dO * O)
# ----------------------------------------------------------------------------------------------------------------
def attn_bwd_dense(q, k, v, d_out, mask=None, scale=None):
    dtype = q.dtype
    sc = dtype.type(_scale(q, scale))
    lead, keep, qb, kb, vb, dob = _setup(q, k, v, d_out, mask)
    s = np.matmul(qb, np.swapaxes(kb, -1, -2)) * sc
    p = _probs(s, keep)
    o = np.matmul(p, vb)
    dv = np.matmul(np.swapaxes(p, -1, -2), dob)
    dp = np.matmul(dob, np.swapaxes(vb, -1, -2))
    delta = np.sum(dob * o, axis=-1, keepdims=True)
    ds = p * (dp - delta)
    dq = np.matmul(ds, kb) * sc
    dk = np.matmul(np.swapaxes(ds, -1, -2), qb) * sc
    return _finish(q, k, v, dq, dk, dv)


# ----------------------------------------------------------------------------------------------------------------
# correct: FlashAttention-2 style tiled backward: forward LSE, then loop over key blocks (dk/dv per block, dq += ...)
# ----------------------------------------------------------------------------------------------------------------
def attn_bwd_tiled_lse(q, k, v, d_out, mask=None, scale=None):
    BLOCK_N = 40
    dtype = q.dtype
    sc = dtype.type(_scale(q, scale))
    lead, keep, qb, kb, vb, dob = _setup(q, k, v, d_out, mask)
    sk = k.shape[-2]
    # forward pass for LSE and O (online over blocks)
    m = np.full(lead + (q.shape[-2], 1), -np.inf, dtype=dtype)
    l_ = np.zeros_like(m)
    o = np.zeros(lead + (q.shape[-2], v.shape[-1]), dtype=dtype)
    for n0 in range(0, sk, BLOCK_N):
        s = np.matmul(qb, np.swapaxes(kb[..., n0:n0 + BLOCK_N, :], -1, -2)) * sc
        s = np.where(keep[..., n0:n0 + BLOCK_N], s, -np.inf)
        m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
        m_safe = np.where(np.isneginf(m_new), 0.0, m_new).astype(dtype)
        e = np.exp(s - m_safe)
        a = np.exp(m - m_safe)
        l_ = l_ * a + e.sum(axis=-1, keepdims=True)
        o = o * a + np.matmul(e, vb[..., n0:n0 + BLOCK_N, :])
        m = m_new
    alive = l_ > 0
    o = np.where(alive, o / np.where(alive, l_, 1.0), 0.0)
    with np.errstate(divide="ignore"):
        lse = np.where(alive, np.where(np.isneginf(m), 0.0, m) + np.log(np.where(alive, l_, 1.0)), np.inf)
    delta = np.sum(dob * o, axis=-1, keepdims=True)
    dq = np.zeros(qb.shape, dtype=dtype)
    dk = np.zeros(kb.shape, dtype=dtype)
    dv = np.zeros(vb.shape, dtype=dtype)
    for n0 in range(0, sk, BLOCK_N):
        n1 = min(n0 + BLOCK_N, sk)
        s = np.matmul(qb, np.swapaxes(kb[..., n0:n1, :], -1, -2)) * sc
        s = np.where(keep[..., n0:n1] & alive, s, -np.inf)
        p = np.exp(s - np.where(alive, lse, 0.0))
        dv[..., n0:n1, :] = np.matmul(np.swapaxes(p, -1, -2), dob)
        dp = np.matmul(dob, np.swapaxes(vb[..., n0:n1, :], -1, -2))
        ds = p * (dp - delta)
        dk[..., n0:n1, :] = np.matmul(np.swapaxes(ds, -1, -2), qb) * sc
        dq += np.matmul(ds, kb[..., n0:n1, :]) * sc
    return _finish(q, k, v, dq, dk, dv)


# ----------------------------------------------------------------------------------------------------------------
# broken kernels
# ----------------------------------------------------------------------------------------------------------------
def attn_bwd_nan_dead_rows(q, k, v, d_out, mask=None, scale=None):
    # multi_head_attention_forward style: masked_fill(-inf) then softmax, gradient through the NaN rows
    dtype = q.dtype
    sc = dtype.type(_scale(q, scale))
    lead, keep, qb, kb, vb, dob = _setup(q, k, v, d_out, mask)
    s = np.matmul(qb, np.swapaxes(kb, -1, -2)) * sc
    s = np.where(keep, s, -np.inf)
    # BUG: softmax over rows with every key masked computes exp(-inf - (-inf)) = NaN and it propagates to the grads
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    o = np.matmul(p, vb)
    dv = np.matmul(np.swapaxes(p, -1, -2), dob)
    dp = np.matmul(dob, np.swapaxes(vb, -1, -2))
    ds = p * (dp - np.sum(dob * o, axis=-1, keepdims=True))
    dq = np.matmul(ds, kb) * sc
    dk = np.matmul(np.swapaxes(ds, -1, -2), qb) * sc
    return _finish(q, k, v, dq, dk, dv)


def attn_bwd_mqa_mean(q, k, v, d_out, mask=None, scale=None):
    # levanter-style: K/V broadcast over the query-head group axis, then "un-broadcast" the gradients
    dtype = q.dtype
    sc = dtype.type(_scale(q, scale))
    lead, keep, qb, kb, vb, dob = _setup(q, k, v, d_out, mask)
    p = _probs(np.matmul(qb, np.swapaxes(kb, -1, -2)) * sc, keep)
    o = np.matmul(p, vb)
    dV_j = np.matmul(np.swapaxes(p, -1, -2), dob)
    dP = np.matmul(dob, np.swapaxes(vb, -1, -2))
    dAttn = p * (dP - np.sum(dob * o, axis=-1, keepdims=True))
    dQ = np.matmul(dAttn, kb) * sc
    dK_j = np.matmul(np.swapaxes(dAttn, -1, -2), qb) * sc
    axes = tuple(i for i, n in enumerate(k.shape[:-2]) if n == 1 and dK_j.shape[i] != 1)
    # BUG: gradients of the broadcast kv heads are averaged over the sharing query heads instead of summed
    dK = dK_j.mean(axis=axes, keepdims=True) if axes else dK_j
    dV = dV_j.mean(axis=axes, keepdims=True) if axes else dV_j
    return _finish(q, k, v, dQ, dK, dV)


def attn_bwd_no_delta(q, k, v, d_out, mask=None, scale=None):
    # softmax_backward written as grad_input = s * grad_output
    dtype = q.dtype
    sc = dtype.type(_scale(q, scale))
    lead, keep, qb, kb, vb, dob = _setup(q, k, v, d_out, mask)
    attn = _probs(np.matmul(qb, np.swapaxes(kb, -1, -2)) * sc, keep)
    grad_v = np.matmul(np.swapaxes(attn, -1, -2), dob)
    grad_attn = np.matmul(dob, np.swapaxes(vb, -1, -2))
    # BUG: softmax Jacobian-vector product misses the - sum_k(grad_output_k * s_k) (Delta) term
    grad_scores = attn * grad_attn
    grad_q = np.matmul(grad_scores, kb) * sc
    grad_k = np.matmul(np.swapaxes(grad_scores, -1, -2), qb) * sc
    return _finish(q, k, v, grad_q, grad_k, grad_v)


def attn_bwd_diagonal_jacobian(q, k, v, d_out, mask=None, scale=None):
    # elementwise softmax derivative output * (1 - output), as for a sigmoid
    dtype = q.dtype
    sc = dtype.type(_scale(q, scale))
    lead, keep, qb, kb, vb, dob = _setup(q, k, v, d_out, mask)
    out = _probs(np.matmul(qb, np.swapaxes(kb, -1, -2)) * sc, keep)
    d_v = np.matmul(np.swapaxes(out, -1, -2), dob)
    d_out_probs = np.matmul(dob, np.swapaxes(vb, -1, -2))
    # BUG: only the diagonal of the softmax Jacobian is used (i != j terms dropped)
    d_scores = d_out_probs * out * (1.0 - out)
    d_q = np.matmul(d_scores, kb) * sc
    d_k = np.matmul(np.swapaxes(d_scores, -1, -2), qb) * sc
    return _finish(q, k, v, d_q, d_k, d_v)


def attn_bwd_dk_unscaled(q, k, v, d_out, mask=None, scale=None):
    # flash_bwd style: softmax_scale_log2 used for P, plain softmax_scale expected for dQ and dK
    dtype = q.dtype
    softmax_scale = dtype.type(_scale(q, scale))
    softmax_scale_log2 = softmax_scale * dtype.type(np.log2(np.e))
    lead, keep, qb, kb, vb, dob = _setup(q, k, v, d_out, mask)
    s = np.matmul(qb, np.swapaxes(kb, -1, -2))
    s2 = np.where(keep, s * softmax_scale_log2, -np.inf)
    mx = s2.max(axis=-1, keepdims=True)
    mx = np.where(np.isneginf(mx), 0.0, mx)
    e = np.exp2(s2 - mx)
    den = e.sum(axis=-1, keepdims=True)
    p = e / np.where(den > 0, den, 1.0)
    o = np.matmul(p, vb)
    dv = np.matmul(np.swapaxes(p, -1, -2), dob)
    dp = np.matmul(dob, np.swapaxes(vb, -1, -2))
    ds = p * (dp - np.sum(dob * o, axis=-1, keepdims=True))
    dq = np.matmul(ds, kb) * softmax_scale
    # BUG: dK is not multiplied by softmax_scale (the scale was lost on the way into the kernel)
    dk = np.matmul(np.swapaxes(ds, -1, -2), qb)
    return _finish(q, k, v, dq, dk, dv)


def attn_bwd_padded_dim_scale(q, k, v, d_out, mask=None, scale=None):
    # tilelang-ascend style run_bwd: head dim padded to a multiple of 16 for the cube unit
    dtype = q.dtype
    d = q.shape[-1]
    dim_qk_padded = -(-d // 16) * 16
    # BUG: the default sm_scale is computed from the padded head dim instead of the logical D
    sm_scale = dtype.type(1.0 / np.sqrt(dim_qk_padded) if scale is None else float(scale))
    lead, keep, qb, kb, vb, dob = _setup(q, k, v, d_out, mask)
    pad = [(0, 0)] * (qb.ndim - 1) + [(0, dim_qk_padded - d)]
    q_p = np.pad(qb, pad)
    k_p = np.pad(kb, pad)
    p = _probs(np.matmul(q_p, np.swapaxes(k_p, -1, -2)) * sm_scale, keep)
    o = np.matmul(p, vb)
    dv = np.matmul(np.swapaxes(p, -1, -2), dob)
    dp = np.matmul(dob, np.swapaxes(vb, -1, -2))
    ds = p * (dp - np.sum(dob * o, axis=-1, keepdims=True))
    dq = (np.matmul(ds, k_p) * sm_scale)[..., :d]
    dk = (np.matmul(np.swapaxes(ds, -1, -2), q_p) * sm_scale)[..., :d]
    return _finish(q, k, v, dq, dk, dv)


def attn_bwd_dp_truncated(q, k, v, d_out, mask=None, scale=None):
    # native-sparse-attention backward_dq style: v / dO tiles declared with the qk head dim
    dtype = q.dtype
    sc = dtype.type(_scale(q, scale))
    lead, keep, qb, kb, vb, dob = _setup(q, k, v, d_out, mask)
    qk_head_dim = q.shape[-1]
    p = _probs(np.matmul(qb, np.swapaxes(kb, -1, -2)) * sc, keep)
    o = np.matmul(p, vb)
    dv = np.matmul(np.swapaxes(p, -1, -2), dob)
    # BUG: dP = dO V^T reads only the first qk_head_dim value channels (wrong when Dv > D)
    dp = np.matmul(dob[..., :qk_head_dim], np.swapaxes(vb[..., :qk_head_dim], -1, -2))
    delta = np.sum(dob * o, axis=-1, keepdims=True)
    ds = p * (dp - delta)
    dq = np.matmul(ds, kb) * sc
    dk = np.matmul(np.swapaxes(ds, -1, -2), qb) * sc
    return _finish(q, k, v, dq, dk, dv)


def attn_bwd_tail_block_dropped(q, k, v, d_out, mask=None, scale=None):
    # FlagGems-style SDPA backward: kv-block grid of 64 keys, forward LSE precomputed
    BLOCK_N = 64
    dtype = q.dtype
    sc = dtype.type(_scale(q, scale))
    lead, keep, qb, kb, vb, dob = _setup(q, k, v, d_out, mask)
    sk = k.shape[-2]
    s_full = np.where(keep, np.matmul(qb, np.swapaxes(kb, -1, -2)) * sc, -np.inf)
    mx = s_full.max(axis=-1, keepdims=True)
    alive = ~np.isneginf(mx)
    mx = np.where(alive, mx, 0.0)
    lse = mx + np.log(np.where(alive, np.exp(s_full - mx).sum(axis=-1, keepdims=True), 1.0))
    o = np.matmul(np.where(alive, np.exp(s_full - lse), 0.0), vb)
    delta = np.sum(dob * o, axis=-1, keepdims=True)
    dq = np.zeros(qb.shape, dtype=dtype)
    dk = np.zeros(kb.shape, dtype=dtype)
    dv = np.zeros(vb.shape, dtype=dtype)
    # BUG: the grid covers sk // BLOCK_N blocks, so a partial last key block gets no dk/dv/dq contribution
    for start_n in range(0, (sk // BLOCK_N) * BLOCK_N, BLOCK_N):
        sl = slice(start_n, start_n + BLOCK_N)
        p = np.where(alive, np.exp(s_full[..., sl] - lse), 0.0)
        dv[..., sl, :] = np.matmul(np.swapaxes(p, -1, -2), dob)
        ds = p * (np.matmul(dob, np.swapaxes(vb[..., sl, :], -1, -2)) - delta)
        dk[..., sl, :] = np.matmul(np.swapaxes(ds, -1, -2), qb) * sc
        dq += np.matmul(ds, kb[..., sl, :]) * sc
    return _finish(q, k, v, dq, dk, dv)


def attn_bwd_unmasked_recompute(q, k, v, d_out, mask=None, scale=None):
    # sliding-window pre-train backward: P recomputed in the dq/dk pass, mask only applied in the dv pass
    dtype = q.dtype
    sc = dtype.type(_scale(q, scale))
    lead, keep, qb, kb, vb, dob = _setup(q, k, v, d_out, mask)
    s = np.matmul(qb, np.swapaxes(kb, -1, -2)) * sc
    p_masked = _probs(s, keep)
    o = np.matmul(p_masked, vb)
    dv = np.matmul(np.swapaxes(p_masked, -1, -2), dob)
    alive = keep.any(axis=-1, keepdims=True)
    # BUG: the dq/dk pass recomputes P without the keep-mask (only the row bounds are applied)
    p = np.where(alive, _probs(s, np.ones_like(keep)), 0.0)
    dp = np.matmul(dob, np.swapaxes(vb, -1, -2))
    ds = p * (dp - np.sum(dob * o, axis=-1, keepdims=True))
    dq = np.matmul(ds, kb) * sc
    dk = np.matmul(np.swapaxes(ds, -1, -2), qb) * sc
    return _finish(q, k, v, dq, dk, dv)


_F = ["mask", "dv-ne-d"]

CATALOG = [
    dict(name="bwd-dense", api="numpy-backward", fn="attn_bwd_dense", correct=True, bug=None, parameter=None,
         source=None, report=None, dtype="float64", features=list(_F)),
    dict(name="bwd-tiled-lse", api="numpy-backward", fn="attn_bwd_tiled_lse", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=list(_F)),
    dict(name="bwd-nan-dead-rows", api="numpy-backward", fn="attn_bwd_nan_dead_rows", correct=False,
         bug="fully-masked-row-nan-grad", parameter="gradients of rows with no kept key (NaN)",
         source="pytorch/pytorch#41508", report="https://github.com/pytorch/pytorch/issues/41508",
         dtype="float64", features=list(_F)),
    dict(name="bwd-mqa-mean", api="numpy-backward", fn="attn_bwd_mqa_mean", correct=False,
         bug="mqa-dkdv-averaged", parameter="dk/dv of broadcast kv heads averaged instead of summed",
         source="marin-community/levanter#449", report="https://github.com/marin-community/levanter/pull/449",
         dtype="float64", features=list(_F)),
    dict(name="bwd-no-delta", api="numpy-backward", fn="attn_bwd_no_delta", correct=False,
         bug="missing-delta-term", parameter="dS = P * dP without subtracting rowsum(dO * O)",
         source="HomericIntelligence/Odyssey#2134",
         report="https://github.com/HomericIntelligence/Odyssey/issues/2134",
         dtype="float64", features=list(_F)),
    dict(name="bwd-diagonal-jacobian", api="numpy-backward", fn="attn_bwd_diagonal_jacobian", correct=False,
         bug="softmax-jacobian-diagonal-only", parameter="dS = dP * P * (1 - P)",
         source="deeplearning4j/libnd4j#440", report="https://github.com/deeplearning4j/libnd4j/issues/440",
         dtype="float64", features=list(_F)),
    dict(name="bwd-dk-unscaled", api="numpy-backward", fn="attn_bwd_dk_unscaled", correct=False,
         bug="dk-missing-scale", parameter="softmax scale missing from dK",
         source="Dao-AILab/flash-attention#2651",
         report="https://github.com/Dao-AILab/flash-attention/issues/2651",
         dtype="float64", features=list(_F)),
    dict(name="bwd-padded-dim-scale", api="numpy-backward", fn="attn_bwd_padded_dim_scale", correct=False,
         bug="scale-from-padded-head-dim", parameter="default scale 1/sqrt(D rounded up to 16)",
         source="tile-ai/tilelang-ascend#1670", report="https://github.com/tile-ai/tilelang-ascend/pull/1670",
         dtype="float64", features=list(_F)),
    dict(name="bwd-dp-truncated", api="numpy-backward", fn="attn_bwd_dp_truncated", correct=False,
         bug="dp-value-dim-truncated", parameter="dP computed over the first D value channels only",
         source="XunhaoLai/native-sparse-attention-triton#27",
         report="https://github.com/XunhaoLai/native-sparse-attention-triton/issues/27",
         dtype="float64", features=list(_F)),
    dict(name="bwd-tail-block-dropped", api="numpy-backward", fn="attn_bwd_tail_block_dropped", correct=False,
         bug="bwd-tail-kv-block-skipped", parameter="last partial 64-key block skipped in the backward grid",
         source="flagos-ai/FlagGems#898", report="https://github.com/flagos-ai/FlagGems/pull/898",
         dtype="float64", features=list(_F)),
    dict(name="bwd-unmasked-recompute", api="numpy-backward", fn="attn_bwd_unmasked_recompute", correct=False,
         bug="bwd-recompute-ignores-mask", parameter="P recomputed for dq/dk without the keep-mask",
         source="XPU-Forces/mojo_opset#386", report="https://github.com/XPU-Forces/mojo_opset/pull/386",
         dtype="float64", features=list(_F)),
]
