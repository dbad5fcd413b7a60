"""heldout13 forward kernels, API `torch-sdpa`: scaled_dot_product_attention(query, key, value, attn_mask=None,
dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False) on (B, H, S, D) torch tensors (torch 1.13 math).

attn_mask bool (True = attend) or additive float; is_causal top-left (j <= i); enable_gqa: query head h uses kv
head h // (Hq // Hkv); rows with no visible key give zeros; returns (B, Hq, Sq, Dv) in the input dtype.
"""
import math

import torch


# --- kernel: sdpa_causal_merged_into_mask ---
def sdpa_causal_merged_into_mask(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """xformers-style scaled_dot_product: the causal pattern is merged into the attention mask."""
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        rep = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    scale_factor = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    att = query @ key.transpose(-2, -1) * scale_factor
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            att = att.masked_fill(~attn_mask, float('-inf'))
        else:
            att = att + attn_mask
    if is_causal and attn_mask is not None:  # BUG: causal is only applied when an att_mask was passed
        causal = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool).tril()
        att = att.masked_fill(~causal, float('-inf'))
    row_max = att.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(att - row_max)
    den = e.sum(dim=-1, keepdim=True)
    att = torch.where(den > 0, e / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(e))
    return att @ value


# --- kernel: sdpa_bool_mask_added ---
def sdpa_bool_mask_added(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    """nnf_multi_head_attention_forward port: the mask is added to attn_output_weights."""
    bsz, num_heads, tgt_len, head_dim = query.shape
    if enable_gqa and key.shape[1] != num_heads:
        key = key.repeat_interleave(num_heads // key.shape[1], dim=1)
        value = value.repeat_interleave(num_heads // value.shape[1], dim=1)
    src_len = key.shape[2]
    scaling = head_dim ** -0.5 if scale is None else scale
    attn_output_weights = torch.matmul(query * scaling, key.transpose(2, 3))
    if is_causal:
        causal = torch.ones(tgt_len, src_len, dtype=torch.bool).tril()
        attn_output_weights = attn_output_weights.masked_fill(~causal, float('-inf'))
    if attn_mask is not None:
        attn_output_weights = attn_output_weights + attn_mask.to(query.dtype)  # BUG: bool mask added as 0/1
    mx = attn_output_weights.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    e = torch.exp(attn_output_weights - mx)
    den = e.sum(dim=-1, keepdim=True)
    attn_output_weights = torch.where(den > 0, e / torch.where(den > 0, den, torch.ones_like(den)),
                                      torch.zeros_like(e))
    return torch.matmul(attn_output_weights, value)


# --- kernel: sdpa_energy_embed_size ---
def sdpa_energy_embed_size(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                           enable_gqa=False):
    """SelfAttention tutorial style: energy = einsum('nqhd,nkhd->nhqk'); softmax(energy / sqrt(embed_size))."""
    n, heads, query_len, head_dim = query.shape
    embed_size = heads * head_dim
    if enable_gqa and key.shape[1] != heads:
        key = key.repeat_interleave(heads // key.shape[1], dim=1)
        value = value.repeat_interleave(heads // value.shape[1], dim=1)
    energy = torch.einsum('nhqd,nhkd->nhqk', query, key)
    denom_scale = embed_size ** 0.5 if scale is None else 1.0 / scale  # BUG: sqrt(H * D), not sqrt(D)
    logits = energy / denom_scale
    if is_causal:
        tri = torch.ones(query_len, key.shape[2], dtype=torch.bool).tril()
        logits = logits.masked_fill(~tri, float('-inf'))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float('-inf'))
        else:
            logits = logits + attn_mask
    mx = logits.amax(dim=3, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    e = torch.exp(logits - mx)
    den = e.sum(dim=3, keepdim=True)
    attention = torch.where(den > 0, e / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(e))
    return torch.einsum('nhqk,nhkd->nhqd', attention, value)


# --- kernel: sdpa_fallback_plain_softmax ---
def sdpa_fallback_plain_softmax(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                enable_gqa=False):
    """Fallback SDPA: scores + mask, then a plain softmax (no special case for a fully masked row)."""
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        g = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(g, dim=-3)
        value = value.repeat_interleave(g, dim=-3)
    s = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = (query * s) @ key.transpose(-1, -2)
    if is_causal:
        scores = scores.masked_fill(~torch.ones(scores.shape[-2:], dtype=torch.bool).tril(), float('-inf'))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float('-inf'))
        else:
            scores = scores + attn_mask
    scores = torch.softmax(scores, dim=-1)  # BUG: plain softmax: a row with every key masked gives NaN, not zeros
    return scores @ value


# --- kernel: sdpa_causal_lower_right ---
def sdpa_causal_lower_right(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """KV-cache minded port: the causal mask built with tril on the (L, S) ones matrix."""
    L, S = query.size(-2), key.size(-2)
    scale_factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    attn_bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        temp_mask = torch.ones(L, S, dtype=torch.bool).tril(diagonal=S - L)  # BUG: lower-right; SDPA is top-left
        attn_bias = attn_bias.masked_fill(~temp_mask, float('-inf'))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_bias = attn_bias.masked_fill(~attn_mask, float('-inf'))
        else:
            attn_bias = attn_bias + attn_mask
    if enable_gqa and key.size(-3) != query.size(-3):
        key = key.repeat_interleave(query.size(-3) // key.size(-3), -3)
        value = value.repeat_interleave(query.size(-3) // value.size(-3), -3)
    attn_weight = query @ key.transpose(-2, -1) * scale_factor + attn_bias
    mx = attn_weight.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    e = torch.exp(attn_weight - mx)
    den = e.sum(dim=-1, keepdim=True)
    attn_weight = torch.where(den > 0, e / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(e))
    return attn_weight @ value


# --- kernel: sdpa_online_fp16_stats ---
def sdpa_online_fp16_stats(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                           enable_gqa=False):
    """HMX-style prefill: key blocks of 16, running max m, row sum l and block rowsum kept between blocks."""
    dtype = query.dtype
    hq, hkv = query.shape[1], key.shape[1]
    if enable_gqa and hq != hkv:
        key = key.repeat_interleave(hq // hkv, dim=1)
        value = value.repeat_interleave(hq // hkv, dim=1)
    q, k, v = query.double(), key.double(), value.double()
    sq, sk = q.shape[-2], k.shape[-2]
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    bias = torch.zeros(q.shape[:-2] + (sq, sk), dtype=torch.float64)
    if is_causal:
        bias = bias.masked_fill(~torch.ones(sq, sk, dtype=torch.bool).tril(), float('-inf'))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(~attn_mask, float('-inf'))
        else:
            bias = bias + attn_mask.double()
    m = torch.full(q.shape[:-1], float('-inf'), dtype=torch.float64)
    l_row = torch.zeros(q.shape[:-1], dtype=torch.float64)
    acc = torch.zeros(q.shape[:-1] + (v.shape[-1],), dtype=torch.float64)
    for j0 in range(0, sk, 16):
        s = q @ k[..., j0:j0 + 16, :].transpose(-1, -2) * sc + bias[..., j0:j0 + 16]
        m_new = torch.maximum(m, s.amax(dim=-1))
        m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        alpha = torch.exp(m - m_safe)
        p = torch.exp(s - m_safe[..., None])
        p_rowsum = p.sum(dim=-1)
        l_row = (l_row * alpha + p_rowsum).half().double()  # BUG: row sum kept in FP16
        acc = acc * alpha[..., None] + p @ v[..., j0:j0 + 16, :]
        m = m_new
    out = torch.where(l_row[..., None] > 0, acc / torch.where(l_row > 0, l_row, torch.ones_like(l_row))[..., None],
                      torch.zeros_like(acc))
    return out.to(dtype)


# --- kernel: sdpa_per_head_logsumexp ---
def sdpa_per_head_logsumexp(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """Correct: a loop over query heads reading kv head h // G, weights exp(s - logsumexp(s)), bool mask as bias."""
    b, hq, sq, d = query.shape
    hkv, sk = key.shape[1], key.shape[2]
    group = hq // hkv if enable_gqa else 1
    sc = 1.0 / math.sqrt(d) if scale is None else scale
    bias = torch.zeros(sq, sk, dtype=query.dtype)
    if is_causal:
        i = torch.arange(sq)[:, None]
        j = torch.arange(sk)[None, :]
        bias = bias.masked_fill(j > i, float('-inf'))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            add = torch.zeros(attn_mask.shape, dtype=query.dtype).masked_fill(~attn_mask, float('-inf'))
        else:
            add = attn_mask
        bias = bias + add
    bias = bias.expand(b, hq, sq, sk)
    outs = []
    for h in range(hq):
        s = torch.matmul(query[:, h], key[:, h // group].transpose(-1, -2)) * sc + bias[:, h]
        lse = torch.logsumexp(s, dim=-1, keepdim=True)
        dead = torch.isinf(lse)
        w = torch.where(dead, torch.zeros_like(s), torch.exp(s - torch.where(dead, torch.zeros_like(lse), lse)))
        outs.append(torch.matmul(w, value[:, h // group]))
    return torch.stack(outs, dim=1)


# --- kernel: sdpa_query_chunks_online ---
def sdpa_query_chunks_online(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                             enable_gqa=False):
    """Correct: query chunks of 13 rows, key blocks of 24 merged online, GQA through a (B, Hkv, G, S, D) view."""
    b, hq, sq, d = query.shape
    hkv, sk, dv = key.shape[1], key.shape[2], value.shape[-1]
    g = hq // hkv if enable_gqa else 1
    hk = hq // g
    sc = 1.0 / math.sqrt(d) if scale is None else scale
    q5 = query.reshape(b, hk, g, sq, d)
    k5 = key[:, :, None]
    v5 = value[:, :, None]
    keep = None
    add = None
    if attn_mask is not None:
        full = attn_mask.expand(b, hq, sq, sk).reshape(b, hk, g, sq, sk)
        if attn_mask.dtype == torch.bool:
            keep = full
        else:
            add = full
    out = torch.zeros(b, hk, g, sq, dv, dtype=query.dtype)
    for q0 in range(0, sq, 13):
        q1 = min(q0 + 13, sq)
        m = torch.full((b, hk, g, q1 - q0), float('-inf'), dtype=query.dtype)
        lsum = torch.zeros((b, hk, g, q1 - q0), dtype=query.dtype)
        acc = torch.zeros((b, hk, g, q1 - q0, dv), dtype=query.dtype)
        for k0 in range(0, sk, 24):
            k1 = min(k0 + 24, sk)
            s = torch.matmul(q5[..., q0:q1, :], k5[..., k0:k1, :].transpose(-1, -2)) * sc
            if add is not None:
                s = s + add[..., q0:q1, k0:k1]
            if keep is not None:
                s = s.masked_fill(~keep[..., q0:q1, k0:k1], float('-inf'))
            if is_causal:
                ii = torch.arange(q0, q1)[:, None]
                jj = torch.arange(k0, k1)[None, :]
                s = s.masked_fill(jj > ii, float('-inf'))
            m_new = torch.maximum(m, s.amax(dim=-1))
            m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
            corr = torch.exp(m - m_safe)
            p = torch.exp(s - m_safe[..., None])
            lsum = lsum * corr + p.sum(dim=-1)
            acc = acc * corr[..., None] + torch.matmul(p, v5[..., k0:k1, :])
            m = m_new
        ok = lsum > 0
        out[..., q0:q1, :] = torch.where(ok[..., None], acc / torch.where(ok, lsum, torch.ones_like(lsum))[..., None],
                                         torch.zeros_like(acc))
    return out.reshape(b, hq, sq, dv)


_F = ['mask', 'causal', 'gqa', 'dv-ne-d']
CATALOG = [
    dict(name='sdpa-xformers-causal-needs-mask', api='torch-sdpa', fn='sdpa_causal_merged_into_mask',
         correct=False, bug='causal-dropped-without-mask',
         parameter='the causal pattern is only merged into an attention mask that was passed; with is_causal=True '
                   'and no attn_mask (the only form SDPA accepts) it is skipped and every key is attended. '
                   'Triggers: is_causal=True',
         source='facebookresearch/xformers#103', report='https://github.com/facebookresearch/xformers/issues/103',
         dtype='float64', features=_F),
    dict(name='sdpa-mlverse-bool-mask-added', api='torch-sdpa', fn='sdpa_bool_mask_added',
         correct=False, bug='bool-mask-added-as-float',
         parameter='a bool attn_mask is converted to 0/1 and added to the scores (kept keys + 1, dropped + 0) '
                   'instead of filling the dropped keys with -inf; float masks are right. '
                   'Triggers: a bool attn_mask with at least one False entry',
         source='mlverse/torch#1208', report='https://github.com/mlverse/torch/pull/1208', dtype='float64',
         features=_F),
    dict(name='sdpa-mlcollection-embed-size-scale', api='torch-sdpa', fn='sdpa_energy_embed_size',
         correct=False, bug='default-scale-from-model-dim',
         parameter='with scale=None the energy is divided by sqrt(embed_size) = sqrt(Hq * D) instead of sqrt(D). '
                   'Triggers: scale=None with Hq > 1',
         source='aladdinpersson/Machine-Learning-Collection#65',
         report='https://github.com/aladdinpersson/Machine-Learning-Collection/issues/65', dtype='float64',
         features=_F),
    dict(name='sdpa-mlx-masked-row-nan', api='torch-sdpa', fn='sdpa_fallback_plain_softmax',
         correct=False, bug='fully-masked-row-nan',
         parameter='the fallback uses a plain softmax after the mask: a row with no visible key gives NaN instead '
                   'of zeros. Triggers: a row with no visible key (bool mask or additive -inf row)',
         source='ml-explore/mlx#2608', report='https://github.com/ml-explore/mlx/pull/2608', dtype='float64',
         features=_F),
    dict(name='sdpa-pytorch-causal-lower-right', api='torch-sdpa', fn='sdpa_causal_lower_right',
         correct=False, bug='causal-alignment-bottom-right',
         parameter='is_causal builds tril(diagonal=S - L), the lower-right alignment, instead of SDPA\'s top-left '
                   'j <= i. Triggers: is_causal=True with Sq != Sk',
         source='pytorch/pytorch#103082', report='https://github.com/pytorch/pytorch/issues/103082',
         dtype='float64', features=_F),
    dict(name='sdpa-llamacpp-fp16-row-sum', api='torch-sdpa', fn='sdpa_online_fp16_stats',
         correct=False, bug='online-softmax-sum-in-half-precision',
         parameter='the online softmax row sum l is rounded to float16 after every key block of 16 (the '
                   'accumulator and scores stay wide), whatever the input dtype: ~1e-4 to 1e-3 relative error. '
                   'Triggers: always at float32 resolution',
         source='ggml-org/llama.cpp#24389', report='https://github.com/ggml-org/llama.cpp/pull/24389',
         dtype='float32', features=_F),
    dict(name='sdpa-per-head-logsumexp', api='torch-sdpa', fn='sdpa_per_head_logsumexp', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=_F),
    dict(name='sdpa-query-chunks-online', api='torch-sdpa', fn='sdpa_query_chunks_online', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=_F),
]
