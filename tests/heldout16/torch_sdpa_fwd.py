"""heldout16 forward kernels for the `torch-sdpa` API.

Each kernel follows torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=None,
dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False) on (B, H, S, D) tensors, written with
matmul/softmax (torch 1.13). Six kernels carry one mistake each (marked with a BUG comment), two are correct.
"""
import math

import torch


def _masked_softmax(scores):
    """Row softmax of scores holding -inf for hidden keys; a row with no visible key gives zeros."""
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(scores - row_max)
    denom = e.sum(dim=-1, keepdim=True)
    return torch.where(denom > 0, e / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(e))


def _bias(attn_mask, is_causal, L, S, dtype, device):
    """0 / -inf additive bias from is_causal (top-left) or a bool / float attn_mask."""
    attn_bias = torch.zeros(L, S, dtype=dtype, device=device)
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool, device=device).tril(diagonal=0)
        attn_bias = attn_bias.masked_fill(keep.logical_not(), float('-inf'))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_bias = torch.where(attn_mask, attn_bias, torch.full_like(attn_bias, float('-inf')))
        else:
            attn_bias = attn_bias + attn_mask
    return attn_bias


# --- kernel: sdpa_embed_dim_scale ---
def sdpa_embed_dim_scale(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    """Notebook-style attention: wei = q @ k^T * C**-0.5 with C the embedding width."""
    B, Hq, L, D = query.shape
    S = key.size(-2)
    C = Hq * D
    scale_factor = C ** -0.5 if scale is None else scale  # BUG: C is the embedding width Hq * D, not the head size D
    if enable_gqa:
        key = key.repeat_interleave(Hq // key.size(-3), -3)
        value = value.repeat_interleave(Hq // value.size(-3), -3)
    wei = query @ key.transpose(-2, -1) * scale_factor
    wei = wei + _bias(attn_mask, is_causal, L, S, query.dtype, query.device)
    return _masked_softmax(wei) @ value


# --- kernel: sdpa_scale_not_dispatched ---
def _core_attention(q, k, v, bias, softmax_scale=None):
    scale = 1.0 / math.sqrt(q.size(-1)) if softmax_scale is None else softmax_scale
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale + bias
    return torch.matmul(_masked_softmax(scores), v)


def sdpa_scale_not_dispatched(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                              enable_gqa=False):
    """Attention dispatcher: expands GQA heads, builds the bias and calls the core attention."""
    softmax_scale = scale
    L, S = query.size(-2), key.size(-2)
    if enable_gqa:
        n_rep = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(n_rep, dim=-3)
        value = value.repeat_interleave(n_rep, dim=-3)
    bias = _bias(attn_mask, is_causal, L, S, query.dtype, query.device)
    assert softmax_scale is None or softmax_scale > 0
    return _core_attention(query, key, value, bias)  # BUG: softmax_scale not passed on (default 1/sqrt(D) used)


# --- kernel: sdpa_decomposed_no_empty_guard ---
def sdpa_decomposed_no_empty_guard(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                   enable_gqa=False):
    """Decomposed attention: max-subtracted exp, row sum, divide."""
    L, S = query.size(-2), key.size(-2)
    scale_factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    if enable_gqa:
        key = key.repeat_interleave(query.size(-3) // key.size(-3), -3)
        value = value.repeat_interleave(query.size(-3) // value.size(-3), -3)
    attn = query @ key.transpose(-2, -1) * scale_factor
    attn = attn + _bias(attn_mask, is_causal, L, S, query.dtype, query.device)
    row_max = attn.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isinf(row_max), torch.zeros_like(row_max), row_max)
    exp_s = torch.exp(attn - row_max)
    denom = exp_s.sum(dim=-1, keepdim=True)
    attn = exp_s / denom  # BUG: a fully masked row has denom 0 and gives 0/0 = NaN (no max(denom, 1) clamp)
    return attn @ value


# --- kernel: sdpa_gqa_view_query_len ---
def sdpa_gqa_view_query_len(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """GQA by expanding each kv head over its query group with a view."""
    B, Hq, L, D = query.shape
    Hkv, S = key.size(-3), key.size(-2)
    if enable_gqa:
        n_rep = Hq // Hkv
        key, value = (t[:, :, None].expand(B, Hkv, n_rep, L, t.size(-1)).reshape(B, Hq, L, -1)  # BUG: L, not S
                      for t in (key, value))
    scale_factor = 1 / math.sqrt(D) if scale is None else scale
    attn = query @ key.transpose(-2, -1) * scale_factor
    attn = attn + _bias(attn_mask, is_causal, L, S, query.dtype, query.device)
    return _masked_softmax(attn) @ value


# --- kernel: sdpa_bias_heads_unsqueeze ---
def sdpa_bias_heads_unsqueeze(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                              enable_gqa=False):
    """Flash path of an Attend module: a float attention bias 'h i j' gets a batch axis before use."""
    L, S = query.size(-2), key.size(-2)
    scale_factor = query.size(-1) ** -0.5 if scale is None else scale
    if enable_gqa:
        key = key.repeat_interleave(query.size(-3) // key.size(-3), -3)
        value = value.repeat_interleave(query.size(-3) // value.size(-3), -3)
    sim = query @ key.transpose(-2, -1) * scale_factor
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        attn_bias = attn_mask.unsqueeze(0)  # BUG: assumes a 3-D 'h i j' bias; a 4-D bias becomes 5-D
        sim = sim + attn_bias
        sim = sim + _bias(None, is_causal, L, S, query.dtype, query.device)
    else:
        sim = sim + _bias(attn_mask, is_causal, L, S, query.dtype, query.device)
    return _masked_softmax(sim) @ value


# --- kernel: sdpa_npu_booleanized_mask ---
def sdpa_npu_booleanized_mask(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                              enable_gqa=False):
    """NPU-style dispatch: any non-bool attention mask is booleanized before the fused kernel."""
    L, S = query.size(-2), key.size(-2)
    scale_factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    if enable_gqa:
        key = key.repeat_interleave(query.size(-3) // key.size(-3), -3)
        value = value.repeat_interleave(query.size(-3) // value.size(-3), -3)
    attn_bias = _bias(None, is_causal, L, S, query.dtype, query.device)
    ninf = torch.full_like(attn_bias, float('-inf'))
    if attn_mask is not None:
        if attn_mask.dtype != torch.bool:
            attn_bias = torch.where(attn_mask.bool(), ninf, attn_bias)  # BUG: booleanized, non-zero = masked out
        else:
            attn_bias = torch.where(attn_mask, attn_bias, ninf)
    attn = query @ key.transpose(-2, -1) * scale_factor + attn_bias
    return _masked_softmax(attn) @ value


# --- kernel: sdpa_split_kv_merge ---
def sdpa_split_kv_merge(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                        enable_gqa=False):
    """Split-KV: three key partitions, each with its own (max, sum, out), merged through their LSEs."""
    B, Hq, L, D = query.shape
    S = key.size(-2)
    scale_factor = 1 / math.sqrt(D) if scale is None else scale
    if enable_gqa:
        key = key.repeat_interleave(Hq // key.size(-3), -3)
        value = value.repeat_interleave(Hq // value.size(-3), -3)
    bias = _bias(attn_mask, is_causal, L, S, query.dtype, query.device)
    bias = bias.expand(B, Hq, L, S) if bias.dim() <= 4 else bias
    bounds = [0, S // 3, (2 * S) // 3, S]
    outs, lses = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b <= a:
            continue
        s = query @ key[..., a:b, :].transpose(-2, -1) * scale_factor + bias[..., a:b]
        m = s.amax(dim=-1, keepdim=True)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        e = torch.exp(s - m)
        l_part = e.sum(dim=-1, keepdim=True)
        o = (e @ value[..., a:b, :]) / torch.where(l_part > 0, l_part, torch.ones_like(l_part))
        outs.append(o)
        lses.append(torch.where(l_part > 0, m + torch.log(torch.where(l_part > 0, l_part, torch.ones_like(l_part))),
                                torch.full_like(l_part, float('-inf'))))
    lse = torch.logsumexp(torch.stack(lses), dim=0)
    lse_safe = torch.where(torch.isfinite(lse), lse, torch.full_like(lse, float('inf')))
    out = torch.zeros_like(outs[0])
    for o, part_lse in zip(outs, lses):
        out = out + torch.exp(part_lse - lse_safe) * o
    return out


# --- kernel: sdpa_grouped_einsum_bias ---
def sdpa_grouped_einsum_bias(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                             enable_gqa=False):
    """Grouped (B, Hkv, G, L, D) view against unexpanded K/V, one additive bias, torch.softmax on live rows."""
    B, Hq, L, D = query.shape
    Hkv, S = key.size(-3), key.size(-2)
    G = Hq // Hkv if enable_gqa else 1
    if not enable_gqa:
        Hkv = Hq
    scale_factor = 1 / math.sqrt(D) if scale is None else scale
    qg = query.reshape(B, Hkv, G, L, D)
    kg = key.expand(B, Hkv, S, D) if key.size(0) == B else key
    vg = value.expand(B, Hkv, S, value.size(-1)) if value.size(0) == B else value
    s = torch.einsum('bhgld,bhsd->bhgls', qg, kg) * scale_factor
    bias = _bias(attn_mask, is_causal, L, S, query.dtype, query.device)
    bias = bias.expand(B, Hq, L, S).reshape(B, Hkv, G, L, S)
    s = s + bias
    live = torch.isfinite(s).any(dim=-1, keepdim=True)
    s = torch.where(live, s, torch.zeros_like(s))
    p = torch.softmax(s, dim=-1) * live
    out = torch.einsum('bhgls,bhsd->bhgld', p, vg)
    return out.reshape(B, Hq, L, value.size(-1))


CATALOG = [
    dict(name='sdpa-dl4proteins-embed-width-scale', api='torch-sdpa', fn='sdpa_embed_dim_scale', correct=False,
         bug='default-scale-from-embedding-width',
         parameter='with scale=None the scores are multiplied by C**-0.5 with C = Hq * D (the embedding width) '
                   'instead of D**-0.5 (the head size). Triggers: scale=None with Hq > 1',
         source='Graylab/DL4Proteins-notebooks#12', report='https://github.com/Graylab/DL4Proteins-notebooks/issues/12',
         dtype='float64', features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-xtuner-softmax-scale-not-dispatched', api='torch-sdpa', fn='sdpa_scale_not_dispatched',
         correct=False, bug='explicit-scale-ignored',
         parameter='the dispatcher does not pass softmax_scale on to the core attention, which falls back to '
                   '1/sqrt(D): an explicit scale is ignored. Triggers: an explicit scale != 1/sqrt(D)',
         source='InternLM/xtuner#873', report='https://github.com/InternLM/xtuner/pull/873',
         dtype='float64', features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-iree-masked-row-zero-over-zero', api='torch-sdpa', fn='sdpa_decomposed_no_empty_guard',
         correct=False, bug='fully-masked-row-nan',
         parameter='the decomposed softmax divides by the row sum without clamping it to max(sum, 1): a row with no '
                   'visible key gives 0/0 = NaN instead of zeros. Triggers: a row with no visible key (bool mask or '
                   'additive -inf row)',
         source='iree-org/iree#24178', report='https://github.com/iree-org/iree/pull/24178',
         dtype='float64', features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-llmfoundry-gqa-view-query-len', api='torch-sdpa', fn='sdpa_gqa_view_query_len', correct=False,
         bug='gqa-expand-with-query-length',
         parameter='the GQA expand/reshape of key and value uses the query length L instead of the key length S, '
                   'which raises a RuntimeError when L != S. Triggers: enable_gqa=True with Sq != Sk',
         source='mosaicml/llm-foundry#756', report='https://github.com/mosaicml/llm-foundry/pull/756',
         dtype='float64', features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-xtransformers-4d-bias-unsqueezed', api='torch-sdpa', fn='sdpa_bias_heads_unsqueeze',
         correct=False, bug='float-bias-extra-axis',
         parameter="a float attn_mask is assumed to be a 3-D 'h i j' bias and unsqueezed to '1 h i j'; a 4-D bias "
                   'becomes 5-D and the output gains a leading axis (wrong shape). Triggers: a float attn_mask with '
                   '4 dims',
         source='lucidrains/x-transformers#298', report='https://github.com/lucidrains/x-transformers/issues/298',
         dtype='float64', features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-transformers-npu-bias-booleanized', api='torch-sdpa', fn='sdpa_npu_booleanized_mask',
         correct=False, bug='float-mask-booleanized',
         parameter='a float attn_mask is booleanized (every non-zero entry masked out) instead of being added: 0 / '
                   '-inf masks stay right, finite biases are dropped and their keys hidden. Triggers: a float '
                   'attn_mask with finite non-zero entries',
         source='huggingface/transformers#48843', report='https://github.com/huggingface/transformers/pull/48843',
         dtype='float64', features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-split-kv-merge', api='torch-sdpa', fn='sdpa_split_kv_merge', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=['mask', 'causal', 'gqa', 'dv-ne-d']),
    dict(name='sdpa-grouped-einsum-bias', api='torch-sdpa', fn='sdpa_grouped_einsum_bias', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=['mask', 'causal', 'gqa', 'dv-ne-d']),
]
