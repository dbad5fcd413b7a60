"""Held-out set 17, API `numpy-backward`: fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv).

Gradients of the contract-1 forward (softmax(scale * q k^T, keep-mask) v) for loss = sum(d_out * O); k/v may have a
head axis of size 1 broadcast against q's heads (dk, dv come back with k/v's shape, summed over the broadcast axis);
rows with no kept key have zero output and zero gradients; results in the input dtype. Six broken kernels (one
BUG-marked line each) and two correct ones; see README.md. The two module-level helpers below are shared and correct.
"""
import numpy as np


def _sum_to_shape(grad, shape):
    """Sum a broadcast gradient back to `shape` (leading axes added by broadcasting, then size-1 axes)."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def _masked_softmax(s):
    """Softmax over the last axis; -inf entries get 0 and a row with no finite entry is all zeros."""
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = np.sum(e, axis=-1, keepdims=True)
    return e / np.where(z == 0, 1.0, z)


# --- kernel: bwd_flash_dout_layout ---
def bwd_flash_dout_layout(q, k, v, d_out, mask=None, scale=None):
    """Flash-style backward: the forward output is kept in its (..., S, H, D) storage and dO is read to match it."""
    scale = float(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    p = _masked_softmax(s)
    out = np.matmul(p, v)
    if q.ndim >= 3:
        out_saved = np.ascontiguousarray(np.swapaxes(out, -2, -3))
        do = np.ascontiguousarray(d_out).reshape(out_saved.shape)  # BUG: dO read in out's layout
        do = np.swapaxes(do, -2, -3)
        out = np.swapaxes(out_saved, -2, -3)
    else:
        do = d_out
    delta = np.sum(do * out, axis=-1, keepdims=True)
    dv = _sum_to_shape(np.matmul(np.swapaxes(p, -1, -2), do), v.shape)
    dp = np.matmul(do, np.swapaxes(v, -1, -2))
    ds = p * (dp - delta)
    dq = np.matmul(ds, k) * scale
    dk = _sum_to_shape(np.matmul(np.swapaxes(ds, -1, -2), q) * scale, k.shape)
    return dq.astype(q.dtype, copy=False), dk.astype(k.dtype, copy=False), dv.astype(v.dtype, copy=False)


# --- kernel: bwd_rowsum_keepdims ---
def bwd_rowsum_keepdims(q, k, v, d_out, mask=None, scale=None):
    """Hand-written autograd rules: the softmax backward subtracts the row sum of dO * O."""
    scale = float(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    probs = _masked_softmax(scores)
    out = np.matmul(probs, v)
    d_probs = np.matmul(d_out, np.swapaxes(v, -1, -2))
    delta = np.sum(d_out * out, axis=-1)  # BUG: no keepdims
    d_scores = probs * (d_probs - delta)
    dq = np.matmul(d_scores, k) * scale
    dk = _sum_to_shape(np.matmul(np.swapaxes(d_scores, -1, -2), q) * scale, k.shape)
    dv = _sum_to_shape(np.matmul(np.swapaxes(probs, -1, -2), d_out), v.shape)
    return dq.astype(q.dtype, copy=False), dk.astype(k.dtype, copy=False), dv.astype(v.dtype, copy=False)


# --- kernel: bwd_sdpa_mask_gate ---
def bwd_sdpa_mask_gate(q, k, v, d_out, mask=None, scale=None, window_size=(-1, -1)):
    """Backward of the masked SDPA branch: re-derive the probabilities, then dV, dP, dS, dQ, dK."""
    scale = float(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    use_mask = mask is not None and window_size is None  # BUG: never None: mask dropped
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if use_mask:
        s = np.where(mask, s, -np.inf)
    p = _masked_softmax(s)
    o = np.matmul(p, v)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - np.sum(d_out * o, axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    return (dq.astype(q.dtype, copy=False), _sum_to_shape(dk, k.shape).astype(k.dtype, copy=False),
            _sum_to_shape(dv, v.shape).astype(v.dtype, copy=False))


# --- kernel: bwd_energy_column_softmax ---
def bwd_energy_column_softmax(q, k, v, d_out, mask=None, scale=None):
    """Backward that re-derives the attention weights from the energies computed for the forward pass."""
    scale = float(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    alpha = _masked_softmax(s.reshape(-1, 1)).reshape(s.shape)  # BUG: softmax over a size-1 axis
    o = np.matmul(alpha, v)
    dv = _sum_to_shape(np.matmul(np.swapaxes(alpha, -1, -2), d_out), v.shape)
    d_alpha = np.matmul(d_out, np.swapaxes(v, -1, -2))
    d_s = alpha * (d_alpha - np.sum(d_out * o, axis=-1, keepdims=True))
    dq = np.matmul(d_s, k) * scale
    dk = _sum_to_shape(np.matmul(np.swapaxes(d_s, -1, -2), q) * scale, k.shape)
    return dq.astype(q.dtype, copy=False), dk.astype(k.dtype, copy=False), dv.astype(v.dtype, copy=False)


# --- kernel: bwd_flattened_heads_kv_view ---
def bwd_flattened_heads_kv_view(q, k, v, d_out, mask=None, scale=None):
    """Backward on (batch * heads, S, D) views, the layout the fused kernel consumes."""
    lead = q.shape[:-2]
    sq, d = q.shape[-2:]
    sk, dv_dim = v.shape[-2:]
    scale = float(1.0 / np.sqrt(d) if scale is None else scale)
    q3 = q.reshape(-1, sq, d)
    k3 = k.reshape(q3.shape[0], sk, d)  # BUG: query's head count
    v3 = np.broadcast_to(v, lead + (sk, dv_dim)).reshape(-1, sk, dv_dim)
    do3 = d_out.reshape(-1, sq, dv_dim)
    s = np.matmul(q3, np.swapaxes(k3, 1, 2)) * scale
    if mask is not None:
        s = np.where(np.broadcast_to(mask, lead + (sq, sk)).reshape(-1, sq, sk), s, -np.inf)
    p = _masked_softmax(s)
    o = np.matmul(p, v3)
    dp = np.matmul(do3, np.swapaxes(v3, 1, 2))
    ds = p * (dp - np.sum(do3 * o, axis=-1, keepdims=True))
    dq3 = np.matmul(ds, k3) * scale
    dk3 = np.matmul(np.swapaxes(ds, 1, 2), q3) * scale
    dv3 = np.matmul(np.swapaxes(p, 1, 2), do3)
    dq = dq3.reshape(q.shape)
    dk = _sum_to_shape(dk3.reshape(lead + (sk, d)), k.shape)
    dv = _sum_to_shape(dv3.reshape(lead + (sk, dv_dim)), v.shape)
    return dq.astype(q.dtype, copy=False), dk.astype(k.dtype, copy=False), dv.astype(v.dtype, copy=False)


# --- kernel: bwd_energies_unstabilised ---
def _row_max(s):
    m = np.max(s, axis=-1, keepdims=True)
    return np.where(np.isfinite(m), m, 0.0)


def bwd_energies_unstabilised(q, k, v, d_out, mask=None, scale=None):
    """Attention-brick backward: normalised exp(energies) as weights, then the usual softmax-Jacobian product."""
    scale = float(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    energies = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        energies = np.where(mask, energies, -np.inf)
    unnormalized = np.exp(energies)  # BUG: no max subtraction: overflow
    total = np.sum(unnormalized, axis=-1, keepdims=True)
    weights = unnormalized / np.where(total == 0, 1.0, total)
    out = np.matmul(weights, v)
    dv = _sum_to_shape(np.matmul(np.swapaxes(weights, -1, -2), d_out), v.shape)
    dw = np.matmul(d_out, np.swapaxes(v, -1, -2))
    de = weights * (dw - np.sum(d_out * out, axis=-1, keepdims=True))
    dq = np.matmul(de, k) * scale
    dk = _sum_to_shape(np.matmul(np.swapaxes(de, -1, -2), q) * scale, k.shape)
    return dq.astype(q.dtype, copy=False), dk.astype(k.dtype, copy=False), dv.astype(v.dtype, copy=False)


# --- kernel: bwd_dense_dp_rowsum ---
def bwd_dense_dp_rowsum(q, k, v, d_out, mask=None, scale=None):
    """Correct: dense backward with the softmax Jacobian written as P * (dP - rowsum(dP * P))."""
    scale = float(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    p = _masked_softmax(s)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = _sum_to_shape(np.matmul(np.swapaxes(ds, -1, -2), q) * scale, k.shape)
    dv = _sum_to_shape(np.matmul(np.swapaxes(p, -1, -2), d_out), v.shape)
    return dq.astype(q.dtype, copy=False), dk.astype(k.dtype, copy=False), dv.astype(v.dtype, copy=False)


# --- kernel: bwd_query_tiles_rowstats ---
def bwd_query_tiles_rowstats(q, k, v, d_out, mask=None, scale=None):
    """Correct: query tiles of 16; per tile a running (max, sum) over key tiles of 24, then P = exp(S - max) / sum,
    dQ per tile and dK/dV accumulated over the tiles."""
    dtype = q.dtype
    scale = float(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    sq, sk = q.shape[-2], k.shape[-2]
    keep = None if mask is None else np.broadcast_to(mask, lead + (sq, sk))
    dq = np.zeros(q.shape, dtype=dtype)
    dk_full = np.zeros(lead + k.shape[-2:], dtype=dtype)
    dv_full = np.zeros(lead + v.shape[-2:], dtype=dtype)
    for i0 in range(0, sq, 16):
        i1 = min(i0 + 16, sq)
        qt, dot = q[..., i0:i1, :], d_out[..., i0:i1, :]
        s = np.matmul(qt, np.swapaxes(k, -1, -2)) * scale
        if keep is not None:
            s = np.where(keep[..., i0:i1, :], s, -np.inf)
        row_m = np.full(lead + (i1 - i0, 1), -np.inf, dtype=dtype)
        row_l = np.zeros(lead + (i1 - i0, 1), dtype=dtype)
        for j0 in range(0, sk, 24):
            blk = s[..., j0:j0 + 24]
            m_new = np.maximum(row_m, np.max(blk, axis=-1, keepdims=True))
            m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
            row_l = row_l * np.exp(row_m - m_safe) + np.sum(np.exp(blk - m_safe), axis=-1, keepdims=True)
            row_m = m_new
        p = np.exp(s - np.where(np.isfinite(row_m), row_m, 0.0)) / np.where(row_l == 0, 1.0, row_l)
        o = np.matmul(p, v)
        dp = np.matmul(dot, np.swapaxes(v, -1, -2))
        ds = p * (dp - np.sum(dot * o, axis=-1, keepdims=True))
        dq[..., i0:i1, :] = np.matmul(ds, k) * scale
        dk_full = dk_full + np.matmul(np.swapaxes(ds, -1, -2), qt) * scale
        dv_full = dv_full + np.matmul(np.swapaxes(p, -1, -2), dot)
    return dq, _sum_to_shape(dk_full, k.shape), _sum_to_shape(dv_full, v.shape)


CATALOG = [
    dict(name='bwd-flashattn-dout-layout', api='numpy-backward', fn='bwd_flash_dout_layout', correct=False,
         bug='dout-read-with-output-layout',
         parameter='dO (..., H, Sq, Dv) is reshaped straight into the (..., Sq, H, Dv) storage of the saved '
                   'output instead of being transposed into it, so heads and rows of dO are interleaved wrongly. '
                   'Triggers: a head axis (axis -3) larger than 1 with Sq > 1',
         source='Dao-AILab/flash-attention#355', report='https://github.com/Dao-AILab/flash-attention/issues/355',
         dtype='float64', features=['mask', 'gqa', 'dv-ne-d']),
    dict(name='bwd-qeep-rowsum-no-keepdims', api='numpy-backward', fn='bwd_rowsum_keepdims', correct=False,
         bug='row-reduction-without-keepdims',
         parameter='delta = sum(dO * O, axis=-1) drops the reduced axis, so (dP - delta) broadcasts delta along '
                   'the key axis (a wrong subtraction, or a shape error) instead of per query row. Triggers: any '
                   'input except a single 2-D query row',
         source='sahandsafizadeh/qeep#29', report='https://github.com/sahandsafizadeh/qeep/pull/29',
         dtype='float64', features=['mask', 'gqa', 'dv-ne-d']),
    dict(name='bwd-mslk-mask-gate-never-true', api='numpy-backward', fn='bwd_sdpa_mask_gate', correct=False,
         bug='backward-mask-not-applied',
         parameter='the mask is applied only if window_size is None, but window_size defaults to (-1, -1), so '
                   'the backward recomputes the weights without the mask (dropped keys get weight and gradient, '
                   'empty rows get non-zero gradients). Triggers: a mask with at least one dropped key',
         source='meta-pytorch/MSLK#263', report='https://github.com/meta-pytorch/MSLK/pull/263', dtype='float64',
         features=['mask', 'gqa', 'dv-ne-d']),
    dict(name='bwd-keqa-softmax-size-one-axis', api='numpy-backward', fn='bwd_energy_column_softmax',
         correct=False, bug='softmax-over-singleton-axis',
         parameter='the energies are reshaped to (N, 1) before the softmax, which then normalises over a size-1 '
                   'axis: every kept weight becomes 1 and every gradient follows from those weights. Triggers: '
                   'always (rows with two or more kept keys)',
         source='DEEP-PolyU/KEQA_WSDM19#2', report='https://github.com/DEEP-PolyU/KEQA_WSDM19/issues/2',
         dtype='float64', features=['mask', 'gqa', 'dv-ne-d']),
    dict(name='bwd-te-kv-view-query-heads', api='numpy-backward', fn='bwd_flattened_heads_kv_view',
         correct=False, bug='kv-viewed-with-query-heads',
         parameter='the key is viewed as (batch * query heads, Sk, D) although it has one shared kv head, so the '
                   'view fails (size mismatch) for multi-query inputs. Triggers: k/v with a head axis of size 1 '
                   'broadcast against more than one query head',
         source='NVIDIA/TransformerEngine#367', report='https://github.com/NVIDIA/TransformerEngine/pull/367',
         dtype='float64', features=['mask', 'gqa', 'dv-ne-d']),
    dict(name='bwd-blocks-energies-no-max', api='numpy-backward', fn='bwd_energies_unstabilised', correct=False,
         bug='softmax-without-max-subtraction',
         parameter='the weights are exp(energies) / sum without subtracting the row maximum, so energies above '
                   'about 709 (float64) overflow to inf and the weights and gradients become NaN. Triggers: a row '
                   'whose largest score exceeds the exp range (extreme logits)',
         source='mila-iqia/blocks#727', report='https://github.com/mila-iqia/blocks/pull/727', dtype='float64',
         features=['mask', 'gqa', 'dv-ne-d']),
    dict(name='bwd-dense-dp-rowsum', api='numpy-backward', fn='bwd_dense_dp_rowsum', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=['mask', 'gqa', 'dv-ne-d']),
    dict(name='bwd-query-tiles-rowstats', api='numpy-backward', fn='bwd_query_tiles_rowstats', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=['mask', 'gqa', 'dv-ne-d']),
]
