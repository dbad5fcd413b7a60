"""Held-out NumPy attention backward kernels (API `numpy-backward`).

fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv): the gradients of O = softmax(scale * q k^T
masked by the bool keep-mask) @ v for loss = sum(d_out * O). k/v may have a head axis of size 1 broadcast
against q's heads (dk, dv come back with k/v's shape, summed over the broadcast axis); rows with no kept key
have zero output and zero gradients; results in the input dtype. Six kernels carry one mistake each (marked
by a BUG comment), two are correct alternative implementations.
"""
import math

import numpy as np


def _keep_mask(mask, shape):
    """The bool keep-mask broadcast to the score shape (all True without a mask)."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    return np.broadcast_to(np.asarray(mask, dtype=bool), shape)


def _sum_to_shape(x, shape):
    """Sum a gradient computed at a broadcast shape back down to `shape`."""
    extra = x.ndim - len(shape)
    if extra:
        x = x.sum(axis=tuple(range(extra)))
    axes = tuple(a for a, n in enumerate(shape) if n == 1 and x.shape[a] != 1)
    if axes:
        x = x.sum(axis=axes, keepdims=True)
    return x


# --- kernel: bwd_bshd_grad_layout ---
# CPU-flash style: 4-D inputs are processed in a (B, S, H, D) working layout; the incoming
# gradient is brought into that layout next to q, k, v.
def _bshd_softmax(s):
    m = s.max(axis=-1, keepdims=True)
    live = np.isfinite(m)
    e = np.exp(s - np.where(live, m, 0.0))
    z = e.sum(axis=-1, keepdims=True)
    return np.where(live, e / np.where(live, z, 1.0), 0.0)


def bwd_bshd_grad_layout(q, k, v, d_out, mask=None, scale=None):
    dt = q.dtype
    sm = dt.type((1.0 / math.sqrt(q.shape[-1])) if scale is None else scale)
    if q.ndim != 4:
        s = np.matmul(q, np.swapaxes(k, -1, -2)) * sm
        s = np.where(_keep_mask(mask, s.shape), s, -np.inf)
        p = _bshd_softmax(s)
        o = np.matmul(p, v)
        dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
        ds = p * (dp - np.sum(d_out * o, axis=-1, keepdims=True))
        dq = np.matmul(ds, k) * sm
        dk = _sum_to_shape(np.matmul(np.swapaxes(ds, -1, -2), q) * sm, k.shape)
        dv = _sum_to_shape(np.matmul(np.swapaxes(p, -1, -2), d_out), v.shape)
        return dq.astype(dt), dk.astype(dt), dv.astype(dt)
    B, H, Sq, D = q.shape
    Sk, Dv = k.shape[-2], v.shape[-1]
    qt = q.transpose(0, 2, 1, 3)
    kt = np.broadcast_to(k, (B, H, Sk, D)).transpose(0, 2, 1, 3)
    vt = np.broadcast_to(v, (B, H, Sk, Dv)).transpose(0, 2, 1, 3)
    do_t = np.ascontiguousarray(d_out).reshape(B, Sq, H, Dv)  # BUG: d_out is BHSD
    keep = _keep_mask(mask, (B, H, Sq, Sk)).transpose(0, 2, 1, 3)
    s = np.einsum("bqhd,bkhd->bqhk", qt, kt) * sm
    p = _bshd_softmax(np.where(keep, s, -np.inf))
    o = np.einsum("bqhk,bkhd->bqhd", p, vt)
    dp = np.einsum("bqhd,bkhd->bqhk", do_t, vt)
    ds = p * (dp - np.sum(do_t * o, axis=-1, keepdims=True))
    dq = np.einsum("bqhk,bkhd->bqhd", ds, kt) * sm
    dk = np.einsum("bqhk,bqhd->bkhd", ds, qt) * sm
    dv = np.einsum("bqhk,bqhd->bkhd", p, do_t)
    dq = dq.transpose(0, 2, 1, 3)
    dk = _sum_to_shape(dk.transpose(0, 2, 1, 3), k.shape)
    dv = _sum_to_shape(dv.transpose(0, 2, 1, 3), v.shape)
    return dq.astype(dt), dk.astype(dt), dv.astype(dt)


# --- kernel: bwd_broadcast_kv_grads ---
# Graph-style backward: k and v are broadcast to q's leading shape in the forward, every
# gradient is computed at that broadcast shape.
def bwd_broadcast_kv_grads(q, k, v, d_out, mask=None, scale=None):
    dt = q.dtype
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    kb = np.broadcast_to(k, lead + k.shape[-2:])
    vb = np.broadcast_to(v, lead + v.shape[-2:])
    sm = dt.type((1.0 / math.sqrt(q.shape[-1])) if scale is None else scale)
    s = np.matmul(q, np.swapaxes(kb, -1, -2)) * sm
    keep = _keep_mask(mask, s.shape)
    s = np.where(keep, s, -np.inf)
    row_max = s.max(axis=-1, keepdims=True)
    has = np.isfinite(row_max)
    e = np.exp(s - np.where(has, row_max, 0.0))
    p = np.where(has, e / np.where(has, e.sum(axis=-1, keepdims=True), 1.0), 0.0)
    o = np.matmul(p, vb)
    dp = np.matmul(d_out, np.swapaxes(vb, -1, -2))
    ds = p * (dp - np.sum(d_out * o, axis=-1, keepdims=True)) * sm
    dq = np.matmul(ds, kb).astype(dt)
    dk_full = np.matmul(np.swapaxes(ds, -1, -2), q).astype(dt)
    dv_full = np.matmul(np.swapaxes(p, -1, -2), d_out).astype(dt)
    return dq, dk_full, dv_full  # BUG: not summed back


# --- kernel: bwd_softmax_primitive_rowsum ---
# Primitive-library style: the softmax backward primitive computes
# diff_src = dst * (diff_dst - sum(...)) over the softmax axis.
def _softmax_fwd(x):
    mx = x.max(axis=-1, keepdims=True)
    ok = np.isfinite(mx)
    e = np.exp(x - np.where(ok, mx, 0.0))
    return np.where(ok, e / np.where(ok, e.sum(axis=-1, keepdims=True), 1.0), 0.0)


def bwd_softmax_primitive_rowsum(q, k, v, d_out, mask=None, scale=None):
    dt = q.dtype
    sm = dt.type((1.0 / math.sqrt(q.shape[-1])) if scale is None else scale)
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * sm
    dst = _softmax_fwd(np.where(_keep_mask(mask, scores.shape), scores, -np.inf))
    diff_dst = np.matmul(d_out, np.swapaxes(v, -1, -2))
    diff_src = dst * (diff_dst - diff_dst.sum(axis=-1, keepdims=True))  # BUG: log-softmax term
    dq = np.matmul(diff_src, k) * sm
    dk = _sum_to_shape(np.matmul(np.swapaxes(diff_src, -1, -2), q) * sm, k.shape)
    dv = _sum_to_shape(np.matmul(np.swapaxes(dst, -1, -2), d_out), v.shape)
    return dq.astype(dt), dk.astype(dt), dv.astype(dt)


# --- kernel: bwd_reduce_sum_broadcast_like ---
# Per-(batch, head) backward whose row reduction delta = reduce_sum(dO * O, axis=1) is broadcast
# back like the (Sq, Sk) gradient of the scores.
def bwd_reduce_sum_broadcast_like(q, k, v, d_out, mask=None, scale=None):
    dt = q.dtype
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, sk = q.shape[-2], k.shape[-2]
    sm = dt.type((1.0 / math.sqrt(q.shape[-1])) if scale is None else scale)
    qb = np.broadcast_to(q, lead + q.shape[-2:])
    kb = np.broadcast_to(k, lead + k.shape[-2:])
    vb = np.broadcast_to(v, lead + v.shape[-2:])
    dob = np.broadcast_to(d_out, lead + d_out.shape[-2:])
    keep = _keep_mask(mask, lead + (sq, sk))
    dq = np.zeros(qb.shape, dtype=dt)
    dk = np.zeros(kb.shape, dtype=dt)
    dv = np.zeros(vb.shape, dtype=dt)
    for idx in np.ndindex(*lead):
        s = np.where(keep[idx], (qb[idx] @ kb[idx].T) * sm, -np.inf)
        mx = s.max(axis=1, keepdims=True)
        live = np.isfinite(mx)
        e = np.exp(s - np.where(live, mx, 0.0))
        p = np.where(live, e / np.where(live, e.sum(axis=1, keepdims=True), 1.0), 0.0)
        o = p @ vb[idx]
        dp = dob[idx] @ vb[idx].T
        delta = np.sum(dob[idx] * o, axis=1)
        ds = p * (dp - delta)  # BUG: aligned with the keys
        dq[idx] = ds @ kb[idx] * sm
        dk[idx] = ds.T @ qb[idx] * sm
        dv[idx] = p.T @ dob[idx]
    return dq.reshape(q.shape), _sum_to_shape(dk, k.shape), _sum_to_shape(dv, v.shape)


# --- kernel: bwd_flattened_softmax_recompute ---
# Layer-style backward: the attention weights are recomputed with the framework softmax, which
# reshapes its input to (batch, -1) before normalising.
def _softmax_rows(x):
    m = x.max(axis=-1, keepdims=True)
    ok = np.isfinite(m)
    e = np.exp(x - np.where(ok, m, 0.0))
    return np.where(ok, e / np.where(ok, e.sum(axis=-1, keepdims=True), 1.0), 0.0)


def bwd_flattened_softmax_recompute(q, k, v, d_out, mask=None, scale=None):
    dt = q.dtype
    sm = dt.type((1.0 / math.sqrt(q.shape[-1])) if scale is None else scale)
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * sm
    s = np.where(_keep_mask(mask, s.shape), s, -np.inf)
    red_shape = s.shape[:-3] + (-1,)  # BUG: flattens the last 3 dims
    weights = _softmax_rows(s.reshape(red_shape)).reshape(s.shape)
    out = np.matmul(weights, v)
    d_weights = np.matmul(d_out, np.swapaxes(v, -1, -2))
    d_scores = weights * (d_weights - np.sum(d_out * out, axis=-1, keepdims=True))
    dq = np.matmul(d_scores, k) * sm
    dk = _sum_to_shape(np.matmul(np.swapaxes(d_scores, -1, -2), q) * sm, k.shape)
    dv = _sum_to_shape(np.matmul(np.swapaxes(weights, -1, -2), d_out), v.shape)
    return dq.astype(dt), dk.astype(dt), dv.astype(dt)


# --- kernel: bwd_keepdim_squeezed_delta ---
# Autograd-style backward of the row reduction: the keepdim sum is squeezed to a (..., Sq)
# delta and unsqueezed again where it is used.
def bwd_keepdim_squeezed_delta(q, k, v, d_out, mask=None, scale=None):
    dt = q.dtype
    sm = dt.type((1.0 / math.sqrt(q.shape[-1])) if scale is None else scale)
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * sm
    keep = _keep_mask(mask, s.shape)
    s = np.where(keep, s, -np.inf)
    mx = np.max(s, axis=-1, keepdims=True)
    fin = np.isfinite(mx)
    e = np.exp(s - np.where(fin, mx, 0.0))
    p = np.where(fin, e / np.where(fin, np.sum(e, axis=-1, keepdims=True), 1.0), 0.0)
    o = np.matmul(p, v)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    delta = np.sum(d_out * o, axis=-1, keepdims=True).squeeze()  # BUG: drops all size-1 axes
    ds = p * (dp - delta[..., None])
    dq = np.matmul(ds, k) * sm
    dk = _sum_to_shape(np.matmul(np.swapaxes(ds, -1, -2), q) * sm, k.shape)
    dv = _sum_to_shape(np.matmul(np.swapaxes(p, -1, -2), d_out), v.shape)
    return dq.astype(dt), dk.astype(dt), dv.astype(dt)


# --- kernel: bwd_row_jacobian ---
# Correct: per (batch, head) slice the softmax Jacobian diag(p) - p p^T of every row is formed
# explicitly and applied to dP with an einsum.
def bwd_row_jacobian(q, k, v, d_out, mask=None, scale=None):
    dt = q.dtype
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sm = dt.type((1.0 / math.sqrt(q.shape[-1])) if scale is None else scale)
    qb = np.broadcast_to(q, lead + q.shape[-2:])
    kb = np.broadcast_to(k, lead + k.shape[-2:])
    vb = np.broadcast_to(v, lead + v.shape[-2:])
    dob = np.broadcast_to(d_out, lead + d_out.shape[-2:])
    keep = _keep_mask(mask, lead + (q.shape[-2], k.shape[-2]))
    dq = np.zeros(qb.shape, dtype=dt)
    dk = np.zeros(kb.shape, dtype=dt)
    dv = np.zeros(vb.shape, dtype=dt)
    for idx in np.ndindex(*lead):
        s = np.where(keep[idx], qb[idx] @ kb[idx].T * sm, -np.inf)
        p = _softmax_rows(s)
        jac = np.einsum("ij,jk->ijk", p, np.eye(p.shape[1], dtype=dt)) - np.einsum("ij,ik->ijk", p, p)
        dp = dob[idx] @ vb[idx].T
        ds = np.einsum("ijk,ik->ij", jac, dp)
        dq[idx] = ds @ kb[idx] * sm
        dk[idx] = ds.T @ qb[idx] * sm
        dv[idx] = p.T @ dob[idx]
    return dq, _sum_to_shape(dk, k.shape), _sum_to_shape(dv, v.shape)


# --- kernel: bwd_query_tiles_two_pass ---
# Correct: pass 1 gets the row LSE over key tiles of 24 (np.logaddexp) and O; pass 2 walks query
# tiles of 16, recomputes P = exp(s - lse), writes dq per tile and accumulates dk, dv.
def bwd_query_tiles_two_pass(q, k, v, d_out, mask=None, scale=None):
    BN, BM = 24, 16
    dt = q.dtype
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, sk = q.shape[-2], k.shape[-2]
    sm = dt.type((1.0 / math.sqrt(q.shape[-1])) if scale is None else scale)
    qb = np.broadcast_to(q, lead + q.shape[-2:])
    kb = np.broadcast_to(k, lead + k.shape[-2:])
    vb = np.broadcast_to(v, lead + v.shape[-2:])
    dob = np.broadcast_to(d_out, lead + d_out.shape[-2:])
    keep = _keep_mask(mask, lead + (sq, sk))
    s_all = np.where(keep, np.matmul(qb, np.swapaxes(kb, -1, -2)) * sm, -np.inf)
    lse = np.full(lead + (sq, 1), -np.inf, dtype=dt)
    for n0 in range(0, sk, BN):
        lse = np.logaddexp(lse, np.logaddexp.reduce(s_all[..., n0:n0 + BN], axis=-1, keepdims=True))
    live = np.isfinite(lse)
    lse0 = np.where(live, lse, 0.0)
    o = np.zeros(lead + (sq, v.shape[-1]), dtype=dt)
    for n0 in range(0, sk, BN):
        o = o + np.matmul(np.exp(s_all[..., n0:n0 + BN] - lse0), vb[..., n0:n0 + BN, :])
    delta = np.sum(dob * o, axis=-1, keepdims=True)
    dq = np.zeros(qb.shape, dtype=dt)
    dk = np.zeros(kb.shape, dtype=dt)
    dv = np.zeros(vb.shape, dtype=dt)
    for m0 in range(0, sq, BM):
        rows = slice(m0, m0 + BM)
        p = np.exp(s_all[..., rows, :] - lse0[..., rows, :])
        dv = dv + np.matmul(np.swapaxes(p, -1, -2), dob[..., rows, :])
        dp = np.matmul(dob[..., rows, :], np.swapaxes(vb, -1, -2))
        ds = p * (dp - delta[..., rows, :]) * sm
        dq[..., rows, :] = np.matmul(ds, kb)
        dk = dk + np.matmul(np.swapaxes(ds, -1, -2), qb[..., rows, :])
    return dq, _sum_to_shape(dk, k.shape).astype(dt), _sum_to_shape(dv, v.shape).astype(dt)


CATALOG = [
    dict(name='bwd-pytorch-grad-out-stride-layout', api='numpy-backward', fn='bwd_bshd_grad_layout', correct=False,
         bug='grad-output-layout-mismatch',
         parameter='4-D inputs are processed in a (B, Sq, H, D) working layout and the incoming d_out, laid out '
                   '(B, H, Sq, Dv), is reinterpreted with that layout\'s strides (a reshape instead of a '
                   'transpose), so the rows of d_out are scrambled across heads and positions. '
                   'Triggers: 4-D inputs with H > 1 and Sq > 1',
         source='pytorch/pytorch#133671', report='https://github.com/pytorch/pytorch/issues/133671',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='bwd-nd4j-broadcast-grad-not-reduced', api='numpy-backward', fn='bwd_broadcast_kv_grads',
         correct=False, bug='broadcast-kv-grad-not-summed',
         parameter='dk and dv are computed at the broadcast (query heads) shape and returned without summing over '
                   'the broadcast head axis: wrong shape (H instead of 1 heads). '
                   'Triggers: k/v with a head axis of size 1 broadcast against H > 1 query heads',
         source='deeplearning4j/nd4j#2424', report='https://github.com/deeplearning4j/nd4j/issues/2424',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='bwd-onednn-logsoftmax-rowsum', api='numpy-backward', fn='bwd_softmax_primitive_rowsum',
         correct=False, bug='softmax-backward-log-form',
         parameter='the softmax backward subtracts the plain row sum of dP (the log-softmax form) instead of '
                   'rowsum(dP * P): dS = P * (dP - sum_j dP) over all keys, dropped ones included (dv right). '
                   'Triggers: always (any row with a kept key)',
         source='uxlfoundation/oneDNN#616', report='https://github.com/uxlfoundation/oneDNN/issues/616',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='bwd-oneflow-reduced-delta-broadcast', api='numpy-backward', fn='bwd_reduce_sum_broadcast_like',
         correct=False, bug='row-delta-broadcast-along-keys',
         parameter='delta = rowsum(dO * O) is reduced to shape (Sq,) and broadcast against the (Sq, Sk) scores '
                   'without restoring the reduced axis, so it is aligned with the key axis: wrong dS when '
                   'Sq == Sk, a broadcast error otherwise (dv right). '
                   'Triggers: Sq >= 2',
         source='Oneflow-Inc/oneflow#8659', report='https://github.com/Oneflow-Inc/oneflow/issues/8659',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='bwd-nntrainer-softmax-last3-dims', api='numpy-backward', fn='bwd_flattened_softmax_recompute',
         correct=False, bug='softmax-over-flattened-dims',
         parameter='the recomputed weights come from a softmax over the last 3 dims flattened (heads, queries '
                   'and keys of a 4-D input; every row of a 2-D or 3-D input) instead of the key axis alone. '
                   'Triggers: more than one query row in the flattened group (Sq >= 2, or H >= 2 for 4-D, or '
                   'a leading size >= 2 for 3-D)',
         source='nntrainer/nntrainer#1602', report='https://github.com/nntrainer/nntrainer/pull/1602',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='bwd-pytorch-keepdim-squeeze', api='numpy-backward', fn='bwd_keepdim_squeezed_delta',
         correct=False, bug='squeeze-drops-query-axis',
         parameter='the keepdim row sum delta is squeeze()d, which drops every size-1 axis (the query axis when '
                   'Sq == 1, a size-1 head axis) and not only the reduced one, so delta[..., None] is misaligned '
                   'with the scores whenever a dropped axis had a larger axis on its left: dS gets the wrong shape '
                   'or values (dv right). '
                   'Triggers: Sq == 1 with a leading size >= 2, or a size-1 leading axis right of one >= 2 '
                   '(e.g. B > 1 with H == 1)',
         source='pytorch/pytorch#1813', report='https://github.com/pytorch/pytorch/issues/1813',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='bwd-row-jacobian', api='numpy-backward', fn='bwd_row_jacobian', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='bwd-query-tiles-two-pass', api='numpy-backward', fn='bwd_query_tiles_two_pass', correct=True,
         bug=None, parameter=None, source=None, report=None, dtype='float64', features=['mask', 'dv-ne-d']),
]
