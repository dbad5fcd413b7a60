"""heldout15 NumPy forward kernels, API `refimpl`: fn(q, k, v, mask=None, scale=None).

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); mask a bool keep-mask (True = attend) broadcastable to
(..., Sq, Sk); scale None means 1/sqrt(D); rows with no kept key return zeros.
"""
import math

import numpy as np


# --- kernel: dot_attention_fixed_softmax_dim ---
def dot_attention_fixed_softmax_dim(q, k, v, mask=None, scale=None):
    """DotAttention written for (batch, len, dim) inputs; 2-D inputs get a batch axis."""
    squeeze = q.ndim == 2
    if squeeze:
        q, k, v = q[None], k[None], v[None]
        if mask is not None:
            mask = np.asarray(mask)[None]
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    output = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        output = np.where(mask, output, -np.inf)
    dim = 2  # BUG: softmax dim fixed to 2, the key axis only for 3-D input (the query axis for 4-D input)
    peak = np.max(output, axis=dim, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    expo = np.exp(output - peak)
    total = np.sum(expo, axis=dim, keepdims=True)
    weights = expo / np.where(total > 0, total, 1.0)
    out = np.matmul(weights, v).astype(q.dtype)
    return out[0] if squeeze else out


# --- kernel: cntk_scaled_dot_product_no_sqrt ---
def cntk_scaled_dot_product_no_sqrt(q, k, v, mask=None, scale=None):
    """scaled_dot_product_attention in the ops style: dot, scale by the key dimension, masked softmax."""
    dk = q.shape[-1]
    if scale is None:
        scale = 1.0 / float(dk)  # BUG: the default divides by dk instead of sqrt(dk)
    scaled = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = np.ones(scaled.shape, dtype=bool) if mask is None else np.broadcast_to(mask, scaled.shape)
    scaled = np.where(keep, scaled, -np.inf)
    top = np.max(scaled, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    unnorm = np.exp(scaled - top)
    denom = unnorm.sum(axis=-1, keepdims=True)
    attention = unnorm / np.where(denom > 0, denom, 1.0)
    return np.matmul(attention, v).astype(q.dtype)


# --- kernel: tf_where_padding_fill ---
def tf_where_padding_fill(q, k, v, mask=None, scale=None):
    """Energy vu masked with tf.where(mask == 0, paddings, vu) before the softmax."""
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    vu = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = np.ones(vu.shape, dtype=bool) if mask is None else np.broadcast_to(mask, vu.shape)
    mask_att = keep.astype(vu.dtype)
    paddings = mask_att * (-1e8)  # BUG: the padding value is multiplied by the mask itself, so masked entries get 0
    vu = np.where(mask_att == 0, paddings, vu)
    vu = vu - vu.max(axis=-1, keepdims=True)
    alphas = np.exp(vu)
    alphas = alphas / alphas.sum(axis=-1, keepdims=True)
    alphas = np.where(keep.any(axis=-1, keepdims=True), alphas, 0.0)
    return np.matmul(alphas, v).astype(q.dtype)


# --- kernel: masked_fill_finite_pad_rows ---
def masked_fill_finite_pad_rows(q, k, v, mask=None, scale=None):
    """Attention of the book's Transformer chapter: weights.masked_fill(mask == 0, fill) then softmax."""
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    weights = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    fill = -1e9  # BUG: a finite fill value: a row with no kept key becomes uniform (the mean of v), not zeros
    if mask is not None:
        weights = np.where(np.broadcast_to(mask, weights.shape), weights, fill)
    row_max = weights.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    ew = np.exp(weights - row_max)
    rs = ew.sum(axis=-1, keepdims=True)
    normlized_weights = ew / np.where(rs > 0, rs, 1.0)
    return np.matmul(normlized_weights, v).astype(q.dtype)


# --- kernel: fixed_max_first_key_tile ---
def fixed_max_first_key_tile(q, k, v, mask=None, scale=None):
    """Fast path with a fixed softmax bound taken from the first key tile (no online max update)."""
    tile = 16
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = np.ones(s.shape, dtype=bool) if mask is None else np.broadcast_to(mask, s.shape)
    first = np.where(keep[..., :tile], s[..., :tile], -np.inf).max(axis=-1, keepdims=True)
    bound = first  # BUG: the bound is -inf when the first key tile is fully masked (exp(s + inf) = inf, NaN)
    sk = s.shape[-1]
    acc = np.zeros(s.shape[:-1] + (v.shape[-1],), dtype=s.dtype)
    lsum = np.zeros(s.shape[:-1] + (1,), dtype=s.dtype)
    with np.errstate(over='ignore', invalid='ignore'):
        for j0 in range(0, sk, tile):
            p = np.where(keep[..., j0:j0 + tile], np.exp(s[..., j0:j0 + tile] - bound), 0.0)
            lsum = lsum + p.sum(axis=-1, keepdims=True)
            acc = acc + np.matmul(p, v[..., j0:j0 + tile, :])
        out = acc / np.where(lsum > 0, lsum, 1.0)
    return out.astype(q.dtype)


# --- kernel: minimal_flash_unbounded_tiles ---
def minimal_flash_unbounded_tiles(q, k, v, mask=None, scale=None):
    """Minimal flash forward: K/V in tiles of Bc = 32 zero-padded to Tc * Bc, online softmax per tile."""
    bc = 32
    n = k.shape[-2]
    tc = -(-n // bc)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    qb = np.broadcast_to(q, lead + q.shape[-2:])
    kp = np.zeros(lead + (tc * bc, k.shape[-1]), dtype=k.dtype)
    vp = np.zeros(lead + (tc * bc, v.shape[-1]), dtype=v.dtype)
    kp[..., :n, :] = k
    vp[..., :n, :] = v
    sq = q.shape[-2]
    keep = np.ones(lead + (sq, n), dtype=bool) if mask is None else np.broadcast_to(mask, lead + (sq, n))
    keep_p = np.concatenate([keep, np.ones(lead + (sq, tc * bc - n), dtype=bool)], axis=-1)
    m = np.full(lead + (sq, 1), -np.inf, dtype=qb.dtype)
    ell = np.zeros(lead + (sq, 1), dtype=qb.dtype)
    o = np.zeros(lead + (sq, v.shape[-1]), dtype=qb.dtype)
    for j in range(tc):
        cols = j * bc + np.arange(bc)
        valid = cols < tc * bc  # BUG: the tile loop never checks the sequence length, padded keys (score 0) count
        kj = kp[..., j * bc:(j + 1) * bc, :]
        vj = vp[..., j * bc:(j + 1) * bc, :]
        sij = np.matmul(qb, np.swapaxes(kj, -1, -2)) * scale
        ok = keep_p[..., j * bc:(j + 1) * bc] & valid
        sij = np.where(ok, sij, -np.inf)
        m_new = np.maximum(m, sij.max(axis=-1, keepdims=True))
        m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
        pij = np.exp(sij - m_safe)
        alpha = np.exp(np.where(np.isfinite(m), m, m_safe) - m_safe)
        ell = ell * alpha + pij.sum(axis=-1, keepdims=True)
        o = o * alpha + np.matmul(pij, vj)
        m = m_new
    return (o / np.where(ell > 0, ell, 1.0)).astype(q.dtype)


# --- kernel: online_exp2_key_tiles ---
def online_exp2_key_tiles(q, k, v, mask=None, scale=None):
    """Correct: query blocks of 10, key tiles of 24, online softmax in base 2 (scores pre-multiplied by log2 e)."""
    log2e = 1.0 / math.log(2.0)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    qb = np.broadcast_to(q, lead + q.shape[-2:])
    kb = np.broadcast_to(k, lead + k.shape[-2:])
    vb = np.broadcast_to(v, lead + v.shape[-2:])
    keep = np.ones(lead + (sq, sk), dtype=bool) if mask is None else np.broadcast_to(mask, lead + (sq, sk))
    out = np.zeros(lead + (sq, dv), dtype=q.dtype)
    for i0 in range(0, sq, 10):
        qi = qb[..., i0:i0 + 10, :]
        rows = qi.shape[-2]
        m = np.full(lead + (rows, 1), -np.inf, dtype=q.dtype)
        ell = np.zeros(lead + (rows, 1), dtype=q.dtype)
        acc = np.zeros(lead + (rows, dv), dtype=q.dtype)
        for j0 in range(0, sk, 24):
            t = np.matmul(qi, np.swapaxes(kb[..., j0:j0 + 24, :], -1, -2)) * (scale * log2e)
            t = np.where(keep[..., i0:i0 + 10, j0:j0 + 24], t, -np.inf)
            m_new = np.maximum(m, t.max(axis=-1, keepdims=True))
            ref = np.where(np.isfinite(m_new), m_new, 0.0)
            p = np.exp2(t - ref)
            corr = np.exp2(np.where(np.isfinite(m), m, ref) - ref)
            ell = ell * corr + p.sum(axis=-1, keepdims=True)
            acc = acc * corr + np.matmul(p, vb[..., j0:j0 + 24, :])
            m = m_new
        out[..., i0:i0 + 10, :] = acc / np.where(ell > 0, ell, 1.0)
    return out


# --- kernel: chunked_logaddexp_lse ---
def chunked_logaddexp_lse(q, k, v, mask=None, scale=None):
    """Correct: row log-sum-exp reduced over key chunks of 9 with np.logaddexp, weights exp(s - lse)."""
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = np.ones(s.shape, dtype=bool) if mask is None else np.broadcast_to(mask, s.shape)
    s = np.where(keep, s, -np.inf)
    lse = np.full(s.shape[:-1], -np.inf, dtype=s.dtype)
    with np.errstate(invalid='ignore', divide='ignore'):
        for j0 in range(0, s.shape[-1], 9):
            chunk = s[..., j0:j0 + 9]
            cmax = chunk.max(axis=-1)
            cref = np.where(np.isfinite(cmax), cmax, 0.0)
            clse = np.log(np.exp(chunk - cref[..., None]).sum(axis=-1)) + cref
            lse = np.logaddexp(lse, clse)
    safe = np.where(np.isfinite(lse), lse, np.inf)
    w = np.exp(s - safe[..., None])
    return np.matmul(w, v).astype(q.dtype)


CATALOG = [
    dict(name='np-fastnlp-softmax-dim-two', api='refimpl', fn='dot_attention_fixed_softmax_dim', correct=False,
         bug='softmax-fixed-axis-two',
         parameter='the softmax axis is hard-coded as 2, the key axis of a 3-D (batch, len, len) score tensor; 4-D '
                   'inputs are normalised over the query axis instead. Triggers: 4-D input',
         source='FudanNLP/fastNLP#254', report='https://github.com/FudanNLP/fastNLP/issues/254',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-cntkx-scale-without-sqrt', api='refimpl', fn='cntk_scaled_dot_product_no_sqrt', correct=False,
         bug='default-scale-one-over-d',
         parameter='with scale=None the scores are divided by D instead of sqrt(D). Triggers: scale=None',
         source='delzac/cntkx#10', report='https://github.com/delzac/cntkx/issues/10',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-iaan-padding-times-mask', api='refimpl', fn='tf_where_padding_fill', correct=False,
         bug='masked-score-filled-with-zero',
         parameter='the padding tensor is mask * -1e8, which is 0 exactly where the mask is 0, so dropped keys get '
                   'score 0 instead of -1e8 and are attended. Triggers: a mask that drops a key in a row that keeps '
                   'at least one key',
         source='30stomercury/Interaction-Aware-Attention-Network#1',
         report='https://github.com/30stomercury/Interaction-Aware-Attention-Network/issues/1',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-pytorchadvanced-pad-row-uniform', api='refimpl', fn='masked_fill_finite_pad_rows', correct=False,
         bug='fully-masked-row-uniform',
         parameter='dropped scores are filled with the finite -1e9, so a query row with no kept key gets uniform '
                   'weights (the mean of v) instead of zeros. Triggers: a mask with a row that keeps no key',
         source='YutaroOgawa/pytorch_advanced#175', report='https://github.com/YutaroOgawa/pytorch_advanced/issues/175',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-primus-first-tile-bound-nan', api='refimpl', fn='fixed_max_first_key_tile', correct=False,
         bug='fixed-max-from-masked-first-tile',
         parameter='the fixed softmax bound is the max of the first key tile of 16, which is -inf when that tile is '
                   'fully masked: exp(s - bound) overflows and the row becomes NaN (fix: floor the bound at 0). '
                   'Triggers: a row whose first 16 keys are all dropped but which keeps a later key',
         source='AMD-AGI/Primus-Turbo#417', report='https://github.com/AMD-AGI/Primus-Turbo/pull/417',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-minimalflash-tail-tile-unbounded', api='refimpl', fn='minimal_flash_unbounded_tiles',
         correct=False, bug='padded-tail-keys-attended',
         parameter='keys are zero-padded to whole tiles of 32 and the tile loop never checks the sequence length, so '
                   'each padded key (score 0, value 0) adds exp(0 - m) to the row sum and shrinks the output. '
                   'Triggers: Sk not a multiple of 32 (rows with a kept key)',
         source='tspeterkim/flash-attention-minimal#2',
         report='https://github.com/tspeterkim/flash-attention-minimal/pull/2',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-online-exp2-key-tiles', api='refimpl', fn='online_exp2_key_tiles', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-chunked-logaddexp-lse', api='refimpl', fn='chunked_logaddexp_lse', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=['mask', 'dv-ne-d']),
]
