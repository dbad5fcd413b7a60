"""Held-out attention kernels, API `torch-sdpa`.

fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False) with the
semantics of torch.nn.functional.scaled_dot_product_attention on (B, H, S, D) tensors, written with
matmul/softmax (torch 1.13). attn_mask is bool (True = attend) or additive float; is_causal is top-left
(key j visible to query i iff j <= i); enable_gqa maps query head h to kv head h // (Hq // Hkv); fully
masked rows give zeros; dropout_p is always 0. Returns (B, Hq, Sq, Dv) in the input dtype.

Each broken kernel carries exactly one BUG comment, on the line holding its mistake; see CATALOG.
"""
import math

import torch

LOG2E = 1.4426950408889634


def _bias(attn_mask, dtype, shape, is_causal):
    """Additive bias of `shape` (B, Hq, L, S): 0 where attended, -inf where dropped (+ float masks)."""
    bias = torch.zeros(shape, dtype=dtype)
    if is_causal:
        L, S = shape[-2], shape[-1]
        keep = torch.ones(L, S, dtype=torch.bool).tril(diagonal=0)
        bias = bias.masked_fill(keep.logical_not(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            bias = bias + attn_mask.to(dtype)
    return bias


def _safe_softmax(s):
    """Softmax over the last axis; rows that are all -inf give zeros."""
    dead = torch.isneginf(s).all(dim=-1, keepdim=True)
    p = torch.softmax(s.masked_fill(dead, 0.0), dim=-1)
    return p.masked_fill(dead, 0.0)


# --- kernel: sdpa_tile_head_schedule ---
# Head-scheduled kernel (one program per query head, GQA-aware): programs are interleaved across KV
# heads so that neighbouring programs share K/V tiles.

def sdpa_tile_head_schedule(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    B, Hq, L, E = query.shape
    Hkv, S, Ev = key.shape[1], key.shape[2], value.shape[-1]
    GROUP_SIZE = Hq // Hkv
    scale_factor = 1.0 / math.sqrt(E) if scale is None else scale
    bias = _bias(attn_mask, query.dtype, (B, Hq, L, S), is_causal)
    out = torch.zeros(B, Hq, L, Ev, dtype=query.dtype)
    for pid in range(Hq):
        head_idx = (pid % GROUP_SIZE) * GROUP_SIZE + pid // GROUP_SIZE  # BUG: stride/modulus by GROUP_SIZE, not Hkv
        if head_idx >= Hq:
            continue
        kv_idx = head_idx // GROUP_SIZE
        s = query[:, head_idx] @ key[:, kv_idx].transpose(-2, -1) * scale_factor + bias[:, head_idx]
        out[:, head_idx] = _safe_softmax(s) @ value[:, kv_idx]
    return out


# --- kernel: sdpa_doc_equivalent ---
# The "efficient implementation equivalent to" reference from the scaled_dot_product_attention docs,
# made safe for fully masked rows.

def sdpa_doc_equivalent(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                        enable_gqa=False):
    L, S = query.size(-2), key.size(-2)
    scale_factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    attn_bias = torch.zeros(query.shape[:-2] + (L, S), dtype=query.dtype)
    if is_causal:
        temp_mask = torch.ones(L, S, dtype=torch.bool).tril(diagonal=0)
        attn_bias = attn_bias.masked_fill(temp_mask.logical_not(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = attn_mask.masked_fill(attn_mask.logical_not(), float("-inf"))  # BUG: bias never filled
        else:
            attn_bias = attn_bias + attn_mask
    if enable_gqa:
        key = key.repeat_interleave(query.size(-3) // key.size(-3), -3)
        value = value.repeat_interleave(query.size(-3) // value.size(-3), -3)
    attn_weight = query @ key.transpose(-2, -1) * scale_factor
    attn_weight = attn_weight + attn_bias
    attn_weight = _safe_softmax(attn_weight)
    return attn_weight @ value


# --- kernel: sdpa_mha_weights_fallback ---
# A fused path plus an explicit-weights fallback (the one MultiheadAttention takes when the weights are
# needed); here the fallback also serves value head dims the fused path does not support.

def _weights_path(query, key, value, attn_mask, scale, enable_gqa, is_causal=False):
    L, S = query.size(-2), key.size(-2)
    if enable_gqa:
        key = key.repeat_interleave(query.size(-3) // key.size(-3), -3)
        value = value.repeat_interleave(query.size(-3) // value.size(-3), -3)
    scale_factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    bias = _bias(attn_mask, query.dtype, query.shape[:-2] + (L, S), is_causal)
    weights = _safe_softmax(query @ key.transpose(-2, -1) * scale_factor + bias)
    return weights @ value, weights


def sdpa_mha_weights_fallback(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                              enable_gqa=False):
    if value.size(-1) != query.size(-1):
        out, _ = _weights_path(query, key, value, attn_mask, scale, enable_gqa)  # BUG: is_causal not passed
        return out
    B, Hq, L, E = query.shape
    Hkv, S = key.shape[1], key.shape[2]
    G = Hq // Hkv
    scale_factor = 1 / math.sqrt(E) if scale is None else scale
    q5 = query.reshape(B, Hkv, G, L, E)
    s = q5 @ key.unsqueeze(2).transpose(-2, -1) * scale_factor
    s = s + _bias(attn_mask, query.dtype, (B, Hq, L, S), is_causal).reshape(B, Hkv, G, L, S)
    out = _safe_softmax(s) @ value.unsqueeze(2)
    return out.reshape(B, Hq, L, value.size(-1))


# --- kernel: sdpa_splitk_combine ---
# Split-K: keys in chunks of 64, one normalised partial output and log-sum-exp per chunk, then a
# combine step that writes each (batch, head) result through the output's strides.

def sdpa_splitk_combine(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                        enable_gqa=False):
    B, Hq, L, E = query.shape
    Hkv, S, Ev = key.shape[1], key.shape[2], value.shape[-1]
    G = Hq // Hkv
    scale_factor = 1.0 / math.sqrt(E) if scale is None else scale
    kk = key.repeat_interleave(G, 1)
    vv = value.repeat_interleave(G, 1)
    bias = _bias(attn_mask, query.dtype, (B, Hq, L, S), is_causal)
    SPLIT = 64
    o_acc, lse_acc = [], []
    for n0 in range(0, max(S, 1), SPLIT):
        s = query @ kk[:, :, n0:n0 + SPLIT].transpose(-2, -1) * scale_factor + bias[..., n0:n0 + SPLIT]
        lse = torch.logsumexp(s, dim=-1, keepdim=True)
        o_acc.append(_safe_softmax(s) @ vv[:, :, n0:n0 + SPLIT])
        lse_acc.append(lse)
    lse_all = torch.stack(lse_acc)
    lse_max = lse_all.max(dim=0).values
    alive = torch.isfinite(lse_max)
    base = torch.where(alive, lse_max, torch.zeros_like(lse_max))
    w = torch.exp(lse_all - base)
    w = w / torch.where(alive, w.sum(dim=0), torch.ones_like(lse_max))
    combined = (w * torch.stack(o_acc)).sum(dim=0)
    out = torch.zeros(B, Hq, L, Ev, dtype=query.dtype)
    flat = out.view(-1)
    o_batch_stride = out.stride(0) if L == 1 else 0  # BUG: batch stride only set on the seqlen_q == 1 path
    o_head_stride = out.stride(1)
    for b in range(B):
        for h in range(Hq):
            base_off = b * o_batch_stride + h * o_head_stride
            flat[base_off:base_off + L * Ev] = combined[b, h].reshape(-1)
    return out


# --- kernel: sdpa_native_mha_dim_per_head ---
# Port of the native fused MultiheadAttention math: the per-head size used for the default scale is a
# constant of the kernel.

def sdpa_native_mha_dim_per_head(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    dim_per_head = 64  # BUG: head size hard-coded to 64 instead of query.size(-1)
    scale_factor = 1.0 / math.sqrt(dim_per_head) if scale is None else scale
    if enable_gqa:
        key = key.repeat_interleave(query.size(1) // key.size(1), 1)
        value = value.repeat_interleave(query.size(1) // value.size(1), 1)
    L, S = query.size(-2), key.size(-2)
    q = query * scale_factor
    qkt = torch.matmul(q, key.transpose(-2, -1))
    qkt = qkt + _bias(attn_mask, query.dtype, query.shape[:-2] + (L, S), is_causal)
    return torch.matmul(_safe_softmax(qkt), value)


# --- kernel: sdpa_folded_scale_mask ---
# The compute kernel folds the softmax scale into the exponent: exp((qk + mask - max) * scale); the host
# wrapper prepares the additive mask it receives.

def sdpa_folded_scale_mask(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                           enable_gqa=False):
    B, Hq, L, E = query.shape
    S = key.shape[-2]
    scale_factor = 1.0 / math.sqrt(E) if scale is None else scale
    if enable_gqa:
        key = key.repeat_interleave(Hq // key.size(1), 1)
        value = value.repeat_interleave(Hq // value.size(1), 1)
    mask = _bias(attn_mask, query.dtype, (B, Hq, L, S), is_causal)  # BUG: not pre-divided by scale (kernel folds it)
    qk = query @ key.transpose(-2, -1)
    s = qk + mask
    mx = s.max(dim=-1, keepdim=True).values
    alive = torch.isfinite(mx)
    e = torch.exp((s - torch.where(alive, mx, torch.zeros_like(mx))) * scale_factor)
    denom = torch.where(alive, e.sum(dim=-1, keepdim=True), torch.ones_like(mx))
    return torch.where(alive, (e / denom) @ value, torch.zeros(()).to(query.dtype))


# --- kernel: sdpa_exp2_block_loop ---
# Triton-style forward (exp2 online softmax over key blocks of 32); the masked branch adds the float
# mask before the log2(e) conversion, the unmasked branch folds log2(e) into the score scale.

def sdpa_exp2_block_loop(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    B, Hq, L, E = query.shape
    Hkv, S, Ev = key.shape[1], key.shape[2], value.shape[-1]
    G = Hq // Hkv
    BLOCK_N = 32
    sm_scale = 1.0 / math.sqrt(E) if scale is None else scale
    k = key.repeat_interleave(G, 1)
    v = value.repeat_interleave(G, 1)
    bias = None if attn_mask is None else _bias(attn_mask, query.dtype, (B, Hq, L, S), False)
    offs_m = torch.arange(L).unsqueeze(-1)
    m_i = torch.full((B, Hq, L, 1), float("-inf"), dtype=query.dtype)
    l_i = torch.zeros((B, Hq, L, 1), dtype=query.dtype)
    acc = torch.zeros((B, Hq, L, Ev), dtype=query.dtype)
    qk_scale = sm_scale
    for start_n in range(0, S, BLOCK_N):
        offs_n = torch.arange(start_n, min(start_n + BLOCK_N, S)).unsqueeze(0)
        qk = query @ k[:, :, start_n:start_n + BLOCK_N].transpose(-2, -1)
        if bias is None:
            qk_scale *= LOG2E  # BUG: log2(e) folded into the running scale again on every key block
            qk = qk * qk_scale
        else:
            qk = (qk * sm_scale + bias[..., start_n:start_n + BLOCK_N]) * LOG2E
        if is_causal:
            qk = qk.masked_fill(offs_n > offs_m, float("-inf"))
        m_ij = torch.maximum(m_i, qk.max(dim=-1, keepdim=True).values)
        m_safe = torch.where(torch.isfinite(m_ij), m_ij, torch.zeros_like(m_ij))
        p = torch.exp2(qk - m_safe)
        alpha = torch.exp2(m_i - m_safe)
        l_i = l_i * alpha + p.sum(dim=-1, keepdim=True)
        acc = acc * alpha + p @ v[:, :, start_n:start_n + BLOCK_N]
        m_i = m_ij
    return torch.where(l_i > 0, acc / torch.where(l_i > 0, l_i, torch.ones_like(l_i)), torch.zeros_like(acc))


# --- kernel: sdpa_prescaled_query_backend ---
# The attention layer scales its queries after the projection and hands them to a dot-product backend.

def _dot_product_backend(q, k, v, bias):
    s = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # BUG: backend applies its own 1/sqrt(D) again
    return _safe_softmax(s + bias) @ v


def sdpa_prescaled_query_backend(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    B, Hq, L, E = query.shape
    S = key.shape[-2]
    scale_factor = 1.0 / math.sqrt(E) if scale is None else scale
    if enable_gqa:
        key = key.repeat_interleave(Hq // key.size(1), 1)
        value = value.repeat_interleave(Hq // value.size(1), 1)
    q = query * scale_factor
    return _dot_product_backend(q, key, value, _bias(attn_mask, query.dtype, (B, Hq, L, S), is_causal))


# --- kernel: sdpa_grouped_no_expand ---
# Correct: GQA without materialising repeated K/V -- queries viewed as (B, Hkv, G, L, E) against
# (B, Hkv, 1, S, E); masks broadcast to (B, Hq, L, S) first, then viewed the same way.

def sdpa_grouped_no_expand(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                           enable_gqa=False):
    B, Hq, L, E = query.shape
    Hkv, S, Ev = key.shape[1], key.shape[2], value.shape[-1]
    G = Hq // Hkv
    scale_factor = 1.0 / math.sqrt(E) if scale is None else scale
    q5 = query.reshape(B, Hkv, G, L, E)
    s = torch.matmul(q5, key.unsqueeze(2).transpose(-2, -1)) * scale_factor
    s = s + _bias(attn_mask, query.dtype, (B, Hq, L, S), is_causal).reshape(B, Hkv, G, L, S)
    out = torch.matmul(_safe_softmax(s), value.unsqueeze(2))
    return out.reshape(B, Hq, L, Ev)


# --- kernel: sdpa_query_chunks_f64 ---
# Correct: query rows processed in chunks of 7 with float64 intermediates, result cast back.

def sdpa_query_chunks_f64(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                          enable_gqa=False):
    B, Hq, L, E = query.shape
    Hkv, S, Ev = key.shape[1], key.shape[2], value.shape[-1]
    scale_factor = 1.0 / math.sqrt(E) if scale is None else scale
    k = key.double().repeat_interleave(Hq // Hkv, 1)
    v = value.double().repeat_interleave(Hq // Hkv, 1)
    bias = _bias(attn_mask, torch.float64, (B, Hq, L, S), is_causal)
    out = torch.zeros(B, Hq, L, Ev, dtype=torch.float64)
    CHUNK = 7
    for r0 in range(0, L, CHUNK):
        s = query[:, :, r0:r0 + CHUNK].double() @ k.transpose(-2, -1) * scale_factor + bias[:, :, r0:r0 + CHUNK]
        out[:, :, r0:r0 + CHUNK] = _safe_softmax(s) @ v
    return out.to(query.dtype)


# --- kernel: sdpa_online_exp2_blocks ---
# Correct: exp2 online softmax over key blocks of 24 with log2(e) folded once into the scale (and the
# bias converted to log2 units), causal applied by block indices.

def sdpa_online_exp2_blocks(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    B, Hq, L, E = query.shape
    Hkv, S, Ev = key.shape[1], key.shape[2], value.shape[-1]
    G = Hq // Hkv
    BLOCK_N = 24
    qk_scale = (1.0 / math.sqrt(E) if scale is None else scale) * LOG2E
    bias = _bias(attn_mask, query.dtype, (B, Hq, L, S), False) * LOG2E
    offs_m = torch.arange(L).unsqueeze(-1)
    m_i = torch.full((B, Hq, L, 1), float("-inf"), dtype=query.dtype)
    l_i = torch.zeros((B, Hq, L, 1), dtype=query.dtype)
    acc = torch.zeros((B, Hq, L, Ev), dtype=query.dtype)
    for start_n in range(0, S, BLOCK_N):
        kb = key[:, :, start_n:start_n + BLOCK_N].repeat_interleave(G, 1)
        vb = value[:, :, start_n:start_n + BLOCK_N].repeat_interleave(G, 1)
        offs_n = torch.arange(start_n, start_n + kb.shape[2]).unsqueeze(0)
        qk = query @ kb.transpose(-2, -1) * qk_scale + bias[..., start_n:start_n + BLOCK_N]
        if is_causal:
            qk = qk.masked_fill(offs_n > offs_m, float("-inf"))
        m_ij = torch.maximum(m_i, qk.max(dim=-1, keepdim=True).values)
        m_safe = torch.where(torch.isfinite(m_ij), m_ij, torch.zeros_like(m_ij))
        p = torch.exp2(qk - m_safe)
        alpha = torch.exp2(m_i - m_safe)
        l_i = l_i * alpha + p.sum(dim=-1, keepdim=True)
        acc = acc * alpha + p @ vb
        m_i = m_ij
    return torch.where(l_i > 0, acc / torch.where(l_i > 0, l_i, torch.ones_like(l_i)), torch.zeros_like(acc))


API = "torch-sdpa"
FEATURES = ["mask", "causal", "gqa", "dv-ne-d"]


def _entry(name, fn, bug=None, parameter=None, source=None, kind=None, dtype="float64"):
    report = None
    if source is not None:
        owner_repo, number = source.split("#")
        report = "https://github.com/%s/%s/%s" % (owner_repo, kind, number)
    return {
        "name": name, "api": API, "fn": fn, "correct": bug is None, "bug": bug, "parameter": parameter,
        "source": source, "report": report, "dtype": dtype, "features": list(FEATURES),
    }


CATALOG = [
    _entry("sdpa-hipkittens-head-schedule", "sdpa_tile_head_schedule", "gqa-head-index-mapping",
           "program pid mapped to query head (pid % G) * G + pid // G (G = Hq // Hkv) instead of "
           "(pid % Hkv) * G + pid // Hkv: some heads computed twice, others never (left zero). Triggers: "
           "G != Hkv, e.g. Hq=6/Hkv=3, Hq=8/Hkv=2, Hq=12/Hkv=4, MQA with Hq > 1",
           "HazyResearch/HipKittens#22", "pull"),
    _entry("sdpa-docs-bool-mask-ignored", "sdpa_doc_equivalent", "bool-mask-never-applied",
           "bool attn_mask converted to -inf in a local copy that is never added to the bias: the mask is "
           "ignored. Triggers: any bool attn_mask that drops a key (float masks are applied)",
           "pytorch/pytorch#117939", "issues"),
    _entry("sdpa-mha-fallback-drops-causal", "sdpa_mha_weights_fallback", "causal-dropped-on-fallback-path",
           "the explicit-weights fallback taken when Dv != D is called without is_causal, so it attends to "
           "every key. Triggers: is_causal=True with value head dim != query head dim",
           "pytorch/pytorch#99282", "issues"),
    _entry("sdpa-vllmfa-combine-batch-stride", "sdpa_splitk_combine", "split-combine-batch-stride-zero",
           "output batch stride left 0 unless Sq == 1, so the split-K combine writes every batch's result "
           "onto batch 0 (last one wins) and leaves the others zero. Triggers: B > 1 and Sq > 1",
           "vllm-project/flash-attention#176", "pull"),
    _entry("sdpa-native-mha-dim-per-head-64", "sdpa_native_mha_dim_per_head", "default-scale-hardcoded-head-dim",
           "default scale 1/sqrt(64) from a hard-coded dim_per_head instead of 1/sqrt(D). Triggers: scale=None "
           "and D != 64",
           "pytorch/pytorch#72375", "pull"),
    _entry("sdpa-ttmetal-mask-times-scale", "sdpa_folded_scale_mask", "additive-mask-multiplied-by-scale",
           "kernel computes exp((qk + mask - max) * scale), so a float mask is scaled too (needs mask / scale "
           "from the wrapper). Triggers: float attn_mask with finite non-zero entries and scale != 1",
           "tenstorrent/tt-metal#42891", "pull"),
    _entry("sdpa-flaggems-compounding-log2e", "sdpa_exp2_block_loop", "online-scale-rescaled-every-block",
           "in the unmasked branch qk_scale *= log2(e) runs inside the key-block loop, so block t uses "
           "scale * log2(e)^(t+1): keys past the first block of 32 get a wrong temperature. Triggers: "
           "attn_mask None and a query that sees keys past the first 32 (e.g. Sk > 32 without is_causal)",
           "flagos-ai/FlagGems#424", "pull"),
    _entry("sdpa-maxtext-double-scale", "sdpa_prescaled_query_backend", "scale-applied-twice",
           "queries pre-scaled by the layer and the backend divides by sqrt(D) again: effective scale "
           "scale / sqrt(D). Triggers: always (D > 1)",
           "AI-Hypercomputer/maxtext#3138", "issues"),
    _entry("sdpa-grouped-no-expand", "sdpa_grouped_no_expand"),
    _entry("sdpa-query-chunks-f64", "sdpa_query_chunks_f64"),
    _entry("sdpa-online-exp2-blocks", "sdpa_online_exp2_blocks"),
]
