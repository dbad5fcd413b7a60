"""heldout13 forward kernels, API `refimpl`: fn(q, k, v, mask=None, scale=None) on NumPy arrays.

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); mask None or a bool keep-mask (True = attend) broadcastable to
(..., Sq, Sk); scale None means 1/sqrt(D); a row with no kept key returns zeros; result in the input dtype.
"""
import math

import numpy as np


# --- kernel: mha_key_padding_fill ---
def mha_key_padding_fill(q, k, v, mask=None, scale=None):
    """multi_head_attention_forward style: scale q, bmm, masked_fill the padding, softmax, bmm."""
    dtype = q.dtype
    q64, k64, v64 = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    head_dim = q64.shape[-1]
    scaling = float(head_dim) ** -0.5 if scale is None else float(scale)
    q64 = q64 * scaling
    attn_output_weights = np.matmul(q64, np.swapaxes(k64, -1, -2))
    if mask is not None:
        kpm = np.broadcast_to(np.asarray(mask, dtype=bool), attn_output_weights.shape)
        attn_output_weights = np.where(kpm, -np.inf, attn_output_weights)  # BUG: fills where keep is True
    row_max = attn_output_weights.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    e = np.exp(attn_output_weights - row_max)
    denom = e.sum(axis=-1, keepdims=True)
    attn_output_weights = np.where(denom > 0, e / np.where(denom > 0, denom, 1.0), 0.0)
    return np.matmul(attn_output_weights, v64).astype(dtype)


# --- kernel: scaled_dot_product_legacy_softmax ---
def _masked_softmax(x, axis):
    mx = np.max(x, axis=axis, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    e = np.exp(x - mx)
    s = e.sum(axis=axis, keepdims=True)
    return np.where(s > 0, e / np.where(s > 0, s, 1.0), 0.0)


def scaled_dot_product_legacy_softmax(q, k, v, mask=None, scale=None):
    """ScaledDotProductAttention over (n_head * sz_b, len, d) with nn.Softmax() left at its implicit dim."""
    dtype = q.dtype
    lead = q.shape[:-2]
    len_q, d_k = q.shape[-2:]
    len_k, d_v = k.shape[-2], v.shape[-1]
    qb = np.asarray(q, dtype=np.float64).reshape(-1, len_q, d_k)
    kb = np.broadcast_to(np.asarray(k, dtype=np.float64), lead + (len_k, d_k)).reshape(-1, len_k, d_k)
    vb = np.broadcast_to(np.asarray(v, dtype=np.float64), lead + (len_k, d_v)).reshape(-1, len_k, d_v)
    temperature = math.sqrt(d_k) if scale is None else 1.0 / float(scale)
    attn = np.matmul(qb, kb.transpose(0, 2, 1)) / temperature
    if mask is not None:
        m = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (len_q, len_k)).reshape(-1, len_q, len_k)
        attn = np.where(m, attn, -np.inf)
    attn = _masked_softmax(attn, axis=0)  # BUG: legacy implicit softmax dim of a 3-D tensor is 0 (n_head * sz_b), not 2
    output = np.matmul(attn, vb)
    return output.reshape(lead + (len_q, d_v)).astype(dtype)


# --- kernel: mha_permuted_heads_mask_repeat ---
def mha_permuted_heads_mask_repeat(q, k, v, mask=None, scale=None):
    """Heads folded as permute(2, 0, 1, 3).view(H * B, ...); the mask repeated per head and viewed (B * H, ...)."""
    dtype = q.dtype
    q4, k4, v4 = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    while q4.ndim < 4:
        q4, k4, v4 = q4[None], k4[None], v4[None]
    batch, heads, len_q, d_head = q4.shape
    k4 = np.broadcast_to(k4, (batch, heads) + k4.shape[-2:])
    v4 = np.broadcast_to(v4, (batch, heads) + v4.shape[-2:])
    len_k, d_v = k4.shape[-2], v4.shape[-1]
    sqrt_dim = math.sqrt(d_head) if scale is None else 1.0 / float(scale)
    query = q4.transpose(1, 0, 2, 3).reshape(heads * batch, len_q, d_head)
    key = k4.transpose(1, 0, 2, 3).reshape(heads * batch, len_k, d_head)
    value = v4.transpose(1, 0, 2, 3).reshape(heads * batch, len_k, d_v)
    score = np.matmul(query, key.transpose(0, 2, 1)) / sqrt_dim
    if mask is not None:
        m4 = np.broadcast_to(np.asarray(mask, dtype=bool), (batch, heads, len_q, len_k))
        m3 = m4.reshape(batch * heads, len_q, len_k)  # BUG: mask folded batch-major while the scores are head-major
        score = np.where(m3, score, -np.inf)
    mx = score.max(axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    e = np.exp(score - mx)
    den = e.sum(axis=-1, keepdims=True)
    attn = np.where(den > 0, e / np.where(den > 0, den, 1.0), 0.0)
    context = np.matmul(attn, value).reshape(heads, batch, len_q, d_v).transpose(1, 0, 2, 3)
    return context.reshape(q.shape[:-1] + (d_v,)).astype(dtype)


# --- kernel: soft_attention_weighted_context ---
def soft_attention_weighted_context(q, k, v, mask=None, scale=None):
    """Show-attend-tell style context: alpha = softmax(scores); context = (values * alpha.unsqueeze(...)).sum(...)."""
    dtype = q.dtype
    q64, k64, v64 = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    sc = 1.0 / math.sqrt(q64.shape[-1]) if scale is None else float(scale)
    att = np.matmul(q64, np.swapaxes(k64, -1, -2)) * sc
    if mask is not None:
        att = np.where(np.asarray(mask, dtype=bool), att, -np.inf)
    mx = att.max(axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    e = np.exp(att - mx)
    den = e.sum(axis=-1, keepdims=True)
    alpha = np.where(den > 0, e / np.where(den > 0, den, 1.0), 0.0)
    weighted = alpha[..., :, :, None] * v64[..., None, :, :]
    context = weighted.sum(axis=-3)  # BUG: sums over queries, not keys (-2)
    return context.astype(dtype)


# --- kernel: online_softmax_key_blocks ---
def online_softmax_key_blocks(q, k, v, mask=None, scale=None):
    """Flash-style loop over key blocks of 32 with a running max, sum and accumulator."""
    dtype = q.dtype
    block = 32
    q64, k64, v64 = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    len_q, len_k = q64.shape[-2], k64.shape[-2]
    lead = np.broadcast_shapes(q64.shape[:-2], k64.shape[:-2], v64.shape[:-2])
    sc = 1.0 / math.sqrt(q64.shape[-1]) if scale is None else float(scale)
    n_blocks = -(-len_k // block)
    pad = n_blocks * block - len_k
    kp = np.concatenate([np.broadcast_to(k64, lead + k64.shape[-2:]), np.zeros(lead + (pad, k64.shape[-1]))], axis=-2)
    vp = np.concatenate([np.broadcast_to(v64, lead + v64.shape[-2:]), np.zeros(lead + (pad, v64.shape[-1]))], axis=-2)
    if mask is None:
        keep_all = np.ones(lead + (len_q, len_k), dtype=bool)
    else:
        keep_all = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (len_q, len_k))
    keep_all = np.concatenate([keep_all, np.ones(lead + (len_q, pad), dtype=bool)], axis=-1)
    m_i = np.full(lead + (len_q,), -np.inf)
    l_i = np.zeros(lead + (len_q,))
    acc = np.zeros(lead + (len_q, v64.shape[-1]))
    for start in range(0, n_blocks * block, block):
        offs_n = start + np.arange(block)
        in_bounds = offs_n < len_k
        keep_blk = keep_all[..., start:start + block]
        keep = keep_blk & in_bounds
        s = np.matmul(q64, np.swapaxes(kp[..., start:start + block, :], -1, -2)) * sc
        s_k = np.where(keep, s, -np.inf)
        m_new = np.maximum(m_i, s_k.max(axis=-1))
        m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
        alpha = np.where(np.isfinite(m_i), np.exp(m_i - m_safe), 0.0)
        p = np.where(keep, np.exp(s - m_safe[..., None]), 0.0)
        l_i = l_i * alpha + np.where(keep_blk, np.exp(s - m_safe[..., None]), 0.0).sum(axis=-1)  # BUG: no bounds check
        acc = acc * alpha[..., None] + np.matmul(p, vp[..., start:start + block, :])
        m_i = m_new
    out = np.where(l_i[..., None] > 0, acc / np.where(l_i[..., None] > 0, l_i[..., None], 1.0), 0.0)
    return out.astype(dtype)


# --- kernel: attention_scores_no_padding_mask ---
def attention_scores_no_padding_mask(q, k, v, mask=None, scale=None):
    """fconv self-attention style: attn_scores = bmm(x, encoder_a); softmax; bmm(attn_scores, encoder_b)."""
    dtype = q.dtype
    x = np.asarray(q, dtype=np.float64)
    encoder_a = np.swapaxes(np.asarray(k, dtype=np.float64), -1, -2)
    encoder_b = np.asarray(v, dtype=np.float64)
    sc = 1.0 / math.sqrt(x.shape[-1]) if scale is None else float(scale)
    attn_scores = np.matmul(x, encoder_a) * sc
    scores = attn_scores  # BUG: the key padding mask is never applied (should be np.where(mask, attn_scores, -inf))
    mx = scores.max(axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    e = np.exp(scores - mx)
    den = e.sum(axis=-1, keepdims=True)
    attn_scores = np.where(den > 0, e / np.where(den > 0, den, 1.0), 0.0)
    return np.matmul(attn_scores, encoder_b).astype(dtype)


# --- kernel: attend_tiled_online_qblocks ---
def attend_tiled_online_qblocks(q, k, v, mask=None, scale=None):
    """Correct: query blocks of 16, key tiles of 40 visited in order, online softmax in base e."""
    dtype = q.dtype
    q64, k64, v64 = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    len_q, len_k, d_v = q64.shape[-2], k64.shape[-2], v64.shape[-1]
    lead = np.broadcast_shapes(q64.shape[:-2], k64.shape[:-2], v64.shape[:-2])
    sc = 1.0 / math.sqrt(q64.shape[-1]) if scale is None else float(scale)
    keep_full = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), lead + (len_q, len_k))
    qf = np.broadcast_to(q64, lead + q64.shape[-2:])
    kf = np.broadcast_to(k64, lead + k64.shape[-2:])
    vf = np.broadcast_to(v64, lead + v64.shape[-2:])
    out = np.zeros(lead + (len_q, d_v))
    for qs in range(0, len_q, 16):
        qe = min(qs + 16, len_q)
        m_i = np.full(lead + (qe - qs,), -np.inf)
        l_i = np.zeros(lead + (qe - qs,))
        acc = np.zeros(lead + (qe - qs, d_v))
        for ks in range(0, len_k, 40):
            ke = min(ks + 40, len_k)
            s = np.matmul(qf[..., qs:qe, :], np.swapaxes(kf[..., ks:ke, :], -1, -2)) * sc
            if keep_full is not None:
                s = np.where(keep_full[..., qs:qe, ks:ke], s, -np.inf)
            m_new = np.maximum(m_i, s.max(axis=-1))
            m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
            corr = np.exp(np.where(np.isfinite(m_i), m_i, -np.inf) - m_safe)
            p = np.exp(s - m_safe[..., None])
            l_i = l_i * corr + p.sum(axis=-1)
            acc = acc * corr[..., None] + np.matmul(p, vf[..., ks:ke, :])
            m_i = m_new
        good = l_i > 0
        out[..., qs:qe, :] = np.where(good[..., None], acc / np.where(good, l_i, 1.0)[..., None], 0.0)
    return out.astype(dtype)


# --- kernel: attend_logaddexp_weights ---
def attend_logaddexp_weights(q, k, v, mask=None, scale=None):
    """Correct: weights exp(s - lse) with the row lse reduced by np.logaddexp over key chunks of 7."""
    dtype = q.dtype
    q64, k64, v64 = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    sc = 1.0 / math.sqrt(q64.shape[-1]) if scale is None else float(scale)
    s = np.einsum('...qd,...kd->...qk', q64, k64) * sc
    if mask is not None:
        s = np.where(np.asarray(mask, dtype=bool), s, -np.inf)
    lse = np.full(s.shape[:-1], -np.inf)
    for ks in range(0, s.shape[-1], 7):
        chunk = s[..., ks:ks + 7]
        cmax = chunk.max(axis=-1)
        csafe = np.where(np.isfinite(cmax), cmax, 0.0)
        with np.errstate(divide='ignore'):
            clse = np.log(np.exp(chunk - csafe[..., None]).sum(axis=-1)) + csafe
        lse = np.logaddexp(lse, clse)
    dead = ~np.isfinite(lse)
    w = np.where(dead[..., None], 0.0, np.exp(s - np.where(dead, 0.0, lse)[..., None]))
    return np.einsum('...qk,...kd->...qd', w, v64).astype(dtype)


_F = ['mask']
CATALOG = [
    dict(name='np-transformertranslation-padding-fill-polarity', api='refimpl', fn='mha_key_padding_fill',
         correct=False, bug='keep-mask-used-as-drop-mask',
         parameter='the bool keep-mask is passed to the -inf fill as is (the == 0 is missing), so the kept keys '
                   'are dropped and the dropped ones kept; a row whose keys are all kept becomes empty (zeros). '
                   'Triggers: any mask with at least one kept key',
         source='mlwithme/TransformerTranslation#6',
         report='https://github.com/mlwithme/TransformerTranslation/issues/6', dtype='float64', features=_F),
    dict(name='np-aiayn-legacy-softmax-dim', api='refimpl', fn='scaled_dot_product_legacy_softmax',
         correct=False, bug='softmax-over-batch-axis',
         parameter='scores folded to (n_head * sz_b, len_q, len_k) are normalised with the legacy implicit '
                   'softmax dim of a 3-D tensor (0, the folded batch-head axis) instead of the key axis. '
                   'Triggers: always (any row with two or more kept keys)',
         source='jadore801120/attention-is-all-you-need-pytorch#52',
         report='https://github.com/jadore801120/attention-is-all-you-need-pytorch/issues/52', dtype='float64',
         features=_F),
    dict(name='np-sooftware-mask-not-permuted', api='refimpl', fn='mha_permuted_heads_mask_repeat',
         correct=False, bug='folded-mask-order-mismatch',
         parameter='4-D inputs are folded head-major (h * B + b) after the permute while the mask is folded '
                   'batch-major (b * H + h), so a (batch, head) slice gets another slice\'s mask. '
                   'Triggers: 4-D input with B > 1 and H > 1 and a mask that differs between batches or heads',
         source='sooftware/attentions#4', report='https://github.com/sooftware/attentions/issues/4',
         dtype='float64', features=_F),
    dict(name='np-showattendtell-context-sum-axis', api='refimpl', fn='soft_attention_weighted_context',
         correct=False, bug='context-summed-over-query-axis',
         parameter='the weighted values alpha[..., q, k, None] * v[..., None, k, :] are summed over the query '
                   'axis instead of the key axis: wrong values, and shape (..., Sk, Dv) when Sq != Sk. '
                   'Triggers: always',
         source='alecwangcq/show-attend-and-tell#6',
         report='https://github.com/alecwangcq/show-attend-and-tell/issues/6', dtype='float64', features=_F),
    dict(name='np-nnkernels-online-bounds-check', api='refimpl', fn='online_softmax_key_blocks',
         correct=False, bug='tail-block-padding-in-row-sum',
         parameter='keys are zero-padded to whole blocks of 32; the accumulator masks the padded keys but the '
                   'running row sum misses the bounds check, so each padded key adds exp(0 - m) to the '
                   'denominator and shrinks the output. Triggers: Sk not a multiple of 32 (rows with a kept key)',
         source='FluxML/NNkernels.jl#16', report='https://github.com/FluxML/NNkernels.jl/pull/16',
         dtype='float64', features=_F),
    dict(name='np-fairseq-padding-mask-unused', api='refimpl', fn='attention_scores_no_padding_mask',
         correct=False, bug='mask-ignored',
         parameter='the mask argument is accepted but never applied to the scores: every key is attended. '
                   'Triggers: a mask with at least one dropped key',
         source='facebookresearch/fairseq#318', report='https://github.com/facebookresearch/fairseq/issues/318',
         dtype='float64', features=_F),
    dict(name='np-tiled-online-qblocks', api='refimpl', fn='attend_tiled_online_qblocks', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=_F),
    dict(name='np-logaddexp-weights', api='refimpl', fn='attend_logaddexp_weights', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=_F),
]
