"""Held-out attention backward kernels, API ``numpy-backward``: ``fn(q, k, v, d_out, mask=None, scale=None) ->
(dq, dk, dv)``, the gradients of softmax(q k^T * scale, masked) v for loss = sum(d_out * O). k/v may have a
head axis of size 1 broadcast against q's heads (dk, dv come back with k/v's shape, summed over it); rows with
no kept key have zero output and zero gradients. Six kernels carry one mistake each (marked by a BUG comment
on the mistake line), two are correct. See README.md.
"""
import numpy as np


def _prep(q, k, v, mask, scale):
    """Arrays, dtype, scale, broadcast leading shape and the bool keep-mask (or None)."""
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    dt = q.dtype
    sc = dt.type(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    keep = None
    if mask is not None:
        lead = np.broadcast_shapes(lead, np.shape(mask)[:-2])
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (q.shape[-2], k.shape[-2]))
    return q, k, v, dt, sc, lead, keep


def _reduce_to(g, shape):
    """Sum a broadcast gradient back to ``shape``."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g


# --- kernel: bwd_delta_preprocess_strides ---
def _dps_bshd(x):
    return np.ascontiguousarray(np.swapaxes(x, -3, -2)) if x.ndim >= 3 else np.ascontiguousarray(x)


def bwd_delta_preprocess_strides(q, k, v, d_out, mask=None, scale=None):
    """O kept in the kernel's (..., S, H, D) layout; a preprocess step computes delta = rowsum(O * dO)."""
    q, k, v, dt, sc, lead, keep = _prep(q, k, v, mask, scale)
    s = (q @ np.swapaxes(k, -1, -2)) * sc
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    mx = np.where(np.isneginf(mx), 0, mx)
    e = np.exp(s - mx)
    z = e.sum(axis=-1, keepdims=True)
    p = np.zeros_like(e)
    np.divide(e, z, out=p, where=z > 0)
    o = p @ v
    do = np.broadcast_to(np.asarray(d_out, dtype=dt), o.shape)
    o_t = _dps_bshd(o)
    do_c = np.ascontiguousarray(do)
    do_t = np.lib.stride_tricks.as_strided(do_c, o_t.shape, o_t.strides)  # BUG: dO addressed with O's strides
    delta_t = (o_t * do_t).sum(axis=-1, keepdims=True)
    delta = np.swapaxes(delta_t, -3, -2) if o.ndim >= 3 else delta_t
    dv = np.swapaxes(p, -1, -2) @ do
    dp = do @ np.swapaxes(v, -1, -2)
    ds = p * (dp - delta)
    dq = (ds @ k) * sc
    dk = (np.swapaxes(ds, -1, -2) @ q) * sc
    return dq.astype(dt), _reduce_to(dk, k.shape).astype(dt), _reduce_to(dv, v.shape).astype(dt)


# --- kernel: bwd_lse_buffer_pointer ---
def bwd_lse_buffer_pointer(q, k, v, d_out, mask=None, scale=None):
    """Forward saves the row LSE into one flat buffer; the backward walks (batch, head) programs over it."""
    q, k, v, dt, sc, lead, keep = _prep(q, k, v, mask, scale)
    sq, sk, d, dv_ = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    qf = np.broadcast_to(q, lead + (sq, d)).reshape(-1, sq, d)
    kf = np.broadcast_to(k, lead + (sk, d)).reshape(-1, sk, d)
    vf = np.broadcast_to(v, lead + (sk, dv_)).reshape(-1, sk, dv_)
    dof = np.broadcast_to(np.asarray(d_out, dtype=dt), lead + (sq, dv_)).reshape(-1, sq, dv_)
    kpf = None if keep is None else keep.reshape(-1, sq, sk)
    n_bh = qf.shape[0]
    lse_buf = np.empty(n_bh * sq, dtype=dt)
    o_buf = np.empty((n_bh, sq, dv_), dtype=dt)
    for i_bh in range(n_bh):
        s = (qf[i_bh] @ kf[i_bh].T) * sc
        if kpf is not None:
            s = np.where(kpf[i_bh], s, -np.inf)
        mx = s.max(axis=-1, keepdims=True)
        mx0 = np.where(np.isneginf(mx), 0, mx)
        z = np.exp(s - mx0).sum(axis=-1, keepdims=True)
        with np.errstate(divide='ignore'):
            lse = np.where(z > 0, mx0 + np.log(np.where(z > 0, z, 1)), -np.inf)
        lse_buf[i_bh * sq:(i_bh + 1) * sq] = lse[:, 0]
        p = np.where(np.isfinite(lse), np.exp(s - np.where(np.isfinite(lse), lse, 0)), 0)
        o_buf[i_bh] = p @ vf[i_bh]
    dq = np.empty_like(qf)
    dk = np.empty((n_bh, sk, d), dtype=dt)
    dv = np.empty((n_bh, sk, dv_), dtype=dt)
    for i_bh in range(n_bh):
        lse_ptr = 0  # BUG: row-LSE pointer not advanced by the (batch, head) offset i_bh * Sq
        lse = lse_buf[lse_ptr:lse_ptr + sq][:, None]
        s = (qf[i_bh] @ kf[i_bh].T) * sc
        ok = np.isfinite(lse) & (True if kpf is None else kpf[i_bh])
        p = np.where(ok, np.exp(np.where(ok, s - np.where(np.isfinite(lse), lse, 0), 0)), 0)
        delta = (o_buf[i_bh] * dof[i_bh]).sum(axis=-1, keepdims=True)
        dv[i_bh] = p.T @ dof[i_bh]
        ds = p * (dof[i_bh] @ vf[i_bh].T - delta)
        dq[i_bh] = (ds @ kf[i_bh]) * sc
        dk[i_bh] = (ds.T @ qf[i_bh]) * sc
    dq = dq.reshape(lead + (sq, d))
    dk = _reduce_to(dk.reshape(lead + (sk, d)), k.shape)
    dv = _reduce_to(dv.reshape(lead + (sk, dv_)), v.shape)
    return dq.astype(dt), dk.astype(dt), dv.astype(dt)


# --- kernel: bwd_log2_lse_recompute ---
def bwd_log2_lse_recompute(q, k, v, d_out, mask=None, scale=None):
    """Forward in base 2 (exp2, log2(e) folded into the scale) saves a base-2 LSE; backward recomputes P."""
    q, k, v, dt, sc, lead, keep = _prep(q, k, v, mask, scale)
    log2e = dt.type(np.log2(np.e))
    s = (q @ np.swapaxes(k, -1, -2)) * sc
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    s2 = s * log2e
    mx = s2.max(axis=-1, keepdims=True)
    mx0 = np.where(np.isneginf(mx), 0, mx)
    z = np.exp2(s2 - mx0).sum(axis=-1, keepdims=True)
    with np.errstate(divide='ignore'):
        lse2 = np.where(z > 0, mx0 + np.log2(np.where(z > 0, z, 1)), -np.inf)
    live = np.isfinite(lse2)
    lse2_0 = np.where(live, lse2, 0)
    p = np.where(live, np.exp(s - lse2_0), 0)  # BUG: natural exp against a base-2 LSE
    o = p @ v
    do = np.broadcast_to(np.asarray(d_out, dtype=dt), o.shape)
    delta = (o * do).sum(axis=-1, keepdims=True)
    dv = np.swapaxes(p, -1, -2) @ do
    ds = p * (do @ np.swapaxes(v, -1, -2) - delta)
    dq = (ds @ k) * sc
    dk = (np.swapaxes(ds, -1, -2) @ q) * sc
    return dq.astype(dt), _reduce_to(dk, k.shape).astype(dt), _reduce_to(dv, v.shape).astype(dt)


# --- kernel: bwd_padded_key_tiles ---
def _pkt_scores(q, kp, keepp, t, n_tiles, sk, sc):
    lo = t * 48
    s = (q @ np.swapaxes(kp[..., lo:lo + 48, :], -1, -2)) * sc
    s = np.where(keepp[..., lo:lo + 48], s, -np.inf)
    if t == 0:  # BUG: out-of-range tail masking applied to the first tile instead of the last
        col = lo + np.arange(48)
        s = np.where(col < sk, s, -np.inf)
    return s


def bwd_padded_key_tiles(q, k, v, d_out, mask=None, scale=None):
    """K/V zero-padded to whole tiles of 48; LSE pass then gradient pass over the key tiles."""
    q, k, v, dt, sc, lead, keep = _prep(q, k, v, mask, scale)
    sq, sk = q.shape[-2], k.shape[-2]
    n_tiles = -(-sk // 48)
    pad = n_tiles * 48 - sk
    kp = np.concatenate([k, np.zeros(k.shape[:-2] + (pad, k.shape[-1]), dtype=dt)], axis=-2)
    vp = np.concatenate([v, np.zeros(v.shape[:-2] + (pad, v.shape[-1]), dtype=dt)], axis=-2)
    base = np.ones(lead + (sq, sk), dtype=bool) if keep is None else keep
    keepp = np.concatenate([base, np.ones(lead + (sq, pad), dtype=bool)], axis=-1)
    m = np.full(lead + (sq, 1), -np.inf, dtype=dt)
    z = np.zeros(lead + (sq, 1), dtype=dt)
    for t in range(n_tiles):
        s = _pkt_scores(q, kp, keepp, t, n_tiles, sk, sc)
        m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
        m_ref = np.where(np.isneginf(m_new), 0, m_new)
        z = z * np.exp(m - m_ref) + np.exp(s - m_ref).sum(axis=-1, keepdims=True)
        m = m_new
    live = z > 0
    with np.errstate(divide='ignore'):
        lse = np.where(live, np.where(np.isneginf(m), 0, m) + np.log(np.where(live, z, 1)), 0)
    do = np.broadcast_to(np.asarray(d_out, dtype=dt), lead + (sq, v.shape[-1]))
    o = np.zeros(lead + (sq, v.shape[-1]), dtype=dt)
    ps = []
    for t in range(n_tiles):
        p = np.where(live, np.exp(_pkt_scores(q, kp, keepp, t, n_tiles, sk, sc) - lse), 0)
        ps.append(p)
        o = o + p @ vp[..., t * 48:(t + 1) * 48, :]
    delta = (o * do).sum(axis=-1, keepdims=True)
    dq = np.zeros(lead + q.shape[-2:], dtype=dt)
    dks, dvs = [], []
    for t in range(n_tiles):
        kt, vt = kp[..., t * 48:(t + 1) * 48, :], vp[..., t * 48:(t + 1) * 48, :]
        ds = ps[t] * (do @ np.swapaxes(vt, -1, -2) - delta)
        dq = dq + (ds @ kt) * sc
        dks.append((np.swapaxes(ds, -1, -2) @ q) * sc)
        dvs.append(np.swapaxes(ps[t], -1, -2) @ do)
    dk = np.concatenate(dks, axis=-2)[..., :sk, :]
    dv = np.concatenate(dvs, axis=-2)[..., :sk, :]
    return dq.astype(dt), _reduce_to(dk, k.shape).astype(dt), _reduce_to(dv, v.shape).astype(dt)


# --- kernel: bwd_softmax_layer_recompute ---
def bwd_softmax_layer_recompute(q, k, v, d_out, mask=None, scale=None):
    """Softmax layer recomputed in the backward, then the standard Jacobian-vector product."""
    q, k, v, dt, sc, lead, keep = _prep(q, k, v, mask, scale)
    s = (q @ np.swapaxes(k, -1, -2)) * sc
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    mx = np.where(np.isneginf(mx), 0, mx)
    e = np.exp(s - mx)
    z = e.sum()  # BUG: normaliser summed over every axis instead of the key axis
    p = np.zeros_like(e)
    np.divide(e, z, out=p, where=z > 0)
    do = np.broadcast_to(np.asarray(d_out, dtype=dt), lead + (q.shape[-2], v.shape[-1]))
    dv = np.swapaxes(p, -1, -2) @ do
    dp = do @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    dq = (ds @ k) * sc
    dk = (np.swapaxes(ds, -1, -2) @ q) * sc
    return dq.astype(dt), _reduce_to(dk, k.shape).astype(dt), _reduce_to(dv, v.shape).astype(dt)


# --- kernel: bwd_weights_then_scale ---
def _wts_softmax(x, keep):
    if keep is not None:
        x = np.where(keep, x, -np.inf)
    mx = x.max(axis=-1, keepdims=True)
    mx = np.where(np.isneginf(mx), 0, mx)
    e = np.exp(x - mx)
    z = e.sum(axis=-1, keepdims=True)
    w = np.zeros_like(e)
    np.divide(e, z, out=w, where=z > 0)
    return w


def bwd_weights_then_scale(q, k, v, d_out, mask=None, scale=None):
    """Attention weights recomputed from the dot products, then the usual softmax backward."""
    q, k, v, dt, sc, lead, keep = _prep(q, k, v, mask, scale)
    raw = q @ np.swapaxes(k, -1, -2)
    p = _wts_softmax(raw, keep) * sc  # BUG: softmax of the unscaled products, the scale applied after it
    do = np.broadcast_to(np.asarray(d_out, dtype=dt), lead + (q.shape[-2], v.shape[-1]))
    dv = np.swapaxes(p, -1, -2) @ do
    dp = do @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    dq = (ds @ k) * sc
    dk = (np.swapaxes(ds, -1, -2) @ q) * sc
    return dq.astype(dt), _reduce_to(dk, k.shape).astype(dt), _reduce_to(dv, v.shape).astype(dt)


# --- kernel: bwd_query_blocks_dp_rowsum ---
def bwd_query_blocks_dp_rowsum(q, k, v, d_out, mask=None, scale=None):
    """Query blocks of 24; each block recomputes P and uses rowsum(dP * P); dK/dV accumulated."""
    q, k, v, dt, sc, lead, keep = _prep(q, k, v, mask, scale)
    sq = q.shape[-2]
    qb = np.broadcast_to(q, lead + q.shape[-2:])
    do = np.broadcast_to(np.asarray(d_out, dtype=dt), lead + (sq, v.shape[-1]))
    dq = np.zeros(lead + q.shape[-2:], dtype=dt)
    dk = np.zeros(lead + k.shape[-2:], dtype=dt)
    dv = np.zeros(lead + v.shape[-2:], dtype=dt)
    for i in range(0, sq, 24):
        s = (qb[..., i:i + 24, :] @ np.swapaxes(k, -1, -2)) * sc
        if keep is not None:
            s = np.where(keep[..., i:i + 24, :], s, -np.inf)
        mx = s.max(axis=-1, keepdims=True)
        mx = np.where(np.isneginf(mx), 0, mx)
        e = np.exp(s - mx)
        z = e.sum(axis=-1, keepdims=True)
        p = np.zeros_like(e)
        np.divide(e, z, out=p, where=z > 0)
        dob = do[..., i:i + 24, :]
        dp = dob @ np.swapaxes(v, -1, -2)
        ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
        dq[..., i:i + 24, :] = (ds @ k) * sc
        dk = dk + (np.swapaxes(ds, -1, -2) @ qb[..., i:i + 24, :]) * sc
        dv = dv + np.swapaxes(p, -1, -2) @ dob
    return dq, _reduce_to(dk, k.shape).astype(dt), _reduce_to(dv, v.shape).astype(dt)


# --- kernel: bwd_jacobian_einsum ---
def bwd_jacobian_einsum(q, k, v, d_out, mask=None, scale=None):
    """Softmax backward through the full Jacobian diag(P) - P P^T, contracted with einsum."""
    q, k, v, dt, sc, lead, keep = _prep(q, k, v, mask, scale)
    s = (q @ np.swapaxes(k, -1, -2)) * sc
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    mx = np.where(np.isneginf(mx), 0, mx)
    e = np.exp(s - mx)
    z = e.sum(axis=-1, keepdims=True)
    p = np.zeros_like(e)
    np.divide(e, z, out=p, where=z > 0)
    do = np.broadcast_to(np.asarray(d_out, dtype=dt), lead + (q.shape[-2], v.shape[-1]))
    dv = np.einsum('...qk,...qd->...kd', p, do)
    dp = np.einsum('...qd,...kd->...qk', do, v)
    jac = np.einsum('...qk,kl->...qkl', p, np.eye(p.shape[-1], dtype=dt)) - np.einsum('...qk,...ql->...qkl', p, p)
    ds = np.einsum('...qkl,...ql->...qk', jac, dp)
    dq = np.einsum('...qk,...kd->...qd', ds, k) * sc
    dk = np.einsum('...qk,...qd->...kd', ds, np.broadcast_to(q, lead + q.shape[-2:])) * sc
    return dq.astype(dt), _reduce_to(dk, k.shape).astype(dt), _reduce_to(dv, v.shape).astype(dt)


CATALOG = [
    {
        'name': 'bwd-aiter-delta-do-strides', 'api': 'numpy-backward', 'fn': 'bwd_delta_preprocess_strides',
        'correct': False, 'bug': 'delta-do-read-with-o-strides',
        'parameter': ("the preprocess step computes delta = rowsum(O * dO) with O held in the kernel's (..., S, "
                      "H, D) layout and dO, which arrives (..., H, S, D), addressed with O's strides: delta "
                      "mixes other heads' and positions' rows, so dq and dk are wrong (dv right). Triggers: 3-D "
                      'or 4-D inputs with H > 1.'),
        'source': 'ROCm/aiter#2808',
        'report': 'https://github.com/ROCm/aiter/pull/2808',
        'dtype': 'float64', 'features': ['mask', 'dv-ne-d'],
    },
    {
        'name': 'bwd-fla-lse-head-offset', 'api': 'numpy-backward', 'fn': 'bwd_lse_buffer_pointer',
        'correct': False, 'bug': 'lse-load-missing-head-offset',
        'parameter': ('the backward loads the saved row LSE from the flat buffer without advancing the pointer '
                      'by the (batch, head) offset i_bh * Sq: every (batch, head) recomputes P with the first '
                      "slice's LSE. Triggers: more than one (batch, head) slice."),
        'source': 'fla-org/flash-linear-attention#1115',
        'report': 'https://github.com/fla-org/flash-linear-attention/issues/1115',
        'dtype': 'float64', 'features': ['mask', 'dv-ne-d'],
    },
    {
        'name': 'bwd-aotriton-lse-base-mismatch', 'api': 'numpy-backward', 'fn': 'bwd_log2_lse_recompute',
        'correct': False, 'bug': 'lse-base2-used-with-exp',
        'parameter': ('the forward saves the LSE in base-2 units (exp2 path) and the backward recomputes P = '
                      'exp(s - lse2) with the natural exponential instead of exp2(s * log2(e) - lse2). '
                      'Triggers: always (rows with a kept key).'),
        'source': 'ROCm/aotriton#108',
        'report': 'https://github.com/ROCm/aotriton/pull/108',
        'dtype': 'float64', 'features': ['mask', 'dv-ne-d'],
    },
    {
        'name': 'bwd-liteattention-tail-tile-unmasked', 'api': 'numpy-backward', 'fn': 'bwd_padded_key_tiles',
        'correct': False, 'bug': 'padded-tail-tile-unmasked',
        'parameter': ('K/V are zero-padded to tiles of 48 and the out-of-range column mask is applied to the '
                      'first tile (the last one of a reverse loop) instead of the last tile: padded keys (score '
                      '0) enter the LSE and P. Triggers: Sk > 48 and Sk % 48 != 0.'),
        'source': 'moonmath-ai/LiteAttention#3',
        'report': 'https://github.com/moonmath-ai/LiteAttention/pull/3',
        'dtype': 'float64', 'features': ['mask', 'dv-ne-d'],
    },
    {
        'name': 'bwd-nntrainer-softmax-all-axes', 'api': 'numpy-backward', 'fn': 'bwd_softmax_layer_recompute',
        'correct': False, 'bug': 'softmax-normalized-over-all-axes',
        'parameter': ("the recomputed softmax divides each row's exponentials by the sum over the whole tensor "
                      'instead of over the key axis. Triggers: more than one query row in total (batch x heads '
                      'x Sq > 1).'),
        'source': 'nntrainer/nntrainer#430',
        'report': 'https://github.com/nntrainer/nntrainer/pull/430',
        'dtype': 'float64', 'features': ['mask', 'dv-ne-d'],
    },
    {
        'name': 'bwd-glgin-softmax-before-scale', 'api': 'numpy-backward', 'fn': 'bwd_weights_then_scale',
        'correct': False, 'bug': 'scale-applied-after-softmax',
        'parameter': ('the weights are recomputed as softmax(q k^T) * scale (the scaling applied after the '
                      'softmax) instead of softmax(q k^T * scale). Triggers: scale != 1.'),
        'source': 'qinlibo-hit/GL-GIN#5',
        'report': 'https://github.com/qinlibo-hit/GL-GIN/issues/5',
        'dtype': 'float64', 'features': ['mask', 'dv-ne-d'],
    },
    {
        'name': 'bwd-query-blocks-dp-rowsum', 'api': 'numpy-backward', 'fn': 'bwd_query_blocks_dp_rowsum',
        'correct': True, 'bug': None,
        'parameter': None,
        'source': None,
        'report': None,
        'dtype': 'float64', 'features': ['mask', 'dv-ne-d'],
    },
    {
        'name': 'bwd-jacobian-einsum', 'api': 'numpy-backward', 'fn': 'bwd_jacobian_einsum',
        'correct': True, 'bug': None,
        'parameter': None,
        'source': None,
        'report': None,
        'dtype': 'float64', 'features': ['mask', 'dv-ne-d'],
    },
]
