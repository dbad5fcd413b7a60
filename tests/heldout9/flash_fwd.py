"""Held-out attention kernels, API `flash-attn`.

fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
alibi_slopes=None, deterministic=False, return_attn_probs=False) with flash_attn_func's semantics on torch
tensors q (B, Sq, Hq, D), k (B, Sk, Hkv, D), v (B, Sk, Hkv, Dv). Bottom-right alignment, off = Sk - Sq: causal
keeps j <= i + off; window (left, right) keeps i + off - left <= j <= i + off + right (-1 unbounded; causal
means right 0). softcap > 0: s = softcap * tanh(s / softcap) on the scaled scores before masking; ALiBi adds
-slope * |i + off - j| after the cap (slopes float32, (Hq,) or (B, Hq)); query head h uses kv head
h // (Hq // Hkv); rows with no visible key are zeros. Returns (B, Sq, Hq, Dv) in the input dtype.

Each broken kernel carries exactly one BUG comment, on the line holding its mistake; see CATALOG.
"""
import math

import torch

LOG2E = 1.4426950408889634


def _scale(q, softmax_scale):
    return 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else softmax_scale


def _visible(sq, sk, causal, window_size):
    """Bottom-right keep-mask (Sq, Sk) for causal / window_size."""
    left, right = window_size
    qpos = torch.arange(sq).unsqueeze(1) + (sk - sq)
    kpos = torch.arange(sk).unsqueeze(0)
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if causal:
        keep &= kpos <= qpos
    if right >= 0:
        keep &= kpos <= qpos + right
    if left >= 0:
        keep &= kpos >= qpos - left
    return keep


def _alibi(alibi_slopes, b, hq, sq, sk, dtype):
    """-slope * |i + off - j| as (B, Hq, Sq, Sk), or None."""
    if alibi_slopes is None:
        return None
    slopes = alibi_slopes.to(dtype)
    slopes = slopes.reshape(1, hq, 1, 1) if slopes.dim() == 1 else slopes.reshape(b, hq, 1, 1)
    dist = (torch.arange(sq).unsqueeze(1) + (sk - sq) - torch.arange(sk).unsqueeze(0)).abs().to(dtype)
    return -slopes * dist


def _safe_softmax(s):
    dead = torch.isneginf(s).all(dim=-1, keepdim=True)
    p = torch.softmax(s.masked_fill(dead, 0.0), dim=-1)
    return p.masked_fill(dead, 0.0)


def _heads_first(q, k, v):
    """(B, S, H, D) -> (B, H, S, D) with K/V expanded to the query heads."""
    g = q.shape[2] // k.shape[2]
    return (q.transpose(1, 2), k.transpose(1, 2).repeat_interleave(g, 1),
            v.transpose(1, 2).repeat_interleave(g, 1))


# --- kernel: flash_cb_sliding_mask ---
# Continuous-batching style: the attention mask is built as an additive (Sq, Sk) matrix from triu/tril
# diagonals (causal / right bound first, then the sliding window), then added to the scores.

def flash_cb_sliding_mask(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                          softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    B, Sq, Hq, D = q.shape
    Sk = k.shape[1]
    left, right = window_size
    off = Sk - Sq
    minus_inf = torch.full((Sq, Sk), float("-inf"), dtype=q.dtype)
    masked = torch.zeros(Sq, Sk, dtype=q.dtype)
    upper = 0 if causal else None
    if right >= 0:
        upper = right if upper is None else min(upper, right)
    if upper is not None:
        masked = torch.triu(minus_inf, diagonal=off + upper + 1)
    if left >= 0:
        sliding_window = left + 1
        masked = torch.tril(masked, diagonal=off + sliding_window)  # BUG: window added, not subtracted (no lower bound)
    qh, kh, vh = _heads_first(q, k, v)
    s = qh @ kh.transpose(-2, -1) * _scale(q, softmax_scale)
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    bias = _alibi(alibi_slopes, B, Hq, Sq, Sk, q.dtype)
    if bias is not None:
        s = s + bias
    out = _safe_softmax(s + masked) @ vh
    return out.transpose(1, 2).contiguous()


# --- kernel: flash_rotating_window ---
# mlx-style masks: the window is a count of keys (the query's own key included), checked on positions.

def flash_rotating_window(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                          softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    B, Sq, Hq, D = q.shape
    Sk = k.shape[1]
    left, right = window_size
    qpos = torch.arange(Sq).unsqueeze(1) + (Sk - Sq)
    kpos = torch.arange(Sk).unsqueeze(0)
    keep = torch.ones(Sq, Sk, dtype=torch.bool)
    if causal:
        keep &= kpos <= qpos
    if right >= 0:
        keep &= kpos <= qpos + right
    if left >= 0:
        window_size_keys = left + 1
        keep &= (qpos - kpos) <= window_size_keys  # BUG: admits window + 1 keys; should be < window_size_keys
    qh, kh, vh = _heads_first(q, k, v)
    s = qh @ kh.transpose(-2, -1) * _scale(q, softmax_scale)
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    bias = _alibi(alibi_slopes, B, Hq, Sq, Sk, q.dtype)
    if bias is not None:
        s = s + bias
    s = s.masked_fill(~keep, float("-inf"))
    return (_safe_softmax(s) @ vh).transpose(1, 2).contiguous()


# --- kernel: flash_onnx_softcap_after_mask ---
# ONNX Attention op decomposition: scale, add the attention mask (0 / -inf), softcap, softmax.

def flash_onnx_softcap_after_mask(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                                  window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                                  return_attn_probs=False):
    B, Sq, Hq, D = q.shape
    Sk = k.shape[1]
    keep = _visible(Sq, Sk, causal, window_size)
    at_mask = torch.zeros(Sq, Sk, dtype=q.dtype).masked_fill(~keep, float("-inf"))
    qh, kh, vh = _heads_first(q, k, v)
    qk = qh @ kh.transpose(-2, -1) * _scale(q, softmax_scale)
    qk = qk + at_mask
    if softcap > 0:
        qk = softcap * torch.tanh(qk / softcap)  # BUG: cap applied after the -inf mask (masked keys become -softcap)
    bias = _alibi(alibi_slopes, B, Hq, Sq, Sk, q.dtype)
    if bias is not None:
        qk = qk + bias
    return (_safe_softmax(qk) @ vh).transpose(1, 2).contiguous()


# --- kernel: flash_decode_head_tiles ---
# Decode (Sq == 1) kernel for GQA: query heads packed in tiles of BLOCK_H = 4, each tile's program
# loading one KV head; prefill (Sq > 1) goes through a per-head path.

def flash_decode_head_tiles(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    B, Sq, Hq, D = q.shape
    Sk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[-1]
    G = Hq // Hkv
    BLOCK_H = 4
    sc = _scale(q, softmax_scale)
    keep = _visible(Sq, Sk, causal, window_size)
    bias = _alibi(alibi_slopes, B, Hq, Sq, Sk, q.dtype)
    out = torch.zeros(B, Sq, Hq, Dv, dtype=q.dtype)

    def one_head(h, kvh):
        s = q[:, :, h] @ k[:, :, kvh].transpose(-2, -1) * sc
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if bias is not None:
            s = s + bias[:, h]
        s = s.masked_fill(~keep, float("-inf"))
        out[:, :, h] = _safe_softmax(s) @ v[:, :, kvh]

    if Sq == 1 and G > 1:
        tiles_per_group = (G + BLOCK_H - 1) // BLOCK_H
        for t in range((Hq + BLOCK_H - 1) // BLOCK_H):
            for h in range(t * BLOCK_H, min((t + 1) * BLOCK_H, Hq)):
                kvh = t // tiles_per_group  # BUG: KV head from the tile index; tiles straddle groups when G % 4 != 0
                one_head(h, kvh)
    else:
        for h in range(Hq):
            one_head(h, h // G)
    return out


# --- kernel: flash_fused_causal_gate ---
# Fused-SDPA wrapper: causal masking is requested from the fused kernel by a mask mode string; windows
# are passed as an explicit mask.

def flash_fused_causal_gate(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    B, Sq, Hq, D = q.shape
    Sk = k.shape[1]
    mask_mode = "causal" if causal and Sq > 1 and Sq == Sk else ""  # BUG: chunks with cached keys get no causal mask
    keep = _visible(Sq, Sk, False, window_size)
    if mask_mode == "causal":
        keep &= torch.arange(Sk).unsqueeze(0) <= torch.arange(Sq).unsqueeze(1) + (Sk - Sq)
    qh, kh, vh = _heads_first(q, k, v)
    s = qh @ kh.transpose(-2, -1) * _scale(q, softmax_scale)
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    bias = _alibi(alibi_slopes, B, Hq, Sq, Sk, q.dtype)
    if bias is not None:
        s = s + bias
    s = s.masked_fill(~keep, float("-inf"))
    return (_safe_softmax(s) @ vh).transpose(1, 2).contiguous()


# --- kernel: flash_single_m_block_grid ---
# Decode-oriented kernel: the GQA group is folded into the query-row axis (row r = s * G + g) and the
# rows are processed in M blocks of 64.

def flash_single_m_block_grid(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    B, Sq, Hq, D = q.shape
    Sk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[-1]
    G = Hq // Hkv
    BLOCK_M = 64
    sc = _scale(q, softmax_scale)
    keep = _visible(Sq, Sk, causal, window_size)
    bias = _alibi(alibi_slopes, B, Hq, Sq, Sk, q.dtype)
    out = torch.zeros(B, Sq, Hq, Dv, dtype=q.dtype)
    rows = Sq * G
    n_m_blocks = 1  # BUG: grid.x fixed at one M block; should be ceil(rows / BLOCK_M)
    for b in range(B):
        for hk in range(Hkv):
            q_rows = q[b, :, hk * G:(hk + 1) * G].reshape(rows, D)
            for mb in range(n_m_blocks):
                r = torch.arange(mb * BLOCK_M, min((mb + 1) * BLOCK_M, rows))
                if r.numel() == 0:
                    continue
                i, g = r // G, r % G
                s = q_rows[r] @ k[b, :, hk].transpose(0, 1) * sc
                if softcap > 0:
                    s = softcap * torch.tanh(s / softcap)
                if bias is not None:
                    s = s + bias[b if bias.shape[0] > 1 else 0, hk * G + g, i]
                s = s.masked_fill(~keep[i], float("-inf"))
                out[b, i, hk * G + g] = _safe_softmax(s) @ v[b, :, hk]
    return out


# --- kernel: flash_splitkv_lse_head_stride ---
# Split-KV (flash-decoding) kernel: one program per (batch, kv head, split of 32 keys) computes the
# partial outputs and log-sum-exps of all G query heads of that kv head; a reduce kernel merges them.

def flash_splitkv_lse_head_stride(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                                  window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                                  return_attn_probs=False):
    B, Sq, Hq, D = q.shape
    Sk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[-1]
    G = Hq // Hkv
    SPLIT = 32
    n_splits = max(1, (Sk + SPLIT - 1) // SPLIT)
    sc = _scale(q, softmax_scale)
    keep = _visible(Sq, Sk, causal, window_size)
    bias = _alibi(alibi_slopes, B, Hq, Sq, Sk, q.dtype)
    o_accum = torch.zeros(n_splits, B, Hq, Sq, Dv, dtype=q.dtype)
    lse_accum = torch.zeros(n_splits, B, Hq, Sq, dtype=q.dtype)
    for b in range(B):
        for hk in range(Hkv):
            qg = q[b, :, hk * G:(hk + 1) * G].transpose(0, 1)
            for sp in range(n_splits):
                n0, n1 = sp * SPLIT, min((sp + 1) * SPLIT, Sk)
                s = qg @ k[b, n0:n1, hk].transpose(0, 1) * sc
                if softcap > 0:
                    s = softcap * torch.tanh(s / softcap)
                if bias is not None:
                    s = s + bias[b if bias.shape[0] > 1 else 0, hk * G:(hk + 1) * G, :, n0:n1]
                s = s.masked_fill(~keep[:, n0:n1], float("-inf"))
                o_accum[sp, b, hk * G:(hk + 1) * G] = _safe_softmax(s) @ v[b, n0:n1, hk]
                lse_accum[sp, b, 0:G] = torch.logsumexp(s, dim=-1)  # BUG: kv-head stride missing (hk * G offset)
    lse_max = lse_accum.max(dim=0).values
    alive = torch.isfinite(lse_max)
    w = torch.exp(lse_accum - torch.where(alive, lse_max, torch.zeros_like(lse_max)))
    w = w / torch.where(alive, w.sum(dim=0), torch.ones_like(lse_max))
    out = (w.unsqueeze(-1) * o_accum).sum(dim=0)
    out = torch.where(alive.unsqueeze(-1), out, torch.zeros_like(out))
    return out.permute(0, 2, 1, 3).contiguous()


# --- kernel: flash_alibi_key_position ---
# ALiBi as in the original fairseq code: a bias that depends on the key position only, slope * j,
# added to the scores of every query row.

def flash_alibi_key_position(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    B, Sq, Hq, D = q.shape
    Sk = k.shape[1]
    keep = _visible(Sq, Sk, causal, window_size)
    qh, kh, vh = _heads_first(q, k, v)
    s = qh @ kh.transpose(-2, -1) * _scale(q, softmax_scale)
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(q.dtype)
        slopes = slopes.reshape(1, Hq, 1, 1) if slopes.dim() == 1 else slopes.reshape(B, Hq, 1, 1)
        kpos = torch.arange(Sk, dtype=q.dtype).reshape(1, 1, 1, Sk)
        alibi = slopes * kpos  # BUG: key-position-only bias; -slope*|i+off-j| up to a row constant only under causal
        s = s + alibi
    s = s.masked_fill(~keep, float("-inf"))
    return (_safe_softmax(s) @ vh).transpose(1, 2).contiguous()


# --- kernel: flash_query_offset_lo ---
# Triton-style forward for queries that are the tail of a longer KV sequence (start_q = Sk - Sq): online
# softmax over key blocks of 32 from lo to hi, positions masked inside each block.

def flash_query_offset_lo(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                          softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    B, Sq, Hq, D = q.shape
    Sk, Dv = k.shape[1], v.shape[-1]
    BLOCK_N = 32
    sc = _scale(q, softmax_scale)
    keep = _visible(Sq, Sk, causal, window_size)
    bias = _alibi(alibi_slopes, B, Hq, Sq, Sk, q.dtype)
    qh, kh, vh = _heads_first(q, k, v)
    start_q = Sk - Sq
    lo = max(start_q, 0)  # BUG: loop starts at the query offset, skipping the cached keys [0, start_q)
    hi = Sk
    m_i = torch.full((B, Hq, Sq, 1), float("-inf"), dtype=q.dtype)
    l_i = torch.zeros((B, Hq, Sq, 1), dtype=q.dtype)
    acc = torch.zeros((B, Hq, Sq, Dv), dtype=q.dtype)
    for start_n in range(lo, hi, BLOCK_N):
        end_n = min(start_n + BLOCK_N, hi)
        s = qh @ kh[:, :, start_n:end_n].transpose(-2, -1) * sc
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if bias is not None:
            s = s + bias[..., start_n:end_n]
        s = s.masked_fill(~keep[:, start_n:end_n], float("-inf"))
        m_new = torch.maximum(m_i, s.max(dim=-1, keepdim=True).values)
        m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        p = torch.exp(s - m_safe)
        alpha = torch.exp(m_i - m_safe)
        l_i = l_i * alpha + p.sum(dim=-1, keepdim=True)
        acc = acc * alpha + p @ vh[:, :, start_n:end_n]
        m_i = m_new
    out = torch.where(l_i > 0, acc / torch.where(l_i > 0, l_i, torch.ones_like(l_i)), torch.zeros_like(acc))
    return out.transpose(1, 2).contiguous()


# --- kernel: flash_banded_tiles_exp2 ---
# Correct: query tiles of 16 rows visit only the key tiles (of 32) that overlap their causal/window band;
# scores (scale, softcap, ALiBi) converted to base 2 once and accumulated with exp2 online softmax.

def flash_banded_tiles_exp2(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    B, Sq, Hq, D = q.shape
    Sk, Dv = k.shape[1], v.shape[-1]
    BLOCK_M, BLOCK_N = 16, 32
    left, right = window_size
    off = Sk - Sq
    upper = 0 if causal else None
    if right >= 0:
        upper = right if upper is None else min(upper, right)
    sc = _scale(q, softmax_scale)
    keep = _visible(Sq, Sk, causal, window_size)
    bias = _alibi(alibi_slopes, B, Hq, Sq, Sk, q.dtype)
    qh, kh, vh = _heads_first(q, k, v)
    out = torch.zeros(B, Hq, Sq, Dv, dtype=q.dtype)
    for m0 in range(0, Sq, BLOCK_M):
        m1 = min(m0 + BLOCK_M, Sq)
        lo = 0 if left < 0 else max(0, m0 + off - left)
        hi = Sk if upper is None else min(Sk, m1 - 1 + off + upper + 1)
        if hi <= lo:
            continue
        m_i = torch.full((B, Hq, m1 - m0, 1), float("-inf"), dtype=q.dtype)
        l_i = torch.zeros((B, Hq, m1 - m0, 1), dtype=q.dtype)
        acc = torch.zeros((B, Hq, m1 - m0, Dv), dtype=q.dtype)
        for n0 in range((lo // BLOCK_N) * BLOCK_N, hi, BLOCK_N):
            n1 = min(n0 + BLOCK_N, Sk)
            s = qh[:, :, m0:m1] @ kh[:, :, n0:n1].transpose(-2, -1) * sc
            if softcap > 0:
                s = softcap * torch.tanh(s / softcap)
            if bias is not None:
                s = s + bias[..., m0:m1, n0:n1]
            s2 = (s * LOG2E).masked_fill(~keep[m0:m1, n0:n1], float("-inf"))
            m_new = torch.maximum(m_i, s2.max(dim=-1, keepdim=True).values)
            m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
            p = torch.exp2(s2 - m_safe)
            alpha = torch.exp2(m_i - m_safe)
            l_i = l_i * alpha + p.sum(dim=-1, keepdim=True)
            acc = acc * alpha + p @ vh[:, :, n0:n1]
            m_i = m_new
        out[:, :, m0:m1] = torch.where(l_i > 0, acc / torch.where(l_i > 0, l_i, torch.ones_like(l_i)),
                                       torch.zeros_like(acc))
    return out.transpose(1, 2).contiguous()


# --- kernel: flash_split_kv_grouped ---
# Correct: split-KV over chunks of 40 keys with GQA handled by grouping query heads per kv head (no K/V
# expansion); partial outputs merged with their log-sum-exps.

def flash_split_kv_grouped(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    B, Sq, Hq, D = q.shape
    Sk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[-1]
    G = Hq // Hkv
    sc = _scale(q, softmax_scale)
    keep = _visible(Sq, Sk, causal, window_size)
    bias = _alibi(alibi_slopes, B, Hq, Sq, Sk, q.dtype)
    q5 = q.permute(0, 2, 1, 3).reshape(B, Hkv, G, Sq, D)
    k5 = k.permute(0, 2, 1, 3).unsqueeze(2)
    v5 = v.permute(0, 2, 1, 3).unsqueeze(2)
    outs, lses = [], []
    for n0 in range(0, Sk, 40):
        n1 = min(n0 + 40, Sk)
        s = q5 @ k5[..., n0:n1, :].transpose(-2, -1) * sc
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if bias is not None:
            s = s + bias[..., n0:n1].expand(B, Hq, Sq, n1 - n0).reshape(B, Hkv, G, Sq, n1 - n0)
        s = s.masked_fill(~keep[:, n0:n1], float("-inf"))
        outs.append(_safe_softmax(s) @ v5[..., n0:n1, :])
        lses.append(torch.logsumexp(s, dim=-1, keepdim=True))
    if not outs:
        return torch.zeros(B, Sq, Hq, Dv, dtype=q.dtype)
    lse = torch.stack(lses)
    lse_max = lse.max(dim=0).values
    alive = torch.isfinite(lse_max)
    w = torch.exp(lse - torch.where(alive, lse_max, torch.zeros_like(lse_max)))
    w = w / torch.where(alive, w.sum(dim=0), torch.ones_like(lse_max))
    out = (w * torch.stack(outs)).sum(dim=0)
    out = torch.where(alive, out, torch.zeros_like(out))
    return out.reshape(B, Hq, Sq, Dv).permute(0, 2, 1, 3).contiguous()


# --- kernel: flash_decode_fastpath ---
# Correct: a decode fast path for Sq == 1 (all query heads of a kv group in one matmul, float64
# accumulation) and a dense float64 path otherwise.

def flash_decode_fastpath(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                          softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    B, Sq, Hq, D = q.shape
    Sk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[-1]
    G = Hq // Hkv
    sc = _scale(q, softmax_scale)
    keep = _visible(Sq, Sk, causal, window_size)
    bias = _alibi(alibi_slopes, B, Hq, Sq, Sk, torch.float64)
    if Sq == 1:
        qg = q[:, 0].double().reshape(B, Hkv, G, D)
        s = torch.einsum("bhgd,bshd->bhgs", qg, k.double()) * sc
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if bias is not None:
            s = s + bias[:, :, 0].expand(B, Hq, Sk).reshape(B, Hkv, G, Sk)
        s = s.masked_fill(~keep[0], float("-inf"))
        o = torch.einsum("bhgs,bshd->bhgd", _safe_softmax(s), v.double())
        return o.reshape(B, 1, Hq, Dv).to(q.dtype)
    qh, kh, vh = _heads_first(q.double(), k.double(), v.double())
    s = qh @ kh.transpose(-2, -1) * sc
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if bias is not None:
        s = s + bias
    s = s.masked_fill(~keep, float("-inf"))
    return (_safe_softmax(s) @ vh).transpose(1, 2).contiguous().to(q.dtype)


API = "flash-attn"
FEATURES = ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]


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
    _entry("flash-hf-cb-sliding-diagonal", "flash_cb_sliding_mask", "sliding-window-diagonal-sign",
           "window applied as tril(mask, diagonal=Sk - Sq + (left + 1)) on the causal/right-bound mask: no "
           "lower bound at all, and keys more than left + 1 beyond the diagonal are unmasked again. Triggers: "
           "window left >= 0 with keys before i + off - left (and, with causal, keys past i + off + left + 1)",
           "huggingface/transformers#41228", "pull"),
    _entry("flash-mlxlm-window-one-extra", "flash_rotating_window", "window-left-off-by-one-inclusive",
           "left window admits distance left + 1 (qpos - kpos <= left + 1 instead of < left + 1): one key "
           "too many. Triggers: window left >= 0 and a key at distance left + 1",
           "ml-explore/mlx-lm#390", "pull"),
    _entry("flash-onnx-softcap-after-mask", "flash_onnx_softcap_after_mask", "softcap-after-masking",
           "softcap applied after the -inf mask is added: masked keys become -softcap and get weight (dead rows "
           "become uniform). Triggers: softcap > 0 with causal or a window dropping keys (larger for a small "
           "softcap)",
           "onnx/onnx#7865", "issues"),
    _entry("flash-freetoken-decode-tile-kv-head", "flash_decode_head_tiles", "gqa-decode-tile-crosses-group",
           "decode tiles of 4 query heads take kv head tile // ceil(G / 4): a tile straddling two kv groups "
           "reads the first group's K/V for all its heads. Triggers: Sq == 1, Hkv > 1, G > 4 and G % 4 != 0 "
           "(e.g. Hq=12/Hkv=2, Hq=10/Hkv=2)",
           "FlashML-org/FreeToken#177", "pull"),
    _entry("flash-mlxnode-causal-only-square", "flash_fused_causal_gate", "causal-skipped-when-sq-ne-sk",
           "causal mask mode requested only when Sq == Sk: a multi-token chunk after cached keys attends to "
           "future keys. Triggers: causal with 1 < Sq != Sk",
           "mlx-node/mlx-node#24", "pull"),
    _entry("flash-comfy-single-m-block", "flash_single_m_block_grid", "grid-covers-first-row-block-only",
           "GQA group folded into the row axis (Sq * G rows) but the grid has one M block of 64: rows past 64 "
           "are never computed (zeros). Triggers: Sq * (Hq // Hkv) > 64",
           "Comfy-Org/comfy-kitchen#111", "pull"),
    _entry("flash-hpcops-splitk-lse-stride", "flash_splitkv_lse_head_stride", "split-lse-missing-kv-head-stride",
           "split-KV partial log-sum-exps stored without the kv-head offset (slots of kv head 0, last writer "
           "wins, others stay 0) while outputs are stored correctly: the merge weights are wrong. Triggers: "
           "Hkv > 1 and Sk > 32 (more than one split)",
           "Tencent/hpc-ops#6", "pull"),
    _entry("flash-xtransformers-alibi-key-position", "flash_alibi_key_position", "alibi-key-position-only",
           "ALiBi added as slope * j (key position only), which matches -slope * |i + off - j| only up to a "
           "per-row constant when keys right of the diagonal are masked. Triggers: alibi_slopes without causal "
           "(or with window right > 0)",
           "lucidrains/x-transformers#88", "pull"),
    _entry("flash-gptoss-start-q-lo", "flash_query_offset_lo", "key-loop-starts-at-query-offset",
           "key-block loop starts at lo = start_q = Sk - Sq, so the cached keys [0, Sk - Sq) are never visited. "
           "Triggers: Sk > Sq with those keys visible (non-causal, causal, or a wide enough left window)",
           "openai/gpt-oss#196", "pull"),
    _entry("flash-banded-tiles-exp2", "flash_banded_tiles_exp2"),
    _entry("flash-split-kv-grouped", "flash_split_kv_grouped"),
    _entry("flash-decode-fastpath", "flash_decode_fastpath"),
]
