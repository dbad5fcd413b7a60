"""heldout16 forward kernels for the `refimpl` API: fn(q, k, v, mask=None, scale=None) on NumPy arrays.

mask is None or a bool keep-mask (True = attend) broadcastable to (..., Sq, Sk); scale=None means 1/sqrt(D);
a row with no kept key returns zeros. Six kernels carry one mistake each (marked with a BUG comment), two are correct.
"""
import math

import numpy as np


# --- kernel: halo_block_attention ---
def halo_block_attention(q, k, v, mask=None, scale=None):
    """HaloNet-style block attention: einsum similarity, masked_fill with the largest negative value."""
    dim_head = q.shape[-1]
    scale = dim_head ** -0.5 if scale is None else scale
    sim = np.einsum('...id,...jd->...ij', q, k) * scale
    max_neg_value = -np.finfo(sim.dtype).max
    if mask is not None:
        mask = np.broadcast_to(np.asarray(mask, dtype=bool), sim.shape)
        sim = np.where(mask, max_neg_value, sim)  # BUG: the valid (kept) positions are filled instead of ~mask
        has_key = np.asarray(mask).any(axis=-1, keepdims=True)
    else:
        has_key = np.ones(sim.shape[:-1] + (1,), dtype=bool)
    sim = sim - sim.max(axis=-1, keepdims=True)
    attn = np.exp(sim)
    attn = attn / attn.sum(axis=-1, keepdims=True)
    attn = np.where(has_key, attn, 0)
    out = np.einsum('...ij,...jd->...id', attn, v)
    return out.astype(q.dtype, copy=False)


# --- kernel: softmax_lanes_attention ---
def softmax_lanes_attention(q, k, v, mask=None, scale=None):
    """Row softmax written like a 32-thread CUDA block: thread t owns keys t, t + 32, ..."""
    block_dim = 32
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = np.ones(s.shape, dtype=bool) if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), s.shape)
    s = np.where(keep, s, -np.inf)
    n_cols = s.shape[-1]
    lane = np.arange(n_cols) % block_dim
    max_val = np.empty(s.shape, dtype=s.dtype)
    for tid in range(min(block_dim, n_cols)):
        cols = lane == tid
        m_t = s[..., cols].max(axis=-1, keepdims=True)  # BUG: each thread keeps the max of its own strided keys
        max_val[..., cols] = m_t
    safe = np.where(np.isfinite(max_val), max_val, 0)
    e = np.where(keep, np.exp(s - safe), 0)
    total = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
    return np.matmul(p, v).astype(q.dtype, copy=False)


# --- kernel: keras_additive_mask_attention ---
def keras_additive_mask_attention(q, k, v, mask=None, scale=None):
    """Keras ScaledDotProductAttention: the mask is added as (-1e10) * (1 - mask) before a softmax layer."""
    temper = math.sqrt(q.shape[-1]) if scale is None else 1.0 / scale
    attn = np.matmul(q, np.swapaxes(k, -1, -2)) / temper
    if mask is not None:
        mmask = (-1e10) * (1.0 - np.asarray(mask, dtype=attn.dtype))
        attn = attn + mmask
    e = np.exp(attn - attn.max(axis=-1, keepdims=True))
    weights = e / e.sum(axis=-1, keepdims=True)  # BUG: a row whose keys are all masked comes out uniform, not zero
    return np.matmul(weights, v).astype(q.dtype, copy=False)


# --- kernel: chunked_queries_bias_attention ---
def chunked_queries_bias_attention(q, k, v, mask=None, scale=None):
    """Memory-efficient attention over query chunks of 16; the mask is sliced per chunk by a bias function."""
    q_chunk = 16
    sq, d = q.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    out = np.zeros(lead + (sq, v.shape[-1]), dtype=q.dtype)
    m = None if mask is None else np.asarray(mask, dtype=bool)
    for start in range(0, sq, q_chunk):
        stop = min(start + q_chunk, sq)
        s = np.matmul(q[..., start:stop, :], np.swapaxes(k, -1, -2)) * scale
        if m is None:
            keep = np.ones(s.shape, dtype=bool)
        else:
            q_dim = m.shape[-2] if m.ndim >= 2 else 1
            if q_dim == 1:
                mc = m
            else:
                slice_q_len = 1  # BUG: hardcoded; the chunk's rows min(q_chunk, q_dim - start) are collapsed to one
                mc = m[..., start:start + slice_q_len, :]
            keep = np.broadcast_to(mc, s.shape)
        s = np.where(keep, s, -np.inf)
        row_max = s.max(axis=-1, keepdims=True)
        row_max = np.where(np.isfinite(row_max), row_max, 0)
        e = np.where(keep, np.exp(s - row_max), 0)
        denom = e.sum(axis=-1, keepdims=True)
        p = np.divide(e, denom, out=np.zeros_like(e), where=denom > 0)
        out[..., start:stop, :] = np.matmul(p, v)
    return out


# --- kernel: flash_jax_key_chunks ---
def flash_jax_key_chunks(q, k, v, mask=None, scale=None):
    """flash-attention-jax style scan over key chunks of 32 with running row max / row sum."""
    k_chunk_size = 32
    dim, v_dim = q.shape[-1], v.shape[-1]
    sq, sk = q.shape[-2], k.shape[-2]
    scale = 1 / math.sqrt(dim) if scale is None else scale
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    key_mask = np.ones(lead + (sq, sk), dtype=bool) if mask is None else np.broadcast_to(
        np.asarray(mask, dtype=bool), lead + (sq, sk))
    assert v_dim >= 1
    out = np.zeros(lead + (sq, dim), dtype=q.dtype)  # BUG: accumulator sized with the query/key dim, not v_dim
    row_sum = np.zeros(lead + (sq, 1), dtype=q.dtype)
    row_max = np.full(lead + (sq, 1), -np.inf, dtype=q.dtype)
    q_scaled = q * scale
    for chunk_idx in range(0, sk, k_chunk_size):
        k_chunk = k[..., chunk_idx:chunk_idx + k_chunk_size, :]
        v_chunk = v[..., chunk_idx:chunk_idx + k_chunk_size, :]
        key_mask_chunk = key_mask[..., chunk_idx:chunk_idx + k_chunk_size]
        attn_weights = np.matmul(q_scaled, np.swapaxes(k_chunk, -1, -2))
        attn_weights = np.where(key_mask_chunk, attn_weights, -np.inf)
        block_row_max = attn_weights.max(axis=-1, keepdims=True)
        new_row_max = np.maximum(block_row_max, row_max)
        safe_max = np.where(np.isfinite(new_row_max), new_row_max, 0)
        exp_weights = np.where(key_mask_chunk, np.exp(attn_weights - safe_max), 0)
        exp_row_max_diff = np.where(np.isfinite(row_max), np.exp(row_max - safe_max), 0)
        row_sum = exp_row_max_diff * row_sum + exp_weights.sum(axis=-1, keepdims=True)
        out = exp_row_max_diff * out + np.matmul(exp_weights, v_chunk)
        row_max = new_row_max
    out = np.divide(out, row_sum, out=np.zeros_like(out), where=row_sum > 0)
    return out.astype(q.dtype, copy=False)


# --- kernel: head_attention_value_dim_scale ---
def head_attention_value_dim_scale(q, k, v, mask=None, scale=None):
    """Tutorial-style single head: wei = q @ k^T * dim**-0.5, masked_fill(-inf), softmax, wei @ v."""
    if scale is None:
        scale = v.shape[-1] ** -0.5  # BUG: scaled by the value dim; the key dim k.shape[-1] is meant
    wei = np.matmul(q, np.swapaxes(k, -2, -1)) * scale
    if mask is not None:
        wei = np.where(np.asarray(mask, dtype=bool), wei, -np.inf)
    row_max = wei.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0)
    e = np.exp(wei - row_max)
    denom = e.sum(axis=-1, keepdims=True)
    wei = np.divide(e, denom, out=np.zeros_like(e), where=denom > 0)
    return np.matmul(wei, v).astype(q.dtype, copy=False)


# --- kernel: tiled_exp2_online ---
def tiled_exp2_online(q, k, v, mask=None, scale=None):
    """Query blocks of 24, key tiles of 48, online softmax in base 2 (log2(e) folded into the scale)."""
    block_m, block_n = 24, 48
    sq, sk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    qk_scale = scale * math.log2(math.e)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    keep_all = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    out = np.zeros(lead + (sq, v.shape[-1]), dtype=q.dtype)
    for m0 in range(0, sq, block_m):
        m1 = min(m0 + block_m, sq)
        qb = q[..., m0:m1, :]
        acc = np.zeros(lead + (m1 - m0, v.shape[-1]), dtype=q.dtype)
        l_i = np.zeros(lead + (m1 - m0, 1), dtype=q.dtype)
        m_i = np.full(lead + (m1 - m0, 1), -np.inf, dtype=q.dtype)
        for n0 in range(0, sk, block_n):
            n1 = min(n0 + block_n, sk)
            s = np.matmul(qb, np.swapaxes(k[..., n0:n1, :], -1, -2)) * qk_scale
            if keep_all is not None:
                s = np.where(keep_all[..., m0:m1, n0:n1], s, -np.inf)
            m_new = np.maximum(m_i, s.max(axis=-1, keepdims=True))
            m_use = np.where(np.isfinite(m_new), m_new, 0)
            p = np.exp2(s - m_use)
            alpha = np.exp2(np.where(np.isfinite(m_i), m_i, -np.inf) - m_use)
            l_i = l_i * alpha + p.sum(axis=-1, keepdims=True)
            acc = acc * alpha + np.matmul(p, v[..., n0:n1, :])
            m_i = m_new
        out[..., m0:m1, :] = np.divide(acc, l_i, out=np.zeros_like(acc), where=l_i > 0)
    return out


# --- kernel: logaddexp_chunk_lse ---
def logaddexp_chunk_lse(q, k, v, mask=None, scale=None):
    """Row log-sum-exp reduced by np.logaddexp over key chunks of 11, then weights exp(s - lse)."""
    chunk = 11
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(np.asarray(mask, dtype=bool), s, -np.inf)
    lse = np.full(s.shape[:-1], -np.inf, dtype=s.dtype)
    with np.errstate(divide='ignore', invalid='ignore'):
        for c0 in range(0, s.shape[-1], chunk):
            part = s[..., c0:c0 + chunk]
            pm = part.max(axis=-1)
            pm_safe = np.where(np.isfinite(pm), pm, 0)
            part_lse = pm_safe + np.log(np.exp(part - pm_safe[..., None]).sum(axis=-1))
            lse = np.logaddexp(lse, part_lse)
    lse_safe = np.where(np.isfinite(lse), lse, np.inf)
    w = np.exp(s - lse_safe[..., None])
    return np.matmul(w, v).astype(q.dtype, copy=False)


CATALOG = [
    dict(name='np-halonet-valid-mask-filled', api='refimpl', fn='halo_block_attention', correct=False,
         bug='keep-mask-filled-as-drop-mask',
         parameter='the bool keep-mask is passed to the fill as is (the inversion ~mask is missing), so the kept keys '
                   'get the largest negative value and the dropped ones are attended; a row whose keys are all kept '
                   'becomes uniform and a row with no kept key stays zero. Triggers: any mask with a kept key',
         source='lucidrains/halonet-pytorch#6', report='https://github.com/lucidrains/halonet-pytorch/pull/6',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-cudacourse-thread-local-max', api='refimpl', fn='softmax_lanes_attention', correct=False,
         bug='per-thread-row-max',
         parameter='the row maximum is initialised and reduced per thread (each of the 32 lanes takes the max of its '
                   'own strided keys) and never reduced across the block, so each key is shifted by a different max '
                   'and the weights are not a softmax. Triggers: always (rows whose kept keys sit in two or more '
                   'lanes with different maxima)',
         source='Infatoshi/cuda-course#10', report='https://github.com/Infatoshi/cuda-course/issues/10',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-keras-additive-mask-uniform-row', api='refimpl', fn='keras_additive_mask_attention', correct=False,
         bug='fully-masked-row-uniform',
         parameter='the mask is added as (-1e10) * (1 - mask) and the softmax is taken as is, so a row with no kept '
                   'key gets uniform weights (the mean of V) instead of zeros. Triggers: a mask with a row that has '
                   'no kept key',
         source='lsdefine/attention-is-all-you-need-keras#16',
         report='https://github.com/lsdefine/attention-is-all-you-need-keras/issues/16',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-tabfm-query-chunk-mask-collapse', api='refimpl', fn='chunked_queries_bias_attention', correct=False,
         bug='query-chunk-mask-first-row',
         parameter='the per-chunk mask slice uses a hardcoded slice_q_len = 1, so a mask that varies along the query '
                   'axis is collapsed to the first row of each query chunk of 16. Triggers: a mask with a query axis '
                   '> 1 whose rows differ inside a chunk of 16',
         source='google-research/tabfm#40', report='https://github.com/google-research/tabfm/pull/40',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-flashjax-accumulator-qk-dim', api='refimpl', fn='flash_jax_key_chunks', correct=False,
         bug='output-accumulator-wrong-head-dim',
         parameter='the running output accumulator is allocated with the query/key head dim instead of the value '
                   'head dim, so adding p @ v fails to broadcast (ValueError) when Dv != D. Triggers: Dv != D',
         source='lucidrains/flash-attention-jax#15', report='https://github.com/lucidrains/flash-attention-jax/pull/15',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-solvingml-scale-value-dim', api='refimpl', fn='head_attention_value_dim_scale', correct=False,
         bug='default-scale-from-value-dim',
         parameter='with scale=None the scores are scaled by Dv**-0.5 (the value dim) instead of D**-0.5; right only '
                   'while all dims are equal. Triggers: scale=None with Dv != D',
         source='cneuralnetwork/solving-ml-papers#1',
         report='https://github.com/cneuralnetwork/solving-ml-papers/issues/1',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-tiled-exp2-online', api='refimpl', fn='tiled_exp2_online', correct=True, bug=None, parameter=None,
         source=None, report=None, dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-logaddexp-chunk-lse', api='refimpl', fn='logaddexp_chunk_lse', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=['mask', 'dv-ne-d']),
]
