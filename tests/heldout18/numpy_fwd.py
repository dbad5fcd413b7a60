"""Held-out NumPy attention kernels (API `refimpl`): fn(q, k, v, mask=None, scale=None).

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); `mask` is None or a bool keep-mask (True = attend)
broadcastable to (..., Sq, Sk); `scale=None` means 1/sqrt(D). A row with no kept key returns zeros.
Six kernels carry one mistake each (marked by a BUG comment), two are correct alternative implementations.
"""
import math

import numpy as np


# --- kernel: tile_softmax_keepdims_dropped ---
# Triton-style port: the scores of a query tile (BLOCK_M rows x all keys) go through a
# `tl.softmax(x, dim=1, keep_dims=...)`-like helper that forwards keep_dims to its reductions.
def _tl_softmax(x, dim, keep_dims=False):
    red_keep = keep_dims  # BUG: tl.softmax forwards the caller's keep_dims (False) into its max/sum reductions
    x_max = np.max(x, axis=dim, keepdims=red_keep)
    num = np.exp(x - x_max)
    den = np.sum(num, axis=dim, keepdims=red_keep)
    return num / den


def tile_softmax_keepdims_dropped(q, k, v, mask=None, scale=None):
    BLOCK_M = 16
    dt = q.dtype
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, d = q.shape[-2], q.shape[-1]
    sk, dv = k.shape[-2], v.shape[-1]
    sm_scale = (1.0 / math.sqrt(d)) if scale is None else float(scale)
    qb = np.broadcast_to(q, lead + (sq, d))
    kb = np.broadcast_to(k, lead + (sk, d))
    vb = np.broadcast_to(v, lead + (sk, dv))
    if mask is None:
        keep = np.ones(lead + (sq, sk), dtype=bool)
    else:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    out = np.zeros(lead + (sq, dv), dtype=dt)
    for idx in np.ndindex(*lead):
        for start_m in range(0, sq, BLOCK_M):
            rows = slice(start_m, min(start_m + BLOCK_M, sq))
            qk = (qb[idx][rows] @ kb[idx].T) * dt.type(sm_scale)
            msk = keep[idx][rows]
            alive = msk.any(axis=1)
            # dead rows get finite dummy scores so the tile softmax stays NaN free
            qk = np.where(msk, qk, -np.inf)
            qk = np.where(alive[:, None], qk, 0.0).astype(dt)
            p = _tl_softmax(qk, dim=1)
            acc = p @ vb[idx]
            out[idx][rows] = np.where(alive[:, None], acc, 0.0)
    return out


# --- kernel: mha_mask_channel_per_head ---
# ncnn-style multi-head attention: the mask is a blob with one (Sq, Sk) "channel" per
# (batch, head); the kernel walks the channels and picks the matching mask channel.
def _mask_channel(mask, idx):
    if not idx:
        return mask
    sel = tuple(i if n > 1 else 0 for i, n in zip(idx[:-1], mask.shape[:-3]))
    head = idx[-1]  # BUG: a singleton (shared) head channel is still indexed with the head number
    return mask[sel + (head,)]


def mha_mask_channel_per_head(q, k, v, mask=None, scale=None):
    dt = q.dtype
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, d = q.shape[-2], q.shape[-1]
    sk, dv = k.shape[-2], v.shape[-1]
    sm_scale = dt.type((1.0 / math.sqrt(d)) if scale is None else scale)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        while mask.ndim < len(lead) + 2:
            mask = mask[None]
    qb = np.broadcast_to(q, lead + (sq, d))
    kb = np.broadcast_to(k, lead + (sk, d))
    vb = np.broadcast_to(v, lead + (sk, dv))
    out = np.zeros(lead + (sq, dv), dtype=dt)
    for idx in np.ndindex(*lead):
        s = (qb[idx] @ kb[idx].T) * sm_scale
        if mask is not None:
            m = np.broadcast_to(_mask_channel(mask, idx), (sq, sk))
            s = np.where(m, s, -np.inf)
        mx = s.max(axis=-1, keepdims=True)
        dead = ~np.isfinite(mx)
        e = np.exp(s - np.where(dead, 0.0, mx))
        den = e.sum(axis=-1, keepdims=True)
        w = e / np.where(dead, 1.0, den)
        out[idx] = np.where(dead, 0.0, w @ vb[idx])
    return out


# --- kernel: dot_product_attention_unscaled ---
# d2l-style DotProductAttention: scores = Q K^T / sqrt(d), masked softmax, then weights @ V.
def _masked_softmax(x, keep):
    x = np.where(keep, x, -np.inf)
    row_max = np.max(x, axis=-1, keepdims=True)
    empty = np.isneginf(row_max)
    e = np.exp(x - np.where(empty, 0.0, row_max))
    s = np.sum(e, axis=-1, keepdims=True)
    return np.where(empty, 0.0, e / np.where(empty, 1.0, s))


def dot_product_attention_unscaled(q, k, v, mask=None, scale=None):
    d = q.shape[-1]
    assert k.shape[-1] == d
    if scale is None:
        scale = 1.0  # BUG: the default scaling factor must be 1 / sqrt(d), not 1
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * q.dtype.type(scale)
    keep = np.ones(scores.shape, dtype=bool) if mask is None else np.broadcast_to(mask, scores.shape)
    weights = _masked_softmax(scores, keep)
    return np.matmul(weights, v).astype(q.dtype)


# --- kernel: label_attention_unmasked_softmax ---
# CAML-style attention: alpha = softmax(scores), context = alpha @ values; padded positions
# only zero the rows that have no real token at all.
def _row_softmax(s):
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = np.sum(e, axis=-1, keepdims=True)
    return e / np.where(z > 0, z, 1.0)


def label_attention_unmasked_softmax(q, k, v, mask=None, scale=None):
    d = q.shape[-1]
    sm = q.dtype.type((1.0 / math.sqrt(d)) if scale is None else scale)
    scores = np.einsum('...qd,...kd->...qk', q, k) * sm
    keep = np.ones(scores.shape, dtype=bool) if mask is None else np.broadcast_to(mask, scores.shape)
    has_token = keep.any(axis=-1, keepdims=True)
    alpha = _row_softmax(scores)  # BUG: the padding mask is never applied to the softmax input
    context = np.einsum('...qk,...kv->...qv', alpha, v)
    return np.where(has_token, context, 0.0).astype(q.dtype)


# --- kernel: masked_log_softmax_zero_fill ---
# AllenNLP-style masked_log_softmax: masked positions are pushed out of the log-softmax,
# the attention weights are exp(log_probs).
def _log_softmax(x):
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    z = np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))
    return x - m - z


def masked_log_softmax_zero_fill(q, k, v, mask=None, scale=None):
    d = q.shape[-1]
    sm = q.dtype.type((1.0 / math.sqrt(d)) if scale is None else scale)
    vector = np.matmul(q, np.swapaxes(k, -1, -2)) * sm
    if mask is None:
        mask = np.ones(vector.shape, dtype=bool)
    mask = np.broadcast_to(np.asarray(mask, dtype=bool), vector.shape)
    any_kept = mask.any(axis=-1, keepdims=True)
    with np.errstate(invalid='ignore', divide='ignore'):
        vector = np.where(mask, vector, 0.0)  # BUG: masked values are set to 0 instead of a very negative value
        log_probs = _log_softmax(vector)
        probs = np.where(any_kept, np.exp(log_probs), 0.0)
    return np.matmul(probs, v).astype(q.dtype)


# --- kernel: encoding_softmax_dim_one ---
# Encoding-layer style: the assignment weights are normalised with a hard-coded softmax dim.
def encoding_softmax_dim_one(q, k, v, mask=None, scale=None):
    d = q.shape[-1]
    sm = q.dtype.type((1.0 / math.sqrt(d)) if scale is None else scale)
    sl2 = np.matmul(q, np.swapaxes(k, -1, -2)) * sm
    keep = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), sl2.shape)
    if keep is not None:
        sl2 = np.where(keep, sl2, -np.inf)
    axis = 1  # BUG: hard-coded softmax dim (fine for 2-D scores); the key axis is the last one
    top = np.max(sl2, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.exp(sl2 - top)
    den = np.sum(e, axis=axis, keepdims=True)
    a = e / np.where(den > 0, den, 1.0)
    return np.matmul(a, v).astype(q.dtype)


# --- kernel: attend_exp2_online_tiles ---
# Correct: query tiles of 24 rows, key tiles of 40, online softmax in base 2 (exp2 of
# log2(e)-scaled scores) with a running max and a running row sum, one final division.
def attend_exp2_online_tiles(q, k, v, mask=None, scale=None):
    BM, BN = 24, 40
    dt = q.dtype
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, d = q.shape[-2], q.shape[-1]
    sk, dv = k.shape[-2], v.shape[-1]
    sm = (1.0 / math.sqrt(d)) if scale is None else float(scale)
    qk_scale = dt.type(sm * 1.4426950408889634)
    qb = np.broadcast_to(q, lead + (sq, d))
    kb = np.broadcast_to(k, lead + (sk, d))
    vb = np.broadcast_to(v, lead + (sk, dv))
    keep = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    out = np.zeros(lead + (sq, dv), dtype=dt)
    for idx in np.ndindex(*lead):
        for m0 in range(0, sq, BM):
            m1 = min(m0 + BM, sq)
            qt = qb[idx][m0:m1]
            m_i = np.full((m1 - m0, 1), -np.inf, dtype=dt)
            l_i = np.zeros((m1 - m0, 1), dtype=dt)
            acc = np.zeros((m1 - m0, dv), dtype=dt)
            for n0 in range(0, sk, BN):
                n1 = min(n0 + BN, sk)
                s = (qt @ kb[idx][n0:n1].T) * qk_scale
                if keep is not None:
                    s = np.where(keep[idx][m0:m1, n0:n1], s, -np.inf)
                m_new = np.maximum(m_i, s.max(axis=1, keepdims=True))
                safe = np.where(np.isfinite(m_new), m_new, 0.0)
                alpha = np.exp2(m_i - safe)
                p = np.exp2(s - safe)
                l_i = l_i * alpha + p.sum(axis=1, keepdims=True)
                acc = acc * alpha + p @ vb[idx][n0:n1]
                m_i = m_new
            out[idx][m0:m1] = np.where(l_i > 0, acc / np.where(l_i > 0, l_i, 1.0), 0.0)
    return out


# --- kernel: attend_split_keys_lse_merge ---
# Correct: the keys are cut into three uneven splits; each split returns its normalised
# partial output and its log-sum-exp, and the partials are merged with weights exp(lse_i - lse).
def _split_partial(s, vv):
    lse = np.logaddexp.reduce(s, axis=-1, keepdims=True) if s.shape[-1] else np.full(s.shape[:-1] + (1,), -np.inf)
    fin = np.isfinite(lse)
    p = np.exp(s - np.where(fin, lse, 0.0))
    o = np.where(fin, p @ vv, 0.0)
    return o, lse


def attend_split_keys_lse_merge(q, k, v, mask=None, scale=None):
    dt = q.dtype
    d, sk = q.shape[-1], k.shape[-2]
    sm = dt.type((1.0 / math.sqrt(d)) if scale is None else scale)
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * sm
    if mask is not None:
        s = np.where(np.broadcast_to(np.asarray(mask, dtype=bool), s.shape), s, -np.inf)
    cuts = sorted({0, sk // 3, (2 * sk) // 3 + 1, sk})
    cuts = [c for c in cuts if c <= sk]
    outs, lses = [], []
    vfull = np.broadcast_to(v, s.shape[:-2] + v.shape[-2:])
    with np.errstate(invalid='ignore'):
        for a, b in zip(cuts[:-1], cuts[1:]):
            o, lse = _split_partial(s[..., a:b], vfull[..., a:b, :])
            outs.append(o)
            lses.append(lse)
        lse_all = np.logaddexp.reduce(np.stack(lses), axis=0)
        fin = np.isfinite(lse_all)
        out = np.zeros(s.shape[:-1] + (v.shape[-1],), dtype=dt)
        for o, lse in zip(outs, lses):
            w = np.where(fin, np.exp(lse - np.where(fin, lse_all, 0.0)), 0.0)
            out = out + w * o
    return out.astype(dt)


CATALOG = [
    dict(name='np-triton-tl-softmax-keepdims', api='refimpl', fn='tile_softmax_keepdims_dropped', correct=False,
         bug='softmax-reduction-keepdims-dropped',
         parameter='the tile softmax forwards keep_dims=False into its max and sum reductions, so the (BLOCK_M,) '
                   'row max and row sum are broadcast as a row (along the key axis) instead of a column: wrong '
                   'weights when a tile has as many rows as keys, a broadcast error otherwise. '
                   'Triggers: a query tile with two or more rows (Sq >= 2)',
         source='triton-lang/triton#11406', report='https://github.com/triton-lang/triton/issues/11406',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-ncnn-singleton-mask-channel', api='refimpl', fn='mha_mask_channel_per_head', correct=False,
         bug='broadcast-mask-indexed-per-head',
         parameter='the mask is read per (batch, head) channel and the head number is used as the channel index '
                   'even when the mask has a single shared head channel (size 1 on that axis): head > 0 reads a '
                   'channel that does not exist (an index error). '
                   'Triggers: a mask whose last leading axis (the head axis of 4-D inputs, the batch axis of 3-D '
                   'inputs, including a 2-D mask left-padded) has size 1 while the input has more than one there',
         source='Tencent/ncnn#6869', report='https://github.com/Tencent/ncnn/pull/6869',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-d2ljava-missing-sqrt-d', api='refimpl', fn='dot_product_attention_unscaled', correct=False,
         bug='default-scale-missing',
         parameter='with scale=None the scores are not divided by sqrt(d) (the default factor is 1). '
                   'Triggers: scale=None',
         source='deepjavalibrary/d2l-java#186', report='https://github.com/deepjavalibrary/d2l-java/pull/186',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-caml-softmax-input-unmasked', api='refimpl', fn='label_attention_unmasked_softmax',
         correct=False, bug='mask-not-applied-before-softmax',
         parameter='the keep-mask is not applied to the scores before the softmax (padded keys get weight); it '
                   'only zeroes the rows that have no kept key at all. '
                   'Triggers: a mask that drops a key in a row that keeps at least one key',
         source='jamesmullenbach/caml-mimic#13', report='https://github.com/jamesmullenbach/caml-mimic/issues/13',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-allennlp-masked-log-softmax-zero', api='refimpl', fn='masked_log_softmax_zero_fill',
         correct=False, bug='masked-scores-zero-filled',
         parameter='masked scores are replaced by 0 instead of a very negative value before the log-softmax, so '
                   'every dropped key keeps weight exp(0 - lse) in its row. '
                   'Triggers: a mask that drops a key in a row that keeps at least one key',
         source='allenai/allennlp#105', report='https://github.com/allenai/allennlp/pull/105',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-encoding-softmax-dim-one', api='refimpl', fn='encoding_softmax_dim_one', correct=False,
         bug='softmax-axis-hard-coded',
         parameter='the softmax dim is hard-coded to 1: right for 2-D scores (Sq, Sk), but for 3-D and 4-D inputs '
                   'the weights are normalised over the query axis (3-D) or the head axis (4-D) instead of the '
                   'key axis. '
                   'Triggers: 3-D or 4-D inputs',
         source='zhanghang1989/PyTorch-Encoding#115',
         report='https://github.com/zhanghang1989/PyTorch-Encoding/pull/115',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-exp2-online-tiles', api='refimpl', fn='attend_exp2_online_tiles', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-split-keys-lse-merge', api='refimpl', fn='attend_split_keys_lse_merge', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=['mask', 'dv-ne-d']),
]
