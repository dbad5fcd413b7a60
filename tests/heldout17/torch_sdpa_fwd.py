"""Held-out set 17, API `torch-sdpa`: scaled_dot_product_attention semantics on (B, H, S, D) torch tensors.

fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False); attn_mask bool
(True = attend) or additive float, never together with is_causal; is_causal is top-left (j <= i); enable_gqa maps
query head h to kv head h // (Hq // Hkv); fully masked rows give zeros; dropout_p is always 0. Written with
matmul/softmax for torch 1.13. Six broken kernels (one BUG-marked line each) and two correct ones; see README.md.
"""
import math

import torch


# --- kernel: sdpa_tt_scale_attribute ---
def _tt_masked_softmax(scores):
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(scores - row_max)
    denom = e.sum(dim=-1, keepdim=True)
    return e / torch.where(denom == 0, torch.ones_like(denom), denom)


def sdpa_tt_scale_attribute(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """Device-op style SDPA: the program reads the head dim, the mask and the causal flag from its attributes."""
    head_dim = query.shape[-1]
    scale_factor = 1.0 / math.sqrt(head_dim)  # BUG: scale attribute never read
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        rep = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale_factor
    L, S = query.shape[-2], key.shape[-2]
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool, device=query.device).tril(diagonal=0)
        scores = scores.masked_fill(~keep, float('-inf'))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float('-inf'))
        else:
            scores = scores + attn_mask
    return torch.matmul(_tt_masked_softmax(scores), value)


# --- kernel: sdpa_scratch_causal_bool_mask ---
def _sdpa_math_bool(query, key, value, attn_mask, scale_factor):
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale_factor
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(attn_mask.logical_not(), float('-inf'))
        else:
            scores = scores + attn_mask
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = row_max.masked_fill(~torch.isfinite(row_max), 0.0)
    weights = torch.exp(scores - row_max)
    total = weights.sum(dim=-1, keepdim=True)
    weights = weights / total.masked_fill(total == 0, 1.0)
    return torch.matmul(weights, value)


def sdpa_scratch_causal_bool_mask(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                  enable_gqa=False):
    """From-scratch MHA that turns is_causal into an explicit boolean mask before the SDPA math."""
    L, S = query.shape[-2], key.shape[-2]
    scale_factor = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        groups = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(groups, dim=-3)
        value = value.repeat_interleave(groups, dim=-3)
    if is_causal:
        ones = torch.ones(L, S, dtype=torch.bool, device=query.device)
        attn_mask = torch.triu(ones, diagonal=1)  # BUG: True marks the future keys; bool SDPA masks mean True = attend
    return _sdpa_math_bool(query, key, value, attn_mask, scale_factor)


# --- kernel: sdpa_tiled_even_template ---
def sdpa_tiled_even_template(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                             enable_gqa=False):
    """Tiled kernel with two templates: evenly tiled shapes skip the boundary/causal masking step."""
    BLOCK_M, BLOCK_N = 32, 32
    L, S = query.shape[-2], key.shape[-2]
    sm_scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        n_rep = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(n_rep, dim=-3)
        value = value.repeat_interleave(n_rep, dim=-3)
    bias = None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device)
            bias = bias.masked_fill(~attn_mask, float('-inf'))
        else:
            bias = attn_mask
        bias = bias.expand(query.shape[:-2] + (L, S))
    even_m = L % BLOCK_M == 0
    even_n = S % BLOCK_N == 0
    needs_mask = not (even_m and even_n)  # BUG: causal rides on the boundary mask
    out = torch.zeros(query.shape[:-1] + (value.shape[-1],), dtype=query.dtype, device=query.device)
    for m0 in range(0, L, BLOCK_M):
        offs_m = torch.arange(m0, m0 + BLOCK_M, device=query.device)
        q_blk = query[..., m0:m0 + BLOCK_M, :]
        m_i = torch.full(q_blk.shape[:-1] + (1,), float('-inf'), dtype=query.dtype, device=query.device)
        l_i = torch.zeros_like(m_i)
        acc = torch.zeros(q_blk.shape[:-1] + (value.shape[-1],), dtype=query.dtype, device=query.device)
        for n0 in range(0, S, BLOCK_N):
            offs_n = torch.arange(n0, n0 + BLOCK_N, device=query.device)
            qk = torch.matmul(q_blk, key[..., n0:n0 + BLOCK_N, :].transpose(-2, -1)) * sm_scale
            if bias is not None:
                qk = qk + bias[..., m0:m0 + BLOCK_M, n0:n0 + BLOCK_N]
            if needs_mask:
                valid = offs_n[None, :qk.shape[-1]] < S
                if is_causal:
                    valid = valid & (offs_n[None, :qk.shape[-1]] <= offs_m[:qk.shape[-2], None])
                qk = qk.masked_fill(~valid, float('-inf'))
            m_new = torch.maximum(m_i, qk.amax(dim=-1, keepdim=True))
            m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
            alpha = torch.exp(m_i - m_safe)
            p = torch.exp(qk - m_safe)
            l_i = l_i * alpha + p.sum(dim=-1, keepdim=True)
            acc = acc * alpha + torch.matmul(p, value[..., n0:n0 + BLOCK_N, :])
            m_i = m_new
        out[..., m0:m0 + BLOCK_M, :] = acc / torch.where(l_i == 0, torch.ones_like(l_i), l_i)
    return out


# --- kernel: sdpa_decode_splitk_path ---
def _sdpa_decode_splitk(query, key, value, attn_mask, scale_factor, num_splits=4):
    S = key.shape[-2]
    chunk = -(-S // num_splits)
    outs, lses = [], []
    for s0 in range(0, S, chunk):
        s1 = min(s0 + chunk, S)
        scores = torch.matmul(query, key[..., s0:s1, :].transpose(-2, -1)) * scale_factor
        if attn_mask is not None:
            part = attn_mask[..., s0:s1]
            if part.dtype == torch.bool:
                scores = scores.masked_fill(~part, float('-inf'))
            else:
                scores = scores + part
        lse = torch.logsumexp(scores, dim=-1, keepdim=True)
        lse_safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
        outs.append(torch.matmul(torch.exp(scores - lse_safe), value[..., s0:s1, :]))
        lses.append(lse)
    lse_all = torch.logsumexp(torch.stack(lses), dim=0)
    lse_all = torch.where(torch.isfinite(lse_all), lse_all, torch.zeros_like(lse_all))
    out = torch.zeros_like(outs[0])
    for o, lse in zip(outs, lses):
        out = out + o * torch.exp(lse - lse_all)
    return out


def sdpa_decode_splitk_path(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """SDPA with a split-K decode path for a single query position and a dense path otherwise."""
    L, S = query.shape[-2], key.shape[-2]
    scale_factor = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        n_rep = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(n_rep, dim=-3)
        value = value.repeat_interleave(n_rep, dim=-3)
    if L == 1:  # BUG: decode path ignores is_causal
        return _sdpa_decode_splitk(query, key, value, attn_mask, scale_factor)
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale_factor
    if is_causal:
        scores = scores.masked_fill(torch.ones(L, S, dtype=torch.bool, device=query.device).triu(1), float('-inf'))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float('-inf'))
        else:
            scores = scores + attn_mask
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)
    weights = torch.exp(scores - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse)))
    return torch.matmul(weights, value)


# --- kernel: sdpa_tft_mask_fill_value ---
def sdpa_tft_mask_fill_value(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                             enable_gqa=False):
    """Temporal-fusion-transformer style attention: masked positions are filled before the softmax."""
    d_k = query.shape[-1]
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        rep = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    score = torch.matmul(query, key.transpose(-2, -1))
    score = score * (1.0 / math.sqrt(d_k) if scale is None else scale)
    L, S = score.shape[-2], score.shape[-1]
    if is_causal:
        score = score.masked_fill(torch.ones(L, S, dtype=torch.bool, device=score.device).triu(1), float('-inf'))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            score = score.masked_fill(~attn_mask, 1e-9)  # BUG: +1e-9, not -inf
        else:
            score = score + attn_mask
    m = score.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w = torch.exp(score - m)
    z = w.sum(dim=-1, keepdim=True)
    w = w / torch.where(z == 0, torch.ones_like(z), z)
    return torch.matmul(w, value)


# --- kernel: sdpa_lowering_gqa_flag ---
def sdpa_lowering_gqa_flag(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                           enable_gqa=False):
    """Converter-style decomposition of the SDPA op into matmul / add / softmax / matmul."""
    n_rep = 1  # BUG: enable_gqa is never read, so key/value keep their Hkv heads
    if n_rep > 1:
        key = key.repeat_interleave(n_rep, dim=-3)
        value = value.repeat_interleave(n_rep, dim=-3)
    L, S = query.shape[-2], key.shape[-2]
    scale_factor = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    attn_bias = torch.zeros(L, S, dtype=query.dtype, device=query.device)
    if is_causal:
        attn_bias = attn_bias.masked_fill(torch.ones(L, S, dtype=torch.bool, device=query.device).triu(1),
                                          float('-inf'))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_bias = attn_bias.masked_fill(attn_mask.logical_not(), float('-inf'))
        else:
            attn_bias = attn_bias + attn_mask
    attn_weight = torch.matmul(query, key.transpose(-2, -1)) * scale_factor + attn_bias
    row_max = attn_weight.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    attn_weight = torch.exp(attn_weight - row_max)
    denom = attn_weight.sum(dim=-1, keepdim=True)
    attn_weight = attn_weight / torch.where(denom == 0, torch.ones_like(denom), denom)
    return torch.matmul(attn_weight, value)


# --- kernel: sdpa_per_head_lse_weights ---
def sdpa_per_head_lse_weights(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                              enable_gqa=False):
    """Correct: one (batch, head) slice at a time, weights exp(s - logsumexp(s)) with explicit index maps."""
    B, Hq, L, D = query.shape
    Hkv, S, Dv = key.shape[-3], key.shape[-2], value.shape[-1]
    group = Hq // Hkv
    scale_factor = 1.0 / math.sqrt(D) if scale is None else scale
    out = torch.zeros(B, Hq, L, Dv, dtype=query.dtype, device=query.device)
    keep_causal = torch.ones(L, S, dtype=torch.bool, device=query.device).tril() if is_causal else None
    mask = None if attn_mask is None else attn_mask.expand(B, Hq, L, S)
    for b in range(B):
        for h in range(Hq):
            kh = h // group
            s = query[b, h] @ key[b, kh].transpose(0, 1) * scale_factor
            if keep_causal is not None:
                s = s.masked_fill(~keep_causal, float('-inf'))
            if mask is not None:
                s = s.masked_fill(~mask[b, h], float('-inf')) if mask.dtype == torch.bool else s + mask[b, h]
            lse = torch.logsumexp(s, dim=-1, keepdim=True)
            w = torch.exp(s - lse.masked_fill(torch.isinf(lse), 0.0))
            out[b, h] = w @ value[b, kh]
    return out


# --- kernel: sdpa_grouped_online_tiles ---
def sdpa_grouped_online_tiles(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                              enable_gqa=False):
    """Correct: grouped (B, Hkv, G, L, D) view against unexpanded K/V, online softmax over key tiles of 24."""
    B, Hq, L, D = query.shape
    Hkv, S, Dv = key.shape[-3], key.shape[-2], value.shape[-1]
    G = Hq // Hkv
    sm = 1.0 / math.sqrt(D) if scale is None else scale
    qg = query.reshape(B, Hkv, G, L, D)
    bias = torch.zeros(B, Hq, L, S, dtype=query.dtype, device=query.device)
    if is_causal:
        bias = bias.masked_fill(torch.ones(L, S, dtype=torch.bool, device=query.device).triu(1), float('-inf'))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(~attn_mask.expand(B, Hq, L, S), float('-inf'))
        else:
            bias = bias + attn_mask
    bias = bias.reshape(B, Hkv, G, L, S)
    m_i = torch.full((B, Hkv, G, L, 1), float('-inf'), dtype=query.dtype, device=query.device)
    l_i = torch.zeros_like(m_i)
    acc = torch.zeros(B, Hkv, G, L, Dv, dtype=query.dtype, device=query.device)
    for n0 in range(0, S, 24):
        n1 = min(n0 + 24, S)
        s = torch.einsum('bhgld,bhsd->bhgls', qg, key[:, :, n0:n1]) * sm + bias[..., n0:n1]
        m_new = torch.maximum(m_i, s.amax(dim=-1, keepdim=True))
        m_safe = m_new.masked_fill(torch.isinf(m_new), 0.0)
        p = torch.exp(s - m_safe)
        corr = torch.exp(m_i - m_safe)
        l_i = l_i * corr + p.sum(dim=-1, keepdim=True)
        acc = acc * corr + torch.einsum('bhgls,bhsd->bhgld', p, value[:, :, n0:n1])
        m_i = m_new
    out = acc / l_i.masked_fill(l_i == 0, 1.0)
    return out.reshape(B, Hq, L, Dv)


CATALOG = [
    dict(name='sdpa-ttmetal-scale-attribute-ignored', api='torch-sdpa', fn='sdpa_tt_scale_attribute',
         correct=False, bug='explicit-scale-ignored',
         parameter='the scale argument is never read: the scores are always multiplied by 1/sqrt(head_dim). '
                   'Triggers: an explicit scale different from 1/sqrt(D)',
         source='tenstorrent/tt-metal#33304', report='https://github.com/tenstorrent/tt-metal/issues/33304',
         dtype='float64', features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-llmsfromscratch-causal-mask-polarity', api='torch-sdpa', fn='sdpa_scratch_causal_bool_mask',
         correct=False, bug='causal-mask-polarity-inverted',
         parameter='is_causal is turned into torch.triu(ones, diagonal=1) - True on the future keys - and passed '
                   'as a bool mask, which SDPA reads as True = attend: each query attends only its future keys '
                   '(rows without one give zeros). Triggers: is_causal=True',
         source='rasbt/LLMs-from-scratch#1062', report='https://github.com/rasbt/LLMs-from-scratch/pull/1062',
         dtype='float64', features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-tritonmsl-even-tiles-drop-causal', api='torch-sdpa', fn='sdpa_tiled_even_template',
         correct=False, bug='causal-dropped-on-even-tiles',
         parameter='the causal mask is only applied in the boundary-masking step of the tiled kernel, which is '
                   'skipped when both lengths are multiples of the 32-wide tiles, so those causal calls attend '
                   'every key. Triggers: is_causal=True with Sq and Sk multiples of 32',
         source='bledden/triton-msl#7', report='https://github.com/bledden/triton-msl/pull/7', dtype='float64',
         features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-executorch-decode-ignores-causal', api='torch-sdpa', fn='sdpa_decode_splitk_path',
         correct=False, bug='causal-ignored-single-query',
         parameter='a single query position takes the split-K decode path, which silently ignores is_causal; '
                   'top-left causal with Sq = 1 must attend key 0 only. Triggers: is_causal=True with Sq = 1 '
                   'and Sk > 1',
         source='pytorch/executorch#18759', report='https://github.com/pytorch/executorch/pull/18759',
         dtype='float64', features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-gluonts-mask-fill-positive', api='torch-sdpa', fn='sdpa_tft_mask_fill_value', correct=False,
         bug='mask-fill-value-not-negative',
         parameter='positions dropped by a bool attn_mask are filled with +1e-9 instead of a large negative '
                   'value, so they keep a softmax weight like a zero logit (a fully masked row becomes the mean '
                   'of V). Triggers: a bool attn_mask with at least one False entry',
         source='awslabs/gluonts#1401', report='https://github.com/awslabs/gluonts/pull/1401', dtype='float64',
         features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-coremltools-enable-gqa-unread', api='torch-sdpa', fn='sdpa_lowering_gqa_flag', correct=False,
         bug='gqa-flag-ignored',
         parameter='the decomposition never reads enable_gqa, so key/value keep their Hkv heads: right by '
                   'broadcasting when Hkv = 1, a shape error when 1 < Hkv < Hq. Triggers: enable_gqa with '
                   '1 < Hkv < Hq',
         source='apple/coremltools#2855', report='https://github.com/apple/coremltools/pull/2855', dtype='float64',
         features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-per-head-lse-weights', api='torch-sdpa', fn='sdpa_per_head_lse_weights', correct=True,
         bug=None, parameter=None, source=None, report=None, dtype='float64',
         features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-grouped-online-tiles', api='torch-sdpa', fn='sdpa_grouped_online_tiles', correct=True,
         bug=None, parameter=None, source=None, report=None, dtype='float64',
         features=['mask', 'causal', 'gqa', 'dv-ne-d']),
]
