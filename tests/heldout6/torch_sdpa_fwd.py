"""Held-out attention kernels for the `torch-sdpa` API (torch 1.13 has no F.scaled_dot_product_attention).

fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False) on
(B, H, S, D) tensors. attn_mask is bool (True = attend) or additive float; is_causal is top-left aligned;
enable_gqa maps query head h to kv head h // (Hq // Hkv); fully masked rows give zeros.
"""
import math

import torch


def _expand_kv(key, value, hq, enable_gqa):
    hkv = key.size(-3)
    if enable_gqa and hkv != hq:
        rep = hq // hkv
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    return key, value


def _top_left_causal(sq, sk, device):
    return torch.ones(sq, sk, dtype=torch.bool, device=device).tril(diagonal=0)


# ---------------------------------------------------------------------------------------------------------
# transformers eager_attention_forward style (huggingface/transformers#41443)
def eager_attention_forward(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    scaling = query.size(-1) ** -0.5 if scale is None else scale
    key_states, value_states = _expand_kv(key, value, query.size(-3), enable_gqa)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    sq, sk = query.size(-2), key.size(-2)
    if is_causal:
        causal = _top_left_causal(sq, sk, query.device)
        attn_weights = attn_weights.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        # BUG: a bool mask is added as 0/1 like an additive float mask instead of masking False with -inf
        attn_weights = attn_weights + attn_mask.to(attn_weights.dtype)
    alive = torch.isfinite(attn_weights.amax(dim=-1, keepdim=True))
    attn_weights = torch.where(alive, attn_weights, torch.zeros_like(attn_weights))
    attn_weights = torch.softmax(attn_weights, dim=-1) * alive
    attn_output = torch.matmul(attn_weights, value_states)
    return attn_output.to(query.dtype)


# ---------------------------------------------------------------------------------------------------------
# PyTorch math reference path (pytorch/pytorch#103963)
def sdpa_math(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    L, S = query.size(-2), key.size(-2)
    scale_factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    attn_bias = torch.zeros(L, S, dtype=query.dtype, device=query.device)
    if is_causal:
        temp_mask = _top_left_causal(L, S, query.device)
        attn_bias = attn_bias.masked_fill(temp_mask.logical_not(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_bias = attn_bias.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            attn_bias = attn_bias + attn_mask
    key, value = _expand_kv(key, value, query.size(-3), enable_gqa)
    attn_weight = query @ key.transpose(-2, -1) * scale_factor
    attn_weight = attn_weight + attn_bias
    # BUG: plain softmax of an all -inf row is 0/0 = NaN; fully masked rows are not turned into zeros
    attn_weight = torch.softmax(attn_weight, dim=-1)
    return attn_weight @ value


# ---------------------------------------------------------------------------------------------------------
# ONNX Attention function-body style GQA (onnx/onnx#7274)
def onnx_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   enable_gqa=False):
    q_heads, kv_heads = query.size(1), key.size(1)
    if enable_gqa and q_heads != kv_heads:
        interleave_dim = q_heads // kv_heads
        # BUG: Tile gives [h0, h1, h0, h1, ...]; query head h must use kv head h // group (repeat_interleave)
        key = key.repeat(1, interleave_dim, 1, 1)
        value = value.repeat(1, interleave_dim, 1, 1)
    scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    qk = torch.matmul(query, key.transpose(-1, -2)) * scale
    keep = torch.ones_like(qk, dtype=torch.bool)
    if is_causal:
        keep = keep & _top_left_causal(query.size(-2), key.size(-2), query.device)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            keep = keep & attn_mask
        else:
            qk = qk + attn_mask
    qk = qk.masked_fill(~keep, float("-inf"))
    m = qk.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(qk - m)
    denom = e.sum(dim=-1, keepdim=True)
    probs = e / torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.matmul(probs, value)


# ---------------------------------------------------------------------------------------------------------
# MLX fast.scaled_dot_product_attention fallback style causal mask (ml-explore/mlx#2835)
def mlx_style_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   enable_gqa=False):
    qL, kL = query.shape[-2], key.shape[-2]
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    k, v = _expand_kv(key, value, query.shape[-3], enable_gqa)
    scores = (query * scale) @ k.transpose(-1, -2)
    if is_causal:
        # BUG: bottom-right aligned (key j <= i + kL - qL); torch's is_causal is top-left (j <= i)
        q_idx = torch.arange(qL, device=query.device)[:, None] + (kL - qL)
        k_idx = torch.arange(kL, device=query.device)[None, :]
        scores = scores.masked_fill(q_idx < k_idx, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    row_ok = torch.isfinite(scores.amax(dim=-1, keepdim=True))
    scores = torch.where(row_ok, scores, torch.zeros_like(scores))
    w = torch.softmax(scores, dim=-1) * row_ok
    return w @ v


# ---------------------------------------------------------------------------------------------------------
# from-scratch causal attention (nerdai/llms-from-scratch-rs#30)
def scratch_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                      enable_gqa=False):
    keys, values = _expand_kv(key, value, query.size(1), enable_gqa)
    d_k = keys.shape[-1]
    attn_scores = query @ keys.transpose(-2, -1)
    attn_scores = attn_scores * (scale if scale is not None else d_k ** -0.5)
    sq, sk = query.size(-2), keys.size(-2)
    if is_causal:
        attn_scores = attn_scores.masked_fill(~_top_left_causal(sq, sk, query.device), -torch.inf)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_scores = attn_scores.masked_fill(~attn_mask, -torch.inf)
        else:
            attn_scores = attn_scores + attn_mask
    dead = torch.isneginf(attn_scores).all(dim=-1, keepdim=True)
    attn_scores = attn_scores.masked_fill(dead, 0.0)
    # BUG: softmax normalises over the query axis (dim=-2) instead of the key axis (dim=-1)
    attn_weights = torch.softmax(attn_scores, dim=-2)
    attn_weights = attn_weights.masked_fill(dead, 0.0)
    return attn_weights @ values


# ---------------------------------------------------------------------------------------------------------
# segment-anything-fast Triton flash kernel port: exp2 with log2-scaled scores (meta-pytorch/segment-anything-fast#71)
def sam_fast_flash(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   enable_gqa=False):
    LOG2E = 1.4426950408889634
    BLOCK_N = 32
    sm_scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    k, v = _expand_kv(key, value, query.size(-3), enable_gqa)
    B, H, M, _ = query.shape
    N, Dv = k.size(-2), v.size(-1)
    bias = torch.zeros(B, H, M, N, dtype=torch.float64, device=query.device)
    if is_causal:
        bias = bias.masked_fill(~_top_left_causal(M, N, query.device), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(~attn_mask, float("-inf"))
        else:
            bias = bias + attn_mask.to(torch.float64)
    qk_scale = sm_scale * LOG2E
    q = query.to(torch.float64)
    m_i = torch.full((B, H, M, 1), float("-inf"), dtype=torch.float64)
    l_i = torch.zeros(B, H, M, 1, dtype=torch.float64)
    acc = torch.zeros(B, H, M, Dv, dtype=torch.float64)
    for start_n in range(0, N, BLOCK_N):
        end_n = min(N, start_n + BLOCK_N)
        qk = q @ k[..., start_n:end_n, :].to(torch.float64).transpose(-1, -2) * qk_scale
        # BUG: the bias is added in natural-log units to log2-scaled scores (missing * LOG2E)
        qk = qk + bias[..., start_n:end_n]
        m_ij = torch.maximum(m_i, qk.amax(dim=-1, keepdim=True))
        m_use = torch.where(torch.isfinite(m_ij), m_ij, torch.zeros_like(m_ij))
        alpha = torch.where(torch.isfinite(m_i), torch.exp2(m_i - m_use), torch.zeros_like(m_i))
        p = torch.exp2(qk - m_use)
        l_i = l_i * alpha + p.sum(dim=-1, keepdim=True)
        acc = acc * alpha + p @ v[..., start_n:end_n, :].to(torch.float64)
        m_i = m_ij
    out = acc / torch.where(l_i > 0, l_i, torch.ones_like(l_i))
    return out.to(query.dtype)


# ---------------------------------------------------------------------------------------------------------
# tsai ScaledDotProductAttention style (timeseriesAI/tsai#171)
def tsai_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    k, v = _expand_kv(key, value, query.size(1), enable_gqa)
    scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    attn_scores = torch.matmul(query, k.permute(0, 1, 3, 2)) * scale
    if is_causal:
        attn_scores.masked_fill_(~_top_left_causal(query.size(-2), k.size(-2), query.device), -float("inf"))
    # BUG: only a bool attn_mask is applied; a float (additive) mask is silently ignored
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_scores = attn_scores.masked_fill(~attn_mask, -float("inf"))
    live = ~torch.isneginf(attn_scores).all(dim=-1, keepdim=True)
    attn_scores = attn_scores.masked_fill(~live, 0.0)
    attn_weights = torch.softmax(attn_scores, dim=-1) * live
    return torch.matmul(attn_weights, v)


# ---------------------------------------------------------------------------------------------------------
# Megatron-style "fp32 softmax" (NVIDIA/Megatron-LM#6400)
def megatron_core_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    k, v = _expand_kv(key, value, query.size(1), enable_gqa)
    softmax_scale = scale if scale is not None else 1.0 / math.sqrt(query.size(-1))
    scores = torch.matmul(query, k.transpose(-2, -1)) * softmax_scale
    keep = torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    if is_causal:
        keep = keep & _top_left_causal(query.size(-2), k.size(-2), query.device)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            keep = keep & attn_mask
        else:
            scores = scores + attn_mask
    scores = scores.masked_fill(~keep, float("-inf"))
    has_key = torch.isfinite(scores.amax(dim=-1, keepdim=True))
    scores = scores.masked_fill(~has_key, 0.0)
    # BUG: softmax pinned to float32 then cast back, so float64 probabilities lose precision
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
    probs = probs * has_key
    return torch.matmul(probs, v)


# ---------------------------------------------------------------------------------------------------------
# MaxText MLA-style softmax_scale (AI-Hypercomputer/maxtext#1370)
def maxtext_dot_product(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                        enable_gqa=False):
    k, v = _expand_kv(key, value, query.size(1), enable_gqa)
    if scale is None:
        # BUG: default softmax_scale exponent reversed: head_dim ** 0.5 instead of head_dim ** -0.5
        scale = query.size(-1) ** 0.5
    logits = torch.einsum("bhqd,bhkd->bhqk", query, k) * scale
    if is_causal:
        logits = logits.masked_fill(~_top_left_causal(query.size(-2), k.size(-2), query.device), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        else:
            logits = logits + attn_mask
    mx = logits.amax(dim=-1, keepdim=True)
    ok = torch.isfinite(mx)
    e = torch.exp(logits - torch.where(ok, mx, torch.zeros_like(mx)))
    s = e.sum(dim=-1, keepdim=True)
    w = e / torch.where(s > 0, s, torch.ones_like(s))
    return torch.einsum("bhqk,bhkd->bhqd", w, v)


# ---------------------------------------------------------------------------------------------------------
# correct: math path with safe softmax (torch's own semantics)
def sdpa_safe_softmax(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                      enable_gqa=False):
    L, S = query.size(-2), key.size(-2)
    scale_factor = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    key, value = _expand_kv(key, value, query.size(-3), enable_gqa)
    attn = torch.matmul(query, key.transpose(-2, -1)) * scale_factor
    if is_causal:
        attn = attn.masked_fill(~_top_left_causal(L, S, query.device), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn = attn.masked_fill(~attn_mask, float("-inf"))
        else:
            attn = attn + attn_mask
    row_max = attn.amax(dim=-1, keepdim=True)
    finite = torch.isfinite(row_max)
    attn = torch.exp(attn - torch.where(finite, row_max, torch.zeros_like(row_max)))
    denom = attn.sum(dim=-1, keepdim=True)
    attn = torch.where(denom > 0, attn / torch.where(denom > 0, denom, torch.ones_like(denom)),
                       torch.zeros_like(attn))
    return torch.matmul(attn, value).to(query.dtype)


# ---------------------------------------------------------------------------------------------------------
# correct: Triton-tutorial flash forward with exp2 (bias also scaled by log2(e)), grouped over kv heads
def flash_exp2_grouped(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                       enable_gqa=False):
    LOG2E = 1.4426950408889634
    BLOCK_N = 48
    B, Hq, M, D = query.shape
    Hkv, N, Dv = key.size(1), key.size(2), value.size(-1)
    group = Hq // Hkv if enable_gqa else 1
    sm_scale = 1.0 / math.sqrt(D) if scale is None else scale
    bias = torch.zeros(B, Hq, M, N, dtype=torch.float64)
    if is_causal:
        bias = bias.masked_fill(~_top_left_causal(M, N, query.device), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(~attn_mask, float("-inf"))
        else:
            bias = bias + attn_mask.to(torch.float64)
    out = torch.empty(B, Hq, M, Dv, dtype=torch.float64)
    for h in range(Hq):
        hk = h // group
        q = query[:, h].to(torch.float64) * (sm_scale * LOG2E)
        k = key[:, hk].to(torch.float64)
        v = value[:, hk].to(torch.float64)
        m_i = torch.full((B, M, 1), float("-inf"), dtype=torch.float64)
        l_i = torch.zeros(B, M, 1, dtype=torch.float64)
        acc = torch.zeros(B, M, Dv, dtype=torch.float64)
        for n0 in range(0, N, BLOCK_N):
            n1 = min(N, n0 + BLOCK_N)
            qk = q @ k[:, n0:n1].transpose(-1, -2) + bias[:, h, :, n0:n1] * LOG2E
            m_new = torch.maximum(m_i, qk.amax(dim=-1, keepdim=True))
            m_ref = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
            alpha = torch.where(torch.isfinite(m_i), torch.exp2(m_i - m_ref), torch.zeros_like(m_i))
            p = torch.exp2(qk - m_ref)
            l_i = l_i * alpha + p.sum(dim=-1, keepdim=True)
            acc = acc * alpha + p @ v[:, n0:n1]
            m_i = m_new
        out[:, h] = torch.where(l_i > 0, acc / torch.where(l_i > 0, l_i, torch.ones_like(l_i)),
                                torch.zeros_like(acc))
    return out.to(query.dtype)


def _entry(name, fn, bug=None, parameter=None, source=None, kind="issues", dtype="float64"):
    report = None
    if source is not None:
        repo, num = source.split("#")
        report = "https://github.com/{}/{}/{}".format(repo, kind, num)
    return {
        "name": name,
        "api": "torch-sdpa",
        "fn": fn,
        "correct": bug is None,
        "bug": bug,
        "parameter": parameter,
        "source": source,
        "report": report,
        "dtype": dtype,
        "features": ["mask", "causal", "alibi", "gqa", "dv-ne-d"],
    }


CATALOG = [
    _entry("sdpa-hf-bool-mask-added", "eager_attention_forward", "bool-mask-added-as-float",
           "boolean attn_mask added to the scores as 0/1 instead of masking False with -inf",
           "huggingface/transformers#41443", "pull"),
    _entry("sdpa-math-dead-row-nan", "sdpa_math", "fully-masked-row-nan",
           "fully masked rows go through a plain softmax and come out NaN instead of zeros",
           "pytorch/pytorch#103963"),
    _entry("sdpa-onnx-gqa-tile", "onnx_attention", "gqa-kv-heads-tiled",
           "GQA kv heads expanded with tile (h % Hkv) instead of repeat_interleave (h // group)",
           "onnx/onnx#7274", "pull"),
    _entry("sdpa-mlx-causal-bottom-right", "mlx_style_sdpa", "causal-bottom-right-aligned",
           "is_causal diagonal offset kL - qL (bottom-right) instead of top-left",
           "ml-explore/mlx#2835"),
    _entry("sdpa-scratch-softmax-dim", "scratch_attention", "softmax-over-query-axis",
           "softmax taken over dim=-2 (queries) instead of dim=-1 (keys)",
           "nerdai/llms-from-scratch-rs#30", "pull"),
    _entry("sdpa-samfast-bias-log2", "sam_fast_flash", "additive-bias-not-log2-scaled",
           "additive attn_mask added to log2-scaled scores without multiplying by log2(e)",
           "meta-pytorch/segment-anything-fast#71", "pull"),
    _entry("sdpa-tsai-float-mask-ignored", "tsai_sdpa", "float-mask-ignored",
           "additive (float) attn_mask never applied; only bool masks are honoured",
           "timeseriesAI/tsai#171"),
    _entry("sdpa-megatron-fp32-softmax", "megatron_core_attention", "softmax-forced-float32",
           "softmax computed in float32 and cast back, losing float64 precision",
           "NVIDIA/Megatron-LM#6400", "pull"),
    _entry("sdpa-maxtext-reversed-scale", "maxtext_dot_product", "softmax-scale-exponent-reversed",
           "default scale head_dim ** 0.5 instead of head_dim ** -0.5",
           "AI-Hypercomputer/maxtext#1370"),
    _entry("sdpa-safe-softmax", "sdpa_safe_softmax"),
    _entry("sdpa-flash-exp2-grouped", "flash_exp2_grouped"),
]
