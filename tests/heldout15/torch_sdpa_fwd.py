"""heldout15 torch-sdpa kernels, API `torch-sdpa`: the semantics of
torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
scale=None, enable_gqa=False) on (B, H, S, D) tensors, written with matmul/softmax.
"""
import math

import torch


# --- kernel: sdpa_bool_mask_as_bias ---
def sdpa_bool_mask_as_bias(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                           enable_gqa=False):
    """Forward op that hands attn_mask to the fused kernel's attn_bias slot."""
    if enable_gqa and key.size(-3) != query.size(-3):
        rep = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    sq, sk = query.size(-2), key.size(-2)
    scale_factor = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    attn_bias = torch.zeros(sq, sk, dtype=query.dtype)
    if is_causal:
        keep = torch.ones(sq, sk, dtype=torch.bool).tril(diagonal=0)
        attn_bias = attn_bias.masked_fill(~keep, float('-inf'))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_bias = attn_bias + attn_mask.to(query.dtype)  # BUG: a bool mask is consumed as a 0/1 bias
        else:
            attn_bias = attn_bias + attn_mask
    s = query @ key.transpose(-2, -1) * scale_factor + attn_bias
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    den = e.sum(dim=-1, keepdim=True)
    w = e / torch.where(den > 0, den, torch.ones_like(den))
    return w @ value


# --- kernel: sdpa_unscaled_logits ---
def sdpa_unscaled_logits(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    """Tiny-model attention: logits are the raw query-key dot products."""
    if enable_gqa and key.size(-3) != query.size(-3):
        rep = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    sq, sk = query.size(-2), key.size(-2)
    attn_logits = query @ key.transpose(-2, -1)  # BUG: the logits are never divided by sqrt(d) (or multiplied by scale)
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if is_causal:
        keep = keep.tril(diagonal=0)
    attn_logits = attn_logits.masked_fill(~keep, float('-inf'))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_logits = attn_logits.masked_fill(~attn_mask, float('-inf'))
        else:
            attn_logits = attn_logits + attn_mask
    mx = attn_logits.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    p = torch.exp(attn_logits - mx)
    tot = p.sum(dim=-1, keepdim=True)
    return (p / torch.where(tot > 0, tot, torch.ones_like(tot))) @ value


# --- kernel: sdpa_sum_reduce_16bit_dest ---
def sdpa_sum_reduce_16bit_dest(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                               enable_gqa=False):
    """Softmax as max-reduce, exp, SUM-reduce into a destination register, then divide."""
    if enable_gqa and key.size(-3) != query.size(-3):
        rep = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    sq, sk = query.size(-2), key.size(-2)
    scale_factor = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    s = query @ key.transpose(-2, -1) * scale_factor
    if is_causal:
        s = s.masked_fill(~torch.ones(sq, sk, dtype=torch.bool).tril(), float('-inf'))
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float('-inf')) if attn_mask.dtype == torch.bool else s + attn_mask
    mx = s.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    e = torch.exp(s - mx)
    dest = torch.zeros(e.shape[:-1], dtype=torch.bfloat16)  # BUG: the SUM reduce accumulates in a 16-bit dest
    for j in range(sk):
        dest = (dest + e[..., j]).to(dest.dtype)
    dest = dest.to(e.dtype).unsqueeze(-1)
    w = e / torch.where(dest > 0, dest, torch.ones_like(dest))
    return w @ value


# --- kernel: sdpa_decode_mask_full_heads ---
def sdpa_decode_mask_full_heads(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                enable_gqa=False):
    """Per (batch, head) program; the mask tile is addressed as if the mask had the query's batch and heads."""
    b_sz, hq, sq, _ = query.shape
    sk = key.size(-2)
    hkv = key.size(-3)
    scale_factor = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    flat = None
    if attn_mask is not None:
        m4 = attn_mask.reshape((1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape))
        mb, mh = m4.size(0), m4.size(1)
        flat = m4.expand(mb, mh, sq, sk).reshape(mb * mh, sq, sk)
    out = query.new_zeros(b_sz, hq, sq, value.size(-1))
    for b in range(b_sz):
        for h in range(hq):
            kv_h = h // (hq // hkv) if enable_gqa else h
            s = query[b, h] @ key[b, kv_h].transpose(-2, -1) * scale_factor
            if is_causal:
                s = s.masked_fill(~torch.ones(sq, sk, dtype=torch.bool).tril(), float('-inf'))
            if flat is not None:
                idx = b * hq + h  # BUG: the mask is indexed with the query's batch and head counts (no broadcast)
                tile = flat[idx]
                s = s.masked_fill(~tile, float('-inf')) if tile.dtype == torch.bool else s + tile
            mx = s.amax(dim=-1, keepdim=True)
            mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
            e = torch.exp(s - mx)
            den = e.sum(dim=-1, keepdim=True)
            out[b, h] = (e / torch.where(den > 0, den, torch.ones_like(den))) @ value[b, kv_h]
    return out


# --- kernel: sdpa_softmax_dim_one ---
def sdpa_softmax_dim_one(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    """Attention pooling style: F.softmax(scores, dim=1) then the weighted sum of values."""
    if enable_gqa and key.size(-3) != query.size(-3):
        rep = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    sq, sk = query.size(-2), key.size(-2)
    scale_factor = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale_factor
    if is_causal:
        scores = scores.masked_fill(~torch.ones(sq, sk, dtype=torch.bool).tril(), float('-inf'))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float('-inf'))
        else:
            scores = scores + attn_mask
    attn = torch.softmax(scores, dim=1)  # BUG: softmax over dim 1 (the heads of a 4-D score tensor), not the keys
    attn = torch.nan_to_num(attn, nan=0.0)
    return torch.matmul(attn, value)


# --- kernel: sdpa_mask_argument_dropped ---
def _mask_to_bias(attn_mask, dtype):
    if attn_mask.dtype == torch.bool:
        return torch.zeros(attn_mask.shape, dtype=dtype).masked_fill(~attn_mask, float('-inf'))
    return attn_mask.to(dtype)


def sdpa_mask_argument_dropped(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                               enable_gqa=False):
    """flash_attention(q, k, v, causal, attn_mask): the mask-less fused path is taken whatever attn_mask is."""
    if enable_gqa and key.size(-3) != query.size(-3):
        rep = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    sq, sk = query.size(-2), key.size(-2)
    scale_factor = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    s = query @ key.transpose(-2, -1) * scale_factor
    if is_causal:
        s = s.masked_fill(~torch.ones(sq, sk, dtype=torch.bool).tril(), float('-inf'))
    attn_bias = None  # BUG: the attn_mask argument is accepted but never turned into a bias
    if attn_bias is not None:
        s = s + attn_bias
    mx = s.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    e = torch.exp(s - mx)
    den = e.sum(dim=-1, keepdim=True)
    return (e / torch.where(den > 0, den, torch.ones_like(den))) @ value


# --- kernel: sdpa_per_head_logsumexp_bias ---
def sdpa_per_head_logsumexp_bias(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """Correct: loop over (batch, query head), one additive bias, weights exp(s - torch.logsumexp(s))."""
    b_sz, hq, sq, _ = query.shape
    sk, hkv = key.size(-2), key.size(-3)
    group = hq // hkv if enable_gqa else 1
    scale_factor = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    bias = torch.zeros(b_sz, hq, sq, sk, dtype=query.dtype)
    if is_causal:
        bias = bias.masked_fill(~torch.ones(sq, sk, dtype=torch.bool).tril(), float('-inf'))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(~attn_mask, float('-inf'))
        else:
            bias = bias + attn_mask
    out = query.new_zeros(b_sz, hq, sq, value.size(-1))
    for b in range(b_sz):
        for h in range(hq):
            s = query[b, h] @ key[b, h // group].transpose(0, 1) * scale_factor + bias[b, h]
            lse = torch.logsumexp(s, dim=-1, keepdim=True)
            lse = torch.where(torch.isfinite(lse), lse, torch.full_like(lse, float('inf')))
            out[b, h] = torch.exp(s - lse) @ value[b, h // group]
    return out


# --- kernel: sdpa_grouped_key_chunks_online ---
def sdpa_grouped_key_chunks_online(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                   enable_gqa=False):
    """Correct: grouped (B, Hkv, G, Sq, D) view against unexpanded K/V, key chunks of 19 merged online."""
    b_sz, hq, sq, d = query.shape
    sk, hkv = key.size(-2), key.size(-3)
    g = hq // hkv if enable_gqa else 1
    nk = hkv if enable_gqa else hq
    scale_factor = 1.0 / math.sqrt(d) if scale is None else scale
    qg = query.reshape(b_sz, nk, g, sq, d)
    keep = torch.ones(b_sz, hq, sq, sk, dtype=torch.bool)
    bias = torch.zeros(b_sz, hq, sq, sk, dtype=query.dtype)
    if is_causal:
        keep = keep & torch.ones(sq, sk, dtype=torch.bool).tril()
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            keep = keep & attn_mask
        else:
            bias = bias + attn_mask
    keep = keep.reshape(b_sz, nk, g, sq, sk)
    bias = bias.reshape(b_sz, nk, g, sq, sk)
    m = torch.full((b_sz, nk, g, sq, 1), float('-inf'), dtype=query.dtype)
    ell = torch.zeros(b_sz, nk, g, sq, 1, dtype=query.dtype)
    acc = torch.zeros(b_sz, nk, g, sq, value.size(-1), dtype=query.dtype)
    for j0 in range(0, sk, 19):
        kc = key[:, :, j0:j0 + 19, :].unsqueeze(2)
        vc = value[:, :, j0:j0 + 19, :].unsqueeze(2)
        s = torch.matmul(qg, kc.transpose(-2, -1)) * scale_factor + bias[..., j0:j0 + 19]
        s = s.masked_fill(~keep[..., j0:j0 + 19], float('-inf'))
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
        ref = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        p = torch.exp(s - ref)
        corr = torch.exp(torch.where(torch.isfinite(m), m, ref) - ref)
        ell = ell * corr + p.sum(dim=-1, keepdim=True)
        acc = acc * corr + torch.matmul(p, vc)
        m = m_new
    out = acc / torch.where(ell > 0, ell, torch.ones_like(ell))
    return out.reshape(b_sz, hq, sq, value.size(-1))


_F = ['mask', 'causal', 'gqa', 'dv-ne-d']

CATALOG = [
    dict(name='sdpa-diffusers-bool-mask-as-bias', api='torch-sdpa', fn='sdpa_bool_mask_as_bias', correct=False,
         bug='bool-mask-consumed-as-bias',
         parameter='a bool attn_mask is passed on as an additive bias in the query dtype (True = +1, False = 0) '
                   'instead of being converted to 0/-inf, so dropped keys are attended; float masks are right. '
                   'Triggers: a bool attn_mask with at least one False entry',
         source='huggingface/diffusers#14349', report='https://github.com/huggingface/diffusers/pull/14349',
         dtype='float64', features=_F),
    dict(name='sdpa-tinytransformers-unscaled-logits', api='torch-sdpa', fn='sdpa_unscaled_logits', correct=False,
         bug='scores-never-scaled',
         parameter='the attention logits are the raw dot products: neither 1/sqrt(D) nor the given scale is '
                   'applied. Triggers: an effective scale other than 1 (scale=None or scale != 1)',
         source='PAIR-code/tiny-transformers#71', report='https://github.com/PAIR-code/tiny-transformers/issues/71',
         dtype='float64', features=_F),
    dict(name='sdpa-ttmetal-sum-reduce-bf16', api='torch-sdpa', fn='sdpa_sum_reduce_16bit_dest', correct=False,
         bug='softmax-sum-in-16-bit-accumulator',
         parameter='the softmax SUM reduce over the exponentials accumulates in a bfloat16 destination (one rounding '
                   'per key), whatever the input dtype, so rows are scaled by a wrong denominator (~1e-3 to 1e-2). '
                   'Triggers: a row with two or more visible keys, at float32 resolution',
         source='tenstorrent/tt-metal#53643', report='https://github.com/tenstorrent/tt-metal/pull/53643',
         dtype='float32', features=_F),
    dict(name='sdpa-ttmetal-decode-mask-head-broadcast', api='torch-sdpa', fn='sdpa_decode_mask_full_heads',
         correct=False, bug='mask-indexed-without-broadcast',
         parameter='the mask tile of (batch b, head h) is read at flat index b * Hq + h, as if attn_mask had the '
                   "query's batch and head sizes: a mask with a batch or head axis of 1 gives another slice's mask or "
                   'an out-of-range index error. Triggers: an attn_mask whose batch or head axis is 1 (or missing) '
                   'while B > 1 or Hq > 1',
         source='tenstorrent/tt-metal#39946', report='https://github.com/tenstorrent/tt-metal/issues/39946',
         dtype='float64', features=_F),
    dict(name='sdpa-catalyst-softmax-dim-one', api='torch-sdpa', fn='sdpa_softmax_dim_one', correct=False,
         bug='softmax-over-head-axis',
         parameter='the weights are F.softmax(scores, dim=1): on (B, H, Sq, Sk) scores that normalises over the heads '
                   'instead of the keys (with one head every visible weight becomes 1). Triggers: always',
         source='catalyst-team/catalyst#285', report='https://github.com/catalyst-team/catalyst/pull/285',
         dtype='float64', features=_F),
    dict(name='sdpa-veomni-mask-not-applied', api='torch-sdpa', fn='sdpa_mask_argument_dropped', correct=False,
         bug='mask-ignored',
         parameter='attn_mask is accepted but never applied (bool or additive); is_causal is honoured. Triggers: an '
                   'attn_mask that drops a key or adds a non-constant bias to a row',
         source='ByteDance-Seed/VeOmni#1051', report='https://github.com/ByteDance-Seed/VeOmni/pull/1051',
         dtype='float64', features=_F),
    dict(name='sdpa-per-head-logsumexp-bias', api='torch-sdpa', fn='sdpa_per_head_logsumexp_bias', correct=True,
         bug=None, parameter=None, source=None, report=None, dtype='float64', features=_F),
    dict(name='sdpa-grouped-key-chunks-online', api='torch-sdpa', fn='sdpa_grouped_key_chunks_online',
         correct=True, bug=None, parameter=None, source=None, report=None, dtype='float64', features=_F),
]
