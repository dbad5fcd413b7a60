"""Held-out attention kernels, API `torch-sdpa`.

fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False) on (B, H, S, D)
torch tensors with the semantics of torch.nn.functional.scaled_dot_product_attention (torch 1.13 ops only): bool
attn_mask True = attend, float attn_mask added; is_causal top-left (j <= i); enable_gqa: query head h reads kv head
h // (Hq // Hkv); rows with no visible key are zeros; dropout_p is always 0. Returns (B, Hq, Sq, Dv) in the input dtype.
"""
import math

import torch


# --- kernel: sdpa_additive_bias_softmax ---
def sdpa_additive_bias_softmax(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                               enable_gqa=False):
    """Every mask is turned into one additive 0/-inf bias, then a plain softmax."""
    L, S = query.size(-2), key.size(-2)
    scale_factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    attn_bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        temp_mask = torch.ones(L, S, dtype=torch.bool).tril(diagonal=0)
        attn_bias = attn_bias.masked_fill(temp_mask.logical_not(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_bias = torch.where(attn_mask, attn_bias, torch.tensor(float("-inf"), dtype=query.dtype))
        else:
            attn_bias = attn_bias + attn_mask
    if enable_gqa:
        rep = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    attn_weight = query @ key.transpose(-2, -1) * scale_factor
    attn_weight = attn_weight + attn_bias
    attn_weight = torch.softmax(attn_weight, dim=-1)  # BUG: an all -inf row gives 0/0 = NaN (no fully-masked guard)
    return attn_weight @ value


# --- kernel: sdpa_gqa_head_blocks ---
def sdpa_gqa_head_blocks(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    """Decode-style grouping: query heads processed in blocks of BLOCK_H that share one kv head load."""
    BLOCK_H = 4
    B, Hq, Sq, D = query.shape
    Hkv, Sk = key.shape[1], key.shape[2]
    sm_scale = D ** -0.5 if scale is None else scale
    group = Hq // Hkv if enable_gqa else 1
    valid_block_h = BLOCK_H if group > BLOCK_H else group
    blocks_per_kv = -(-group // BLOCK_H)
    bias = torch.zeros(B, Hq, Sq, Sk, dtype=query.dtype)
    if is_causal:
        causal = torch.ones(Sq, Sk, dtype=torch.bool).tril()
        bias = bias.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(~attn_mask, float("-inf"))
        else:
            bias = bias + attn_mask
    out = torch.zeros(B, Hq, Sq, value.shape[-1], dtype=query.dtype)
    for head_group_id in range(Hkv * blocks_per_kv):
        kv_head = head_group_id // blocks_per_kv
        cur_head = head_group_id * valid_block_h + torch.arange(BLOCK_H)  # BUG: assumes group % BLOCK_H == 0
        mask_h = (cur_head < (head_group_id + 1) * valid_block_h) & (cur_head < Hq)
        heads = cur_head[mask_h]
        if heads.numel() == 0:
            continue
        s = query[:, heads] @ key[:, kv_head:kv_head + 1].transpose(-1, -2) * sm_scale + bias[:, heads]
        m = s.amax(dim=-1, keepdim=True)
        m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
        p = torch.exp(s - m)
        denom = p.sum(dim=-1, keepdim=True)
        p = p / torch.where(denom > 0, denom, torch.ones_like(denom))
        out[:, heads] = p @ value[:, kv_head:kv_head + 1]
    return out


# --- kernel: sdpa_value_tiles_store ---
def sdpa_value_tiles_store(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                           enable_gqa=False):
    """One program per value tile of BV channels: the weights are recomputed and P @ V[:, tile] is stored."""
    BV = 32
    Hq, Sq, D = query.shape[1:]
    Sk, Dv = key.shape[2], value.shape[3]
    if enable_gqa:
        key = key.repeat_interleave(Hq // key.shape[1], dim=1)
        value = value.repeat_interleave(Hq // value.shape[1], dim=1)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    keep = torch.ones(Sq, Sk, dtype=torch.bool)
    if is_causal:
        keep = keep.tril()
    bias = torch.zeros(Sq, Sk, dtype=query.dtype).masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = torch.where(attn_mask, bias, torch.tensor(float("-inf"), dtype=query.dtype))
        else:
            bias = bias + attn_mask
    o = torch.zeros(query.shape[:3] + (Dv,), dtype=query.dtype)
    for i_v in range(-(-Dv // BV)):
        s = torch.matmul(query, key.transpose(-1, -2)) * scale + bias
        m = s.amax(-1, keepdim=True).clamp(min=torch.finfo(s.dtype).min)
        p = torch.exp(s - m)
        p = p / p.sum(-1, keepdim=True).clamp(min=torch.finfo(s.dtype).tiny)
        b_o = torch.matmul(p, value[..., i_v * BV:(i_v + 1) * BV])
        o[..., :b_o.shape[-1]] = b_o  # BUG: store omits the tile offset i_v * BV
    return o


# --- kernel: sdpa_half_softmax ---
def sdpa_half_softmax(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                      enable_gqa=False):
    """Eager attention that keeps the attention weights in the half-precision compute dtype."""
    bsz, n_heads, tgt_len, head_dim = query.shape
    src_len = key.shape[-2]
    if enable_gqa:
        n_rep = n_heads // key.shape[1]
        key = key[:, :, None].expand(-1, -1, n_rep, -1, -1).reshape(bsz, n_heads, src_len, head_dim)
        value = value[:, :, None].expand(-1, -1, n_rep, -1, -1).reshape(bsz, n_heads, src_len, value.shape[-1])
    scaling = head_dim ** -0.5 if scale is None else scale
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if is_causal:
        causal = torch.ones(tgt_len, src_len, dtype=torch.bool).tril()
        attn_weights = attn_weights.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_weights = attn_weights.masked_fill(~attn_mask, float("-inf"))
        else:
            attn_weights = attn_weights + attn_mask
    dead = torch.isneginf(attn_weights).all(dim=-1, keepdim=True)
    attn_weights = attn_weights.masked_fill(dead, 0.0)
    attn_weights = torch.softmax(attn_weights.half().float(), dim=-1).half().to(query.dtype)  # BUG: no fp32 upcast
    attn_weights = attn_weights.masked_fill(dead, 0.0)
    return torch.matmul(attn_weights, value)


# --- kernel: sdpa_query_head_as_kv_head ---
def sdpa_query_head_as_kv_head(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                               enable_gqa=False):
    """Per-(batch, head) program over a flat (B * Hkv) K/V buffer, as a pointer-arithmetic kernel would."""
    B, Hq, Sq, D = query.shape
    Hkv, Sk = key.shape[1], key.shape[2]
    Dv = value.shape[-1]
    softmax_scale = 1.0 / math.sqrt(D) if scale is None else scale
    k_flat = key.reshape(B * Hkv, Sk, D)
    v_flat = value.reshape(B * Hkv, Sk, Dv)
    keep = torch.ones(B, Hq, Sq, Sk, dtype=torch.bool)
    bias = torch.zeros(B, Hq, Sq, Sk, dtype=query.dtype)
    if is_causal:
        keep = keep & torch.ones(Sq, Sk, dtype=torch.bool).tril()
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            keep = keep & attn_mask
        else:
            bias = bias + attn_mask
    out = torch.empty(B, Hq, Sq, Dv, dtype=query.dtype)
    for b in range(B):
        for head_idx in range(Hq):
            kv_idx = b * Hkv + head_idx  # BUG: query head index used as the kv head index (no // group)
            s = query[b, head_idx] @ k_flat[kv_idx].T * softmax_scale + bias[b, head_idx]
            s = s.masked_fill(~keep[b, head_idx], float("-inf"))
            row_max = s.max(dim=-1, keepdim=True).values
            row_max = torch.nan_to_num(row_max, neginf=0.0)
            e = torch.exp(s - row_max)
            l_sum = e.sum(dim=-1, keepdim=True)
            out[b, head_idx] = torch.where(l_sum > 0, e / l_sum, torch.zeros_like(e)) @ v_flat[kv_idx]
    return out


# --- kernel: sdpa_splitkv_lse_accum_strides ---
def sdpa_splitkv_lse_accum_strides(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                   enable_gqa=False):
    """Split-KV over 3 key ranges; partial outputs and LSEs go to accumulators that a combine step merges."""
    NUM_SPLITS = 3
    B, H, Sq, D = query.shape
    Sk, Dv = key.shape[2], value.shape[3]
    if enable_gqa:
        key = key.repeat_interleave(H // key.shape[1], dim=1)
        value = value.repeat_interleave(H // value.shape[1], dim=1)
    softmax_scale = D ** -0.5 if scale is None else scale
    bias = torch.zeros(B, H, Sq, Sk, dtype=query.dtype)
    if is_causal:
        bias = bias.masked_fill(~torch.ones(Sq, Sk, dtype=torch.bool).tril(), float("-inf"))
    if attn_mask is not None:
        bias = bias.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else bias + attn_mask
    chunk = -(-Sk // NUM_SPLITS)
    o_accum = torch.zeros(NUM_SPLITS, B, H, Sq, Dv, dtype=query.dtype)
    lse_storage = torch.empty(NUM_SPLITS, B, Sq, H, dtype=query.dtype)
    lse_accum = lse_storage.permute(0, 1, 3, 2)  # logical (split, b, h, s); rows of one head are H apart
    for n_split_idx in range(NUM_SPLITS):
        lo, hi = n_split_idx * chunk, min((n_split_idx + 1) * chunk, Sk)
        s = query @ key[:, :, lo:hi].transpose(-1, -2) * softmax_scale + bias[..., lo:hi]
        m = s.amax(dim=-1, keepdim=True) if hi > lo else torch.full((B, H, Sq, 1), float("-inf"), dtype=s.dtype)
        m_safe = torch.where(torch.isinf(m), torch.zeros_like(m), m)
        p = torch.exp(s - m_safe)
        l_sum = p.sum(dim=-1, keepdim=True)
        o_accum[n_split_idx] = torch.where(l_sum > 0, p / l_sum, torch.zeros_like(p)) @ value[:, :, lo:hi]
        lse = torch.where(l_sum > 0, m_safe + torch.log(l_sum), torch.full_like(l_sum, float("-inf")))
        lse_storage.view(NUM_SPLITS, B, H, Sq)[n_split_idx] = lse[..., 0]  # BUG: hardcoded (split, b, h, s) strides
    lse_max = lse_accum.amax(dim=0, keepdim=True)
    lse_max = torch.where(torch.isinf(lse_max), torch.zeros_like(lse_max), lse_max)
    w = torch.exp(lse_accum - lse_max)
    w_sum = w.sum(dim=0, keepdim=True)
    w = torch.where(w_sum > 0, w / w_sum, torch.zeros_like(w))
    return (w[..., None] * o_accum).sum(dim=0)


# --- kernel: sdpa_grouped_einsum_view ---
def sdpa_grouped_einsum_view(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                             enable_gqa=False):
    """Grouped GQA without expanding K/V: queries viewed as (B, Hkv, G, Sq, D)."""
    B, Hq, Sq, D = query.shape
    Hkv, Sk, Dv = key.shape[1], key.shape[2], value.shape[3]
    G = Hq // Hkv
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    q5 = query.reshape(B, Hkv, G, Sq, D)
    s = torch.einsum('bhgid,bhjd->bhgij', q5, key) * scale
    keep = torch.ones(B, Hq, Sq, Sk, dtype=torch.bool)
    add = torch.zeros(B, Hq, Sq, Sk, dtype=query.dtype)
    if is_causal:
        keep = keep & (torch.arange(Sk)[None, :] <= torch.arange(Sq)[:, None])
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            keep = keep & attn_mask
        else:
            add = add + attn_mask
            keep = keep & ~torch.isneginf(add)
    s = (s + add.reshape(B, Hkv, G, Sq, Sk)).masked_fill(~keep.reshape(B, Hkv, G, Sq, Sk), float("-inf"))
    live = keep.reshape(B, Hkv, G, Sq, Sk).any(dim=-1, keepdim=True)
    s = torch.where(live, s, torch.zeros_like(s))
    p = torch.softmax(s, dim=-1) * live
    out = torch.einsum('bhgij,bhjd->bhgid', p, value)
    return out.reshape(B, Hq, Sq, Dv)


# --- kernel: sdpa_splitkv_merge4 ---
def sdpa_splitkv_merge4(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                        enable_gqa=False):
    """Four key splits, each normalised on its own, merged with natural-log LSE weights; empty splits skipped."""
    B, Hq, Sq, D = query.shape
    Hkv, Sk = key.shape[1], key.shape[2]
    group = Hq // Hkv
    idx = torch.arange(Hq) // group
    k = key[:, idx]
    v = value[:, idx]
    sc = D ** -0.5 if scale is None else scale
    bias = torch.zeros(B, Hq, Sq, Sk, dtype=torch.float64)
    if is_causal:
        bias = bias.masked_fill(torch.arange(Sk)[None, :] > torch.arange(Sq)[:, None], float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(~attn_mask, float("-inf"))
        else:
            bias = bias + attn_mask.to(torch.float64)
    q64, k64, v64 = query.to(torch.float64), k.to(torch.float64), v.to(torch.float64)
    bounds = [round(Sk * i / 4) for i in range(5)]
    outs, lses = [], []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi <= lo:
            continue
        s = q64 @ k64[:, :, lo:hi].transpose(-1, -2) * sc + bias[..., lo:hi]
        lse = torch.logsumexp(s, dim=-1, keepdim=True)
        ok = torch.isfinite(lse)
        p = torch.where(ok, torch.exp(s - torch.where(ok, lse, torch.zeros_like(lse))), torch.zeros_like(s))
        outs.append(p @ v64[:, :, lo:hi])
        lses.append(lse)
    lse_all = torch.stack(lses)
    total = torch.logsumexp(lse_all, dim=0)
    ok = torch.isfinite(total)
    w = torch.where(ok, torch.exp(lse_all - torch.where(ok, total, torch.zeros_like(total))),
                    torch.zeros_like(lse_all))
    out = (w * torch.stack(outs)).sum(dim=0)
    return out.to(query.dtype)


CATALOG = [
    {
        "name": "sdpa-openmhc-neginf-row-nan",
        "api": "torch-sdpa",
        "fn": "sdpa_additive_bias_softmax",
        "correct": False,
        "bug": "fully-masked-row-nan",
        "parameter": "masks are folded into an additive 0/-inf bias and passed to a plain softmax: a row whose bias "
                     "is -inf everywhere gives 0/0 = NaN instead of zeros. Triggers: a row with no visible key "
                     "(bool mask or additive -inf row)",
        "source": "AshleyLab/OpenMHC#11",
        "report": "https://github.com/AshleyLab/OpenMHC/issues/11",
        "dtype": "float64",
        "features": ["mask", "causal", "gqa", "dv-ne-d"],
    },
    {
        "name": "sdpa-vllm-gqa-head-block-bleed",
        "api": "torch-sdpa",
        "fn": "sdpa_gqa_head_blocks",
        "correct": False,
        "bug": "gqa-head-block-straddles-kv-heads",
        "parameter": "query heads are grouped in blocks of BLOCK_H = 4 with cur_head = block * 4 + arange(4) and "
                     "kv_head = block // ceil(G / 4): when G > 4 is not a multiple of 4 a block straddles two kv "
                     "heads and its tail heads read the previous kv head. Triggers: enable_gqa with group size "
                     "G > 4 and G % 4 != 0 (e.g. 6:1)",
        "source": "vllm-project/vllm#40792",
        "report": "https://github.com/vllm-project/vllm/pull/40792",
        "dtype": "float64",
        "features": ["mask", "causal", "gqa", "dv-ne-d"],
    },
    {
        "name": "sdpa-fla-value-tile-offset",
        "api": "torch-sdpa",
        "fn": "sdpa_value_tiles_store",
        "correct": False,
        "bug": "value-tile-store-offset-missing",
        "parameter": "the output is produced per value tile of BV = 32 channels but each tile is stored at "
                     "channel 0 (the i_v * BV offset is missing): the last tile overwrites the first, the other "
                     "channels stay zero. Triggers: Dv > 32",
        "source": "fla-org/flash-linear-attention#1031",
        "report": "https://github.com/fla-org/flash-linear-attention/pull/1031",
        "dtype": "float64",
        "features": ["mask", "causal", "gqa", "dv-ne-d"],
    },
    {
        "name": "sdpa-opt-softmax-half",
        "api": "torch-sdpa",
        "fn": "sdpa_half_softmax",
        "correct": False,
        "bug": "softmax-in-half-precision",
        "parameter": "the scores are rounded to float16 before the softmax and the weights rounded to float16 after "
                     "it (no fp32 upcast), whatever the input dtype: ~1e-3 relative error in the weights. "
                     "Triggers: always at float32 resolution",
        "source": "huggingface/transformers#17437",
        "report": "https://github.com/huggingface/transformers/pull/17437",
        "dtype": "float32",
        "features": ["mask", "causal", "gqa", "dv-ne-d"],
    },
    {
        "name": "sdpa-lmcache-kv-head-unmapped",
        "api": "torch-sdpa",
        "fn": "sdpa_query_head_as_kv_head",
        "correct": False,
        "bug": "gqa-kv-head-not-mapped",
        "parameter": "the query head index addresses K/V directly in a flat (B * Hkv) buffer (b * Hkv + h instead "
                     "of b * Hkv + h // G): query heads >= Hkv read the next batch's kv heads, or past the buffer "
                     "(an index error). Triggers: enable_gqa with Hq > Hkv",
        "source": "LMCache/LMCache#3092",
        "report": "https://github.com/LMCache/LMCache/pull/3092",
        "dtype": "float64",
        "features": ["mask", "causal", "gqa", "dv-ne-d"],
    },
    {
        "name": "sdpa-fa2-lse-accum-strides",
        "api": "torch-sdpa",
        "fn": "sdpa_splitkv_lse_accum_strides",
        "correct": False,
        "bug": "split-lse-accum-hardcoded-strides",
        "parameter": "the split kernel writes its partial LSEs with hardcoded contiguous (split, b, h, s) strides "
                     "while the combine reads the accumulator through its real (split, b, s, h) layout: each "
                     "row's split weights come from other (head, row) pairs. Triggers: H > 1 and Sq > 1",
        "source": "Dao-AILab/flash-attention#2388",
        "report": "https://github.com/Dao-AILab/flash-attention/pull/2388",
        "dtype": "float64",
        "features": ["mask", "causal", "gqa", "dv-ne-d"],
    },
    {
        "name": "sdpa-grouped-einsum-view",
        "api": "torch-sdpa",
        "fn": "sdpa_grouped_einsum_view",
        "correct": True,
        "bug": None,
        "parameter": None,
        "source": None,
        "report": None,
        "dtype": "float64",
        "features": ["mask", "causal", "gqa", "dv-ne-d"],
    },
    {
        "name": "sdpa-splitkv-merge4",
        "api": "torch-sdpa",
        "fn": "sdpa_splitkv_merge4",
        "correct": True,
        "bug": None,
        "parameter": None,
        "source": None,
        "report": None,
        "dtype": "float64",
        "features": ["mask", "causal", "gqa", "dv-ne-d"],
    },
]
