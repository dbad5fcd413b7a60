"""heldout15 flash-attn kernels, API `flash-attn`: the semantics of flash_attn_func(q, k, v, dropout_p=0.0,
softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
return_attn_probs=False) on q (B, Sq, Hq, D), k (B, Sk, Hkv, D), v (B, Sk, Hkv, Dv); bottom-right alignment.
"""
import math
import types

import torch


def _band_keep(sq, sk, causal, window_size):
    """Bottom-right causal / local band: i + off - left <= j <= i + off + right (-1 unbounded)."""
    off = sk - sq
    i = torch.arange(sq).unsqueeze(1)
    j = torch.arange(sk).unsqueeze(0)
    left, right = window_size
    if causal:
        right = 0
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if left >= 0:
        keep = keep & (j >= i + off - left)
    if right >= 0:
        keep = keep & (j <= i + off + right)
    return keep


def _alibi_bias(alibi_slopes, b_sz, hq, sq, sk, dtype):
    """-slope * |i + off - j| as (B or 1, Hq, Sq, Sk)."""
    off = sk - sq
    i = torch.arange(sq).unsqueeze(1)
    j = torch.arange(sk).unsqueeze(0)
    dist = (i + off - j).abs().to(dtype)
    slopes = alibi_slopes.to(dtype)
    if slopes.dim() == 1:
        slopes = slopes.unsqueeze(0)
    return -slopes[:, :, None, None] * dist


# --- kernel: flash_materialized_softcap_gate ---
def flash_materialized_softcap_gate(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                    softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Materialised (GEMM) prefill path: S = QK^T into an FP32 scratch when head_dim != 128, then softmax."""
    b_sz, sq, hq, d = q.shape
    sk, hkv = k.size(1), k.size(2)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(hq // hkv, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(hq // hkv, dim=1)
    s_buf = torch.matmul(qh, kh.transpose(-2, -1)) * scale
    use_fp32_s = d != 128
    if softcap > 0 and not use_fp32_s:  # BUG: the softcap pass runs only on the fp16 scratch path
        s_buf = softcap * torch.tanh(s_buf / softcap)
    if alibi_slopes is not None:
        s_buf = s_buf + _alibi_bias(alibi_slopes, b_sz, hq, sq, sk, s_buf.dtype)
    s_buf = s_buf.masked_fill(~_band_keep(sq, sk, causal, window_size), float('-inf'))
    mx = s_buf.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    p = torch.exp(s_buf - mx)
    den = p.sum(dim=-1, keepdim=True)
    out = (p / torch.where(den > 0, den, torch.ones_like(den))) @ vh
    return out.transpose(1, 2)


# --- kernel: flash_single_token_sdpa_fallback ---
def flash_single_token_sdpa_fallback(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                                     window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                                     return_attn_probs=False):
    """Fallback used without FA3: single-token generation goes through a plain SDPA call."""
    b_sz, sq, hq, d = q.shape
    sk, hkv = k.size(1), k.size(2)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(hq // hkv, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(hq // hkv, dim=1)
    if sq == 1:
        keep = _band_keep(1, sk, False, (-1, -1))  # BUG: the single-token path attends every key (window ignored)
    else:
        keep = _band_keep(sq, sk, causal, window_size)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi_bias(alibi_slopes, b_sz, hq, sq, sk, s.dtype)
    s = s.masked_fill(~keep, float('-inf'))
    mx = s.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    e = torch.exp(s - mx)
    den = e.sum(dim=-1, keepdim=True)
    return ((e / torch.where(den > 0, den, torch.ones_like(den))) @ vh).transpose(1, 2)


# --- kernel: flash_causal_limit_without_gap ---
def flash_causal_limit_without_gap(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                   softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Dynamic-mask style kernel: sequence, causal and window masks added to acc_s per (query, key) index."""
    b_sz, sq, hq, d = q.shape
    sk, hkv = k.size(1), k.size(2)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(hq // hkv, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(hq // hkv, dim=1)
    acc_s = torch.matmul(qh, kh.transpose(-2, -1)) * scale
    if softcap > 0:
        acc_s = softcap * torch.tanh(acc_s / softcap)
    if alibi_slopes is not None:
        acc_s = acc_s + _alibi_bias(alibi_slopes, b_sz, hq, sq, sk, acc_s.dtype)
    offs_m = torch.arange(sq).unsqueeze(1)
    offs_n = torch.arange(sk).unsqueeze(0)
    gap = sk - sq
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if causal:
        causal_limit = offs_m  # BUG: the causal bound is the query index, without the Sk - Sq gap
        keep = keep & (offs_n <= causal_limit)
    left, right = window_size
    if left >= 0:
        keep = keep & (offs_n >= offs_m + gap - left)
    if right >= 0 and not causal:
        keep = keep & (offs_n <= offs_m + gap + right)
    acc_s = acc_s.masked_fill(~keep, float('-inf'))
    mx = acc_s.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    e = torch.exp(acc_s - mx)
    den = e.sum(dim=-1, keepdim=True)
    return ((e / torch.where(den > 0, den, torch.ones_like(den))) @ vh).transpose(1, 2)


# --- kernel: flash_layer_scaling_unused ---
def flash_layer_scaling_unused(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Layer-style attention: the layer computes self.scaling from the head dim and the query states."""
    b_sz, sq, hq, d = q.shape
    sk, hkv = k.size(1), k.size(2)
    layer = types.SimpleNamespace(head_dim=d, scaling=softmax_scale if softmax_scale is not None else d ** (-0.5))
    q_states = q.transpose(1, 2)  # BUG: self.scaling is computed but never applied to the query states
    kh = k.transpose(1, 2).repeat_interleave(hq // hkv, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(hq // hkv, dim=1)
    s = torch.matmul(q_states.reshape(b_sz, hq, sq, layer.head_dim), kh.transpose(-2, -1))
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi_bias(alibi_slopes, b_sz, hq, sq, sk, s.dtype)
    s = s.masked_fill(~_band_keep(sq, sk, causal, window_size), float('-inf'))
    mx = s.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    e = torch.exp(s - mx)
    den = e.sum(dim=-1, keepdim=True)
    out = (e / torch.where(den > 0, den, torch.ones_like(den))) @ vh
    return out.transpose(1, 2)


# --- kernel: flash_fallback_full_context_causal ---
def flash_fallback_full_context_causal(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                                       window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                                       return_attn_probs=False):
    """Fallback: full context goes to one SDPA-like call, a local window goes through an explicit band mask."""
    b_sz, sq, hq, d = q.shape
    sk, hkv = k.size(1), k.size(2)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(hq // hkv, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(hq // hkv, dim=1)
    if tuple(window_size) == (-1, -1):
        is_causal = True  # BUG: the full-context call hard-codes is_causal=True instead of passing causal
        keep = _band_keep(sq, sk, is_causal, (-1, -1))
    else:
        keep = _band_keep(sq, sk, causal, window_size)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi_bias(alibi_slopes, b_sz, hq, sq, sk, s.dtype)
    s = s.masked_fill(~keep, float('-inf'))
    mx = s.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    e = torch.exp(s - mx)
    den = e.sum(dim=-1, keepdim=True)
    return ((e / torch.where(den > 0, den, torch.ones_like(den))) @ vh).transpose(1, 2)


# --- kernel: flash_kv_head_by_modulo ---
def flash_kv_head_by_modulo(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Per-head loop reading K/V of the kv head mapped from each query head."""
    b_sz, sq, hq, d = q.shape
    sk, hkv = k.size(1), k.size(2)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    keep = _band_keep(sq, sk, causal, window_size)
    bias = None
    if alibi_slopes is not None:
        bias = _alibi_bias(alibi_slopes, b_sz, hq, sq, sk, q.dtype).expand(b_sz, hq, sq, sk)
    out = q.new_zeros(b_sz, sq, hq, v.size(-1))
    for h in range(hq):
        kv_h = h % hkv  # BUG: the kv head is taken modulo Hkv instead of dividing by the group size
        s = torch.einsum('bid,bjd->bij', q[:, :, h], k[:, :, kv_h]) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if bias is not None:
            s = s + bias[:, h]
        s = s.masked_fill(~keep, float('-inf'))
        mx = s.amax(dim=-1, keepdim=True)
        mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
        e = torch.exp(s - mx)
        den = e.sum(dim=-1, keepdim=True)
        out[:, :, h] = torch.einsum('bij,bjd->bid', e / torch.where(den > 0, den, torch.ones_like(den)),
                                    v[:, :, kv_h])
    return out


# --- kernel: flash_expanded_dense_bias ---
def flash_expanded_dense_bias(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Correct: one additive bias (0 / -inf band plus ALiBi) over expanded heads, weights via logsumexp."""
    b_sz, sq, hq, d = q.shape
    sk, hkv = k.size(1), k.size(2)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    kh = k.permute(0, 2, 3, 1).repeat_interleave(hq // hkv, dim=1)
    vh = v.permute(0, 2, 1, 3).repeat_interleave(hq // hkv, dim=1)
    s = torch.matmul(q.permute(0, 2, 1, 3), kh) * scale
    if softcap > 0:
        s = torch.tanh(s / softcap) * softcap
    bias = torch.zeros(sq, sk, dtype=q.dtype).masked_fill(~_band_keep(sq, sk, causal, window_size), float('-inf'))
    if alibi_slopes is not None:
        bias = bias + _alibi_bias(alibi_slopes, b_sz, hq, sq, sk, q.dtype)
    s = s + bias
    lse = torch.logsumexp(s, dim=-1, keepdim=True)
    lse = torch.where(torch.isfinite(lse), lse, torch.full_like(lse, float('inf')))
    return torch.matmul(torch.exp(s - lse), vh).permute(0, 2, 1, 3)


# --- kernel: flash_rowwise_lse_blocks ---
def flash_rowwise_lse_blocks(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Correct: per query row, only its visible key range, in key blocks of 17 merged by log-sum-exp."""
    b_sz, sq, hq, d = q.shape
    sk, hkv = k.size(1), k.size(2)
    g = hq // hkv
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    off = sk - sq
    left, right = window_size
    if causal:
        right = 0
    slopes = None
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(q.dtype)
        slopes = slopes.unsqueeze(0).expand(b_sz, hq) if slopes.dim() == 1 else slopes
    out = q.new_zeros(b_sz, sq, hq, v.size(-1))
    kg = k.repeat_interleave(g, dim=2)
    vg = v.repeat_interleave(g, dim=2)
    for i in range(sq):
        lo = 0 if left < 0 else max(0, i + off - left)
        hi = sk - 1 if right < 0 else min(sk - 1, i + off + right)
        if hi < lo:
            continue
        lse = torch.full((b_sz, hq), float('-inf'), dtype=q.dtype)
        acc = torch.zeros(b_sz, hq, v.size(-1), dtype=q.dtype)
        for j0 in range(lo, hi + 1, 17):
            j1 = min(hi + 1, j0 + 17)
            s = torch.einsum('bhd,bjhd->bhj', q[:, i], kg[:, j0:j1]) * scale
            if softcap > 0:
                s = softcap * torch.tanh(s / softcap)
            if slopes is not None:
                dist = (i + off - torch.arange(j0, j1)).abs().to(q.dtype)
                s = s - slopes[:, :, None] * dist
            blse = torch.logsumexp(s, dim=-1)
            new = torch.logaddexp(lse, blse)
            acc = acc * torch.exp(lse - new).unsqueeze(-1) + torch.einsum(
                'bhj,bjhd->bhd', torch.exp(s - new.unsqueeze(-1)), vg[:, j0:j1])
            lse = new
        out[:, i] = acc
    return out


_F = ['causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d']

CATALOG = [
    dict(name='flash-imp-softcap-fp32-scratch', api='flash-attn', fn='flash_materialized_softcap_gate',
         correct=False, bug='softcap-dropped',
         parameter='the softcap pass is gated on the fp16 scratch path, and the fp32 scratch path it takes whenever '
                   'head_dim != 128 feeds the raw scores to the softmax: softcap is ignored. Triggers: softcap > 0 '
                   '(D != 128)',
         source='kekzl/imp#688', report='https://github.com/kekzl/imp/pull/688', dtype='float64', features=_F),
    dict(name='flash-nanochat-decode-window-ignored', api='flash-attn', fn='flash_single_token_sdpa_fallback',
         correct=False, bug='window-ignored-on-decode',
         parameter='the single-token path (Sq == 1) attends every key, ignoring window_size; longer queries honour '
                   'it. Triggers: Sq == 1 with a window that hides some key',
         source='karpathy/nanochat#452', report='https://github.com/karpathy/nanochat/issues/452',
         dtype='float64', features=_F),
    dict(name='flash-fsa-causal-without-kv-gap', api='flash-attn', fn='flash_causal_limit_without_gap',
         correct=False, bug='causal-top-left',
         parameter='the causal bound is j <= i instead of j <= i + (Sk - Sq); the window bounds keep the offset. '
                   'Triggers: causal with Sq != Sk',
         source='HKUSTDial/flash-sparse-attention#213',
         report='https://github.com/HKUSTDial/flash-sparse-attention/pull/213', dtype='float64', features=_F),
    dict(name='flash-fla-mla-scaling-unused', api='flash-attn', fn='flash_layer_scaling_unused', correct=False,
         bug='scale-never-applied',
         parameter='the layer computes its scaling (softmax_scale or D ** -0.5) but never multiplies the query '
                   'states by it: the logits are unscaled. Triggers: an effective scale other than 1',
         source='fla-org/flash-linear-attention#395',
         report='https://github.com/fla-org/flash-linear-attention/pull/395', dtype='float64', features=_F),
    dict(name='flash-nanochat-fallback-causal-hardcoded', api='flash-attn', fn='flash_fallback_full_context_causal',
         correct=False, bug='causal-forced',
         parameter='without a window the fallback hard-codes is_causal=True, so causal=False is ignored and keys '
                   'right of the bottom-right diagonal are hidden. Triggers: causal=False, no window, and a key '
                   'j > i + Sk - Sq',
         source='karpathy/nanochat#805', report='https://github.com/karpathy/nanochat/pull/805',
         dtype='float64', features=_F),
    dict(name='flash-llamacpp-gqa-head-modulo', api='flash-attn', fn='flash_kv_head_by_modulo', correct=False,
         bug='gqa-head-mapping-modulo',
         parameter='query head h reads kv head h % Hkv instead of h // (Hq // Hkv) (tiled instead of grouped). '
                   'Triggers: 1 < Hkv < Hq',
         source='ggml-org/llama.cpp#25315', report='https://github.com/ggml-org/llama.cpp/pull/25315',
         dtype='float64', features=_F),
    dict(name='flash-expanded-dense-bias', api='flash-attn', fn='flash_expanded_dense_bias', correct=True,
         bug=None, parameter=None, source=None, report=None, dtype='float64', features=_F),
    dict(name='flash-rowwise-lse-blocks', api='flash-attn', fn='flash_rowwise_lse_blocks', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=_F),
]
