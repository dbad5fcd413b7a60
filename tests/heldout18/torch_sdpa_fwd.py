"""Held-out kernels with the semantics of torch.nn.functional.scaled_dot_product_attention (API `torch-sdpa`).

fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False) on
(B, H, S, D) tensors, written with matmul/softmax (torch 1.13): `attn_mask` bool (True = attend) or an additive
float mask, never together with `is_causal`; `is_causal` is top-left (j <= i); with `enable_gqa` query head h
uses kv head h // (Hq // Hkv); rows with no visible key are zeros. Six kernels carry one mistake each (marked
by a BUG comment), two are correct alternative implementations.
"""
import math

import torch
import torch.nn.functional as F


# --- kernel: sdpa_reference_inplace_bias ---
# The "equivalent implementation" of the SDPA docs: an (L, S) attn_bias collects the causal
# pattern and the mask, then softmax(q @ k^T * scale + attn_bias) @ v.
def sdpa_reference_inplace_bias(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                enable_gqa=False):
    L, S = query.size(-2), key.size(-2)
    scale_factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    attn_bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        temp_mask = torch.ones(L, S, dtype=torch.bool).tril(diagonal=0)
        attn_bias.masked_fill_(temp_mask.logical_not(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_bias = attn_bias.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            attn_bias += attn_mask  # BUG: in-place add cannot broadcast the (L, S) bias up to a batched mask
    if enable_gqa:
        key = key.repeat_interleave(query.size(-3) // key.size(-3), -3)
        value = value.repeat_interleave(query.size(-3) // value.size(-3), -3)
    attn_weight = query @ key.transpose(-2, -1) * scale_factor
    attn_weight = attn_weight + attn_bias
    attn_weight = torch.softmax(attn_weight, dim=-1)
    attn_weight = torch.nan_to_num(attn_weight, nan=0.0)
    return attn_weight @ value


# --- kernel: sdpa_causal_mask_buffer ---
# candle-style: the causal mask is materialised from a flat buffer and viewed as (b, 1, tgt, src),
# then added to the scores.
def _causal_mask(b, tgt, src, dtype):
    vals = [0.0 if j <= i else float("-inf") for i in range(tgt) for j in range(src)]
    buf = torch.zeros(b * tgt * src, dtype=dtype)
    buf[: tgt * src] = torch.tensor(vals, dtype=dtype)  # BUG: only batch row 0 of the (b, 1, tgt, src) view is filled
    return buf.view(b, 1, tgt, src)


def sdpa_causal_mask_buffer(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    b, hq, tgt, d = query.shape
    src = key.shape[-2]
    if enable_gqa and key.shape[1] != hq:
        n_rep = hq // key.shape[1]
        key = key.repeat_interleave(n_rep, dim=1)
        value = value.repeat_interleave(n_rep, dim=1)
    sm = scale if scale is not None else 1.0 / math.sqrt(d)
    scores = torch.matmul(query, key.transpose(2, 3)) * sm
    if is_causal:
        scores = scores + _causal_mask(b, tgt, src, scores.dtype)
    elif attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    dead = torch.isneginf(scores).all(dim=-1, keepdim=True)
    probs = torch.softmax(scores.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    return torch.matmul(probs, value)


# --- kernel: sdpa_grouped_heads_tiled ---
# Torch fallback of a grouped-heads layer: the kv heads are expanded to the query heads,
# then plain masked attention.
def sdpa_grouped_heads_tiled(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                             enable_gqa=False):
    num_heads = query.shape[1]
    n_groups = key.shape[1]
    if enable_gqa and n_groups != num_heads:
        key = key.repeat(1, num_heads // n_groups, 1, 1)  # BUG: tiles [W, X, W, X]
        value = value.repeat_interleave(num_heads // n_groups, dim=1)
    sm = (1.0 / math.sqrt(query.shape[-1])) if scale is None else scale
    s = torch.einsum("bhqd,bhkd->bhqk", query, key) * sm
    L, S = s.shape[-2:]
    if is_causal:
        s = s.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask
    w = torch.softmax(s, dim=-1)
    w = torch.where(torch.isnan(w), torch.zeros_like(w), w)
    return torch.einsum("bhqk,bhkd->bhqd", w, value)


# --- kernel: sdpa_bias_flat_heads ---
# cuDNN-batcher style: q, k, v and the bias are folded to (B * H, S, .) before a batched
# baddbmm; the bias is brought to that folded shape first.
def sdpa_bias_flat_heads(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    B, N, T, D = query.shape
    S, Dv = key.shape[-2], value.shape[-1]
    if enable_gqa and key.shape[1] != N:
        key = key.repeat_interleave(N // key.shape[1], dim=1)
        value = value.repeat_interleave(N // value.shape[1], dim=1)
    sm = (1.0 / math.sqrt(D)) if scale is None else scale
    q3 = query.reshape(B * N, T, D)
    k3 = key.reshape(B * N, S, D)
    v3 = value.reshape(B * N, S, Dv)
    bias = torch.zeros(B * N, T, S, dtype=query.dtype)
    if is_causal:
        bias = bias.masked_fill(~torch.ones(T, S, dtype=torch.bool).tril(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros(attn_mask.shape, dtype=query.dtype).masked_fill(~attn_mask, float("-inf"))
        if attn_mask.dim() == 4:
            bias = attn_mask.reshape(B * N, T, S)  # BUG: size-1 axes
        else:
            bias = attn_mask.expand(B, N, T, S).reshape(B * N, T, S)
    logits = torch.baddbmm(bias, q3, k3.transpose(1, 2), beta=1.0, alpha=sm)
    empty = torch.isneginf(logits).all(dim=-1, keepdim=True)
    p = torch.softmax(logits.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
    return torch.bmm(p, v3).reshape(B, N, T, Dv)


# --- kernel: sdpa_processor_head_dim ---
# Attention-processor style: head_dim is read off a projected tensor to derive the default scale.
def sdpa_processor_head_dim(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    batch_size, attn_heads = query.shape[0], query.shape[1]
    head_dim = value.shape[-1]  # BUG: head_dim taken from the value projection; the scale needs the query/key head_dim
    if scale is None:
        scale = head_dim ** -0.5
    if enable_gqa and key.shape[1] != attn_heads:
        rep = attn_heads // key.shape[1]
        key = key.repeat_interleave(rep, dim=1)
        value = value.repeat_interleave(rep, dim=1)
    attention_scores = torch.matmul(query, key.transpose(-1, -2)) * scale
    if is_causal:
        L, S = attention_scores.shape[-2:]
        attention_scores = attention_scores.masked_fill(torch.ones(L, S, dtype=torch.bool).triu(1), float("-inf"))
    elif attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attention_scores = attention_scores.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            attention_scores = attention_scores + attn_mask
    attention_probs = attention_scores.softmax(dim=-1)
    attention_probs = torch.nan_to_num(attention_probs, nan=0.0)
    hidden_states = torch.matmul(attention_probs, value)
    return hidden_states.reshape(batch_size, attn_heads, -1, value.shape[-1])


# --- kernel: sdpa_flattened_heads_softmax ---
# DETR MHAttention-map style: weights einsum'd to (b, q, n, k) (n = heads), masked, then a
# softmax over the flattened trailing dims and a view back.
def sdpa_flattened_heads_softmax(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    n = query.shape[1]
    if enable_gqa and key.shape[1] != n:
        key = key.repeat_interleave(n // key.shape[1], dim=1)
        value = value.repeat_interleave(n // value.shape[1], dim=1)
    normalize_fact = (1.0 / math.sqrt(query.shape[-1])) if scale is None else scale
    weights = torch.einsum("bnqc,bnkc->bqnk", query * normalize_fact, key)
    L, S = query.shape[-2], key.shape[-2]
    if is_causal:
        causal = torch.ones(L, S, dtype=torch.bool).triu(1)
        weights = weights.masked_fill(causal[None, :, None, :], float("-inf"))
    elif attn_mask is not None:
        m = attn_mask.expand(weights.shape[0], n, L, S).permute(0, 2, 1, 3)
        if m.dtype == torch.bool:
            weights = weights.masked_fill(~m, float("-inf"))
        else:
            weights = weights + m
    weights = F.softmax(weights.flatten(2), dim=-1).view(weights.size())  # BUG: joins heads
    weights = torch.nan_to_num(weights, nan=0.0)
    return torch.einsum("bqnk,bnkc->bnqc", weights, value)


# --- kernel: sdpa_chunked_logaddexp ---
# Correct: one additive bias (bool -> 0/-inf, top-left causal, float mask), the row LSE
# accumulated over key chunks of 32 with torch.logaddexp, weights exp(s - lse); GQA through an
# index gather of the kv heads.
def sdpa_chunked_logaddexp(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                           enable_gqa=False):
    B, Hq, L, D = query.shape
    S = key.shape[-2]
    sm = (1.0 / math.sqrt(D)) if scale is None else scale
    if key.shape[1] != Hq:
        kv_index = torch.arange(Hq) // (Hq // key.shape[1])
        key = key.index_select(1, kv_index)
        value = value.index_select(1, kv_index)
    bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        bias = bias.masked_fill(torch.arange(S)[None, :] > torch.arange(L)[:, None], float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(~attn_mask, float("-inf"))
        else:
            bias = bias + attn_mask
    s = torch.matmul(query, key.transpose(-1, -2)) * sm + bias
    lse = torch.full(s.shape[:-1], float("-inf"), dtype=s.dtype)
    for c0 in range(0, S, 32):
        lse = torch.logaddexp(lse, torch.logsumexp(s[..., c0:c0 + 32], dim=-1))
    finite = torch.isfinite(lse)
    w = torch.exp(s - torch.where(finite, lse, torch.zeros_like(lse)).unsqueeze(-1))
    w = torch.where(finite.unsqueeze(-1), w, torch.zeros_like(w))
    return torch.matmul(w, value)


# --- kernel: sdpa_grouped_view_bmm ---
# Correct: no kv expansion; the query heads of each kv group are stacked along the rows of a
# (B, Hkv, G * L, D) view, one bias (B, Hkv, G * L, S) and one matmul per group.
def sdpa_grouped_view_bmm(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                          enable_gqa=False):
    B, Hq, L, D = query.shape
    Hkv, S, Dv = key.shape[1], key.shape[2], value.shape[-1]
    G = Hq // Hkv
    sm = (1.0 / math.sqrt(D)) if scale is None else scale
    qg = query.reshape(B, Hkv, G * L, D)
    keep = torch.ones(B, Hq, L, S, dtype=torch.bool)
    add = torch.zeros(B, Hq, L, S, dtype=query.dtype)
    if is_causal:
        keep = keep & torch.ones(L, S, dtype=torch.bool).tril()
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            keep = keep & attn_mask
        else:
            add = add + attn_mask
            keep = keep & ~torch.isneginf(add)
    keep = keep.reshape(B, Hkv, G * L, S)
    add = add.reshape(B, Hkv, G * L, S)
    s = torch.matmul(qg, key.transpose(-1, -2)) * sm + add
    s = s.masked_fill(~keep, float("-inf"))
    row_max = s.amax(dim=-1, keepdim=True)
    alive = torch.isfinite(row_max)
    e = torch.exp(s - torch.where(alive, row_max, torch.zeros_like(row_max)))
    den = e.sum(dim=-1, keepdim=True)
    p = e / torch.where(alive, den, torch.ones_like(den))
    out = torch.matmul(p, value)
    return out.reshape(B, Hq, L, Dv)


CATALOG = [
    dict(name='sdpa-pytorch-docs-inplace-bias', api='torch-sdpa', fn='sdpa_reference_inplace_bias', correct=False,
         bug='inplace-bias-broadcast-error',
         parameter='a float attn_mask is added in place to the (L, S) attn_bias (attn_bias += attn_mask), which '
                   'cannot broadcast up to a mask with batch/head dims: a runtime error (2-D float masks and bool '
                   'masks are right). '
                   'Triggers: a float attn_mask with more than 2 dims',
         source='pytorch/pytorch#130209', report='https://github.com/pytorch/pytorch/pull/130209',
         dtype='float64', features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-candle-causal-mask-batch0', api='torch-sdpa', fn='sdpa_causal_mask_buffer', correct=False,
         bug='causal-mask-first-batch-only',
         parameter='the causal mask is built from a buffer of b * tgt * src values of which only the first '
                   'tgt * src are filled, viewed as (b, 1, tgt, src): batch 0 is causal, batches >= 1 get an all-zero '
                   'mask (no masking). '
                   'Triggers: is_causal=True with B > 1 and a key right of the diagonal (Sk > 1)',
         source='huggingface/candle#3582', report='https://github.com/huggingface/candle/issues/3582',
         dtype='float64', features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-transformers-grouped-repeat-tile', api='torch-sdpa', fn='sdpa_grouped_heads_tiled',
         correct=False, bug='gqa-kv-tiled-not-interleaved',
         parameter='the kv heads of K are expanded with repeat (tiling [k0, k1, k0, k1]) instead of '
                   'repeat_interleave ([k0, k0, k1, k1]), so query head h reads the keys of kv head h % Hkv while '
                   'its values come from kv head h // (Hq // Hkv). '
                   'Triggers: enable_gqa with 1 < Hkv < Hq',
         source='huggingface/transformers#37533', report='https://github.com/huggingface/transformers/pull/37533',
         dtype='float64', features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-jax-bias-reshape-query-heads', api='torch-sdpa', fn='sdpa_bias_flat_heads', correct=False,
         bug='bias-reshaped-to-query-head-count',
         parameter='a 4-D attn_mask is reshaped straight to (B * H, L, S) with the query batch and head counts; a '
                   'mask with a broadcast (size-1) batch or head axis has fewer elements and the reshape fails. '
                   'Triggers: a 4-D attn_mask with a size-1 batch or head axis where the query has more',
         source='jax-ml/jax#34920', report='https://github.com/jax-ml/jax/pull/34920',
         dtype='float64', features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-diffusers-head-dim-from-value', api='torch-sdpa', fn='sdpa_processor_head_dim', correct=False,
         bug='default-scale-from-value-dim',
         parameter='head_dim is read from the value tensor, so with scale=None the scores are scaled by '
                   '1/sqrt(Dv) instead of 1/sqrt(D). '
                   'Triggers: scale=None with Dv != D',
         source='huggingface/diffusers#4154', report='https://github.com/huggingface/diffusers/pull/4154',
         dtype='float64', features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-detr-softmax-flatten-heads', api='torch-sdpa', fn='sdpa_flattened_heads_softmax',
         correct=False, bug='softmax-over-heads-and-keys',
         parameter='the (b, q, n, k) weights are flattened from dim 2 before the softmax, so each query row is '
                   'normalised jointly over all heads and keys instead of per head. '
                   'Triggers: Hq > 1',
         source='facebookresearch/detr#247', report='https://github.com/facebookresearch/detr/issues/247',
         dtype='float64', features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-chunked-logaddexp', api='torch-sdpa', fn='sdpa_chunked_logaddexp', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64',
         features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-grouped-view-bmm', api='torch-sdpa', fn='sdpa_grouped_view_bmm', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64',
         features=['mask', 'causal', 'gqa', 'dv-ne-d']),
]
