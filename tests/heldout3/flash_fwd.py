"""Held-out attention kernels for the ``flash-attn`` API (NumPy).

Contract: the semantics of ``flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False)`` with q
(B, Sq, Hq, D), k/v (B, Sk, Hkv, D/Dv). Causal and window are bottom-right aligned (off = Sk - Sq): causal keeps
j <= i + off, window (left, right) keeps i + off - left <= j <= i + off + right (-1 = unbounded). softcap > 0 maps
the scaled scores s to softcap * tanh(s / softcap) before masking; ALiBi adds -slope * |i + off - j| to the scaled
(capped) scores. Query head h reads kv head h // (Hq // Hkv). Output (B, Sq, Hq, Dv); rows with no visible key are
zeros. These kernels return the output only (return_attn_probs=True raises NotImplementedError).

Each broken kernel carries exactly one mistake, marked ``# BUG:``; see CATALOG at the end.
"""
import math

import numpy as np


# ----------------------------------------------------------------------------------------------------------------
# shared helpers (correct)
# ----------------------------------------------------------------------------------------------------------------

def _check_args(dropout_p, return_attn_probs):
    if dropout_p:
        raise NotImplementedError("dropout is not supported by this kernel")
    if return_attn_probs:
        raise NotImplementedError("return_attn_probs is not supported by this kernel")


def _scale(q, softmax_scale):
    return 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else softmax_scale


def _bhsd(x):
    """(B, S, H, D) -> (B, H, S, D)."""
    return np.transpose(x, (0, 2, 1, 3))


def _bshd(x):
    """(B, H, S, D) -> (B, S, H, D)."""
    return np.ascontiguousarray(np.transpose(x, (0, 2, 1, 3)))


def _repeat_kv(x, n_rep):
    """(B, Hkv, S, D) -> (B, Hkv * n_rep, S, D) with head h reading kv head h // n_rep (HF repeat_kv)."""
    return x if n_rep == 1 else np.repeat(x, n_rep, axis=1)


def _keep(i, j, sq, sk, causal, window_size):
    """Visibility of key j for query i (index arrays that broadcast), bottom-right aligned."""
    left, right = window_size
    if causal:
        right = 0
    diag = i + (sk - sq)
    keep = np.ones(np.broadcast_shapes(np.shape(i), np.shape(j)), dtype=bool)
    if left >= 0:
        keep &= j >= diag - left
    if right >= 0:
        keep &= j <= diag + right
    return keep


def _slopes(alibi_slopes, b, h, dtype):
    slopes = np.asarray(alibi_slopes).astype(dtype)
    if slopes.ndim == 1:
        slopes = np.broadcast_to(slopes, (b, h))
    return slopes


def _alibi(alibi_slopes, b, h, i, j, sq, sk, dtype):
    """(B, H, rows, cols) bias -slope * |i + off - j|."""
    slopes = _slopes(alibi_slopes, b, h, dtype)
    dist = np.abs(i + (sk - sq) - j).astype(dtype)
    return -slopes[:, :, None, None] * dist


def _softcap(s, softcap):
    return softcap * np.tanh(s / softcap)


def _softmax(s):
    """Row softmax; an all -inf row gives zeros."""
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isneginf(m), 0.0, m)
    p = np.exp(s - m)
    denom = np.sum(p, axis=-1, keepdims=True)
    return p / np.where(denom == 0.0, 1.0, denom)


def _round_to_bf16(x):
    """Round-to-nearest-even to bfloat16, returned in the input dtype."""
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    bits = x32.view(np.uint32)
    bits = (bits + (((bits >> 16) & np.uint32(1)) + np.uint32(0x7FFF))) & np.uint32(0xFFFF0000)
    return bits.view(np.float32).astype(x.dtype)


def _dense_scores(q, k, softmax_scale, softcap, alibi_slopes):
    """Scaled (capped, ALiBi-biased) scores (B, Hq, Sq, Sk) with repeated K heads; no masking."""
    b, sq, hq, _ = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    qh, kh = _bhsd(q), _repeat_kv(_bhsd(k), hq // hkv)
    s = np.matmul(qh, np.swapaxes(kh, -1, -2)) * _scale(q, softmax_scale)
    if softcap > 0:
        s = _softcap(s, softcap)
    if alibi_slopes is not None:
        i, j = np.arange(sq)[:, None], np.arange(sk)[None, :]
        s = s + _alibi(alibi_slopes, b, hq, i, j, sq, sk, s.dtype)
    return s


# ----------------------------------------------------------------------------------------------------------------
# correct kernels
# ----------------------------------------------------------------------------------------------------------------

def flash_attn_einsum_grouped(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """JAX-style einsum with the query heads grouped per kv head (K/V are never repeated)."""
    _check_args(dropout_p, return_attn_probs)
    b, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    g = hq // hkv
    qg = q.reshape(b, sq, hkv, g, d)
    s = np.einsum("bqhgd,bkhd->bhgqk", qg, k) * _scale(q, softmax_scale)
    if softcap > 0:
        s = _softcap(s, softcap)
    i, j = np.arange(sq)[:, None], np.arange(sk)[None, :]
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, b, hq, i, j, sq, sk, s.dtype).reshape(b, hkv, g, sq, sk)
    s = np.where(_keep(i, j, sq, sk, causal, window_size), s, -np.inf)
    p = _softmax(s)
    out = np.einsum("bhgqk,bkhd->bqhgd", p, v)
    return out.reshape(b, sq, hq, dv).astype(q.dtype, copy=False)


def flash_attn_tiled(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                     alibi_slopes=None, deterministic=False, return_attn_probs=False, block_m=16, block_n=32):
    """FlashAttention-2 forward: query tiles x KV tiles, online softmax, KV tiles outside the band skipped."""
    _check_args(dropout_p, return_attn_probs)
    dtype = q.dtype
    b, sq, hq, _ = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    qh, kh, vh = _bhsd(q), _repeat_kv(_bhsd(k), hq // hkv), _repeat_kv(_bhsd(v), hq // hkv)
    scale = _scale(q, softmax_scale)
    left, right = window_size
    right = 0 if causal else right
    off = sk - sq
    out = np.zeros((b, hq, sq, dv), dtype=dtype)
    for m0 in range(0, sq, block_m):
        m1 = min(m0 + block_m, sq)
        n_lo = 0 if left < 0 else max(0, m0 + off - left)
        n_hi = sk if right < 0 else min(sk, m1 - 1 + off + right + 1)
        if n_hi <= n_lo:
            continue
        rows = np.arange(m0, m1)[:, None]
        m_i = np.full((b, hq, m1 - m0, 1), -np.inf, dtype=dtype)
        l_i = np.zeros((b, hq, m1 - m0, 1), dtype=dtype)
        acc = np.zeros((b, hq, m1 - m0, dv), dtype=dtype)
        for n0 in range((n_lo // block_n) * block_n, n_hi, block_n):
            n1 = min(n0 + block_n, sk)
            cols = np.arange(n0, n1)[None, :]
            s = np.matmul(qh[:, :, m0:m1], np.swapaxes(kh[:, :, n0:n1], -1, -2)) * scale
            if softcap > 0:
                s = _softcap(s, softcap)
            if alibi_slopes is not None:
                s = s + _alibi(alibi_slopes, b, hq, rows, cols, sq, sk, dtype)
            s = np.where(_keep(rows, cols, sq, sk, causal, window_size), s, -np.inf)
            m_new = np.maximum(m_i, np.max(s, axis=-1, keepdims=True))
            m_use = np.where(np.isneginf(m_new), 0.0, m_new)
            alpha = np.exp(m_i - m_use)
            p = np.exp(s - m_use)
            l_i = l_i * alpha + np.sum(p, axis=-1, keepdims=True)
            acc = acc * alpha + np.matmul(p, vh[:, :, n0:n1])
            m_i = m_new
        out[:, :, m0:m1] = acc / np.where(l_i == 0.0, 1.0, l_i)
    return _bshd(out)


def flash_attn_split_kv(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                        softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False, split_len=64):
    """Flash-decoding: KV split into num_splits chunks, partial outputs merged with their log-sum-exp."""
    _check_args(dropout_p, return_attn_probs)
    b, sq, hq, _ = q.shape
    sk, dv = k.shape[1], v.shape[-1]
    vh = _repeat_kv(_bhsd(v), hq // k.shape[2])
    s_all = _dense_scores(q, k, softmax_scale, softcap, alibi_slopes)
    keep = _keep(np.arange(sq)[:, None], np.arange(sk)[None, :], sq, sk, causal, window_size)
    s_all = np.where(keep, s_all, -np.inf)
    num_splits = max(1, -(-sk // split_len))
    chunk = -(-sk // num_splits)
    o_parts, lse_parts = [], []
    for n0 in range(0, sk, chunk):
        n1 = min(n0 + chunk, sk)
        s = s_all[..., n0:n1]
        m = np.max(s, axis=-1, keepdims=True)
        m = np.where(np.isneginf(m), 0.0, m)
        p = np.exp(s - m)
        denom = np.sum(p, axis=-1, keepdims=True)
        safe = np.where(denom == 0.0, 1.0, denom)
        o_parts.append(np.matmul(p, vh[:, :, n0:n1]) / safe)
        lse_parts.append(np.where(denom == 0.0, -np.inf, np.log(safe) + m))
    lse = np.stack(lse_parts)
    lse_max = np.max(lse, axis=0)
    lse_max = np.where(np.isneginf(lse_max), 0.0, lse_max)
    w = np.exp(lse - lse_max)
    w_sum = np.sum(w, axis=0)
    out = np.sum(w * np.stack(o_parts), axis=0) / np.where(w_sum == 0.0, 1.0, w_sum)
    return _bshd(out.astype(q.dtype, copy=False).reshape(b, hq, sq, dv))


# ----------------------------------------------------------------------------------------------------------------
# broken kernels
# ----------------------------------------------------------------------------------------------------------------

def flash_attn_causal_top_left(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    _check_args(dropout_p, return_attn_probs)
    sq, sk = q.shape[1], k.shape[1]
    vh = _repeat_kv(_bhsd(v), q.shape[2] // k.shape[2])
    s = _dense_scores(q, k, softmax_scale, softcap, alibi_slopes)
    i, j = np.arange(sq)[:, None], np.arange(sk)[None, :]
    keep = _keep(i, j, sq, sk, False, window_size)
    if causal:
        keep &= np.tril(np.ones((sq, sk), dtype=bool))  # BUG: top-left causal (torch.tril); flash is bottom-right
    s = np.where(keep, s, -np.inf)
    return _bshd(np.matmul(_softmax(s), vh).astype(q.dtype, copy=False))


def flash_attn_window_one_width(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Sliding-window model code path that threads a single window width through to the mask."""
    _check_args(dropout_p, return_attn_probs)
    sq, sk = q.shape[1], k.shape[1]
    vh = _repeat_kv(_bhsd(v), q.shape[2] // k.shape[2])
    s = _dense_scores(q, k, softmax_scale, softcap, alibi_slopes)
    sliding_window = window_size[0]
    left, right = sliding_window, sliding_window  # BUG: the right bound must be window_size[1], not the left width
    if causal:
        right = 0
    i, j = np.arange(sq)[:, None], np.arange(sk)[None, :]
    diag = i + (sk - sq)
    keep = np.ones((sq, sk), dtype=bool)
    if left >= 0:
        keep &= j >= diag - left
    if right >= 0:
        keep &= j <= diag + right
    s = np.where(keep, s, -np.inf)
    return _bshd(np.matmul(_softmax(s), vh).astype(q.dtype, copy=False))


def flash_attn_loops_window_exclusive(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                                      window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                                      return_attn_probs=False):
    """llama.cpp-style CPU path: loop over batch and heads, one (Sq, Sk) score block at a time."""
    _check_args(dropout_p, return_attn_probs)
    b, sq, hq, _ = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    n_rep = hq // hkv
    scale = _scale(q, softmax_scale)
    left, right = window_size
    if causal:
        right = 0
    ii, jj = np.arange(sq)[:, None], np.arange(sk)[None, :]
    pos = ii + (sk - sq)
    keep = np.ones((sq, sk), dtype=bool)
    if left >= 0:
        keep &= jj > pos - left  # BUG: strict bound drops the key exactly `left` positions back (must be >=)
    if right >= 0:
        keep &= jj <= pos + right
    out = np.zeros((b, sq, hq, dv), dtype=q.dtype)
    for bi in range(b):
        for h in range(hq):
            kv = h // n_rep
            s = np.matmul(q[bi, :, h, :], k[bi, :, kv, :].T) * scale
            if softcap > 0:
                s = softcap * np.tanh(s / softcap)
            if alibi_slopes is not None:
                slopes = np.asarray(alibi_slopes)
                slope = slopes[h] if slopes.ndim == 1 else slopes[bi, h]
                s = s - np.asarray(slope, dtype=s.dtype) * np.abs(pos - jj).astype(s.dtype)
            s = np.where(keep, s, -np.inf)
            out[bi, :, h, :] = np.matmul(_softmax(s), v[bi, :, kv, :])
    return out


def flash_attn_softcap_after_mask(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                  softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    _check_args(dropout_p, return_attn_probs)
    b, sq, hq, _ = q.shape
    sk = k.shape[1]
    vh = _repeat_kv(_bhsd(v), hq // k.shape[2])
    s = _dense_scores(q, k, softmax_scale, 0.0, None)
    i, j = np.arange(sq)[:, None], np.arange(sk)[None, :]
    s = np.where(_keep(i, j, sq, sk, causal, window_size), s, -np.inf)
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)  # BUG: capping after masking maps -inf to -softcap: masked keys leak in
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, b, hq, i, j, sq, sk, s.dtype)
    return _bshd(np.matmul(_softmax(s), vh).astype(q.dtype, copy=False))


def flash_attn_softcap_raw_logits(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                  softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    _check_args(dropout_p, return_attn_probs)
    b, sq, hq, _ = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    qh, kh = _bhsd(q), _repeat_kv(_bhsd(k), hq // hkv)
    vh = _repeat_kv(_bhsd(v), hq // hkv)
    scale = _scale(q, softmax_scale)
    s = np.matmul(qh, np.swapaxes(kh, -1, -2))
    if softcap > 0:
        s = softcap * np.tanh(s / softcap) * scale  # BUG: cap applied to the raw logits; scale must come first
    else:
        s = s * scale
    i, j = np.arange(sq)[:, None], np.arange(sk)[None, :]
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, b, hq, i, j, sq, sk, s.dtype)
    s = np.where(_keep(i, j, sq, sk, causal, window_size), s, -np.inf)
    return _bshd(np.matmul(_softmax(s), vh).astype(q.dtype, copy=False))


def flash_attn_alibi_key_only(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """ALiBi with the 'singleton' bias: one (1, Sk) row per head, broadcast over the queries."""
    _check_args(dropout_p, return_attn_probs)
    b, sq, hq, _ = q.shape
    sk = k.shape[1]
    vh = _repeat_kv(_bhsd(v), hq // k.shape[2])
    s = _dense_scores(q, k, softmax_scale, softcap, None)
    if alibi_slopes is not None:
        slopes = _slopes(alibi_slopes, b, hq, s.dtype)
        key_pos = np.arange(1 - sk, 1, dtype=s.dtype)[None, :]
        s = s + slopes[:, :, None, None] * key_pos  # BUG: row-independent bias equals ALiBi only under a causal mask
    i, j = np.arange(sq)[:, None], np.arange(sk)[None, :]
    s = np.where(_keep(i, j, sq, sk, causal, window_size), s, -np.inf)
    return _bshd(np.matmul(_softmax(s), vh).astype(q.dtype, copy=False))


def flash_attn_alibi_no_offset(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    _check_args(dropout_p, return_attn_probs)
    b, sq, hq, _ = q.shape
    sk = k.shape[1]
    vh = _repeat_kv(_bhsd(v), hq // k.shape[2])
    s = _dense_scores(q, k, softmax_scale, softcap, None)
    i, j = np.arange(sq)[:, None], np.arange(sk)[None, :]
    if alibi_slopes is not None:
        slopes = _slopes(alibi_slopes, b, hq, s.dtype)
        rel = np.abs(i - j).astype(s.dtype)  # BUG: query positions not shifted by Sk - Sq (KV-cache offset)
        s = s - slopes[:, :, None, None] * rel
    s = np.where(_keep(i, j, sq, sk, causal, window_size), s, -np.inf)
    return _bshd(np.matmul(_softmax(s), vh).astype(q.dtype, copy=False))


def flash_attn_alibi_flat_slopes(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                 softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    _check_args(dropout_p, return_attn_probs)
    b, sq, hq, _ = q.shape
    sk = k.shape[1]
    vh = _repeat_kv(_bhsd(v), hq // k.shape[2])
    s = _dense_scores(q, k, softmax_scale, softcap, None)
    i, j = np.arange(sq)[:, None], np.arange(sk)[None, :]
    if alibi_slopes is not None:
        slopes = np.asarray(alibi_slopes).reshape(-1)[:hq].astype(s.dtype)  # BUG: (B, Hq) slopes: batch 0 for all
        s = s - slopes[None, :, None, None] * np.abs(i + (sk - sq) - j).astype(s.dtype)
    s = np.where(_keep(i, j, sq, sk, causal, window_size), s, -np.inf)
    return _bshd(np.matmul(_softmax(s), vh).astype(q.dtype, copy=False))


def flash_attn_gqa_modulo(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                          softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    _check_args(dropout_p, return_attn_probs)
    b, sq, hq, _ = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    n_rep = hq // hkv
    kh = np.tile(_bhsd(k), (1, n_rep, 1, 1))  # BUG: query head h reads kv head h % Hkv; must be h // n_rep
    vh = np.tile(_bhsd(v), (1, n_rep, 1, 1))
    s = np.matmul(_bhsd(q), np.swapaxes(kh, -1, -2)) * _scale(q, softmax_scale)
    if softcap > 0:
        s = _softcap(s, softcap)
    i, j = np.arange(sq)[:, None], np.arange(sk)[None, :]
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, b, hq, i, j, sq, sk, s.dtype)
    s = np.where(_keep(i, j, sq, sk, causal, window_size), s, -np.inf)
    return _bshd(np.matmul(_softmax(s), vh).astype(q.dtype, copy=False))


def flash_attn_tiled_raw_max(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False,
                             block_m=16, block_n=32):
    """Tiled forward that keeps the running max in raw QK^T units and folds the scale into the exponent."""
    _check_args(dropout_p, return_attn_probs)
    if softcap > 0 or alibi_slopes is not None:
        raise NotImplementedError("softcap / ALiBi are not supported by this kernel")
    dtype = q.dtype
    b, sq, hq, _ = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    qh, kh, vh = _bhsd(q), _repeat_kv(_bhsd(k), hq // hkv), _repeat_kv(_bhsd(v), hq // hkv)
    scale = _scale(q, softmax_scale)
    out = np.zeros((b, hq, sq, dv), dtype=dtype)
    for m0 in range(0, sq, block_m):
        m1 = min(m0 + block_m, sq)
        rows = np.arange(m0, m1)[:, None]
        m_i = np.full((b, hq, m1 - m0, 1), -np.inf, dtype=dtype)
        l_i = np.zeros((b, hq, m1 - m0, 1), dtype=dtype)
        acc = np.zeros((b, hq, m1 - m0, dv), dtype=dtype)
        for n0 in range(0, sk, block_n):
            n1 = min(n0 + block_n, sk)
            cols = np.arange(n0, n1)[None, :]
            s = np.matmul(qh[:, :, m0:m1], np.swapaxes(kh[:, :, n0:n1], -1, -2))
            s = np.where(_keep(rows, cols, sq, sk, causal, window_size), s, -np.inf)
            m_new = np.maximum(m_i, np.max(s, axis=-1, keepdims=True))
            m_use = np.where(np.isneginf(m_new), 0.0, m_new)
            alpha = np.exp(m_i - m_use)  # BUG: running max is in raw units: needs exp((m_old - m_new) * scale)
            p = np.exp((s - m_use) * scale)
            l_i = l_i * alpha + np.sum(p, axis=-1, keepdims=True)
            acc = acc * alpha + np.matmul(p, vh[:, :, n0:n1])
            m_i = m_new
        out[:, :, m0:m1] = acc / np.where(l_i == 0.0, 1.0, l_i)
    return _bshd(out)


def flash_attn_tiled_causal_skip(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                 softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False,
                                 block_m=16, block_n=32):
    """Tiled forward that stops the KV loop at the last tile a causal query tile can see."""
    _check_args(dropout_p, return_attn_probs)
    dtype = q.dtype
    b, sq, hq, _ = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    qh, kh, vh = _bhsd(q), _repeat_kv(_bhsd(k), hq // hkv), _repeat_kv(_bhsd(v), hq // hkv)
    scale = _scale(q, softmax_scale)
    left, right = window_size
    off = sk - sq
    n_block_total = -(-sk // block_n)
    out = np.zeros((b, hq, sq, dv), dtype=dtype)
    for m_block, m0 in enumerate(range(0, sq, block_m)):
        m1 = min(m0 + block_m, sq)
        n_block_max = n_block_total
        if causal:
            n_block_max = min(n_block_max, -(-((m_block + 1) * block_m) // block_n))  # BUG: misses + (Sk - Sq)
        elif right >= 0:
            n_block_max = min(n_block_max, -(-(m1 + off + right) // block_n))
        n_block_min = 0 if left < 0 else max(0, m0 + off - left) // block_n
        rows = np.arange(m0, m1)[:, None]
        m_i = np.full((b, hq, m1 - m0, 1), -np.inf, dtype=dtype)
        l_i = np.zeros((b, hq, m1 - m0, 1), dtype=dtype)
        acc = np.zeros((b, hq, m1 - m0, dv), dtype=dtype)
        for n_block in range(n_block_min, n_block_max):
            n0, n1 = n_block * block_n, min((n_block + 1) * block_n, sk)
            cols = np.arange(n0, n1)[None, :]
            s = np.matmul(qh[:, :, m0:m1], np.swapaxes(kh[:, :, n0:n1], -1, -2)) * scale
            if softcap > 0:
                s = _softcap(s, softcap)
            if alibi_slopes is not None:
                s = s + _alibi(alibi_slopes, b, hq, rows, cols, sq, sk, dtype)
            s = np.where(_keep(rows, cols, sq, sk, causal, window_size), s, -np.inf)
            m_new = np.maximum(m_i, np.max(s, axis=-1, keepdims=True))
            m_use = np.where(np.isneginf(m_new), 0.0, m_new)
            alpha = np.exp(m_i - m_use)
            p = np.exp(s - m_use)
            l_i = l_i * alpha + np.sum(p, axis=-1, keepdims=True)
            acc = acc * alpha + np.matmul(p, vh[:, :, n0:n1])
            m_i = m_new
        out[:, :, m0:m1] = acc / np.where(l_i == 0.0, 1.0, l_i)
    return _bshd(out)


def flash_attn_split_kv_bf16_accum(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                                   window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                                   return_attn_probs=False, split_len=64):
    """Flash-decoding whose per-split partial outputs are stored in the activation dtype (bfloat16)."""
    _check_args(dropout_p, return_attn_probs)
    b, sq, hq, _ = q.shape
    sk, dv = k.shape[1], v.shape[-1]
    vh = _repeat_kv(_bhsd(v), hq // k.shape[2])
    s_all = _dense_scores(q, k, softmax_scale, softcap, alibi_slopes)
    keep = _keep(np.arange(sq)[:, None], np.arange(sk)[None, :], sq, sk, causal, window_size)
    s_all = np.where(keep, s_all, -np.inf)
    num_splits = max(1, -(-sk // split_len))
    chunk = -(-sk // num_splits)
    o_parts, lse_parts = [], []
    for n0 in range(0, sk, chunk):
        n1 = min(n0 + chunk, sk)
        s = s_all[..., n0:n1]
        m = np.max(s, axis=-1, keepdims=True)
        m = np.where(np.isneginf(m), 0.0, m)
        p = np.exp(s - m)
        denom = np.sum(p, axis=-1, keepdims=True)
        safe = np.where(denom == 0.0, 1.0, denom)
        o = np.matmul(p, vh[:, :, n0:n1]) / safe
        if num_splits > 1:
            o = _round_to_bf16(o)  # BUG: partial outputs (Oaccum) kept in bf16 before the merge; need float32
        o_parts.append(o)
        lse_parts.append(np.where(denom == 0.0, -np.inf, np.log(safe) + m))
    lse = np.stack(lse_parts)
    lse_max = np.max(lse, axis=0)
    lse_max = np.where(np.isneginf(lse_max), 0.0, lse_max)
    w = np.exp(lse - lse_max)
    w_sum = np.sum(w, axis=0)
    out = np.sum(w * np.stack(o_parts), axis=0) / np.where(w_sum == 0.0, 1.0, w_sum)
    return _bshd(out.astype(q.dtype, copy=False).reshape(b, hq, sq, dv))


def flash_attn_split_kv_floor_chunk(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                                    window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                                    return_attn_probs=False, split_len=64):
    _check_args(dropout_p, return_attn_probs)
    b, sq, hq, _ = q.shape
    sk, dv = k.shape[1], v.shape[-1]
    vh = _repeat_kv(_bhsd(v), hq // k.shape[2])
    s_all = _dense_scores(q, k, softmax_scale, softcap, alibi_slopes)
    keep = _keep(np.arange(sq)[:, None], np.arange(sk)[None, :], sq, sk, causal, window_size)
    s_all = np.where(keep, s_all, -np.inf)
    num_splits = max(1, -(-sk // split_len))
    chunk = sk // num_splits  # BUG: floor division; the last Sk % num_splits keys belong to no split
    o_parts, lse_parts = [], []
    for split in range(num_splits):
        n0, n1 = split * chunk, (split + 1) * chunk
        s = s_all[..., n0:n1]
        m = np.max(s, axis=-1, keepdims=True)
        m = np.where(np.isneginf(m), 0.0, m)
        p = np.exp(s - m)
        denom = np.sum(p, axis=-1, keepdims=True)
        safe = np.where(denom == 0.0, 1.0, denom)
        o_parts.append(np.matmul(p, vh[:, :, n0:n1]) / safe)
        lse_parts.append(np.where(denom == 0.0, -np.inf, np.log(safe) + m))
    lse = np.stack(lse_parts)
    lse_max = np.max(lse, axis=0)
    lse_max = np.where(np.isneginf(lse_max), 0.0, lse_max)
    w = np.exp(lse - lse_max)
    w_sum = np.sum(w, axis=0)
    out = np.sum(w * np.stack(o_parts), axis=0) / np.where(w_sum == 0.0, 1.0, w_sum)
    return _bshd(out.astype(q.dtype, copy=False).reshape(b, hq, sq, dv))


def flash_attn_tiled_no_check_inf(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                  softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False,
                                  block_m=16, block_n=32):
    """Tiled forward without KV-tile skipping: every query tile walks all KV tiles from the first one."""
    _check_args(dropout_p, return_attn_probs)
    dtype = q.dtype
    b, sq, hq, _ = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    qh, kh, vh = _bhsd(q), _repeat_kv(_bhsd(k), hq // hkv), _repeat_kv(_bhsd(v), hq // hkv)
    scale = _scale(q, softmax_scale)
    out = np.zeros((b, hq, sq, dv), dtype=dtype)
    with np.errstate(invalid="ignore"):
        for m0 in range(0, sq, block_m):
            m1 = min(m0 + block_m, sq)
            rows = np.arange(m0, m1)[:, None]
            m_i = np.full((b, hq, m1 - m0, 1), -np.inf, dtype=dtype)
            l_i = np.zeros((b, hq, m1 - m0, 1), dtype=dtype)
            acc = np.zeros((b, hq, m1 - m0, dv), dtype=dtype)
            for n0 in range(0, sk, block_n):
                n1 = min(n0 + block_n, sk)
                cols = np.arange(n0, n1)[None, :]
                s = np.matmul(qh[:, :, m0:m1], np.swapaxes(kh[:, :, n0:n1], -1, -2)) * scale
                if softcap > 0:
                    s = _softcap(s, softcap)
                if alibi_slopes is not None:
                    s = s + _alibi(alibi_slopes, b, hq, rows, cols, sq, sk, dtype)
                s = np.where(_keep(rows, cols, sq, sk, causal, window_size), s, -np.inf)
                m_new = np.maximum(m_i, np.max(s, axis=-1, keepdims=True))
                alpha = np.exp(m_i - m_new)
                p = np.exp(s - m_new)  # BUG: no Check_inf: a fully masked leading tile gives exp(-inf - -inf) = NaN
                l_i = l_i * alpha + np.sum(p, axis=-1, keepdims=True)
                acc = acc * alpha + np.matmul(p, vh[:, :, n0:n1])
                m_i = m_new
            out[:, :, m0:m1] = acc / np.where(l_i == 0.0, 1.0, l_i)
    return _bshd(out)


# ----------------------------------------------------------------------------------------------------------------

_ALL = ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]


def _entry(name, fn, bug=None, parameter=None, source=None, report=None, dtype="float64", features=None):
    return {
        "name": name, "api": "flash-attn", "fn": fn, "correct": bug is None, "bug": bug, "parameter": parameter,
        "source": source, "report": report, "dtype": dtype, "features": list(features or _ALL),
    }


CATALOG = [
    _entry("fa-einsum-grouped", "flash_attn_einsum_grouped"),
    _entry("fa-tiled", "flash_attn_tiled"),
    _entry("fa-split-kv", "flash_attn_split_kv"),
    _entry("fa-causal-top-left", "flash_attn_causal_top_left", "causal-top-left", "tril(k=0) instead of k=Sk-Sq",
           "Dao-AILab/flash-attention#517", "https://github.com/Dao-AILab/flash-attention/issues/517"),
    _entry("fa-window-one-width", "flash_attn_window_one_width", "window-right-uses-left", "right=window_size[0]",
           "huggingface/transformers#39408", "https://github.com/huggingface/transformers/issues/39408"),
    _entry("fa-window-exclusive", "flash_attn_loops_window_exclusive", "window-left-off-by-one",
           "j > i+off-left", "huggingface/transformers#47162",
           "https://github.com/huggingface/transformers/pull/47162"),
    _entry("fa-softcap-after-mask", "flash_attn_softcap_after_mask", "softcap-after-mask", "mask then tanh",
           "Dao-AILab/flash-attention#1025", "https://github.com/Dao-AILab/flash-attention/pull/1025"),
    _entry("fa-softcap-raw", "flash_attn_softcap_raw_logits", "softcap-before-scale", "cap*tanh(qk/cap)*scale",
           "huggingface/trl#5691", "https://github.com/huggingface/trl/pull/5691"),
    _entry("fa-alibi-key-only", "flash_attn_alibi_key_only", "alibi-column-bias", "slope*(j-(Sk-1))",
           "mosaicml/llm-foundry#186", "https://github.com/mosaicml/llm-foundry/issues/186"),
    _entry("fa-alibi-no-offset", "flash_attn_alibi_no_offset", "alibi-offset-missing", "|i-j| instead of |i+off-j|",
           "Dao-AILab/flash-attention#907", "https://github.com/Dao-AILab/flash-attention/issues/907"),
    _entry("fa-alibi-flat-slopes", "flash_attn_alibi_flat_slopes", "alibi-batch-slopes", "slopes.reshape(-1)[:Hq]",
           "Dao-AILab/flash-attention#1585", "https://github.com/Dao-AILab/flash-attention/issues/1585"),
    _entry("fa-gqa-modulo", "flash_attn_gqa_modulo", "gqa-head-modulo", "kv head = h % Hkv",
           "apple/axlearn#842", "https://github.com/apple/axlearn/pull/842"),
    _entry("fa-raw-max-rescale", "flash_attn_tiled_raw_max", "online-rescale-unscaled", "alpha=exp(m_old-m_new)",
           "tile-ai/TileOPs#1511", "https://github.com/tile-ai/TileOPs/pull/1511",
           features=["causal", "window", "gqa", "dv-ne-d"]),
    _entry("fa-causal-skip", "flash_attn_tiled_causal_skip", "causal-block-skip-offset",
           "n_block_max=ceil((m+1)*16/32)", "Dao-AILab/flash-attention#1778",
           "https://github.com/Dao-AILab/flash-attention/issues/1778"),
    _entry("fa-split-bf16", "flash_attn_split_kv_bf16_accum", "bf16-split-partials", "Oaccum in bfloat16",
           "zhuzilin/ring-flash-attention#22", "https://github.com/zhuzilin/ring-flash-attention/issues/22",
           dtype="float32"),
    _entry("fa-split-floor", "flash_attn_split_kv_floor_chunk", "split-kv-remainder-dropped", "chunk=Sk//num_splits",
           "tile-ai/tilelang#2010", "https://github.com/tile-ai/tilelang/pull/2010"),
    _entry("fa-no-check-inf", "flash_attn_tiled_no_check_inf", "masked-tile-nan", "exp(s - m) with m=-inf",
           "pytorch/pytorch#109517", "https://github.com/pytorch/pytorch/issues/109517"),
]
