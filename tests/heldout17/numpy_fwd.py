"""Held-out set 17, API `refimpl`: fn(q, k, v, mask=None, scale=None) on NumPy arrays.

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); mask None or a bool keep-mask (True = attend) broadcastable
to (..., Sq, Sk); scale=None means 1/sqrt(D). Returns (..., Sq, Dv) in the input dtype; a row with no kept key
returns zeros. Six broken kernels (one BUG-marked line each) and two correct ones; see README.md.
"""
import numpy as np


# --- kernel: mha_padded_masked_fill ---
def _dgl_softmax(e, axis=-1):
    m = np.max(e, axis=axis, keepdims=True)
    ex = np.exp(e - m)
    return ex / np.sum(ex, axis=axis, keepdims=True)


def mha_padded_masked_fill(q, k, v, mask=None, scale=None):
    """Set-transformer style multi-head attention over padded neighbour lists (einsum + masked fill)."""
    d_head = q.shape[-1]
    e = np.einsum('...xd,...yd->...xy', q, k)
    e = e * float(1.0 / np.sqrt(d_head) if scale is None else scale)
    if mask is not None:
        keep = np.broadcast_to(mask, e.shape)
        e = np.where(keep, e, -np.inf)
        alpha = _dgl_softmax(e, axis=-1)  # BUG: an all-padding row is all -inf: NaN
    else:
        alpha = _dgl_softmax(e, axis=-1)
    out = np.einsum('...xy,...yd->...xd', alpha, v)
    return out.astype(q.dtype, copy=False)


# --- kernel: sagan_value_bmm ---
def _sagan_softmax(energy):
    m = np.max(energy, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(energy - m)
    s = np.sum(p, axis=-1, keepdims=True)
    return p / np.where(s == 0, 1.0, s)


def sagan_value_bmm(q, k, v, mask=None, scale=None):
    """Self-Attention-GAN layout: proj_value (B, C, N) bmm attention^T, then back to (B, N, C)."""
    lead = q.shape[:-2]
    sq, d = q.shape[-2:]
    sk, dv = k.shape[-2], v.shape[-1]
    scale = float(1.0 / np.sqrt(d) if scale is None else scale)
    proj_query = q.reshape((-1, sq, d))
    proj_key = np.swapaxes(np.broadcast_to(k, lead + (sk, d)).reshape((-1, sk, d)), 1, 2)
    proj_value = np.swapaxes(np.broadcast_to(v, lead + (sk, dv)).reshape((-1, sk, dv)), 1, 2)
    energy = np.matmul(proj_query, proj_key) * scale
    if mask is not None:
        keep = np.broadcast_to(mask, lead + (sq, sk)).reshape((-1, sq, sk))
        energy = np.where(keep, energy, -np.inf)
    attention = _sagan_softmax(energy)
    out = np.matmul(proj_value, np.transpose(attention, (0, 1, 2)))  # BUG: identity permutation
    out = np.swapaxes(out, 1, 2)
    return out.reshape(lead + (sq, dv)).astype(q.dtype, copy=False)


# --- kernel: tutorial_mha_merge_heads ---
def _scaled_dot_product(q, k, v, mask=None, scale=None):
    d_k = q.shape[-1]
    attn_logits = np.matmul(q, np.swapaxes(k, -2, -1))
    attn_logits = attn_logits * float(1.0 / np.sqrt(d_k) if scale is None else scale)
    if mask is not None:
        attn_logits = np.where(mask, attn_logits, -np.inf)
    m = np.max(attn_logits, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    attention = np.exp(attn_logits - m)
    total = np.sum(attention, axis=-1, keepdims=True)
    attention = attention / np.where(total == 0, 1.0, total)
    values = np.matmul(attention, v)
    return values, attention


def tutorial_mha_merge_heads(q, k, v, mask=None, scale=None):
    """Notebook-style MultiheadAttention: attend, then reshape the values back to (..., seq, embed)."""
    *lead, seq_length, embed_dim = q.shape
    values, _ = _scaled_dot_product(q, k, v, mask=mask, scale=scale)
    values = values.reshape(tuple(lead) + (seq_length, embed_dim))  # BUG: width is Dv, not D
    return values.astype(q.dtype, copy=False)


# --- kernel: bert_extended_mask_sign ---
def bert_extended_mask_sign(q, k, v, mask=None, scale=None):
    """BERT self-attention: an additive extended mask (1 - attention_mask) * -10000 on the scaled scores."""
    attention_head_size = q.shape[-1]
    attention_scores = np.matmul(q, np.swapaxes(k, -1, -2))
    if scale is None:
        attention_scores = attention_scores / float(np.sqrt(attention_head_size))
    else:
        attention_scores = attention_scores * float(scale)
    has_key = None
    if mask is not None:
        keep = np.broadcast_to(mask, attention_scores.shape)
        attention_mask = (~keep).astype(q.dtype)  # BUG: ones on the padding, not the kept keys
        extended_attention_mask = (1.0 - attention_mask) * -10000.0
        attention_scores = attention_scores + extended_attention_mask.astype(q.dtype)
        has_key = np.any(keep, axis=-1, keepdims=True)
    attention_scores = attention_scores - np.max(attention_scores, axis=-1, keepdims=True)
    attention_probs = np.exp(attention_scores)
    attention_probs = attention_probs / np.sum(attention_probs, axis=-1, keepdims=True)
    if has_key is not None:
        attention_probs = np.where(has_key, attention_probs, 0.0)
    context = np.matmul(attention_probs, v)
    return context.astype(q.dtype, copy=False)


# --- kernel: functional_core_transpose ---
def functional_core_transpose(q, k, v, mask=None, scale=None):
    """Functional attention core: scores = query @ transpose(key), masked softmax, weights @ value."""
    d_k = q.shape[-1]
    key_t = np.transpose(k)  # BUG: reverses every axis
    scores = np.matmul(q, key_t) * float(1.0 / np.sqrt(d_k) if scale is None else scale)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    row_max = np.max(scores, axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    weights = np.exp(scores - row_max)
    denom = np.sum(weights, axis=-1, keepdims=True)
    weights = weights / np.where(denom == 0, 1.0, denom)
    return np.matmul(weights, v).astype(q.dtype, copy=False)


# --- kernel: fundamentals_softmax_total ---
def fundamentals_softmax_total(q, k, v, mask=None, scale=None):
    """Course-notebook attention: z = q k^T * scale, softmax(z) with NumPy sums, then weights @ v."""
    z = np.matmul(q, np.swapaxes(k, -1, -2)) * float(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    if mask is not None:
        z = np.where(mask, z, -np.inf)
    z_max = np.max(z, axis=-1, keepdims=True)
    e = np.exp(z - np.where(np.isfinite(z_max), z_max, 0.0))
    p = e / np.sum(e)  # BUG: sum over all elements, not per row
    return np.matmul(p, v).astype(q.dtype, copy=False)


# --- kernel: attend_key_blocks_online ---
def attend_key_blocks_online(q, k, v, mask=None, scale=None):
    """Correct: query chunks of 29, key blocks of 17, online (running max / running sum) softmax."""
    dtype = q.dtype
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    scale = float(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    qb = np.broadcast_to(q, lead + q.shape[-2:])
    kb = np.broadcast_to(k, lead + k.shape[-2:])
    vb = np.broadcast_to(v, lead + v.shape[-2:])
    keep = None if mask is None else np.broadcast_to(mask, lead + (sq, sk))
    out = np.zeros(lead + (sq, dv), dtype=dtype)
    for q0 in range(0, sq, 29):
        q1 = min(q0 + 29, sq)
        m_i = np.full(lead + (q1 - q0, 1), -np.inf, dtype=dtype)
        l_i = np.zeros(lead + (q1 - q0, 1), dtype=dtype)
        acc = np.zeros(lead + (q1 - q0, dv), dtype=dtype)
        for k0 in range(0, sk, 17):
            k1 = min(k0 + 17, sk)
            s = np.matmul(qb[..., q0:q1, :], np.swapaxes(kb[..., k0:k1, :], -1, -2)) * scale
            if keep is not None:
                s = np.where(keep[..., q0:q1, k0:k1], s, -np.inf)
            m_new = np.maximum(m_i, np.max(s, axis=-1, keepdims=True))
            m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
            alpha = np.exp(m_i - m_safe)
            p = np.exp(s - m_safe)
            l_i = l_i * alpha + np.sum(p, axis=-1, keepdims=True)
            acc = acc * alpha + np.matmul(p, vb[..., k0:k1, :])
            m_i = m_new
        out[..., q0:q1, :] = acc / np.where(l_i == 0, 1.0, l_i)
    return out


# --- kernel: attend_split_kv_partial_merge ---
def attend_split_kv_partial_merge(q, k, v, mask=None, scale=None):
    """Correct: three uneven key splits, each kept as (row max, row sum, unnormalised output), merged at the end."""
    sk = k.shape[-2]
    scale = float(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    s_all = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s_all = np.where(mask, s_all, -np.inf)
    bounds = sorted({0, sk // 3, (2 * sk) // 3 + 1, sk})
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        s = s_all[..., a:b]
        m = np.max(s, axis=-1, keepdims=True)
        w = np.exp(s - np.where(np.isfinite(m), m, 0.0))
        parts.append((m, np.sum(w, axis=-1, keepdims=True), np.matmul(w, v[..., a:b, :])))
    m_all = parts[0][0]
    for m, _, _ in parts[1:]:
        m_all = np.maximum(m_all, m)
    m_safe = np.where(np.isfinite(m_all), m_all, 0.0)
    total = np.zeros_like(parts[0][1])
    out = np.zeros_like(parts[0][2])
    for m, l_part, o_part in parts:
        c = np.exp(np.where(np.isfinite(m), m, -np.inf) - m_safe)
        total = total + l_part * c
        out = out + o_part * c
    out = out / np.where(total == 0, 1.0, total)
    return out.astype(q.dtype, copy=False)


CATALOG = [
    dict(name='np-dgl-padded-neighbours-nan', api='refimpl', fn='mha_padded_masked_fill', correct=False,
         bug='fully-masked-row-nan',
         parameter='padded keys are filled with -inf and a plain softmax is taken, so a row whose keys are all '
                   'padding gives exp(-inf - -inf) = NaN instead of zeros. Triggers: a mask with a row that has '
                   'no kept key',
         source='dmlc/dgl#2657', report='https://github.com/dmlc/dgl/issues/2657', dtype='float64',
         features=['mask', 'dv-ne-d']),
    dict(name='np-sagan-attention-not-transposed', api='refimpl', fn='sagan_value_bmm', correct=False,
         bug='attention-map-not-transposed',
         parameter='the output is bmm(proj_value, attention.permute(0, 1, 2)) - an identity permutation - so '
                   'each output column j sums v[:, k] * A[k, j] (the attention map read transposed); with Sq != Sk '
                   'the bmm shapes do not match. Triggers: always (wrong values when Sq = Sk, a shape error '
                   'otherwise)',
         source='heykeetae/Self-Attention-GAN#11', report='https://github.com/heykeetae/Self-Attention-GAN/issues/11',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-uvadlc-merge-heads-embed-dim', api='refimpl', fn='tutorial_mha_merge_heads', correct=False,
         bug='output-reshaped-with-input-width',
         parameter='the attended values are reshaped to (..., seq_length, embed_dim) with embed_dim taken from '
                   'the query input instead of the value width Dv, which raises when Dv != D. Triggers: Dv != D',
         source='phlippe/uvadlc_notebooks#51', report='https://github.com/phlippe/uvadlc_notebooks/issues/51',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-jiant-bert-mask-sign', api='refimpl', fn='bert_extended_mask_sign', correct=False,
         bug='keep-mask-inverted-additive',
         parameter='the BERT attention_mask is built with ones on the padding (the keep-mask inverted) before '
                   '(1 - attention_mask) * -10000, so the kept keys get -10000 and the dropped ones 0. Triggers: '
                   'a mask with a row that has both a kept and a dropped key',
         source='nyu-mll/jiant-v1-legacy#465', report='https://github.com/nyu-mll/jiant-v1-legacy/issues/465',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-odyssey-transpose-all-axes', api='refimpl', fn='functional_core_transpose', correct=False,
         bug='key-transpose-reverses-all-axes',
         parameter='the key is transposed with a plain transpose, which reverses every axis (right only for '
                   '2-D inputs), so the batched query @ key^T matmul fails or mixes batch/head axes. Triggers: '
                   'inputs with more than two dimensions',
         source='HomericIntelligence/Odyssey#5648', report='https://github.com/HomericIntelligence/Odyssey/issues/5648',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-mlfundamentals-global-softmax-sum', api='refimpl', fn='fundamentals_softmax_total',
         correct=False, bug='softmax-normalised-over-all-rows',
         parameter='the softmax divides exp(z - rowmax) by np.sum over every element of the array instead of '
                   'each row, so every row is scaled by its share of the global sum. Triggers: more than one '
                   'row with a kept key in the whole input',
         source='rickwierenga/MLFundamentals#1', report='https://github.com/rickwierenga/MLFundamentals/issues/1',
         dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-key-blocks-online', api='refimpl', fn='attend_key_blocks_online', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=['mask', 'dv-ne-d']),
    dict(name='np-split-kv-partial-merge', api='refimpl', fn='attend_split_kv_partial_merge', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=['mask', 'dv-ne-d']),
]
