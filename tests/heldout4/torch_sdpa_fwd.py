"""Held-out kernels with torch.nn.functional.scaled_dot_product_attention's semantics (API `torch-sdpa`).

fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False) on torch
tensors (B, H, S, D).  attn_mask is bool (True = attend) or additive float; is_causal is top-left aligned;
enable_gqa maps query head h to kv head h // (Hq // Hkv); a row with no visible key gives zeros.
torch 1.13 has no F.scaled_dot_product_attention, so every kernel is written with matmul / softmax.
"""
import math

import torch


def _masked_rows_to_zero(attn_weight):
    """softmax over a row of -inf gives NaN; SDPA's math path returns zeros for such rows."""
    return torch.nan_to_num(attn_weight, nan=0.0)


def _softmax_zero_dead_rows(scores):
    dead = torch.isneginf(scores).all(dim=-1, keepdim=True)
    w = torch.softmax(scores.masked_fill(dead, 0.0), dim=-1)
    return w.masked_fill(dead, 0.0)


# ----------------------------------------------------------------------------------------------------------------
# correct kernels
# ----------------------------------------------------------------------------------------------------------------

def sdpa_math_reference(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                        enable_gqa=False):
    """The documented 'equivalent implementation' of SDPA, with GQA via repeat_interleave."""
    L, S = query.size(-2), key.size(-2)
    scale_factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    attn_bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        temp_mask = torch.ones(L, S, dtype=torch.bool).tril(diagonal=0)
        attn_bias = attn_bias.masked_fill(temp_mask.logical_not(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_bias = attn_bias.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            attn_bias = attn_bias + attn_mask.to(query.dtype)
    if enable_gqa:
        key = key.repeat_interleave(query.size(-3) // key.size(-3), -3)
        value = value.repeat_interleave(query.size(-3) // value.size(-3), -3)
    attn_weight = query @ key.transpose(-2, -1) * scale_factor
    attn_weight = attn_weight + attn_bias
    attn_weight = torch.softmax(attn_weight, dim=-1)
    attn_weight = _masked_rows_to_zero(attn_weight)
    return attn_weight @ value


def sdpa_grouped_chunked(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    """GQA without materialising repeated K/V: q viewed as (B, Hkv, G, L, D); keys consumed in chunks of 40
    with an online softmax (running max / sum)."""
    B, Hq, L, E = query.shape
    Hkv, S, Ev = key.size(1), key.size(2), value.size(-1)
    group = Hq // Hkv if enable_gqa else 1
    if not enable_gqa:
        Hkv = Hq
    sm_scale = scale if scale is not None else E ** -0.5
    q = query.reshape(B, Hkv, group, L, E)
    k = key.reshape(B, Hkv, 1, S, E)
    v = value.reshape(B, Hkv, 1, S, Ev)
    bias = torch.zeros(B, Hq, L, S, dtype=query.dtype)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(~attn_mask.expand(B, Hq, L, S), float("-inf"))
        else:
            bias = bias + attn_mask.to(query.dtype).expand(B, Hq, L, S)
    if is_causal:
        i = torch.arange(L).unsqueeze(-1)
        j = torch.arange(S).unsqueeze(0)
        bias = bias.masked_fill(j > i, float("-inf"))
    bias = bias.reshape(B, Hkv, group, L, S)
    m_i = torch.full((B, Hkv, group, L, 1), float("-inf"), dtype=query.dtype)
    l_i = torch.zeros((B, Hkv, group, L, 1), dtype=query.dtype)
    acc = torch.zeros((B, Hkv, group, L, Ev), dtype=query.dtype)
    for start in range(0, S, 40):
        stop = min(start + 40, S)
        s = torch.matmul(q, k[..., start:stop, :].transpose(-1, -2)) * sm_scale + bias[..., start:stop]
        m_new = torch.maximum(m_i, s.amax(dim=-1, keepdim=True))
        m_use = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        alpha = torch.exp(m_i - m_use)
        p = torch.exp(s - m_use)
        l_i = l_i * alpha + p.sum(dim=-1, keepdim=True)
        acc = acc * alpha + torch.matmul(p, v[..., start:stop, :])
        m_i = m_new
    out = torch.where(l_i > 0, acc / torch.where(l_i > 0, l_i, torch.ones_like(l_i)), torch.zeros_like(acc))
    return out.reshape(B, Hq, L, Ev)


# ----------------------------------------------------------------------------------------------------------------
# broken kernels
# ----------------------------------------------------------------------------------------------------------------

def mlx_style_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   enable_gqa=False):
    """MLX fallback style: causal mask built from query/key offsets."""
    qL, kL = query.shape[-2], key.shape[-2]
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    if enable_gqa:
        n_rep = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(n_rep, dim=-3)
        value = value.repeat_interleave(n_rep, dim=-3)
    scores = (query * scale) @ key.transpose(-1, -2)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    if is_causal:
        offset = kL - qL
        q_idx = torch.arange(offset, offset + qL)
        k_idx = torch.arange(kL)
        # BUG: causal aligned bottom-right (query i sees keys <= i + Sk - Sq); SDPA's is_causal is top-left
        scores = scores.masked_fill(q_idx[:, None] < k_idx[None], float("-inf"))
    return _softmax_zero_dead_rows(scores) @ value


def diffusers_dispatch_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """diffusers attention-dispatch style: the mask goes straight into the kernel's additive `attn_bias` slot."""
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    if enable_gqa:
        key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
        value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
    attn_bias = attn_mask
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale
    if is_causal:
        causal = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    if attn_bias is not None:
        # BUG: a torch.bool mask is consumed as an additive 0/1 bias (kept keys get +1, masked keys +0)
        scores = scores + attn_bias.to(scores.dtype)
    return _softmax_zero_dead_rows(scores) @ value


def onnx_tile_gqa_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                       enable_gqa=False):
    """ONNX Attention-23 function-body style: KV heads broadcast to the query heads with Tile."""
    q_num_heads, kv_num_heads = query.shape[1], key.shape[1]
    scale = scale if scale is not None else 1.0 / math.sqrt(query.shape[-1])
    if enable_gqa and q_num_heads != kv_num_heads:
        interleave_dim = q_num_heads // kv_num_heads
        # BUG: Tile gives kv heads [0, 1, 0, 1, ...]; query head h must use kv head h // (Hq // Hkv)
        key = key.repeat(1, interleave_dim, 1, 1)
        value = value.repeat(1, interleave_dim, 1, 1)
    qk = torch.matmul(query * math.sqrt(scale), (key * math.sqrt(scale)).transpose(-1, -2))
    if is_causal:
        qk = qk.masked_fill(torch.ones_like(qk, dtype=torch.bool).tril().logical_not(), float("-inf"))
    if attn_mask is not None:
        qk = qk.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else qk + attn_mask
    return _softmax_zero_dead_rows(qk) @ value


def gemma_triton_flash_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """Wrapper around a Triton-style flash kernel launch that passes `scale=` explicitly."""
    B, H_Q, N, D = query.shape
    H_KV = key.shape[1]
    # BUG: the launch always passes 1/sqrt(D); the caller's explicit `scale` (e.g. Gemma's 1.0) is ignored
    sm_scale = 1.0 / math.sqrt(D)
    groups = H_Q // H_KV if enable_gqa else 1
    k = key.repeat_interleave(groups, dim=1)
    v = value.repeat_interleave(groups, dim=1)
    s = torch.einsum("bhqd,bhkd->bhqk", query, k) * sm_scale
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask
    if is_causal:
        s = s.masked_fill(torch.triu(torch.ones(N, k.shape[2], dtype=torch.bool), 1), float("-inf"))
    return torch.einsum("bhqk,bhkd->bhqd", _softmax_zero_dead_rows(s), v)


def vit_scaled_after_softmax_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                  enable_gqa=False):
    """ViT tutorial style: energy = q k^T, att = softmax(energy) ... * scaling."""
    scaling = query.size(-1) ** -0.5 if scale is None else scale
    if enable_gqa:
        key = key.repeat_interleave(query.size(1) // key.size(1), dim=1)
        value = value.repeat_interleave(query.size(1) // value.size(1), dim=1)
    energy = torch.einsum("bhqd,bhkd->bhqk", query, key)
    if attn_mask is not None:
        energy = energy.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool \
            else energy + attn_mask
    if is_causal:
        energy = energy.masked_fill(
            torch.ones(energy.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    # BUG: the scaling is applied to the probabilities after the softmax instead of to the logits before it
    att = _softmax_zero_dead_rows(energy) * scaling
    return torch.einsum("bhqk,bhkd->bhqd", att, value)


def mha_flattened_mask_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """nn.MultiheadAttention style core: batch and heads flattened to (B * H, L, S), 3D attn_mask."""
    bsz, num_heads, tgt_len, head_dim = query.shape
    src_len = key.shape[-2]
    if enable_gqa:
        key = key.repeat_interleave(num_heads // key.shape[1], dim=1)
        value = value.repeat_interleave(num_heads // value.shape[1], dim=1)
    q = query.reshape(bsz * num_heads, tgt_len, head_dim)
    k = key.reshape(bsz * num_heads, src_len, head_dim)
    v = value.reshape(bsz * num_heads, src_len, value.shape[-1])
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    mask3d = None
    if attn_mask is not None:
        m = attn_mask
        if m.dtype == torch.bool:
            m = torch.zeros(m.shape, dtype=query.dtype).masked_fill(~m, float("-inf"))
        while m.dim() < 4:
            m = m.unsqueeze(0)
        if m.shape[0] == bsz and m.shape[1] == 1 and bsz > 1:
            per_sample = m[:, 0].expand(bsz, tgt_len, src_len)
            # BUG: .repeat tiles samples [M0, M1, M0, M1]; the (B * H) layout needs repeat_interleave [M0, M0, M1, M1]
            mask3d = per_sample.repeat(num_heads, 1, 1)
        else:
            mask3d = m.expand(bsz, num_heads, tgt_len, src_len).reshape(bsz * num_heads, tgt_len, src_len)
    attn = torch.bmm(q * scale, k.transpose(1, 2))
    if mask3d is not None:
        attn = attn + mask3d
    if is_causal:
        attn = attn.masked_fill(torch.ones(tgt_len, src_len, dtype=torch.bool).triu(1), float("-inf"))
    out = torch.bmm(_softmax_zero_dead_rows(attn), v)
    return out.reshape(bsz, num_heads, tgt_len, -1)


def former_blog_causal_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """'Transformers from scratch' blog style: dot = q k^T, causal via triu_indices, softmax."""
    t, s = query.size(-2), key.size(-2)
    if enable_gqa:
        key = key.repeat_interleave(query.size(1) // key.size(1), dim=1)
        value = value.repeat_interleave(query.size(1) // value.size(1), dim=1)
    dot = torch.matmul(query, key.transpose(-2, -1))
    dot = dot * (1 / math.sqrt(query.size(-1)) if scale is None else scale)
    if attn_mask is not None:
        dot = dot.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else dot + attn_mask
    if is_causal:
        # BUG: offset=0 also masks the diagonal, so query i cannot attend to key i (and row 0 sees nothing)
        indices = torch.triu_indices(t, s, offset=0)
        dot[..., indices[0], indices[1]] = float("-inf")
    return _softmax_zero_dead_rows(dot) @ value


def ttnn_decode_bias_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                          enable_gqa=False):
    """tt-metal SDPA decode style: QK^T + mask accumulated first, one scale multiply fused before softmax."""
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if enable_gqa:
        key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
        value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
    qk = query @ key.transpose(-1, -2)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            qk = qk.masked_fill(~attn_mask, float("-inf"))
        else:
            qk = qk + attn_mask
    # BUG: scale multiplies (QK^T + mask), so an additive bias/ALiBi mask is attenuated by the scale
    qk = qk * scale
    if is_causal:
        qk = qk.masked_fill(torch.ones(qk.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    return _softmax_zero_dead_rows(qk) @ value


def ort_cpu_attention_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                           enable_gqa=False):
    """ONNX Runtime CPU Attention style: causal overlay only in the prompt (multi-token) phase."""
    q_sequence_length, kv_sequence_length = query.shape[-2], key.shape[-2]
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if enable_gqa:
        key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
        value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
    qk = torch.matmul(query, key.transpose(-1, -2)) * scale
    if attn_mask is not None:
        qk = qk.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else qk + attn_mask
    # BUG: causal is skipped for a single query (decode), but top-left causal lets query 0 see only key 0
    causal = is_causal and q_sequence_length > 1
    if causal:
        upper = torch.ones(q_sequence_length, kv_sequence_length, dtype=torch.bool).triu(1)
        qk = qk.masked_fill(upper, float("-inf"))
    return _softmax_zero_dead_rows(qk) @ value


_F = ["mask", "causal", "alibi", "gqa", "dv-ne-d"]

CATALOG = [
    dict(name="sdpa-math-reference", api="torch-sdpa", fn="sdpa_math_reference", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=list(_F)),
    dict(name="sdpa-grouped-chunked", api="torch-sdpa", fn="sdpa_grouped_chunked", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=list(_F)),
    dict(name="sdpa-causal-bottom-right", api="torch-sdpa", fn="mlx_style_sdpa", correct=False,
         bug="causal-alignment-bottom-right", parameter="is_causal diagonal alignment (bottom-right vs top-left)",
         source="ml-explore/mlx#2835", report="https://github.com/ml-explore/mlx/issues/2835",
         dtype="float64", features=list(_F)),
    dict(name="sdpa-bool-mask-as-additive", api="torch-sdpa", fn="diffusers_dispatch_sdpa", correct=False,
         bug="bool-mask-added-as-bias", parameter="bool attn_mask kind (added as 0/1 instead of 0/-inf)",
         source="huggingface/diffusers#14342", report="https://github.com/huggingface/diffusers/issues/14342",
         dtype="float64", features=list(_F)),
    dict(name="sdpa-gqa-tile", api="torch-sdpa", fn="onnx_tile_gqa_sdpa", correct=False,
         bug="gqa-head-mapping-tile", parameter="GQA kv-head mapping (h % Hkv instead of h // group)",
         source="onnx/onnx#7274", report="https://github.com/onnx/onnx/pull/7274",
         dtype="float64", features=list(_F)),
    dict(name="sdpa-explicit-scale-ignored", api="torch-sdpa", fn="gemma_triton_flash_sdpa", correct=False,
         bug="explicit-scale-ignored", parameter="explicit scale argument (always 1/sqrt(D))",
         source="zzhhjjj/gemma-triton-flash-attn#6",
         report="https://github.com/zzhhjjj/gemma-triton-flash-attn/issues/6",
         dtype="float64", features=list(_F)),
    dict(name="sdpa-scale-after-softmax", api="torch-sdpa", fn="vit_scaled_after_softmax_sdpa", correct=False,
         bug="scale-after-softmax", parameter="softmax scale position (applied to probabilities after softmax)",
         source="FrancescoSaverioZuppichini/ViT#2", report="https://github.com/FrancescoSaverioZuppichini/ViT/issues/2",
         dtype="float64", features=list(_F)),
    dict(name="sdpa-mask-batch-head-tiling", api="torch-sdpa", fn="mha_flattened_mask_sdpa", correct=False,
         bug="mask-repeat-vs-repeat-interleave", parameter="per-sample mask layout over (B * H) (tiled by batch)",
         source="line/lighthouse#77", report="https://github.com/line/lighthouse/pull/77",
         dtype="float64", features=list(_F)),
    dict(name="sdpa-causal-excludes-diagonal", api="torch-sdpa", fn="former_blog_causal_sdpa", correct=False,
         bug="causal-diagonal-off-by-one", parameter="causal mask offset (diagonal masked too)",
         source="pbloem/former#10", report="https://github.com/pbloem/former/issues/10",
         dtype="float64", features=list(_F)),
    dict(name="sdpa-additive-mask-scaled", api="torch-sdpa", fn="ttnn_decode_bias_sdpa", correct=False,
         bug="additive-mask-scaled", parameter="additive mask scaling (multiplied by the softmax scale)",
         source="tenstorrent/tt-metal#56406", report="https://github.com/tenstorrent/tt-metal/pull/56406",
         dtype="float64", features=list(_F)),
    dict(name="sdpa-causal-skipped-decode", api="torch-sdpa", fn="ort_cpu_attention_sdpa", correct=False,
         bug="causal-skipped-single-query", parameter="is_causal with Sq = 1 (mask skipped in decode)",
         source="microsoft/onnxruntime#28904", report="https://github.com/microsoft/onnxruntime/issues/28904",
         dtype="float64", features=list(_F)),
]
