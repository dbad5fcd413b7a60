"""heldout13 backward kernels, API `numpy-backward`: fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv).

Gradients of the refimpl forward (bool keep-mask, scale None = 1/sqrt(D), rows with no kept key give zeros) for
loss = sum(d_out * O). k/v may have leading axes of size 1 broadcast against q's (dk, dv come back with k/v's
shape, summed over the broadcast axes); rows with no kept key have zero gradients; results in the input dtype.
"""
import math

import numpy as np


def _sum_to(x, shape):
    """Sum a broadcast gradient back to `shape`."""
    while x.ndim > len(shape):
        x = x.sum(axis=0)
    for ax, n in enumerate(shape):
        if n == 1 and x.shape[ax] != 1:
            x = x.sum(axis=ax, keepdims=True)
    return x


def _safe_softmax(x):
    mx = x.max(axis=-1, keepdims=True)
    e = np.exp(x - np.where(np.isfinite(mx), mx, 0.0))
    den = e.sum(axis=-1, keepdims=True)
    return np.where(den > 0, e / np.where(den > 0, den, 1.0), 0.0)


# --- kernel: bwd_mha_plain_softmax ---
def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def bwd_mha_plain_softmax(q, k, v, d_out, mask=None, scale=None):
    """multi_head_attention_forward's explicit softmax + bmm path, differentiated by hand."""
    dtype = q.dtype
    q64, k64, v64, do = (np.asarray(t, dtype=np.float64) for t in (q, k, v, d_out))
    sc = 1.0 / math.sqrt(q64.shape[-1]) if scale is None else float(scale)
    s = np.matmul(q64, np.swapaxes(k64, -1, -2)) * sc
    if mask is not None:
        s = np.where(np.asarray(mask, dtype=bool), s, -np.inf)
    p = _softmax(s)  # BUG: plain softmax; a fully masked row gives NaN (torch._safe_softmax gives zeros)
    dv = np.matmul(np.swapaxes(p, -1, -2), do)
    dp = np.matmul(do, np.swapaxes(v64, -1, -2))
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    dq = np.matmul(ds, k64) * sc
    dk = np.matmul(np.swapaxes(ds, -1, -2), q64) * sc
    return (dq.astype(dtype), _sum_to(dk, k64.shape).astype(dtype), _sum_to(dv, v64.shape).astype(dtype))


# --- kernel: bwd_softmax_op_no_backward ---
def bwd_softmax_op_no_backward(q, k, v, d_out, mask=None, scale=None):
    """Tape-style backward: matmul, masked fill, fused softmax_last_dim op, matmul; each op's bwd in turn."""
    dtype = q.dtype
    q64, k64, v64, do = (np.asarray(t, dtype=np.float64) for t in (q, k, v, d_out))
    sc = 1.0 / math.sqrt(q64.shape[-1]) if scale is None else float(scale)
    att = np.matmul(q64, np.swapaxes(k64, -1, -2)) * sc
    if mask is not None:
        att = np.where(np.asarray(mask, dtype=bool), att, -np.inf)
    mx = att.max(axis=-1, keepdims=True)
    e = np.exp(att - np.where(np.isfinite(mx), mx, 0.0))
    den = e.sum(axis=-1, keepdims=True)
    p = np.where(den > 0, e / np.where(den > 0, den, 1.0), 0.0)
    grad_v = np.matmul(np.swapaxes(p, -1, -2), do)
    grad_p = np.matmul(do, np.swapaxes(v64, -1, -2))
    grad_att = np.zeros_like(grad_p)  # BUG: softmax op has no backward
    grad_q = np.matmul(grad_att, k64) * sc
    grad_k = np.matmul(np.swapaxes(grad_att, -1, -2), q64) * sc
    return (grad_q.astype(dtype), _sum_to(grad_k, k64.shape).astype(dtype), _sum_to(grad_v, v64.shape).astype(dtype))


# --- kernel: bwd_dq_accum_hdim_granularity ---
def bwd_dq_accum_hdim_granularity(q, k, v, d_out, mask=None, scale=None):
    """dQ accumulated into a flat fp32-style accumulator with padded head_dim rows, then post-processed."""
    dtype = q.dtype
    q64, k64, v64, do = (np.asarray(t, dtype=np.float64) for t in (q, k, v, d_out))
    seqlen_q, head_dim = q64.shape[-2:]
    sc = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    s = np.matmul(q64, np.swapaxes(k64, -1, -2)) * sc
    if mask is not None:
        s = np.where(np.asarray(mask, dtype=bool), s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(mx), mx, 0.0))
    den = e.sum(axis=-1, keepdims=True)
    p = np.where(den > 0, e / np.where(den > 0, den, 1.0), 0.0)
    dv = np.matmul(np.swapaxes(p, -1, -2), do)
    delta = (do * np.matmul(p, v64)).sum(axis=-1, keepdims=True)
    ds = p * (np.matmul(do, np.swapaxes(v64, -1, -2)) - delta)
    dk = np.matmul(np.swapaxes(ds, -1, -2), q64) * sc
    dq_rows = np.matmul(ds, k64) * sc
    lead = dq_rows.shape[:-2]
    hdim_accum = -(-head_dim // 32) * 32
    tile_hdim = -(-head_dim // 16) * 16  # BUG: kernel tiles head_dim to a multiple of 16; the accumulator rows use 32
    dq_accum = np.zeros(lead + (seqlen_q * hdim_accum,))
    for i in range(seqlen_q):
        dq_accum[..., i * tile_hdim:i * tile_hdim + head_dim] += dq_rows[..., i, :]
    dq = dq_accum.reshape(lead + (seqlen_q, hdim_accum))[..., :head_dim]
    return (dq.astype(dtype), _sum_to(dk, k64.shape).astype(dtype), _sum_to(dv, v64.shape).astype(dtype))


# --- kernel: bwd_tutorial_causal_line_kept ---
def bwd_tutorial_causal_line_kept(q, k, v, d_out, mask=None, scale=None):
    """Fused-attention tutorial backward made non-causal in the forward: blocks of 32 queries per key block."""
    dtype = q.dtype
    q64, k64, v64, do = (np.asarray(t, dtype=np.float64) for t in (q, k, v, d_out))
    n_q, n_k = q64.shape[-2], k64.shape[-2]
    lead = np.broadcast_shapes(q64.shape[:-2], k64.shape[:-2])
    sm_scale = 1.0 / math.sqrt(q64.shape[-1]) if scale is None else float(scale)
    keep = np.ones(lead + (n_q, n_k), dtype=bool) if mask is None else \
        np.broadcast_to(np.asarray(mask, dtype=bool), lead + (n_q, n_k))
    s_all = np.where(keep, np.matmul(q64, np.swapaxes(k64, -1, -2)) * sm_scale, -np.inf)
    m_all = s_all.max(axis=-1)
    m_safe = np.where(np.isfinite(m_all), m_all, 0.0)
    l_all = np.exp(s_all - m_safe[..., None]).sum(axis=-1)
    lse = np.where(l_all > 0, m_safe + np.log(np.where(l_all > 0, l_all, 1.0)), np.inf)
    o = np.matmul(np.exp(s_all - lse[..., None]), v64)
    delta = (o * do).sum(axis=-1)
    dq = np.zeros(lead + q64.shape[-2:])
    dk = np.zeros(lead + k64.shape[-2:])
    dv = np.zeros(lead + v64.shape[-2:])
    kf = np.broadcast_to(k64, lead + k64.shape[-2:])
    vf = np.broadcast_to(v64, lead + v64.shape[-2:])
    qf = np.broadcast_to(q64, lead + q64.shape[-2:])
    dof = np.broadcast_to(do, lead + do.shape[-2:])
    for start_n in range(0, n_k, 32):
        offs_n = np.arange(start_n, min(start_n + 32, n_k))
        for start_m in range(0, n_q, 32):
            offs_m = np.arange(start_m, min(start_m + 32, n_q))
            qk = np.matmul(qf[..., offs_m, :], np.swapaxes(kf[..., offs_n, :], -1, -2)) * sm_scale
            qk = np.where(keep[..., offs_m[:, None], offs_n[None, :]], qk, -np.inf)
            qk = np.where(offs_m[:, None] >= offs_n[None, :], qk, -np.inf)  # BUG: tutorial's causal line kept
            p = np.exp(qk - lse[..., offs_m, None])
            dv[..., offs_n, :] += np.matmul(np.swapaxes(p, -1, -2), dof[..., offs_m, :])
            dp = np.matmul(dof[..., offs_m, :], np.swapaxes(vf[..., offs_n, :], -1, -2))
            ds = p * (dp - delta[..., offs_m, None]) * sm_scale
            dk[..., offs_n, :] += np.matmul(np.swapaxes(ds, -1, -2), qf[..., offs_m, :])
            dq[..., offs_m, :] += np.matmul(ds, kf[..., offs_n, :])
    return (_sum_to(dq, q64.shape).astype(dtype), _sum_to(dk, k64.shape).astype(dtype),
            _sum_to(dv, v64.shape).astype(dtype))


# --- kernel: bwd_attention_weights_wrong_dim ---
def _softmax_dim(x, dim):
    mx = x.max(axis=dim, keepdims=True)
    e = np.exp(x - np.where(np.isfinite(mx), mx, 0.0))
    den = e.sum(axis=dim, keepdims=True)
    return np.where(den > 0, e / np.where(den > 0, den, 1.0), 0.0)


def bwd_attention_weights_wrong_dim(q, k, v, d_out, mask=None, scale=None):
    """Recompute-then-differentiate backward with the attention weights from an nn.Softmax(dim=...) module."""
    dtype = q.dtype
    q64, k64, v64, do = (np.asarray(t, dtype=np.float64) for t in (q, k, v, d_out))
    sc = 1.0 / math.sqrt(q64.shape[-1]) if scale is None else float(scale)
    logits = np.matmul(q64, np.swapaxes(k64, -1, -2)) * sc
    if mask is not None:
        logits = np.where(np.asarray(mask, dtype=bool), logits, -np.inf)
    attention_weights = _softmax_dim(logits, dim=-2)  # BUG: softmax over the query axis instead of the key axis (-1)
    dv = np.matmul(np.swapaxes(attention_weights, -1, -2), do)
    dw = np.matmul(do, np.swapaxes(v64, -1, -2))
    dlogits = attention_weights * (dw - (dw * attention_weights).sum(axis=-1, keepdims=True))
    dq = np.matmul(dlogits, k64) * sc
    dk = np.matmul(np.swapaxes(dlogits, -1, -2), q64) * sc
    return (dq.astype(dtype), _sum_to(dk, k64.shape).astype(dtype), _sum_to(dv, v64.shape).astype(dtype))


# --- kernel: bwd_recompute_without_mask ---
def bwd_recompute_without_mask(q, k, v, d_out, mask=None, scale=None):
    """Checkpointed attention: the backward recomputes sim = q k^T * scale and attn = softmax(sim) itself."""
    dtype = q.dtype
    q64, k64, v64, do = (np.asarray(t, dtype=np.float64) for t in (q, k, v, d_out))
    sc = 1.0 / math.sqrt(q64.shape[-1]) if scale is None else float(scale)
    sim = np.einsum('...id,...jd->...ij', q64, k64) * sc
    attn = _safe_softmax(sim)  # BUG: the mask is not applied when the weights are recomputed in the backward
    dv = np.einsum('...ij,...id->...jd', attn, do)
    dattn = np.einsum('...id,...jd->...ij', do, v64)
    dsim = attn * (dattn - (dattn * attn).sum(axis=-1, keepdims=True))
    dq = np.einsum('...ij,...jd->...id', dsim, k64) * sc
    dk = np.einsum('...ij,...id->...jd', dsim, q64) * sc
    return (dq.astype(dtype), _sum_to(dk, k64.shape).astype(dtype), _sum_to(dv, v64.shape).astype(dtype))


# --- kernel: bwd_dense_delta ---
def bwd_dense_delta(q, k, v, d_out, mask=None, scale=None):
    """Correct: dense recompute, delta = rowsum(dO * O), dS = P * (dP - delta); empty rows masked to zero."""
    dtype = q.dtype
    q64, k64, v64, do = (np.asarray(t, dtype=np.float64) for t in (q, k, v, d_out))
    sc = 1.0 / math.sqrt(q64.shape[-1]) if scale is None else float(scale)
    s = np.matmul(q64, np.swapaxes(k64, -1, -2)) * sc
    if mask is not None:
        s = np.where(np.asarray(mask, dtype=bool), s, -np.inf)
    p = _safe_softmax(s)
    o = np.matmul(p, v64)
    delta = (o * do).sum(axis=-1, keepdims=True)
    dp = np.matmul(do, np.swapaxes(v64, -1, -2))
    ds = p * (dp - delta)
    dq = np.matmul(ds, k64) * sc
    dk = np.matmul(np.swapaxes(ds, -1, -2), q64) * sc
    dv = np.matmul(np.swapaxes(p, -1, -2), do)
    return (dq.astype(dtype), _sum_to(dk, k64.shape).astype(dtype), _sum_to(dv, v64.shape).astype(dtype))


# --- kernel: bwd_key_tiles_lse ---
def bwd_key_tiles_lse(q, k, v, d_out, mask=None, scale=None):
    """Correct: pass 1 builds the row LSE over key tiles of 24; pass 2 accumulates dq and writes dk, dv per tile."""
    dtype = q.dtype
    q64, k64, v64, do = (np.asarray(t, dtype=np.float64) for t in (q, k, v, d_out))
    n_q, n_k = q64.shape[-2], k64.shape[-2]
    lead = np.broadcast_shapes(q64.shape[:-2], k64.shape[:-2], v64.shape[:-2])
    sc = 1.0 / math.sqrt(q64.shape[-1]) if scale is None else float(scale)
    keep = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), lead + (n_q, n_k))
    kf = np.broadcast_to(k64, lead + k64.shape[-2:])
    vf = np.broadcast_to(v64, lead + v64.shape[-2:])
    tiles = [(a, min(a + 24, n_k)) for a in range(0, n_k, 24)]

    def scores(a, b):
        s = np.matmul(q64, np.swapaxes(kf[..., a:b, :], -1, -2)) * sc
        return s if keep is None else np.where(keep[..., a:b], s, -np.inf)

    lse = np.full(lead + (n_q,), -np.inf)
    for a, b in tiles:
        s = scores(a, b)
        m = s.max(axis=-1)
        ms = np.where(np.isfinite(m), m, 0.0)
        with np.errstate(divide='ignore'):
            lse = np.logaddexp(lse, np.log(np.exp(s - ms[..., None]).sum(axis=-1)) + ms)
    alive = np.isfinite(lse)
    lse_s = np.where(alive, lse, 0.0)
    o = np.zeros(lead + (n_q, v64.shape[-1]))
    for a, b in tiles:
        o += np.matmul(np.where(alive[..., None], np.exp(scores(a, b) - lse_s[..., None]), 0.0), vf[..., a:b, :])
    delta = (o * do).sum(axis=-1)
    dq = np.zeros(lead + q64.shape[-2:])
    dk = np.zeros(lead + k64.shape[-2:])
    dv = np.zeros(lead + v64.shape[-2:])
    for a, b in tiles:
        p = np.where(alive[..., None], np.exp(scores(a, b) - lse_s[..., None]), 0.0)
        dv[..., a:b, :] = np.matmul(np.swapaxes(p, -1, -2), do)
        ds = p * (np.matmul(do, np.swapaxes(vf[..., a:b, :], -1, -2)) - delta[..., None])
        dk[..., a:b, :] = np.matmul(np.swapaxes(ds, -1, -2), q64) * sc
        dq += np.matmul(ds, kf[..., a:b, :]) * sc
    return (_sum_to(dq, q64.shape).astype(dtype), _sum_to(dk, k64.shape).astype(dtype),
            _sum_to(dv, v64.shape).astype(dtype))


_F = ['mask', 'dv-ne-d']
CATALOG = [
    dict(name='bwd-pytorch-mha-plain-softmax-nan', api='numpy-backward', fn='bwd_mha_plain_softmax',
         correct=False, bug='fully-masked-row-nan-gradients',
         parameter='the weights are recomputed with a plain softmax: a row with no kept key gives '
                   'exp(-inf - -inf) = NaN, which spreads into dq for that row and into dk, dv through the sums '
                   'over rows. Triggers: a mask with a row that has no kept key',
         source='pytorch/pytorch#189045', report='https://github.com/pytorch/pytorch/pull/189045', dtype='float64',
         features=_F),
    dict(name='bwd-candle-softmax-no-backward', api='numpy-backward', fn='bwd_softmax_op_no_backward',
         correct=False, bug='softmax-gradient-dropped',
         parameter='the softmax op has no backward, so the gradient reaching the scores is zero: dq and dk come '
                   'back zero, dv is right. Triggers: always (rows with a kept key)',
         source='huggingface/candle#3569', report='https://github.com/huggingface/candle/issues/3569',
         dtype='float64', features=_F),
    dict(name='bwd-fa-dq-accum-hdim-granularity', api='numpy-backward', fn='bwd_dq_accum_hdim_granularity',
         correct=False, bug='dq-accumulator-row-stride',
         parameter='dq rows are written into the flat accumulator with a row stride of D rounded up to 16 while '
                   'the accumulator is read back with D rounded up to 32: dq rows land on the wrong rows and '
                   'channels (dk, dv right). Triggers: D % 32 in 1..16 (e.g. D = 8, 16, 40) with Sq > 1',
         source='Dao-AILab/flash-attention#2896', report='https://github.com/Dao-AILab/flash-attention/pull/2896',
         dtype='float64', features=_F),
    dict(name='bwd-triton-tutorial-causal-kept', api='numpy-backward', fn='bwd_tutorial_causal_line_kept',
         correct=False, bug='backward-causal-mask-stale',
         parameter='the backward keeps the tutorial\'s top-left causal masking (offs_m >= offs_n) in addition to '
                   'the given mask while the forward (its LSE and O) is not causal: P is zero above the diagonal. '
                   'Triggers: a kept key j > i (in top-left index terms)',
         source='triton-lang/triton#609', report='https://github.com/triton-lang/triton/issues/609', dtype='float64',
         features=_F),
    dict(name='bwd-external-attn-softmax-dim', api='numpy-backward', fn='bwd_attention_weights_wrong_dim',
         correct=False, bug='softmax-over-query-axis',
         parameter='the recomputed attention weights are normalised over the query axis (dim -2) instead of the '
                   'key axis, so every gradient uses column-normalised weights. Triggers: always',
         source='xmu-xiaoma666/External-Attention-pytorch#18',
         report='https://github.com/xmu-xiaoma666/External-Attention-pytorch/issues/18', dtype='float64',
         features=_F),
    dict(name='bwd-xtransformers-recompute-unmasked', api='numpy-backward', fn='bwd_recompute_without_mask',
         correct=False, bug='backward-mask-not-applied',
         parameter='the backward recomputes the weights from the raw scores without the mask, so dropped keys get '
                   'weight and gradient (and empty rows get non-zero gradients). '
                   'Triggers: a mask with at least one dropped key',
         source='lucidrains/x-transformers#168', report='https://github.com/lucidrains/x-transformers/issues/168',
         dtype='float64', features=_F),
    dict(name='bwd-dense-delta', api='numpy-backward', fn='bwd_dense_delta', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=_F),
    dict(name='bwd-key-tiles-lse', api='numpy-backward', fn='bwd_key_tiles_lse', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=_F),
]
