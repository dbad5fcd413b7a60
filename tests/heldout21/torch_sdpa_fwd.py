"""Held-out torch-sdpa kernels: semantics of torch.nn.functional.scaled_dot_product_attention, torch 1.13.

fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False) on (B, H, S, D)
tensors. attn_mask bool (True = attend) or additive float, never together with is_causal; is_causal is top-left
(j <= i); enable_gqa maps query head h to kv head h // (Hq // Hkv); fully masked rows give zeros; dropout_p is 0.
Returns (B, Hq, Sq, Dv) in the input dtype. Six kernels carry one mistake each, two are correct.
"""
import math

import torch


# --- kernel: sdpa_clip_tutorial_heads ---
def sdpa_clip_tutorial_heads(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                             enable_gqa=False):
    """Tutorial MultiHeadAttention style: q @ k^T scaled, additive mask, softmax, @ v."""
    num_heads = query.shape[1]
    if scale is None:
        scale = 1.0 / math.sqrt(num_heads)  # BUG: the default scale uses the number of heads instead of the head dim
    if key.shape[1] != num_heads:
        rep = num_heads // key.shape[1]
        key = key.repeat_interleave(rep, dim=1)
        value = value.repeat_interleave(rep, dim=1)
    attn = torch.matmul(query, key.transpose(-2, -1)) * scale
    if is_causal:
        keep = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool).tril()
        attn = attn.masked_fill(~keep, float("-inf"))
    elif attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn = attn.masked_fill(~attn_mask, float("-inf"))
        else:
            attn = attn + attn_mask
    row_max = attn.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    probs = torch.exp(attn - row_max)
    denom = probs.sum(dim=-1, keepdim=True)
    probs = torch.where(denom > 0, probs / torch.where(denom > 0, denom, torch.ones_like(denom)), probs)
    return torch.matmul(probs, value)


# --- kernel: sdpa_cube_units_causal ---
def sdpa_cube_units_causal(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                           enable_gqa=False):
    """Flash-kernel style launch: one unit per flattened (batch, head), causal positions computed in the unit."""
    b, hq, sq, d = query.shape
    hkv, sk, dv = key.shape[1], key.shape[2], value.shape[-1]
    group = hq // hkv
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    bias = None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = torch.zeros(attn_mask.shape, dtype=query.dtype).masked_fill(~attn_mask, float("-inf"))
        else:
            bias = attn_mask.to(query.dtype)
        bias = bias.expand(b, hq, sq, sk).reshape(b * hq, sq, sk)
    q_units = query.reshape(b * hq, sq, d)
    out = torch.zeros(b * hq, sq, dv, dtype=query.dtype)
    rows = torch.arange(sq).unsqueeze(1)
    cols = torch.arange(sk).unsqueeze(0)
    for unit in range(b * hq):
        kv_unit = (unit // hq) * hkv + (unit % hq) // group
        k_u = key.reshape(b * hkv, sk, d)[kv_unit]
        v_u = value.reshape(b * hkv, sk, dv)[kv_unit]
        s = q_units[unit] @ k_u.transpose(0, 1) * scale
        if is_causal:
            k_pos = unit * sk + cols  # BUG: flattened unit offset
            s = s.masked_fill(k_pos > rows, float("-inf"))
        if bias is not None:
            s = s + bias[unit]
        m = s.amax(dim=-1, keepdim=True)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        p = torch.exp(s - m)
        l_sum = p.sum(dim=-1, keepdim=True)
        out[unit] = torch.where(l_sum > 0, (p @ v_u) / torch.where(l_sum > 0, l_sum, torch.ones_like(l_sum)),
                                torch.zeros(sq, dv, dtype=query.dtype))
    return out.reshape(b, hq, sq, dv)


# --- kernel: sdpa_tiled_mask_skip ---
def sdpa_tiled_mask_skip(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    """Quantised-attention style tiling (32 x 32): tiles whose mask holds nothing to attend are skipped."""
    b, hq, sq, d = query.shape
    hkv, sk, dv = key.shape[1], key.shape[2], value.shape[-1]
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    k = key.repeat_interleave(hq // hkv, dim=1)
    v = value.repeat_interleave(hq // hkv, dim=1)
    if is_causal:
        attn_mask = torch.ones(sq, sk, dtype=torch.bool).tril()
    mask_is_bool = attn_mask is not None and attn_mask.dtype == torch.bool
    if attn_mask is not None:
        attn_mask = attn_mask.expand(b, hq, sq, sk)
    out = torch.zeros(b, hq, sq, dv, dtype=query.dtype)
    block_m, block_n = 32, 32
    for m0 in range(0, sq, block_m):
        q_blk = query[:, :, m0:m0 + block_m]
        rows = q_blk.shape[2]
        m_i = torch.full((b, hq, rows, 1), float("-inf"), dtype=query.dtype)
        l_i = torch.zeros(b, hq, rows, 1, dtype=query.dtype)
        acc = torch.zeros(b, hq, rows, dv, dtype=query.dtype)
        for n0 in range(0, sk, block_n):
            s = q_blk @ k[:, :, n0:n0 + block_n].transpose(-1, -2) * scale
            if attn_mask is not None:
                mask_tile = attn_mask[:, :, m0:m0 + block_m, n0:n0 + block_n]
                if not bool(mask_tile.any()):  # BUG: float masks skipped too
                    continue
                if mask_is_bool:
                    s = s.masked_fill(~mask_tile, float("-inf"))
                else:
                    s = s + mask_tile.to(s.dtype)
            m_new = torch.maximum(m_i, s.amax(dim=-1, keepdim=True))
            m_use = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
            p = torch.exp(s - m_use)
            alpha = torch.exp(m_i - m_use)
            l_i = l_i * alpha + p.sum(dim=-1, keepdim=True)
            acc = acc * alpha + p @ v[:, :, n0:n0 + block_n]
            m_i = m_new
        out[:, :, m0:m0 + block_m] = torch.where(l_i > 0, acc / torch.where(l_i > 0, l_i, torch.ones_like(l_i)),
                                                 torch.zeros_like(acc))
    return out


# --- kernel: sdpa_key_major_scores ---
def sdpa_key_major_scores(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                          enable_gqa=False):
    """Graph-library style with key-major score layout (k_seq, q_seq): softmax runs over dim -2."""
    b, hq, sq, d = query.shape
    hkv, sk = key.shape[1], key.shape[2]
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    k = key.repeat_interleave(hq // hkv, dim=1)
    v = value.repeat_interleave(hq // hkv, dim=1)
    scores = torch.einsum("bhkd,bhqd->bhqk", k, query) * scale  # BUG: query axis first
    if is_causal:
        keep = torch.ones(sq, sk, dtype=torch.bool).tril()
        scores = scores.masked_fill(~keep.transpose(0, 1), float("-inf"))
    elif attn_mask is not None:
        km = attn_mask.expand(b, hq, sq, sk).transpose(-1, -2)
        if km.dtype == torch.bool:
            scores = scores.masked_fill(~km, float("-inf"))
        else:
            scores = scores + km.to(scores.dtype)
    col_max = scores.amax(dim=-2, keepdim=True)
    col_max = torch.where(torch.isfinite(col_max), col_max, torch.zeros_like(col_max))
    attn = torch.exp(scores - col_max)
    denom = attn.sum(dim=-2, keepdim=True)
    attn = torch.where(denom > 0, attn / torch.where(denom > 0, denom, torch.ones_like(denom)), attn)
    return torch.einsum("bhkq,bhkd->bhqd", attn, v)


# --- kernel: sdpa_causal_multiplicative_mask ---
def sdpa_causal_multiplicative_mask(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                    enable_gqa=False):
    """Exercise-solution style: scores, a 0/1 causal mask multiplied in and zeros set to -inf, softmax, @ V."""
    d_k = query.size(-1)
    hq, hkv = query.shape[1], key.shape[1]
    if hkv != hq:
        key = key.repeat_interleave(hq // hkv, dim=1)
        value = value.repeat_interleave(hq // hkv, dim=1)
    if scale is None:
        scale = 1.0 / d_k  # BUG: the default divides by d_k instead of sqrt(d_k)
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale
    if is_causal:
        seq_q, seq_k = query.size(-2), key.size(-2)
        mask = 1 - torch.triu(torch.ones(seq_q, seq_k, dtype=scores.dtype), diagonal=1)
        scores = scores * mask
        scores = scores.masked_fill(scores == 0, float("-inf"))
    elif attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    weights = torch.exp(scores - row_max)
    total = weights.sum(dim=-1, keepdim=True)
    weights = torch.where(total > 0, weights / torch.where(total > 0, total, torch.ones_like(total)), weights)
    return torch.matmul(weights, value)


# --- kernel: sdpa_fused_path_default_scale ---
def _fused_sdpa(q, k, v, bias, scale=None):
    if scale is None:
        scale = q.shape[-1] ** -0.5
    attn = q @ k.transpose(-2, -1) * scale
    if bias is not None:
        attn = attn + bias
    m = attn.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    attn = torch.exp(attn - m)
    s = attn.sum(dim=-1, keepdim=True)
    attn = torch.where(s > 0, attn / torch.where(s > 0, s, torch.ones_like(s)), attn)
    return attn @ v


def sdpa_fused_path_default_scale(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                  enable_gqa=False):
    """Vision-transformer Attention style: the module keeps a scale and calls a fused attention path."""
    hq, hkv = query.shape[1], key.shape[1]
    k = key.repeat_interleave(hq // hkv, dim=1)
    v = value.repeat_interleave(hq // hkv, dim=1)
    bias = None
    if is_causal:
        causal = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool).tril()
        bias = torch.zeros(causal.shape, dtype=query.dtype).masked_fill(~causal, float("-inf"))
    elif attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = torch.zeros(attn_mask.shape, dtype=query.dtype).masked_fill(~attn_mask, float("-inf"))
        else:
            bias = attn_mask
    fused_scale = None  # BUG: the module's scale is not forwarded, so the fused path falls back to head_dim ** -0.5
    return _fused_sdpa(query, k, v, bias, scale=fused_scale)


# --- kernel: sdpa_split_kv_lse_merge ---
def sdpa_split_kv_lse_merge(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """Correct: keys split in three, each split normalised on its own, merged by the splits' log-sum-exp."""
    b, hq, sq, d = query.shape
    hkv, sk = key.shape[1], key.shape[2]
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    k = key.repeat_interleave(hq // hkv, dim=1)
    v = value.repeat_interleave(hq // hkv, dim=1)
    bias = torch.zeros(b, hq, sq, sk, dtype=query.dtype)
    if is_causal:
        keep = torch.ones(sq, sk, dtype=torch.bool).tril()
        bias = bias.masked_fill(~keep, float("-inf"))
    elif attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(~attn_mask.expand(b, hq, sq, sk), float("-inf"))
        else:
            bias = bias + attn_mask.to(query.dtype)
    bounds = [round(i * sk / 3) for i in range(4)]
    outs, lses = [], []
    for s0, s1 in zip(bounds[:-1], bounds[1:]):
        s = query @ k[:, :, s0:s1].transpose(-1, -2) * scale + bias[..., s0:s1]
        m = s.amax(dim=-1, keepdim=True) if s1 > s0 else torch.full((b, hq, sq, 1), float("-inf"))
        m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        p = torch.exp(s - m_safe)
        l_sum = p.sum(dim=-1, keepdim=True)
        o = torch.where(l_sum > 0, (p @ v[:, :, s0:s1]) / torch.where(l_sum > 0, l_sum, torch.ones_like(l_sum)),
                        torch.zeros(b, hq, sq, v.shape[-1], dtype=query.dtype))
        lses.append(torch.where(l_sum > 0, m_safe + torch.log(torch.where(l_sum > 0, l_sum, torch.ones_like(l_sum))),
                                torch.full_like(l_sum, float("-inf"))))
        outs.append(o)
    lse = torch.stack(lses)
    lse_max = lse.amax(dim=0)
    lse_max = torch.where(torch.isfinite(lse_max), lse_max, torch.zeros_like(lse_max))
    w = torch.exp(lse - lse_max)
    total = w.sum(dim=0)
    merged = (w * torch.stack(outs)).sum(dim=0)
    return torch.where(total > 0, merged / torch.where(total > 0, total, torch.ones_like(total)), merged)


# --- kernel: sdpa_grouped_rows_bmm ---
def sdpa_grouped_rows_bmm(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                          enable_gqa=False):
    """Correct: the query heads of a group are stacked along the row axis, one bmm per kv head, no K/V copies."""
    b, hq, sq, d = query.shape
    hkv, sk, dv = key.shape[1], key.shape[2], value.shape[-1]
    g = hq // hkv
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    qg = query.reshape(b * hkv, g * sq, d)
    kg = key.reshape(b * hkv, sk, d)
    vg = value.reshape(b * hkv, sk, dv)
    bias = torch.zeros(b, hq, sq, sk, dtype=query.dtype)
    if is_causal:
        bias = bias.masked_fill(~torch.ones(sq, sk, dtype=torch.bool).tril(), float("-inf"))
    elif attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(~attn_mask.expand(b, hq, sq, sk), float("-inf"))
        else:
            bias = bias + attn_mask.to(query.dtype)
    s = torch.bmm(qg, kg.transpose(1, 2)) * scale + bias.reshape(b * hkv, g * sq, sk)
    keep_row = torch.isfinite(s).any(dim=-1, keepdim=True)
    s = s - torch.where(keep_row, s.amax(dim=-1, keepdim=True), torch.zeros_like(s[..., :1]))
    p = torch.exp(s)
    p = p / torch.where(keep_row, p.sum(dim=-1, keepdim=True), torch.ones_like(s[..., :1]))
    out = torch.bmm(p, vg)
    return out.reshape(b, hq, sq, dv)


CATALOG = [
    dict(name="sdpa-ttmetal-scale-num-heads", api="torch-sdpa", fn="sdpa_clip_tutorial_heads", correct=False,
         bug="default-scale-from-num-heads",
         parameter="with scale=None the scores are multiplied by 1/sqrt(Hq) (the number of query heads) instead of "
                   "1/sqrt(D). Triggers: scale=None with Hq != D",
         source="tenstorrent/tt-metal#56789", report="https://github.com/tenstorrent/tt-metal/pull/56789",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-burn-causal-unit-offset", api="torch-sdpa", fn="sdpa_cube_units_causal", correct=False,
         bug="causal-key-position-flattened-offset",
         parameter="with is_causal the key position is unit * Sk + j, the flattened (batch, query head) unit offset "
                   "added to the key index, so only unit 0 (batch 0, head 0) is right and the other units mask "
                   "(almost) every key and return zeros. Triggers: is_causal=True with B * Hq > 1",
         source="tracel-ai/burn#4484", report="https://github.com/tracel-ai/burn/issues/4484",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-sageattn-float-mask-tile-skip", api="torch-sdpa", fn="sdpa_tiled_mask_skip", correct=False,
         bug="float-mask-zero-tile-skipped",
         parameter="a 32 x 32 score tile is skipped when its mask tile has no nonzero entry; right for a bool mask "
                   "(nothing to attend) but an additive float mask tile of zeros (keys kept with bias 0) is skipped "
                   "too. Triggers: a float attn_mask with an all-zero 32 x 32 tile",
         source="thu-ml/SageAttention#230", report="https://github.com/thu-ml/SageAttention/pull/230",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-nntile-scores-layout", api="torch-sdpa", fn="sdpa_key_major_scores", correct=False,
         bug="score-layout-transposed",
         parameter="the scores einsum writes (q_seq, k_seq) while the code treats the layout as key-major "
                   "(k_seq, q_seq): the softmax normalises over the query axis and the value contraction pairs the "
                   "wrong axes (a shape error when Sq != Sk). Triggers: always",
         source="nntile/nntile#382", report="https://github.com/nntile/nntile/pull/382",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-torchcode-scale-dk", api="torch-sdpa", fn="sdpa_causal_multiplicative_mask", correct=False,
         bug="default-scale-one-over-d",
         parameter="with scale=None the scores are divided by d_k instead of sqrt(d_k). Triggers: scale=None "
                   "(D > 1)",
         source="duoan/TorchCode#17", report="https://github.com/duoan/TorchCode/issues/17",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-timm-scale-not-forwarded", api="torch-sdpa", fn="sdpa_fused_path_default_scale",
         correct=False, bug="explicit-scale-ignored",
         parameter="the scale argument is not forwarded to the fused path, which always uses 1/sqrt(D). "
                   "Triggers: an explicit scale different from 1/sqrt(D)",
         source="huggingface/pytorch-image-models#2280",
         report="https://github.com/huggingface/pytorch-image-models/issues/2280",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-split-kv-lse-merge", api="torch-sdpa", fn="sdpa_split_kv_lse_merge", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64",
         features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-grouped-rows-bmm", api="torch-sdpa", fn="sdpa_grouped_rows_bmm", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64",
         features=["mask", "causal", "gqa", "dv-ne-d"]),
]
