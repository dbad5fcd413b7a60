"""Held-out kernels with the semantics of flash_attn_func (API `flash-attn`).

fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
alibi_slopes=None, deterministic=False, return_attn_probs=False) on torch tensors q (B, Sq, Hq, D),
k (B, Sk, Hkv, D), v (B, Sk, Hkv, Dv). Bottom-right alignment (off = Sk - Sq): causal keeps j <= i + off, a
window (left, right) keeps i + off - left <= j <= i + off + right (-1 = unbounded, causal sets right to 0);
softcap > 0 maps the scaled scores to softcap * tanh(s / softcap) before masking; ALiBi adds
-slope * |i + off - j| after the cap; query head h uses kv head h // (Hq // Hkv); rows with no visible key
are zeros. Returns (B, Sq, Hq, Dv). Six kernels carry one mistake each (marked by a BUG comment), two are correct.
"""
import math

import torch


def _aligned_positions(seqlen_q, seqlen_k):
    """(Sq, 1) query positions aligned bottom-right to the keys, (1, Sk) key positions."""
    i = torch.arange(seqlen_q).unsqueeze(1) + (seqlen_k - seqlen_q)
    j = torch.arange(seqlen_k).unsqueeze(0)
    return i, j


def _slopes_per_batch_head(alibi_slopes, batch, nheads, dtype):
    """ALiBi slopes as a (B, Hq, 1, 1) tensor of the compute dtype."""
    s = alibi_slopes.to(dtype)
    if s.dim() == 1:
        s = s.unsqueeze(0).expand(batch, nheads)
    return s.reshape(batch, nheads, 1, 1)


# --- kernel: flash_split_kv_combine ---
# Split-KV (flash-decoding) path: each chunk of 48 keys produces a normalised partial output and
# its LSE into accumulators; a combine step merges the chunks with weights exp(lse_i - lse).
def flash_split_kv_combine(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    SPLIT = 48
    B, Sq, Hq, D = q.shape
    Sk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[3]
    scale = softmax_scale if softmax_scale is not None else D ** -0.5
    qh = q.permute(0, 2, 1, 3)
    kh = k.permute(0, 2, 1, 3).repeat_interleave(Hq // Hkv, dim=1)
    vh = v.permute(0, 2, 1, 3).repeat_interleave(Hq // Hkv, dim=1)
    i, j = _aligned_positions(Sq, Sk)
    visible = torch.ones(Sq, Sk, dtype=torch.bool)
    left, right = window_size
    if causal:
        right = 0
        visible &= j <= i
    if left >= 0:
        visible &= j >= i - left
    if right >= 0:
        visible &= j <= i + right
    bias = None
    if alibi_slopes is not None:
        bias = -_slopes_per_batch_head(alibi_slopes, B, Hq, q.dtype) * (i - j).abs().to(q.dtype)
    n_splits = (Sk + SPLIT - 1) // SPLIT
    o_accum = torch.zeros(n_splits, B, Hq, Sq, Dv, dtype=q.dtype)
    lse_accum = torch.full((n_splits, B, Hq, Sq), float("-inf"), dtype=q.dtype)
    for sp in range(n_splits):
        cols = slice(sp * SPLIT, min((sp + 1) * SPLIT, Sk))
        s = torch.matmul(qh, kh[:, :, cols].transpose(-1, -2)) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if bias is not None:
            s = s + bias[..., cols]
        s = s.masked_fill(~visible[:, cols], float("-inf"))
        lse_s = torch.logsumexp(s, dim=-1)
        fin = torch.isfinite(lse_s)
        p = torch.exp(s - torch.where(fin, lse_s, torch.zeros_like(lse_s)).unsqueeze(-1))
        o_accum[sp] = torch.matmul(p, vh[:, :, cols])
        lse_accum[sp] = lse_s if return_attn_probs else torch.zeros_like(lse_s)  # BUG: combine needs every LSE
    lse = torch.logsumexp(lse_accum, dim=0)
    fin = torch.isfinite(lse)
    w = torch.exp(lse_accum - torch.where(fin, lse, torch.zeros_like(lse)).unsqueeze(0))
    out = (w.unsqueeze(-1) * o_accum).sum(dim=0)
    out = torch.where(fin.unsqueeze(-1), out, torch.zeros_like(out))
    out = out.permute(0, 2, 1, 3).contiguous()
    if return_attn_probs:
        return out, lse, None
    return out


# --- kernel: flash_sliding_window_layer ---
# Model-side sliding-window layer mapped onto the kernel's (window_left, window_right) bounds.
def flash_sliding_window_layer(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(D)
    group = Hq // Hkv
    kx = k.repeat_interleave(group, dim=2)
    vx = v.repeat_interleave(group, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", q, kx) * scale
    if softcap > 0:
        s = torch.tanh(s / softcap) * softcap
    i, j = _aligned_positions(Sq, Sk)
    if alibi_slopes is not None:
        s = s - _slopes_per_batch_head(alibi_slopes, B, Hq, s.dtype) * (i - j).abs().to(s.dtype)
    keep = torch.ones(Sq, Sk, dtype=torch.bool)
    if causal:
        keep &= j <= i
    if window_size[0] >= 0 or window_size[1] >= 0:
        win_left, win_right = window_size[0], 0  # BUG: right edge dropped
        if win_left >= 0:
            keep &= j >= i - win_left
        if win_right >= 0:
            keep &= j <= i + win_right
    s = s.masked_fill(~keep, float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    ok = torch.isfinite(m)
    e = torch.exp(s - torch.where(ok, m, torch.zeros_like(m)))
    z = e.sum(dim=-1, keepdim=True)
    p = torch.where(ok, e / torch.where(ok, z, torch.ones_like(z)), torch.zeros_like(e))
    return torch.einsum("bhqk,bkhd->bqhd", p, vx)


# --- kernel: flash_causal_sliding_pair ---
# A sliding-attention layer passes its window to a local-attention path that encodes causality in
# the window pair instead of a separate causal flag.
def flash_causal_sliding_pair(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    sm_scale = softmax_scale if softmax_scale is not None else D ** -0.5
    left, right = window_size
    if causal and left >= 0:
        left, right = left, left  # BUG: the causal sliding window is (left, 0), not (left, left)
        causal = False
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(Hq // Hkv, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(Hq // Hkv, dim=1)
    logits = torch.matmul(qh, kh.transpose(2, 3)) * sm_scale
    if softcap > 0:
        logits = softcap * torch.tanh(logits / softcap)
    i, j = _aligned_positions(Sq, Sk)
    if alibi_slopes is not None:
        logits = logits + (-_slopes_per_batch_head(alibi_slopes, B, Hq, logits.dtype)) * (i - j).abs().to(logits.dtype)
    allowed = torch.ones(Sq, Sk, dtype=torch.bool)
    if causal:
        allowed &= j <= i
    if left >= 0:
        allowed &= j >= i - left
    if right >= 0:
        allowed &= j <= i + right
    logits = logits.masked_fill(~allowed, float("-inf"))
    empty = ~allowed.any(dim=-1, keepdim=True)
    probs = torch.softmax(logits.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
    return torch.matmul(probs, vh).transpose(1, 2).contiguous()


# --- kernel: flash_prefix_prefill_window ---
# Prefix-prefill style: the keys are the cached context [0, Sk - Sq) followed by this chunk's new
# tokens; the sliding window is checked against the query's absolute position.
def flash_prefix_prefill_window(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    B, Sq, Hq, D = q.shape
    Sk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[3]
    sm_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(D)
    ctx_len = max(Sk - Sq, 0)
    i, j = _aligned_positions(Sq, Sk)
    left, right = window_size
    if causal:
        right = 0
    valid = torch.ones(Sq, Sk, dtype=torch.bool)
    if causal:
        valid &= j <= i
    if left >= 0:
        left_ok = (j >= i - left) | (j < ctx_len)  # BUG: the sliding window is not applied to the cached context keys
        valid &= left_ok
    if right >= 0:
        valid &= j <= i + right
    out = torch.zeros(B, Sq, Hq, Dv, dtype=q.dtype)
    for h in range(Hq):
        hk = h // (Hq // Hkv)
        qk = torch.matmul(q[:, :, h], k[:, :, hk].transpose(1, 2)) * sm_scale
        if softcap > 0:
            qk = softcap * torch.tanh(qk / softcap)
        if alibi_slopes is not None:
            slope = _slopes_per_batch_head(alibi_slopes, B, Hq, qk.dtype)[:, h]
            qk = qk - slope * (i - j).abs().to(qk.dtype)
        qk = qk.masked_fill(~valid, float("-inf"))
        m = qk.amax(dim=-1, keepdim=True)
        live = torch.isfinite(m)
        p = torch.exp(qk - torch.where(live, m, torch.zeros_like(m)))
        l_sum = p.sum(dim=-1, keepdim=True)
        acc = torch.matmul(p, v[:, :, hk])
        out[:, :, h] = torch.where(live, acc / torch.where(live, l_sum, torch.ones_like(l_sum)), torch.zeros_like(acc))
    return out


# --- kernel: flash_cached_prefill_causal ---
# Inference-style attention: with no cached prefix (Sk == Sq) the prompt is masked causally; with a
# cache attached the new tokens are assumed to be a single decode step.
def flash_cached_prefill_causal(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    B, T_new, Hq, D = q.shape
    T_all, Hkv = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(D)
    rep = Hq // Hkv
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(rep, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(rep, dim=1)
    scores = (qh @ kh.transpose(-2, -1)) * scale
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    i, j = _aligned_positions(T_new, T_all)
    if alibi_slopes is not None:
        scores = scores - _slopes_per_batch_head(alibi_slopes, B, Hq, scores.dtype) * (i - j).abs().to(scores.dtype)
    cached = T_all - T_new
    if causal and cached <= 0:  # BUG: skipped with a cached prefix
        scores = scores.masked_fill(j > i, float("-inf"))
    left, right = window_size
    if left >= 0 or right >= 0:
        if causal:
            right = 0
        if left >= 0:
            scores = scores.masked_fill(j < i - left, float("-inf"))
        if right >= 0:
            scores = scores.masked_fill(j > i + right, float("-inf"))
    dead = torch.isneginf(scores).all(dim=-1, keepdim=True)
    att = torch.softmax(scores.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    return (att @ vh).transpose(1, 2).contiguous()


# --- kernel: flash_fused_scale_softmax_bias ---
# Fused "scale + bias + softmax": the raw logits q @ k^T carry the ALiBi bias and the softmax
# scale is applied inside the softmax, softmax(scale * x).
def flash_fused_scale_softmax_bias(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                   softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else D ** -0.5
    kx = k.repeat_interleave(Hq // Hkv, dim=2).permute(0, 2, 3, 1)
    vx = v.repeat_interleave(Hq // Hkv, dim=2).permute(0, 2, 1, 3)
    logits = torch.matmul(q.permute(0, 2, 1, 3), kx)
    if softcap > 0:
        logits = (softcap / scale) * torch.tanh(logits * (scale / softcap))
    i, j = _aligned_positions(Sq, Sk)
    if alibi_slopes is not None:
        bias = -_slopes_per_batch_head(alibi_slopes, B, Hq, logits.dtype) * (i - j).abs().to(logits.dtype)
        logits = logits + bias  # BUG: bias gets scaled below
    mask = torch.zeros(Sq, Sk, dtype=torch.bool)
    left, right = window_size
    if causal:
        mask |= j > i
        right = 0
    if left >= 0:
        mask |= j < i - left
    if right >= 0:
        mask |= j > i + right
    logits = logits.masked_fill(mask, float("-inf"))
    empty = mask.all(dim=-1, keepdim=True)
    probs = torch.softmax((logits * scale).masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
    return torch.matmul(probs, vx).permute(0, 2, 1, 3).contiguous()


# --- kernel: flash_query_blocks_online ---
# Correct: query blocks of 20 rows and key blocks of 32; per block the positions, the cap, the
# ALiBi term and the band are computed from indices; an online softmax with a running max.
def flash_query_blocks_online(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    BM, BN = 20, 32
    B, Sq, Hq, D = q.shape
    Sk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[3]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(D)
    off = Sk - Sq
    left, right = window_size
    if causal:
        right = 0
    kv_of = torch.arange(Hq) // (Hq // Hkv)
    qh = q.permute(0, 2, 1, 3)
    kh = k.permute(0, 2, 1, 3)[:, kv_of]
    vh = v.permute(0, 2, 1, 3)[:, kv_of]
    slopes = None
    if alibi_slopes is not None:
        slopes = _slopes_per_batch_head(alibi_slopes, B, Hq, q.dtype)
    out = torch.zeros(B, Hq, Sq, Dv, dtype=q.dtype)
    for m0 in range(0, Sq, BM):
        m1 = min(m0 + BM, Sq)
        pos_q = torch.arange(m0, m1).unsqueeze(1) + off
        m_i = torch.full((B, Hq, m1 - m0, 1), float("-inf"), dtype=q.dtype)
        l_i = torch.zeros((B, Hq, m1 - m0, 1), dtype=q.dtype)
        acc = torch.zeros((B, Hq, m1 - m0, Dv), dtype=q.dtype)
        for n0 in range(0, Sk, BN):
            n1 = min(n0 + BN, Sk)
            pos_k = torch.arange(n0, n1).unsqueeze(0)
            s = torch.matmul(qh[:, :, m0:m1], kh[:, :, n0:n1].transpose(-1, -2)) * scale
            if softcap > 0:
                s = softcap * torch.tanh(s / softcap)
            if slopes is not None:
                s = s - slopes * (pos_q - pos_k).abs().to(s.dtype)
            band = torch.ones(m1 - m0, n1 - n0, dtype=torch.bool)
            if causal:
                band &= pos_k <= pos_q
            if left >= 0:
                band &= pos_k >= pos_q - left
            if right >= 0:
                band &= pos_k <= pos_q + right
            s = s.masked_fill(~band, float("-inf"))
            m_new = torch.maximum(m_i, s.amax(dim=-1, keepdim=True))
            safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
            alpha = torch.exp(m_i - safe)
            p = torch.exp(s - safe)
            l_i = l_i * alpha + p.sum(dim=-1, keepdim=True)
            acc = acc * alpha + torch.matmul(p, vh[:, :, n0:n1])
            m_i = m_new
        out[:, :, m0:m1] = torch.where(l_i > 0, acc / torch.where(l_i > 0, l_i, torch.ones_like(l_i)),
                                       torch.zeros_like(acc))
    return out.permute(0, 2, 1, 3).contiguous()


# --- kernel: flash_grouped_lse_einsum ---
# Correct: no kv expansion; q is viewed as (B, Sq, Hkv, G, D) and scored against the unexpanded k
# with one einsum; weights exp(s - logsumexp(s)) with dead rows zeroed.
def flash_grouped_lse_einsum(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    B, Sq, Hq, D = q.shape
    Sk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[3]
    G = Hq // Hkv
    scale = softmax_scale if softmax_scale is not None else D ** -0.5
    qg = q.reshape(B, Sq, Hkv, G, D)
    s = torch.einsum("bqhgd,bkhd->bhgqk", qg, k) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    i, j = _aligned_positions(Sq, Sk)
    dist = (i - j).abs().to(s.dtype)
    if alibi_slopes is not None:
        sl = _slopes_per_batch_head(alibi_slopes, B, Hq, s.dtype).reshape(B, Hkv, G, 1, 1)
        s = s - sl * dist
    lo = i - window_size[0] if window_size[0] >= 0 else torch.full_like(i, -Sk - 1)
    hi_right = 0 if causal else window_size[1]
    hi = i + hi_right if hi_right >= 0 else torch.full_like(i, 2 * Sk + Sq)
    inside = (j >= lo) & (j <= hi)
    s = torch.where(inside, s, torch.full_like(s, float("-inf")))
    lse = torch.logsumexp(s, dim=-1, keepdim=True)
    live = torch.isfinite(lse)
    w = torch.where(live, torch.exp(s - torch.where(live, lse, torch.zeros_like(lse))), torch.zeros_like(s))
    o = torch.einsum("bhgqk,bkhd->bqhgd", w, v)
    return o.reshape(B, Sq, Hq, Dv)


CATALOG = [
    dict(name='flash-flashinfer-splitkv-lse-not-stored', api='flash-attn', fn='flash_split_kv_combine',
         correct=False, bug='split-kv-lse-not-stored',
         parameter='with split-KV over chunks of 48 keys, a split\'s LSE is only stored when the caller asked for '
                   'it (return_attn_probs); otherwise 0 goes into the accumulator, so the combine averages the '
                   'normalised partial outputs with equal weights (empty splits included) instead of weighting '
                   'them by exp(lse_i - lse). '
                   'Triggers: Sk > 48 (two or more splits) for a row with a visible key',
         source='flashinfer-ai/flashinfer#50', report='https://github.com/flashinfer-ai/flashinfer/pull/50',
         dtype='float64', features=['causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d']),
    dict(name='flash-trtllm-window-right-zeroed', api='flash-attn', fn='flash_sliding_window_layer',
         correct=False, bug='window-right-bound-dropped',
         parameter='any window is mapped to (left, 0), the causal form, so a non-causal window loses its right '
                   'extent: keys right of i + off are hidden (right = -1 and right > 0 both become 0). '
                   'Triggers: causal=False with a window whose right bound is not 0 and a key right of i + off '
                   'inside the other bounds',
         source='NVIDIA/TensorRT-LLM#17935', report='https://github.com/NVIDIA/TensorRT-LLM/pull/17935',
         dtype='float64', features=['causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d']),
    dict(name='flash-lightllm-causal-window-symmetric', api='flash-attn', fn='flash_causal_sliding_pair',
         correct=False, bug='causal-window-made-symmetric',
         parameter='a causal sliding window is turned into the pair (left, left) and the causal flag dropped, so '
                   'each row also sees up to `left` keys right of i + off. '
                   'Triggers: causal=True with a window left >= 1 and a key right of i + off (a row other than '
                   'the last, Sq >= 2)',
         source='ModelTC/LightLLM#1311', report='https://github.com/ModelTC/LightLLM/pull/1311',
         dtype='float64', features=['causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d']),
    dict(name='flash-vllm-prefix-window-context', api='flash-attn', fn='flash_prefix_prefill_window',
         correct=False, bug='window-skips-cached-prefix',
         parameter='the left window bound is not applied to the cached context keys j < Sk - Sq, so a row also '
                   'attends the context keys left of i + off - left (the new-token keys are windowed). '
                   'Triggers: a window left >= 0 with Sk > Sq and a context key left of some row\'s window',
         source='vllm-project/vllm#4405', report='https://github.com/vllm-project/vllm/pull/4405',
         dtype='float64', features=['causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d']),
    dict(name='flash-tinyllm-causal-skipped-with-cache', api='flash-attn', fn='flash_cached_prefill_causal',
         correct=False, bug='causal-skipped-when-prefix',
         parameter='causal masking is applied only when Sk <= Sq (no cached prefix); with Sk > Sq the queries '
                   'are taken for one decode step and see every key (a window still bounds them, its right '
                   'edge stays 0 under causal). '
                   'Triggers: causal=True without a window, Sk > Sq and Sq >= 2',
         source='Mikyx-1/TinyLLM#18', report='https://github.com/Mikyx-1/TinyLLM/pull/18',
         dtype='float64', features=['causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d']),
    dict(name='flash-te-bias-scaled-in-softmax', api='flash-attn', fn='flash_fused_scale_softmax_bias',
         correct=False, bug='alibi-bias-scaled-by-softmax-scale',
         parameter='the softmax scale is fused into the softmax while the ALiBi bias is added to the unscaled '
                   'logits: softmax(scale * (qk + bias)) instead of softmax(scale * qk + bias), i.e. the bias is '
                   'multiplied by the scale. '
                   'Triggers: alibi_slopes with a scale != 1',
         source='NVIDIA/TransformerEngine#103', report='https://github.com/NVIDIA/TransformerEngine/pull/103',
         dtype='float64', features=['causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d']),
    dict(name='flash-query-blocks-online', api='flash-attn', fn='flash_query_blocks_online', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64',
         features=['causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d']),
    dict(name='flash-grouped-lse-einsum', api='flash-attn', fn='flash_grouped_lse_einsum', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64',
         features=['causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d']),
]
