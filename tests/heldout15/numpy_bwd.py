"""heldout15 NumPy backward kernels, API `numpy-backward`: fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv).

Gradients of the contract-1 forward for loss = sum(d_out * O); k/v may carry a head axis of 1 broadcast against q's
heads (dk, dv come back in k/v's shape); rows with no kept key have zero output and zero gradients.
"""
import math

import numpy as np


def _reduce_to(g, shape):
    """Sum a gradient over the axes that were broadcast to reach g's shape."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g


def _scores(q, k, mask, scale):
    """Scaled scores and the broadcast keep-mask."""
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = np.ones(s.shape, dtype=bool) if mask is None else np.broadcast_to(mask, s.shape)
    return s, keep, scale


# --- kernel: bwd_mask_mod_not_saved ---
def _fwd_with_lse(s, keep, v):
    sm = np.where(keep, s, -np.inf)
    m = sm.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(sm - m)
    ell = e.sum(axis=-1, keepdims=True)
    out = np.matmul(e / np.where(ell > 0, ell, 1.0), v)
    with np.errstate(divide='ignore'):
        lse = np.where(ell > 0, np.log(np.where(ell > 0, ell, 1.0)) + m, np.inf)
    return out, lse


def bwd_mask_mod_not_saved(q, k, v, d_out, mask=None, scale=None):
    """Autograd-wrapper style: forward with the mask, backward recomputes P from the saved LSE."""
    s, keep, scale = _scores(q, k, mask, scale)
    out, lse = _fwd_with_lse(s, keep, v)
    bwd_keep = np.ones_like(keep)  # BUG: the mask is not saved to ctx, so the backward runs without it
    p = np.where(bwd_keep, np.exp(s - lse), 0.0)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    delta = np.sum(d_out * out, axis=-1, keepdims=True)
    ds = p * (dp - delta)
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    return (dq.astype(q.dtype), _reduce_to(dk, k.shape).astype(k.dtype), _reduce_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_dv_reduce_ncol_from_qk_dim ---
def bwd_dv_reduce_ncol_from_qk_dim(q, k, v, d_out, mask=None, scale=None):
    """dK/dV written back in column groups of dK_reduce_ncol = gcd(32, hdim / 2)."""
    s, keep, scale = _scores(q, k, mask, scale)
    sm = np.where(keep, s, -np.inf)
    m = sm.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(sm - m)
    ell = e.sum(axis=-1, keepdims=True)
    p = e / np.where(ell > 0, ell, 1.0)
    dv_acc = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - np.sum(p * dp, axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    d, dvd = q.shape[-1], v.shape[-1]
    dk_reduce_ncol = math.gcd(32, d // 2)  # BUG: the column group is derived from head_dim (Q/K) and reused for dV
    dv = np.zeros_like(dv_acc)
    for c0 in range(0, dvd - dvd % dk_reduce_ncol, dk_reduce_ncol):
        dv[..., c0:c0 + dk_reduce_ncol] = dv_acc[..., c0:c0 + dk_reduce_ncol]
    return (dq.astype(q.dtype), _reduce_to(dk, k.shape).astype(k.dtype), _reduce_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_chunk_scale_missing_in_dk ---
def bwd_chunk_scale_missing_in_dk(q, k, v, d_out, mask=None, scale=None):
    """Fused-chunk style backward: q is pre-scaled in the forward, the gradients re-apply the scale."""
    s, keep, scale = _scores(q, k, mask, scale)
    sm = np.where(keep, s, -np.inf)
    m = sm.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(sm - m)
    ell = e.sum(axis=-1, keepdims=True)
    p = e / np.where(ell > 0, ell, 1.0)
    out = np.matmul(p, v)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - np.sum(d_out * out, axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q)  # BUG: the scale is not applied to the key gradient
    return (dq.astype(q.dtype), _reduce_to(dk, k.shape).astype(k.dtype), _reduce_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_logsumexp_of_probs ---
def bwd_logsumexp_of_probs(q, k, v, d_out, mask=None, scale=None):
    """Math attention that also returns the logsumexp saved for the backward recompute."""
    s, keep, scale = _scores(q, k, mask, scale)
    sm = np.where(keep, s, -np.inf)
    m = sm.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(sm - m)
    ell = e.sum(axis=-1, keepdims=True)
    scores = e / np.where(ell > 0, ell, 1.0)
    source = np.where(keep, scores, -np.inf)  # BUG: the logsumexp is taken of the post-softmax probabilities
    smax = source.max(axis=-1, keepdims=True)
    smax = np.where(np.isfinite(smax), smax, 0.0)
    with np.errstate(divide='ignore'):
        logsumexp = np.log(np.exp(source - smax).sum(axis=-1, keepdims=True)) + smax
    logsumexp = np.where(np.isfinite(logsumexp), logsumexp, np.inf)
    p = np.where(keep, np.exp(s - logsumexp), 0.0)
    out = np.matmul(p, v)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - np.sum(d_out * out, axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    return (dq.astype(q.dtype), _reduce_to(dk, k.shape).astype(k.dtype), _reduce_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_mha_softmax_nan_rows ---
def bwd_mha_softmax_nan_rows(q, k, v, d_out, mask=None, scale=None):
    """multi_head_attention_forward style: masked scores, softmax, bmm, then the chain rule by hand."""
    s, keep, scale = _scores(q, k, mask, scale)
    attn_output_weights = np.where(keep, s, -np.inf)
    with np.errstate(invalid='ignore'):
        m = np.max(attn_output_weights, axis=-1, keepdims=True)  # BUG: a fully masked row keeps max -inf, softmax NaN
        e = np.exp(attn_output_weights - m)
        ell = e.sum(axis=-1, keepdims=True)
        p = e / np.where(ell > 0, ell, 1.0)
        attn_output = np.matmul(p, v)
        dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
        dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
        ds = p * (dp - np.sum(d_out * attn_output, axis=-1, keepdims=True))
        dq = np.matmul(ds, k) * scale
        dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    return (dq.astype(q.dtype), _reduce_to(dk, k.shape).astype(k.dtype), _reduce_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_weighted_sum_wrong_direction ---
def bwd_weighted_sum_wrong_direction(q, k, v, d_out, mask=None, scale=None):
    """Self-attention layer with a hand-written backward for the weighted sum y = weights V."""
    s, keep, scale = _scores(q, k, mask, scale)
    logits = np.where(keep, s, -np.inf)
    m = logits.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(logits - m)
    ell = e.sum(axis=-1, keepdims=True)
    weights = e / np.where(ell > 0, ell, 1.0)
    y = np.matmul(weights, v)
    dv = np.matmul(weights, d_out)  # BUG: the weighted sum is taken along the wrong direction (weights, not weights^T)
    dw = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = weights * (dw - np.sum(d_out * y, axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    return (dq.astype(q.dtype), _reduce_to(dk, k.shape).astype(k.dtype), _reduce_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_dense_rowsum_delta ---
def bwd_dense_rowsum_delta(q, k, v, d_out, mask=None, scale=None):
    """Correct: dense backward with delta = rowsum(dO * O) and the row LSE from the forward."""
    s, keep, scale = _scores(q, k, mask, scale)
    out, lse = _dense_forward(s, keep, v)
    p = np.where(keep, np.exp(s - lse), 0.0)
    dv = np.swapaxes(p, -1, -2) @ d_out
    delta = (d_out * out).sum(axis=-1, keepdims=True)
    ds = p * (d_out @ np.swapaxes(v, -1, -2) - delta)
    dq = ds @ k * scale
    dk = np.swapaxes(ds, -1, -2) @ q * scale
    return (dq.astype(q.dtype), _reduce_to(dk, k.shape).astype(k.dtype), _reduce_to(dv, v.shape).astype(v.dtype))


def _dense_forward(s, keep, v):
    sm = np.where(keep, s, -np.inf)
    m = sm.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    ell = np.exp(sm - m).sum(axis=-1, keepdims=True)
    with np.errstate(divide='ignore'):
        lse = np.where(ell > 0, np.log(np.where(ell > 0, ell, 1.0)) + m, np.inf)
    p = np.where(keep, np.exp(s - lse), 0.0)
    return p @ v, lse


# --- kernel: bwd_query_tiles_accumulate ---
def bwd_query_tiles_accumulate(q, k, v, d_out, mask=None, scale=None):
    """Correct: query tiles of 13; per tile P, dP, delta = rowsum(P * dP); dK/dV accumulated over tiles."""
    s, keep, scale = _scores(q, k, mask, scale)
    lead = s.shape[:-2]
    sq = s.shape[-2]
    qb = np.broadcast_to(q, lead + q.shape[-2:])
    kb = np.broadcast_to(k, lead + k.shape[-2:])
    vb = np.broadcast_to(v, lead + v.shape[-2:])
    dq = np.zeros(qb.shape, dtype=q.dtype)
    dk = np.zeros(kb.shape, dtype=q.dtype)
    dv = np.zeros(vb.shape, dtype=q.dtype)
    for i0 in range(0, sq, 13):
        st = np.where(keep[..., i0:i0 + 13, :], s[..., i0:i0 + 13, :], -np.inf)
        m = st.max(axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        e = np.exp(st - m)
        ell = e.sum(axis=-1, keepdims=True)
        p = e / np.where(ell > 0, ell, 1.0)
        do = d_out[..., i0:i0 + 13, :]
        dp = do @ np.swapaxes(vb, -1, -2)
        ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
        dq[..., i0:i0 + 13, :] = ds @ kb * scale
        dk += np.swapaxes(ds, -1, -2) @ qb[..., i0:i0 + 13, :] * scale
        dv += np.swapaxes(p, -1, -2) @ do
    return (dq.astype(q.dtype), _reduce_to(dk, k.shape).astype(k.dtype), _reduce_to(dv, v.shape).astype(v.dtype))


_F = ['mask', 'dv-ne-d']

CATALOG = [
    dict(name='bwd-fa4-mask-mod-not-in-backward', api='numpy-backward', fn='bwd_mask_mod_not_saved', correct=False,
         bug='backward-mask-not-applied',
         parameter='the forward applies the mask, but the mask is not saved for the backward, which recomputes '
                   'P = exp(s - lse) over every key: dropped keys get weight and gradient. Triggers: a mask that '
                   'drops a key in a row that keeps at least one key',
         source='Dao-AILab/flash-attention#2424', report='https://github.com/Dao-AILab/flash-attention/issues/2424',
         dtype='float64', features=_F),
    dict(name='bwd-fa-dv-reduce-ncol-from-hdim', api='numpy-backward', fn='bwd_dv_reduce_ncol_from_qk_dim',
         correct=False, bug='dv-column-groups-from-qk-dim',
         parameter='dV is written back in column groups of gcd(32, D / 2), computed from the Q/K head dim: when Dv is '
                   'not a multiple of that group the last Dv % group columns of dv stay zero. Triggers: Dv % '
                   'gcd(32, D / 2) != 0 (e.g. D = 16 with Dv = 12, D = 32 with Dv = 40, D = 64 with Dv = 48)',
         source='Dao-AILab/flash-attention#2552', report='https://github.com/Dao-AILab/flash-attention/issues/2552',
         dtype='float64', features=_F),
    dict(name='bwd-fla-chunk-scale-grad', api='numpy-backward', fn='bwd_chunk_scale_missing_in_dk', correct=False,
         bug='dk-scale-missing',
         parameter='dk = dS^T q is returned without the softmax scale (dq and dv are right), so it is only right '
                   'for scale = 1. Triggers: an effective scale other than 1',
         source='fla-org/flash-linear-attention#47',
         report='https://github.com/fla-org/flash-linear-attention/issues/47', dtype='float64', features=_F),
    dict(name='bwd-pytorch-lse-of-probabilities', api='numpy-backward', fn='bwd_logsumexp_of_probs', correct=False,
         bug='lse-after-softmax',
         parameter='the logsumexp saved for the recompute is taken of the post-softmax probabilities instead of the '
                   'scores, so P = exp(s - lse) is not normalised and every gradient is off. Triggers: always (rows '
                   'with a kept key)',
         source='pytorch/pytorch#124097', report='https://github.com/pytorch/pytorch/pull/124097',
         dtype='float64', features=_F),
    dict(name='bwd-pytorch-mha-nan-masked-rows', api='numpy-backward', fn='bwd_mha_softmax_nan_rows',
         correct=False, bug='fully-masked-row-nan-gradients',
         parameter='a query row with no kept key keeps the max -inf, so its softmax is exp(-inf + inf) = NaN, which '
                   'reaches dq of that row and dk, dv through the sums over rows. Triggers: a mask with a row that '
                   'keeps no key',
         source='pytorch/pytorch#42323', report='https://github.com/pytorch/pytorch/pull/42323',
         dtype='float64', features=_F),
    dict(name='bwd-vasnet-weighted-sum-direction', api='numpy-backward', fn='bwd_weighted_sum_wrong_direction',
         correct=False, bug='dv-weights-not-transposed',
         parameter='dv is computed as weights @ d_out instead of weights^T @ d_out (the weighted sum taken along '
                   'the wrong direction): wrong values when Sq == Sk, a shape error otherwise. Triggers: always',
         source='ok1zjf/VASNet#25', report='https://github.com/ok1zjf/VASNet/issues/25',
         dtype='float64', features=_F),
    dict(name='bwd-dense-rowsum-delta', api='numpy-backward', fn='bwd_dense_rowsum_delta', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=_F),
    dict(name='bwd-query-tiles-accumulate', api='numpy-backward', fn='bwd_query_tiles_accumulate', correct=True,
         bug=None, parameter=None, source=None, report=None, dtype='float64', features=_F),
]
