"""Held-out set 22, API `flash-attn`: flash_attn_func semantics on (B, S, H, D) torch tensors.

fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
alibi_slopes=None, deterministic=False, return_attn_probs=False). Bottom-right alignment, off = Sk - Sq:
causal keeps j <= i + off; window (left, right) keeps i + off - left <= j <= i + off + right (-1 unbounded);
softcap on the scaled scores before masking; ALiBi adds -slope * |i + off - j| after the cap; query head h
reads kv head h // (Hq // Hkv); rows with no visible key are zeros. Returns (B, Sq, Hq, Dv).
Six kernels carry one mistake each (marked by a BUG comment), two are correct alternative implementations.
"""
import math

import torch


def _alibi_bias(alibi_slopes, b, hq, qpos, kpos, dtype):
    """-slope * |qpos - kpos| as (B, Hq, Sq, Sk); slopes (Hq,) or (B, Hq)."""
    slopes = alibi_slopes.to(dtype)
    slopes = slopes.reshape(1, hq, 1, 1) if slopes.dim() == 1 else slopes.reshape(b, hq, 1, 1)
    return -slopes * (qpos - kpos).abs().to(dtype)


def _softmax_zero_rows(s):
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    z = e.sum(dim=-1, keepdim=True)
    return e / torch.where(z == 0, torch.ones_like(z), z)


# --- kernel: flash_xformers_local_window ---
def flash_xformers_local_window(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    kt, vt = kt.repeat_interleave(hq // hkv, dim=1), vt.repeat_interleave(hq // hkv, dim=1)
    s = torch.matmul(qt, kt.transpose(-1, -2)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    qpos = torch.arange(sq)[:, None] + (sk - sq)
    kpos = torch.arange(sk)[None, :]
    if alibi_slopes is not None:
        s = s + _alibi_bias(alibi_slopes, b, hq, qpos, kpos, s.dtype)
    attn_bias = torch.ones(sq, sk, dtype=torch.bool)
    if causal:
        attn_bias &= kpos <= qpos
    if window_size[0] >= 0:
        local = (qpos - kpos) < window_size[0]  # BUG: local attention of w keeps w keys, flash keeps w + 1
        attn_bias &= local
    if window_size[1] >= 0:
        attn_bias &= (kpos - qpos) <= window_size[1]
    s = s.masked_fill(~attn_bias, float("-inf"))
    out = torch.matmul(_softmax_zero_rows(s), vt)
    return out.transpose(1, 2)


# --- kernel: flash_decode_window_ignored ---
def flash_decode_window_ignored(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    if sq == 1:
        window = (-1, -1)  # BUG: the decode path builds its attn bias without the sliding window
    else:
        window = tuple(window_size)
    group = hq // hkv
    kk = k.repeat_interleave(group, dim=2)
    vv = v.repeat_interleave(group, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, kk) * scale
    if softcap > 0:
        scores = torch.tanh(scores / softcap) * softcap
    i = torch.arange(sq).view(sq, 1) + sk - sq
    j = torch.arange(sk).view(1, sk)
    if alibi_slopes is not None:
        scores = scores + _alibi_bias(alibi_slopes, b, hq, i, j, scores.dtype)
    allowed = torch.ones(sq, sk, dtype=torch.bool)
    if causal:
        allowed = allowed & (j <= i)
    if window[0] >= 0:
        allowed = allowed & (j >= i - window[0])
    if window[1] >= 0:
        allowed = allowed & (j <= i + window[1])
    scores = torch.where(allowed, scores, torch.full((), float("-inf"), dtype=scores.dtype))
    return torch.einsum("bhqk,bkhd->bqhd", _softmax_zero_rows(scores), vv)


# --- kernel: flash_window_left_uint32 ---
def flash_window_left_uint32(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    sm_scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    window_left = int(window_size[0]) & 0xFFFFFFFF  # BUG: stored as uint32, so -1 (no window) becomes 4294967295
    window_right = int(window_size[1])
    q_idx = torch.arange(sq, dtype=torch.int32)[:, None] + (sk - sq)
    kv_idx = torch.arange(sk, dtype=torch.int32)[None, :]
    mask = torch.ones(sq, sk, dtype=torch.bool)
    if window_left >= 0:
        mask &= kv_idx >= q_idx - window_left
    if window_right >= 0:
        mask &= kv_idx <= q_idx + window_right
    if causal:
        mask &= kv_idx <= q_idx
    qh = q.permute(0, 2, 1, 3)
    kh = k.permute(0, 2, 1, 3).repeat_interleave(hq // hkv, dim=1)
    vh = v.permute(0, 2, 1, 3).repeat_interleave(hq // hkv, dim=1)
    logits = qh @ kh.transpose(-1, -2) * sm_scale
    if softcap > 0:
        logits = softcap * torch.tanh(logits / softcap)
    if alibi_slopes is not None:
        logits = logits + _alibi_bias(alibi_slopes, b, hq, q_idx.long(), kv_idx.long(), logits.dtype)
    logits = logits.masked_fill(~mask, float("-inf"))
    return (_softmax_zero_rows(logits) @ vh).permute(0, 2, 1, 3)


# --- kernel: flash_out_reshape_no_permute ---
def flash_out_reshape_no_permute(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                 softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    batch_size, sequence_length, num_heads, head_dim = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    scale = 1.0 / math.sqrt(head_dim) if softmax_scale is None else softmax_scale
    qh = q.permute(0, 2, 1, 3)
    kh = k.permute(0, 2, 1, 3).repeat_interleave(num_heads // hkv, dim=1)
    vh = v.permute(0, 2, 1, 3).repeat_interleave(num_heads // hkv, dim=1)
    scaled = torch.matmul(qh, kh.transpose(-1, -2)) * scale
    if softcap > 0:
        scaled = softcap * torch.tanh(scaled / softcap)
    qi = torch.arange(sequence_length)[:, None] + sk - sequence_length
    kj = torch.arange(sk)[None, :]
    if alibi_slopes is not None:
        scaled = scaled + _alibi_bias(alibi_slopes, batch_size, num_heads, qi, kj, scaled.dtype)
    ok = torch.ones(sequence_length, sk, dtype=torch.bool)
    if causal:
        ok = ok & (kj <= qi)
    if window_size[0] >= 0:
        ok = ok & (kj >= qi - window_size[0])
    if window_size[1] >= 0:
        ok = ok & (kj <= qi + window_size[1])
    attention = _softmax_zero_rows(scaled.masked_fill(~ok, float("-inf")))
    values = torch.matmul(attention, vh)
    values = values.reshape(batch_size, sequence_length, num_heads, dv)  # BUG: no permute(0, 2, 1, 3) first
    return values


# --- kernel: flash_kv_heads_not_repeated ---
def flash_kv_heads_not_repeated(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    n_rep = hq // hkv
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    q_t, k_t, v_t = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if sq == 1:
        head_map = torch.arange(hq) // n_rep
        k_r, v_r = k_t[:, head_map], v_t[:, head_map]
    else:
        k_r, v_r = k_t, v_t  # BUG: repeat_kv was removed for the prefill path too
    att = q_t.matmul(k_r.transpose(-2, -1)) * scale
    if softcap > 0:
        att = (att / softcap).tanh() * softcap
    row = torch.arange(sq).unsqueeze(1) + (sk - sq)
    col = torch.arange(sk).unsqueeze(0)
    if alibi_slopes is not None:
        att = att + _alibi_bias(alibi_slopes, b, hq, row, col, att.dtype)
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if causal:
        keep &= col <= row
    if window_size[0] >= 0:
        keep &= col >= row - window_size[0]
    if window_size[1] >= 0:
        keep &= col <= row + window_size[1]
    att = att.masked_fill(~keep, float("-inf"))
    return _softmax_zero_rows(att).matmul(v_r).transpose(1, 2)


# --- kernel: flash_pack_gqa_window_row ---
def flash_pack_gqa_window_row(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    qhead_per_khead = hq // hkv
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    # pack the query heads of one kv head into the row axis: row r = i * G + g
    q_packed = q.reshape(b, sq, hkv, qhead_per_khead, d).permute(0, 2, 1, 3, 4)
    q_packed = q_packed.reshape(b, hkv, sq * qhead_per_khead, d)
    kh, vh = k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
    s = torch.matmul(q_packed, kh.transpose(-1, -2)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    rows = torch.arange(sq * qhead_per_khead)[:, None]
    cols = torch.arange(sk)[None, :]
    m_idx = rows // qhead_per_khead + (sk - sq)
    if alibi_slopes is not None:
        head = (torch.arange(hkv)[:, None] * qhead_per_khead + rows[None, :, 0] % qhead_per_khead)
        slopes = alibi_slopes.to(s.dtype)
        slopes = slopes[head] if slopes.dim() == 1 else slopes[:, head]
        s = s - slopes.reshape(-1, hkv, sq * qhead_per_khead, 1) * (m_idx - cols).abs().to(s.dtype)
    keep = torch.ones(sq * qhead_per_khead, sk, dtype=torch.bool)
    if causal:
        keep &= cols <= m_idx
    local_idx = rows + (sk - sq)  # BUG: the packed row index is used as the query position in the window test
    if window_size[0] >= 0:
        keep &= cols >= local_idx - window_size[0]
    if window_size[1] >= 0:
        keep &= cols <= local_idx + window_size[1]
    s = s.masked_fill(~keep, float("-inf"))
    o = torch.matmul(_softmax_zero_rows(s), vh)
    o = o.reshape(b, hkv, sq, qhead_per_khead, dv).permute(0, 2, 1, 3, 4)
    return o.reshape(b, sq, hq, dv)


# --- kernel: flash_split_kv_lse_merge ---
def flash_split_kv_lse_merge(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Keys split in 3 chunks; per-chunk normalised outputs merged through their log-sum-exp."""
    b, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qh = q.permute(0, 2, 1, 3)
    kh = k.permute(0, 2, 1, 3).repeat_interleave(hq // hkv, dim=1)
    vh = v.permute(0, 2, 1, 3).repeat_interleave(hq // hkv, dim=1)
    qpos = torch.arange(sq)[:, None] + sk - sq
    bounds = [0, sk // 3, (2 * sk) // 3, sk]
    lses, outs = [], []
    for a, z in zip(bounds[:-1], bounds[1:]):
        if z <= a:
            continue
        kpos = torch.arange(a, z)[None, :]
        s = qh @ kh[:, :, a:z].transpose(-1, -2) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if alibi_slopes is not None:
            s = s + _alibi_bias(alibi_slopes, b, hq, qpos, kpos, s.dtype)
        vis = torch.ones(sq, z - a, dtype=torch.bool)
        if causal or window_size[1] >= 0:
            right = 0 if causal else window_size[1]
            if causal and window_size[1] >= 0:
                right = min(0, window_size[1])
            vis &= kpos <= qpos + right
        if window_size[0] >= 0:
            vis &= kpos >= qpos - window_size[0]
        s = s.masked_fill(~vis, float("-inf"))
        lse = torch.logsumexp(s, dim=-1, keepdim=True)
        lses.append(lse)
        outs.append(_softmax_zero_rows(s) @ vh[:, :, a:z])
    lse_all = torch.logsumexp(torch.stack(lses), dim=0)
    finite = torch.isfinite(lse_all)
    lse_safe = torch.where(finite, lse_all, torch.zeros_like(lse_all))
    out = torch.zeros(b, hq, sq, dv, dtype=q.dtype)
    for lse, o in zip(lses, outs):
        w = torch.where(finite & torch.isfinite(lse), torch.exp(lse - lse_safe), torch.zeros_like(lse))
        out = out + w * o
    return out.permute(0, 2, 1, 3)


# --- kernel: flash_base2_key_blocks ---
def flash_base2_key_blocks(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Online softmax in base 2 (scores * log2(e), exp2) over key blocks of 16, kv heads indexed per query head."""
    b, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    g = hq // hkv
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    log2e = 1.0 / math.log(2.0)
    head_map = torch.arange(hq) // g
    qh = q.permute(0, 2, 1, 3)
    kh = k.permute(0, 2, 1, 3)[:, head_map]
    vh = v.permute(0, 2, 1, 3)[:, head_map]
    i = torch.arange(sq)[:, None] + (sk - sq)
    m = torch.full((b, hq, sq, 1), float("-inf"), dtype=q.dtype)
    den = torch.zeros((b, hq, sq, 1), dtype=q.dtype)
    acc = torch.zeros((b, hq, sq, dv), dtype=q.dtype)
    for j0 in range(0, sk, 16):
        j1 = min(j0 + 16, sk)
        j = torch.arange(j0, j1)[None, :]
        s = qh @ kh[:, :, j0:j1].transpose(-1, -2) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if alibi_slopes is not None:
            s = s + _alibi_bias(alibi_slopes, b, hq, i, j, s.dtype)
        ok = torch.ones(sq, j1 - j0, dtype=torch.bool)
        if causal:
            ok &= j <= i
        if window_size[0] >= 0:
            ok &= j >= i - window_size[0]
        if window_size[1] >= 0:
            ok &= j <= i + window_size[1]
        s2 = (s * log2e).masked_fill(~ok, float("-inf"))
        m_new = torch.maximum(m, s2.amax(dim=-1, keepdim=True))
        m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        corr = torch.where(torch.isfinite(m), torch.exp2(m - m_safe), torch.zeros_like(m))
        p = torch.exp2(s2 - m_safe)
        den = den * corr + p.sum(dim=-1, keepdim=True)
        acc = acc * corr + p @ vh[:, :, j0:j1]
        m = m_new
    out = acc / torch.where(den == 0, torch.ones_like(den), den)
    return out.permute(0, 2, 1, 3)


_FEATURES = ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]

CATALOG = [
    dict(name="flash-vllm-xformers-local-window", api="flash-attn", fn="flash_xformers_local_window", correct=False,
         bug="window-left-short-by-one",
         parameter="the left window is applied as an xformers-style local attention of window_size[0] keys "
                   "((i + off) - j < left) instead of flash's inclusive bound (<= left), so key i + off - left is "
                   "hidden. Triggers: window left >= 0 with key i + off - left otherwise visible",
         source="vllm-project/vllm#3385", report="https://github.com/vllm-project/vllm/issues/3385",
         dtype="float64", features=_FEATURES),
    dict(name="flash-vllm-decode-window-dropped", api="flash-attn", fn="flash_decode_window_ignored", correct=False,
         bug="window-ignored-on-decode",
         parameter="the single-query (decode) path builds its attention bias without the sliding window, so the "
                   "window is ignored when Sq == 1. Triggers: Sq == 1 with a window that hides a key",
         source="vllm-project/vllm#23969", report="https://github.com/vllm-project/vllm/issues/23969",
         dtype="float64", features=_FEATURES),
    dict(name="flash-flashinfer-window-left-uint32", api="flash-attn", fn="flash_window_left_uint32", correct=False,
         bug="window-left-unsigned-wrap",
         parameter="window_left is held as a uint32, so -1 (no left bound) becomes 4294967295, the `>= 0` test "
                   "is always true and the int32 bound i + off - 4294967295 wraps to i + off + 1: every key up to "
                   "and including the diagonal is hidden. Triggers: window left == -1 (including the default "
                   "window_size)",
         source="flashinfer-ai/flashinfer#1368", report="https://github.com/flashinfer-ai/flashinfer/pull/1368",
         dtype="float64", features=_FEATURES),
    dict(name="flash-ajhalthor-merge-no-permute", api="flash-attn", fn="flash_out_reshape_no_permute",
         correct=False, bug="output-reshape-without-permute",
         parameter="the (B, H, Sq, Dv) result is reshaped straight to (B, Sq, H, Dv) without permuting the head "
                   "and sequence axes first, so rows and heads are scrambled. Triggers: Hq > 1 and Sq > 1",
         source="ajhalthor/Transformer-Neural-Network#8",
         report="https://github.com/ajhalthor/Transformer-Neural-Network/issues/8",
         dtype="float64", features=_FEATURES),
    dict(name="flash-candlevllm-kv-not-repeated", api="flash-attn", fn="flash_kv_heads_not_repeated",
         correct=False, bug="gqa-kv-not-repeated",
         parameter="repeat_kv was removed: the decode path (Sq == 1) maps query heads to kv heads, but the "
                   "prefill path multiplies q (B, Hq, S, D) with k (B, Hkv, S, D) directly: right by broadcasting "
                   "when Hkv == 1, a shape error when 1 < Hkv < Hq. Triggers: 1 < Hkv < Hq with Sq > 1",
         source="EricLBuehler/candle-vllm#52", report="https://github.com/EricLBuehler/candle-vllm/pull/52",
         dtype="float64", features=_FEATURES),
    dict(name="flash-vllm-packgqa-window-row", api="flash-attn", fn="flash_pack_gqa_window_row", correct=False,
         bug="window-position-from-packed-row",
         parameter="with the query heads of a kv head packed into the row axis (row = i * G + g), the sliding "
                   "window test takes the packed row index as the query position instead of row // G (causal "
                   "and ALiBi use the right position): the window is shifted for GQA. Triggers: a window with "
                   "Hq // Hkv > 1",
         source="vllm-project/vllm#17476", report="https://github.com/vllm-project/vllm/issues/17476",
         dtype="float64", features=_FEATURES),
    dict(name="flash-split-kv-lse-merge", api="flash-attn", fn="flash_split_kv_lse_merge", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=_FEATURES),
    dict(name="flash-base2-key-blocks", api="flash-attn", fn="flash_base2_key_blocks", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=_FEATURES),
]
