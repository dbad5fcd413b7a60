"""Held-out attention kernels, API `torch-sdpa`: the semantics of torch.nn.functional.scaled_dot_product_attention.

fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False) on (B, H, S, D)
torch tensors; bool attn_mask (True = attend) or additive float; is_causal top-left; enable_gqa: query head h uses
kv head h // (Hq // Hkv); fully masked rows give zeros; dropout_p is always 0. See README.md.
"""
import math

import torch


def _as_bias(attn_mask, dtype):
    """Bool keep-mask -> 0/-inf additive bias; float masks pass through."""
    if attn_mask is None:
        return None
    if attn_mask.dtype == torch.bool:
        return torch.zeros(attn_mask.shape, dtype=dtype).masked_fill(~attn_mask, float("-inf"))
    return attn_mask.to(dtype)


def _safe_softmax_pv(scores, value):
    """softmax(scores) @ value with rows of -inf giving zeros."""
    m = scores.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(scores - m)
    denom = p.sum(dim=-1, keepdim=True)
    out = torch.matmul(p, value)
    return torch.where(denom > 0, out / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(out))


# --- kernel: sdpa_kv_head_order_transposed ---
def sdpa_kv_head_order_transposed(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                  enable_gqa=False):
    """Weight-layout converter style GQA: builds a query-head -> kv-head table, then runs plain attention."""
    L, S = query.size(-2), key.size(-2)
    scale_factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    if enable_gqa and key.size(-3) != query.size(-3):
        n_head, n_head_kv = query.size(-3), key.size(-3)
        kv_of_head = torch.arange(n_head) % n_head_kv  # BUG: (g * n_head_kv + h) ordering; should be arange // group
        key = key.index_select(-3, kv_of_head)
        value = value.index_select(-3, kv_of_head)
    attn = torch.matmul(query, key.transpose(-2, -1)) * scale_factor
    if is_causal:
        attn = attn.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
    bias = _as_bias(attn_mask, attn.dtype)
    if bias is not None:
        attn = attn + bias
    return _safe_softmax_pv(attn, value).to(query.dtype)


# --- kernel: sdpa_causal_past_aligned ---
def sdpa_causal_past_aligned(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                             enable_gqa=False):
    """CPU-EP style: the causal mask is built with an offset for the keys that precede the query block."""
    L, S = query.size(-2), key.size(-2)
    scale_factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    if enable_gqa:
        group = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(group, dim=-3)
        value = value.repeat_interleave(group, dim=-3)
    attn_bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        past_len = S - L
        keep = torch.ones(L, S, dtype=torch.bool).tril(diagonal=past_len)  # BUG: bottom-right; is_causal is top-left
        attn_bias = attn_bias.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        attn_bias = attn_bias + _as_bias(attn_mask, query.dtype)
    attn = torch.matmul(query, key.transpose(-2, -1)) * scale_factor + attn_bias
    return _safe_softmax_pv(attn, value).to(query.dtype)


# --- kernel: sdpa_masked_fallback_unscaled ---
def _attention_sequence_prefill(q, k, v, bias, sm_scale=1.0):
    s = torch.matmul(q, k.transpose(-2, -1)) * sm_scale
    if bias is not None:
        s = s + bias
    return _safe_softmax_pv(s, v)


def sdpa_masked_fallback_unscaled(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                  enable_gqa=False):
    """op_ext style dispatch: a fused path without a mask, a generic prefill fallback with one."""
    L, S = query.size(-2), key.size(-2)
    sm_scale = query.size(-1) ** -0.5 if scale is None else scale
    if enable_gqa:
        group = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(group, dim=-3)
        value = value.repeat_interleave(group, dim=-3)
    bias = None
    if is_causal:
        bias = torch.zeros(L, S, dtype=query.dtype).masked_fill(
            ~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
    if attn_mask is None:
        return _attention_sequence_prefill(query, key, value, bias, sm_scale=sm_scale).to(query.dtype)
    mask_bias = _as_bias(attn_mask, query.dtype)
    bias = mask_bias if bias is None else bias + mask_bias
    return _attention_sequence_prefill(query, key, value, bias).to(query.dtype)  # BUG: fallback gets sm_scale=1.0


# --- kernel: sdpa_blockwise_unguarded_max ---
def sdpa_blockwise_unguarded_max(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """Triton-SDPA style online softmax over key blocks of 32 with a bias tile per block."""
    BLOCK_N = 32
    L, S = query.size(-2), key.size(-2)
    sm_scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    if enable_gqa:
        group = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(group, dim=-3)
        value = value.repeat_interleave(group, dim=-3)
    bias = _as_bias(attn_mask, query.dtype)
    if is_causal:
        causal = torch.zeros(L, S, dtype=query.dtype).masked_fill(
            ~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
        bias = causal if bias is None else bias + causal
    shape = torch.broadcast_shapes(query.shape[:-1], key.shape[:-2] + (1,))
    m_i = torch.full(shape, float("-inf"), dtype=query.dtype)
    l_i = torch.zeros(shape, dtype=query.dtype)
    acc = torch.zeros(shape + (value.size(-1),), dtype=query.dtype)
    for start_n in range(0, S, BLOCK_N):
        end_n = min(start_n + BLOCK_N, S)
        qk = torch.matmul(query, key[..., start_n:end_n, :].transpose(-2, -1)) * sm_scale
        if bias is not None:
            qk = qk + bias.expand(bias.shape[:-2] + (L, S))[..., start_n:end_n]
        m_ij = torch.maximum(m_i, qk.amax(dim=-1))
        m_safe = torch.where(m_ij == float("-inf"), torch.zeros_like(m_ij), m_ij)
        alpha = torch.exp(m_i - m_safe)
        p = torch.exp(qk - m_ij[..., None])  # BUG: unguarded: an all-masked block gives -inf - (-inf) = NaN
        l_i = l_i * alpha + p.sum(dim=-1)
        acc = acc * alpha[..., None] + torch.matmul(p, value[..., start_n:end_n, :])
        m_i = m_ij
    out = torch.where(l_i[..., None] > 0, acc / torch.where(l_i > 0, l_i, torch.ones_like(l_i))[..., None],
                      torch.zeros_like(acc))
    return out.to(query.dtype)


# --- kernel: sdpa_probs_bf16_after_rowsum ---
def sdpa_probs_bf16_after_rowsum(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """Low-precision PV path: P is narrowed for the second matmul, the normaliser is summed before."""
    L, S = query.size(-2), key.size(-2)
    scale_factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    if enable_gqa:
        group = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(group, dim=-3)
        value = value.repeat_interleave(group, dim=-3)
    s = torch.matmul(query, key.transpose(-2, -1)) * scale_factor
    if is_causal:
        s = s.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
    bias = _as_bias(attn_mask, s.dtype)
    if bias is not None:
        s = s + bias
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    l_row = p.sum(dim=-1, keepdim=True)
    p = p.to(torch.bfloat16).to(value.dtype)  # BUG: P rounded to bf16 for the PV matmul after l_row was summed
    out = torch.matmul(p, value)
    out = torch.where(l_row > 0, out / torch.where(l_row > 0, l_row, torch.ones_like(l_row)), torch.zeros_like(out))
    return out.to(query.dtype)


# --- kernel: sdpa_lowering_scale_from_value ---
def sdpa_lowering_scale_from_value(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                   enable_gqa=False):
    """Decomposition used by a lowering pass: the result type (and default scale) derived from value's head dim."""
    L, S = query.size(-2), key.size(-2)
    E_v = value.size(-1)
    scale_factor = 1 / math.sqrt(E_v) if scale is None else scale  # BUG: default scale from the value head dim
    if enable_gqa:
        group = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(group, dim=-3)
        value = value.repeat_interleave(group, dim=-3)
    attn_bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        attn_bias = attn_bias.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
    if attn_mask is not None:
        attn_bias = attn_bias + _as_bias(attn_mask, query.dtype)
    attn_weight = torch.matmul(query, key.transpose(-2, -1)) * scale_factor + attn_bias
    return _safe_softmax_pv(attn_weight, value).to(query.dtype)


# --- kernel: sdpa_grouped_view ---
def sdpa_grouped_view(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                      enable_gqa=False):
    """Correct: GQA without expanding K/V: queries viewed as (B, Hkv, G, L, E) against (B, Hkv, 1, S, E)."""
    B, Hq, L, E = query.shape
    Hkv, S = key.size(-3), key.size(-2)
    G = Hq // Hkv if enable_gqa else 1
    scale_factor = 1 / math.sqrt(E) if scale is None else scale
    q5 = query.reshape(B, Hq // G, G, L, E)
    k5 = key.reshape(key.size(0), key.size(1), 1, S, E)
    v5 = value.reshape(value.size(0), value.size(1), 1, S, value.size(-1))
    s = torch.matmul(q5, k5.transpose(-2, -1)) * scale_factor
    if is_causal:
        s = s.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
    if attn_mask is not None:
        bias = _as_bias(attn_mask, s.dtype)
        while bias.dim() < 4:
            bias = bias.unsqueeze(0)
        bias = bias.expand(bias.size(0), Hq, L, S).reshape(bias.size(0), Hq // G, G, L, S)
        s = s + bias
    out = _safe_softmax_pv(s, v5)
    return out.reshape(B, Hq, L, value.size(-1)).to(query.dtype)


# --- kernel: sdpa_online_exp2_guarded ---
def sdpa_online_exp2_guarded(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                             enable_gqa=False):
    """Correct: online softmax over key blocks of 24 in base 2, with guards for blocks that are fully masked."""
    L, S = query.size(-2), key.size(-2)
    sm_scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    log2e = 1.4426950408889634
    if enable_gqa:
        group = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(group, dim=-3)
        value = value.repeat_interleave(group, dim=-3)
    bias = _as_bias(attn_mask, query.dtype)
    if is_causal:
        causal = torch.zeros(L, S, dtype=query.dtype).masked_fill(
            ~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
        bias = causal if bias is None else bias + causal
    shape = torch.broadcast_shapes(query.shape[:-1], key.shape[:-2] + (1,))
    m_i = torch.full(shape, float("-inf"), dtype=query.dtype)
    l_i = torch.zeros(shape, dtype=query.dtype)
    acc = torch.zeros(shape + (value.size(-1),), dtype=query.dtype)
    qs = query * (sm_scale * log2e)
    for start in range(0, S, 24):
        end = min(start + 24, S)
        t = torch.matmul(qs, key[..., start:end, :].transpose(-2, -1))
        if bias is not None:
            t = t + bias.expand(bias.shape[:-2] + (L, S))[..., start:end] * log2e
        m_new = torch.maximum(m_i, t.amax(dim=-1))
        m_safe = torch.where(m_new == float("-inf"), torch.zeros_like(m_new), m_new)
        alpha = torch.exp2(m_i - m_safe)
        p = torch.exp2(t - m_safe[..., None])
        l_i = l_i * alpha + p.sum(dim=-1)
        acc = acc * alpha[..., None] + torch.matmul(p, value[..., start:end, :])
        m_i = m_new
    out = torch.where(l_i[..., None] > 0, acc / torch.where(l_i > 0, l_i, torch.ones_like(l_i))[..., None],
                      torch.zeros_like(acc))
    return out.to(query.dtype)


# --- kernel: sdpa_decode_fastpath ---
def sdpa_decode_fastpath(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    """Correct: a decode fast path for L == 1 (dot products by broadcasting, no matmul), matmul path otherwise."""
    L, S = query.size(-2), key.size(-2)
    scale_factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    if enable_gqa:
        group = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(group, dim=-3)
        value = value.repeat_interleave(group, dim=-3)
    if L == 1:
        s = (query * key).sum(dim=-1).unsqueeze(-2) * scale_factor
    else:
        s = torch.matmul(query, key.transpose(-2, -1)) * scale_factor
    if is_causal:
        s = s.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
    bias = _as_bias(attn_mask, s.dtype)
    if bias is not None:
        s = s + bias
    live = torch.isfinite(s.amax(dim=-1, keepdim=True))
    p = torch.softmax(torch.where(live, s, torch.zeros_like(s)), dim=-1) * live
    if L == 1:
        out = (p.transpose(-2, -1) * value).sum(dim=-2, keepdim=True)
    else:
        out = torch.matmul(p, value)
    return out.to(query.dtype)


CATALOG = [
    dict(name="sdpa-nntile-kv-head-order", api="torch-sdpa", fn="sdpa_kv_head_order_transposed", correct=False,
         bug="gqa-kv-head-modulo",
         parameter="query head h reads kv head h % Hkv (the (g * n_head_kv + h) ordering) instead of h // (Hq // Hkv). "
                   "Triggers: enable_gqa with Hkv > 1 and Hq > Hkv (MQA and Hq == Hkv are unaffected)",
         source="nntile/nntile#347", report="https://github.com/nntile/nntile/pull/347",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-ort-causal-bottom-right", api="torch-sdpa", fn="sdpa_causal_past_aligned", correct=False,
         bug="causal-alignment-bottom-right",
         parameter="is_causal built as tril(diagonal=S - L) (bottom-right, past-aware) instead of SDPA's top-left "
                   "j <= i. Triggers: is_causal=True with Sq != Sk",
         source="microsoft/onnxruntime#29020", report="https://github.com/microsoft/onnxruntime/issues/29020",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-mlc-fallback-unscaled", api="torch-sdpa", fn="sdpa_masked_fallback_unscaled", correct=False,
         bug="fallback-path-drops-scale",
         parameter="the fallback taken when attn_mask is given calls the prefill helper without sm_scale (default "
                   "1.0): scores are not scaled. Triggers: any attn_mask (bool or float) with scale != 1",
         source="mlc-ai/mlc-llm#3426", report="https://github.com/mlc-ai/mlc-llm/pull/3426",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-executorch-masked-block-nan", api="torch-sdpa", fn="sdpa_blockwise_unguarded_max",
         correct=False, bug="online-softmax-masked-block-nan",
         parameter="in the online softmax over key blocks of 32, p = exp(qk - m_ij) is not guarded: a row whose "
                   "first visited block is fully masked gets -inf - (-inf) = NaN, which stays in l and acc. "
                   "Triggers: a row with kept keys whose first 32 keys are all masked (band / sliding-window or "
                   "left-padding masks with Sk > 32)",
         source="pytorch/executorch#17832", report="https://github.com/pytorch/executorch/pull/17832",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-flydsl-probs-bf16", api="torch-sdpa", fn="sdpa_probs_bf16_after_rowsum", correct=False,
         bug="probs-narrowed-after-rowsum",
         parameter="P rounded to bfloat16 for the PV matmul while the normaliser l_row was summed in full "
                   "precision before the cast: weights carry ~4e-3 rounding and rows no longer sum to one. "
                   "Triggers: always at float32 resolution",
         source="ROCm/FlyDSL#1020", report="https://github.com/ROCm/FlyDSL/pull/1020",
         dtype="float32", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-coreai-scale-from-value-dim", api="torch-sdpa", fn="sdpa_lowering_scale_from_value",
         correct=False, bug="default-scale-from-value-head-dim",
         parameter="default scale 1/sqrt(Dv) taken from value's head dim instead of 1/sqrt(D). "
                   "Triggers: scale=None and Dv != D",
         source="apple/coreai-torch#117", report="https://github.com/apple/coreai-torch/pull/117",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-grouped-view", api="torch-sdpa", fn="sdpa_grouped_view", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64",
         features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-online-exp2-guarded", api="torch-sdpa", fn="sdpa_online_exp2_guarded", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64",
         features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-decode-fastpath", api="torch-sdpa", fn="sdpa_decode_fastpath", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64",
         features=["mask", "causal", "gqa", "dv-ne-d"]),
]
