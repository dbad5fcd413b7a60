"""flash_attn_func ports for the `flash-attn` API, on torch tensors q (B, Sq, Hq, D), k (B, Sk, Hkv, D),
v (B, Sk, Hkv, Dv).

Causal and window_size are bottom-right aligned (off = Sk - Sq); softcap is applied to the scaled scores before the
masking; ALiBi adds -slope * |i + off - j| after the softcap; query head h uses kv head h // (Hq // Hkv); rows with no
visible key are zeros. Three kernels are correct alternatives, the others carry one mistake each adapted from a public
report (marked with a BUG comment).
"""
import math

import torch


def _check(dropout_p, return_attn_probs):
    if dropout_p or return_attn_probs:
        raise NotImplementedError("dropout / attention probabilities are not supported by these kernels")


def _window_bounds(causal, window_size):
    left, right = int(window_size[0]), int(window_size[1])
    if causal:
        right = 0
    return left, right


def _visible(sq, sk, causal, window_size, q0=0, k0=0, q1=None, k1=None):
    """keep (q rows q0:q1, keys k0:k1), bottom-right aligned."""
    q1 = sq if q1 is None else q1
    k1 = sk if k1 is None else k1
    off = sk - sq
    left, right = _window_bounds(causal, window_size)
    i = torch.arange(q0, q1).view(-1, 1)
    j = torch.arange(k0, k1).view(1, -1)
    keep = torch.ones(q1 - q0, k1 - k0, dtype=torch.bool)
    if right >= 0:
        keep = keep & (j <= i + off + right)
    if left >= 0:
        keep = keep & (j >= i + off - left)
    return keep


def _alibi(alibi_slopes, B, H, sq, sk, dtype, q0=0, k0=0, q1=None, k1=None):
    """(B or 1, H, rows, cols) bias -slope * |i + off - j|."""
    q1 = sq if q1 is None else q1
    k1 = sk if k1 is None else k1
    slopes = alibi_slopes.to(dtype)
    slopes = slopes.view(1, H, 1, 1) if slopes.dim() == 1 else slopes.view(B, H, 1, 1)
    i = torch.arange(q0, q1, dtype=dtype).view(-1, 1)
    j = torch.arange(k0, k1, dtype=dtype).view(1, -1)
    return -slopes * (i + (sk - sq) - j).abs()


def _expand_kv(k, hq):
    """(B, S, Hkv, D) -> (B, Hq, S, D), query head h uses kv head h // (Hq // Hkv)."""
    hkv = k.size(2)
    return k.transpose(1, 2).repeat_interleave(hq // hkv, dim=1)


def _softmax_pv(s, v):
    dead = torch.isneginf(s).all(dim=-1, keepdim=True)
    p = torch.softmax(s.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    return torch.matmul(p, v)


def _eager(qh, kh, vh, scale, keep, softcap, bias):
    """qh (B, H, Sq, D); kh, vh (B, H, Sk, *). Returns (B, H, Sq, Dv)."""
    s = torch.matmul(qh, kh.transpose(-1, -2)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if bias is not None:
        s = s + bias
    s = s.masked_fill(~keep, float("-inf"))
    return _softmax_pv(s, vh)


# ----------------------------------------------------------------------------------------------------------------
# correct: FlashAttention-2 style tiled forward (BLOCK_M x BLOCK_N tiles, online softmax, skips empty tiles)
# ----------------------------------------------------------------------------------------------------------------
def flash_tiled_online(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                       softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    _check(dropout_p, return_attn_probs)
    BLOCK_M, BLOCK_N = 16, 64
    B, sq, hq, d = q.shape
    sk, dv = k.size(1), v.size(-1)
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qh = q.transpose(1, 2)
    kh = _expand_kv(k, hq)
    vh = _expand_kv(v, hq)
    out = torch.zeros(B, hq, sq, dv, dtype=q.dtype)
    for m0 in range(0, sq, BLOCK_M):
        m1 = min(m0 + BLOCK_M, sq)
        q_blk = qh[:, :, m0:m1]
        m_i = torch.full((B, hq, m1 - m0, 1), float("-inf"), dtype=q.dtype)
        l_i = torch.zeros((B, hq, m1 - m0, 1), dtype=q.dtype)
        acc = torch.zeros((B, hq, m1 - m0, dv), dtype=q.dtype)
        for n0 in range(0, sk, BLOCK_N):
            n1 = min(n0 + BLOCK_N, sk)
            keep = _visible(sq, sk, causal, window_size, m0, n0, m1, n1)
            if not bool(keep.any()):
                continue
            s = torch.matmul(q_blk, kh[:, :, n0:n1].transpose(-1, -2)) * scale
            if softcap > 0:
                s = softcap * torch.tanh(s / softcap)
            if alibi_slopes is not None:
                s = s + _alibi(alibi_slopes, B, hq, sq, sk, q.dtype, m0, n0, m1, n1)
            s = s.masked_fill(~keep, float("-inf"))
            m_new = torch.maximum(m_i, s.amax(dim=-1, keepdim=True))
            m_safe = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
            p = torch.exp(s - m_safe)
            alpha = torch.exp(m_i - m_safe)
            l_i = l_i * alpha + p.sum(dim=-1, keepdim=True)
            acc = acc * alpha + torch.matmul(p, vh[:, :, n0:n1])
            m_i = m_new
        alive = l_i > 0
        out[:, :, m0:m1] = torch.where(alive, acc / torch.where(alive, l_i, torch.ones_like(l_i)),
                                       torch.zeros_like(acc))
    return out.transpose(1, 2).contiguous().to(q.dtype)


# ----------------------------------------------------------------------------------------------------------------
# correct: split-KV (flash-decoding) with softmax_lse per split and a log-sum-exp combine
# ----------------------------------------------------------------------------------------------------------------
def flash_split_kv(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                   softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    _check(dropout_p, return_attn_probs)
    num_splits = 4
    B, sq, hq, d = q.shape
    sk = k.size(1)
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qh = q.transpose(1, 2)
    kh = _expand_kv(k, hq)
    vh = _expand_kv(v, hq)
    chunk = max(1, -(-sk // num_splits))
    o_accum, lse_accum = [], []
    for n0 in range(0, sk, chunk):
        n1 = min(n0 + chunk, sk)
        s = torch.matmul(qh, kh[:, :, n0:n1].transpose(-1, -2)) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if alibi_slopes is not None:
            s = s + _alibi(alibi_slopes, B, hq, sq, sk, q.dtype, 0, n0, sq, n1)
        s = s.masked_fill(~_visible(sq, sk, causal, window_size, 0, n0, sq, n1), float("-inf"))
        lse = torch.logsumexp(s, dim=-1, keepdim=True)
        empty = torch.isneginf(lse)
        p = torch.exp(s - torch.where(empty, torch.zeros_like(lse), lse))
        o_accum.append(torch.matmul(p, vh[:, :, n0:n1]))
        lse_accum.append(lse)
    lse_all = torch.stack(lse_accum, dim=0)
    lse_max = lse_all.amax(dim=0)
    lse_max = torch.where(torch.isneginf(lse_max), torch.zeros_like(lse_max), lse_max)
    scales = torch.exp(lse_all - lse_max)
    total = scales.sum(dim=0)
    out = sum(scales[i] * o_accum[i] for i in range(len(o_accum)))
    alive = total > 0
    out = torch.where(alive, out / torch.where(alive, total, torch.ones_like(total)), torch.zeros_like(out))
    return out.transpose(1, 2).contiguous().to(q.dtype)


# ----------------------------------------------------------------------------------------------------------------
# correct: JAX-style grouped einsum, query heads folded as (Hkv, G), no K/V repeat
# ----------------------------------------------------------------------------------------------------------------
def flash_grouped_einsum(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                         softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    _check(dropout_p, return_attn_probs)
    B, T, N, H = q.shape
    S, K = k.size(1), k.size(2)
    G = N // K
    scale = 1.0 / math.sqrt(H) if softmax_scale is None else softmax_scale
    qg = q.reshape(B, T, K, G, H)
    logits = torch.einsum("btkgh,bskh->bkgts", qg, k) * scale
    if softcap > 0:
        logits = torch.tanh(logits / softcap) * softcap
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(q.dtype)
        slopes = slopes.view(1, K, G, 1, 1) if slopes.dim() == 1 else slopes.view(B, K, G, 1, 1)
        t_pos = torch.arange(T, dtype=q.dtype).view(-1, 1) + (S - T)
        s_pos = torch.arange(S, dtype=q.dtype).view(1, -1)
        logits = logits - slopes * (t_pos - s_pos).abs()
    t_idx = torch.arange(T).view(-1, 1) + (S - T)
    s_idx = torch.arange(S).view(1, -1)
    left, right = int(window_size[0]), int(window_size[1])
    if causal:
        right = 0
    valid = torch.ones(T, S, dtype=torch.bool)
    if right >= 0:
        valid = valid & (s_idx - t_idx <= right)
    if left >= 0:
        valid = valid & (t_idx - s_idx <= left)
    logits = logits.masked_fill(~valid, float("-inf"))
    any_valid = valid.any(dim=-1).view(1, 1, 1, T, 1)
    logits = logits.masked_fill(~any_valid, 0.0)
    probs = torch.softmax(logits, dim=-1).masked_fill(~any_valid, 0.0)
    encoded = torch.einsum("bkgts,bskh->btkgh", probs, v)
    return encoded.reshape(B, T, N, v.size(-1)).to(q.dtype)


# ----------------------------------------------------------------------------------------------------------------
# broken kernels
# ----------------------------------------------------------------------------------------------------------------
def flash_causal_top_left(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                          softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    # prefill kernel: per query row qpos, keys [kv_start, kv_end) with kv_end = min(seqlen_kv, qpos + 1)
    _check(dropout_p, return_attn_probs)
    B, seqlen_q, hq, d = q.shape
    seqlen_kv = k.size(1)
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qpos = torch.arange(seqlen_q).view(-1, 1)
    kpos = torch.arange(seqlen_kv).view(1, -1)
    left, right = _window_bounds(causal, window_size)
    off = seqlen_kv - seqlen_q
    keep = torch.ones(seqlen_q, seqlen_kv, dtype=torch.bool)
    if causal:
        # BUG: causal bound co-aligned from index 0 (kpos <= qpos); flash-attn aligns it bottom-right (qpos + off)
        keep = keep & (kpos <= qpos)
    elif right >= 0:
        keep = keep & (kpos <= qpos + off + right)
    if left >= 0:
        keep = keep & (kpos >= qpos + off - left)
    bias = None if alibi_slopes is None else _alibi(alibi_slopes, B, hq, seqlen_q, seqlen_kv, q.dtype)
    o = _eager(q.transpose(1, 2), _expand_kv(k, hq), _expand_kv(v, hq), scale, keep, softcap, bias)
    return o.transpose(1, 2).contiguous()


def flash_window_symmetric(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    # transformers-style wrapper that carries a single `sliding_window` int down to the kernel
    _check(dropout_p, return_attn_probs)
    B, sq, hq, d = q.shape
    sk = k.size(1)
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    sliding_window = int(window_size[0])
    # BUG: the window is rebuilt as (sliding_window, sliding_window), dropping the caller's right bound
    left, right = sliding_window, sliding_window
    if causal:
        right = 0
    i = torch.arange(sq).view(-1, 1) + (sk - sq)
    j = torch.arange(sk).view(1, -1)
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if right >= 0:
        keep = keep & (j <= i + right)
    if left >= 0:
        keep = keep & (j >= i - left)
    bias = None if alibi_slopes is None else _alibi(alibi_slopes, B, hq, sq, sk, q.dtype)
    o = _eager(q.transpose(1, 2), _expand_kv(k, hq), _expand_kv(v, hq), scale, keep, softcap, bias)
    return o.transpose(1, 2).contiguous()


def flash_window_right_exclusive(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                 softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    # sliding_window_mask_function style: relative offset compared against the left/right window sizes
    _check(dropout_p, return_attn_probs)
    B, sq, hq, d = q.shape
    sk = k.size(1)
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    left_window_size, right_window_size = _window_bounds(causal, window_size)
    q_idx = torch.arange(sq).view(-1, 1) + (sk - sq)
    kv_idx = torch.arange(sk).view(1, -1)
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if left_window_size >= 0:
        keep = keep & (q_idx - kv_idx <= left_window_size)
    if right_window_size > 0:
        # BUG: strict < drops the key at exactly right_window_size ahead (inclusive bound needs <=)
        keep = keep & (kv_idx - q_idx < right_window_size)
    elif right_window_size == 0:
        keep = keep & (kv_idx <= q_idx)
    bias = None if alibi_slopes is None else _alibi(alibi_slopes, B, hq, sq, sk, q.dtype)
    o = _eager(q.transpose(1, 2), _expand_kv(k, hq), _expand_kv(v, hq), scale, keep, softcap, bias)
    return o.transpose(1, 2).contiguous()


def flash_softcap_scale_outside(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    # fused-logits style: softcap on the raw QK^T, softmax_scale folded into the later exp scaling
    _check(dropout_p, return_attn_probs)
    B, sq, hq, d = q.shape
    sk = k.size(1)
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qh, kh, vh = q.transpose(1, 2), _expand_kv(k, hq), _expand_kv(v, hq)
    s = torch.matmul(qh, kh.transpose(-1, -2))
    if softcap > 0:
        # BUG: softcap applied to the unscaled QK^T and the scale multiplied outside tanh
        s = softcap * torch.tanh(s / softcap) * scale
    else:
        s = s * scale
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, B, hq, sq, sk, q.dtype)
    s = s.masked_fill(~_visible(sq, sk, causal, window_size), float("-inf"))
    return _softmax_pv(s, vh).transpose(1, 2).contiguous()


def flash_softcap_after_mask(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    # first softcapping draft: gemm, masking, then softcap right before the softmax
    _check(dropout_p, return_attn_probs)
    B, sq, hq, d = q.shape
    sk = k.size(1)
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qh, kh, vh = q.transpose(1, 2), _expand_kv(k, hq), _expand_kv(v, hq)
    s = torch.matmul(qh, kh.transpose(-1, -2)) * scale
    s = s.masked_fill(~_visible(sq, sk, causal, window_size), float("-inf"))
    if softcap > 0:
        # BUG: softcap after masking maps masked -inf scores to -softcap, so masked keys get weight
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, B, hq, sq, sk, q.dtype)
    return _softmax_pv(s, vh).transpose(1, 2).contiguous()


def flash_alibi_sign(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                     softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    # attention-gym style score_mod: bias = slope * (q_idx - kv_idx)
    _check(dropout_p, return_attn_probs)
    B, sq, hq, d = q.shape
    sk = k.size(1)
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    bias = None
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(q.dtype)
        slopes = slopes.view(1, hq, 1, 1) if slopes.dim() == 1 else slopes.view(B, hq, 1, 1)
        q_idx = torch.arange(sq, dtype=q.dtype).view(-1, 1) + (sk - sq)
        kv_idx = torch.arange(sk, dtype=q.dtype).view(1, -1)
        # BUG: distance sign flipped: bias grows with distance (slope * (q - kv)), must be -slope * |q - kv|
        bias = slopes * (q_idx - kv_idx)
    keep = _visible(sq, sk, causal, window_size)
    o = _eager(q.transpose(1, 2), _expand_kv(k, hq), _expand_kv(v, hq), scale, keep, softcap, bias)
    return o.transpose(1, 2).contiguous()


def flash_alibi_column_only(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    # fairseq-style ALiBi: slope * key position, relying on softmax shift invariance per row
    _check(dropout_p, return_attn_probs)
    B, sq, hq, d = q.shape
    sk = k.size(1)
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    bias = None
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(q.dtype)
        slopes = slopes.view(1, hq, 1, 1) if slopes.dim() == 1 else slopes.view(B, hq, 1, 1)
        # BUG: bias uses only the key (column) index; equal to -slope*|i+off-j| up to a row constant only if causal
        bias = slopes * torch.arange(sk, dtype=q.dtype).view(1, -1)
    keep = _visible(sq, sk, causal, window_size)
    o = _eager(q.transpose(1, 2), _expand_kv(k, hq), _expand_kv(v, hq), scale, keep, softcap, bias)
    return o.transpose(1, 2).contiguous()


def flash_alibi_batch_slopes(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    # mha wrapper that only expects [nheads] slopes
    _check(dropout_p, return_attn_probs)
    B, sq, hq, d = q.shape
    sk = k.size(1)
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    bias = None
    if alibi_slopes is not None:
        slopes = alibi_slopes
        if slopes.dim() == 2:
            # BUG: (batch_size, nheads) slopes collapsed to the first batch row for every sequence
            slopes = slopes[0]
        bias = _alibi(slopes, B, hq, sq, sk, q.dtype)
    keep = _visible(sq, sk, causal, window_size)
    o = _eager(q.transpose(1, 2), _expand_kv(k, hq), _expand_kv(v, hq), scale, keep, softcap, bias)
    return o.transpose(1, 2).contiguous()


def flash_gqa_modulo(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                     softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    # axlearn-style GQA: kv heads broadcast along the head axis before the dot product
    _check(dropout_p, return_attn_probs)
    B, sq, hq, d = q.shape
    sk, hkv = k.size(1), k.size(2)
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    # BUG: kv heads tiled (head h -> kv head h % Hkv) instead of grouped (h -> h // (Hq // Hkv))
    head_map = torch.arange(hq) % hkv
    kh = k.transpose(1, 2)[:, head_map]
    vh = v.transpose(1, 2)[:, head_map]
    bias = None if alibi_slopes is None else _alibi(alibi_slopes, B, hq, sq, sk, q.dtype)
    keep = _visible(sq, sk, causal, window_size)
    o = _eager(q.transpose(1, 2), kh, vh, scale, keep, softcap, bias)
    return o.transpose(1, 2).contiguous()


def flash_splitkv_empty_lse_zero(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                 softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    # FA2 split-KV: each split writes (oaccum, lse_accum), combine_attn_seqk_parallel merges them
    _check(dropout_p, return_attn_probs)
    num_splits = 3
    B, sq, hq, d = q.shape
    sk = k.size(1)
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qh, kh, vh = q.transpose(1, 2), _expand_kv(k, hq), _expand_kv(v, hq)
    n_block = max(1, -(-sk // num_splits))
    oaccum, lse_accum = [], []
    for n0 in range(0, sk, n_block):
        n1 = min(n0 + n_block, sk)
        s = torch.matmul(qh, kh[:, :, n0:n1].transpose(-1, -2)) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if alibi_slopes is not None:
            s = s + _alibi(alibi_slopes, B, hq, sq, sk, q.dtype, 0, n0, sq, n1)
        s = s.masked_fill(~_visible(sq, sk, causal, window_size, 0, n0, sq, n1), float("-inf"))
        lse = torch.logsumexp(s, dim=-1, keepdim=True)
        empty = torch.isneginf(lse)
        p = torch.exp(s - torch.where(empty, torch.zeros_like(lse), lse))
        oaccum.append(torch.matmul(p, vh[:, :, n0:n1]))
        # BUG: an early-exit (fully masked) split stores lse = 0 instead of -inf, so it enters the combine
        lse_accum.append(torch.where(empty, torch.zeros_like(lse), lse))
    lse_all = torch.stack(lse_accum, dim=0)
    lse_max = lse_all.amax(dim=0)
    lse_max = torch.where(torch.isneginf(lse_max), torch.zeros_like(lse_max), lse_max)
    w = torch.exp(lse_all - lse_max)
    total = w.sum(dim=0)
    out = sum(w[i] * oaccum[i] for i in range(len(oaccum)))
    alive = total > 0
    out = torch.where(alive, out / torch.where(alive, total, torch.ones_like(total)), torch.zeros(1, dtype=q.dtype))
    return out.transpose(1, 2).contiguous().to(q.dtype)


_F = ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]

CATALOG = [
    dict(name="flash-tiled-online", api="flash-attn", fn="flash_tiled_online", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=list(_F)),
    dict(name="flash-split-kv", api="flash-attn", fn="flash_split_kv", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=list(_F)),
    dict(name="flash-grouped-einsum", api="flash-attn", fn="flash_grouped_einsum", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=list(_F)),
    dict(name="flash-causal-top-left", api="flash-attn", fn="flash_causal_top_left", correct=False,
         bug="causal-alignment-top-left", parameter="causal bound j <= i instead of j <= i + Sk - Sq",
         source="gittensor-ai-lab/sparkinfer#3", report="https://github.com/gittensor-ai-lab/sparkinfer/issues/3",
         dtype="float64", features=list(_F)),
    dict(name="flash-window-symmetric", api="flash-attn", fn="flash_window_symmetric", correct=False,
         bug="window-right-from-left", parameter="window_size right bound replaced by the left size",
         source="huggingface/transformers#39408",
         report="https://github.com/huggingface/transformers/issues/39408",
         dtype="float64", features=list(_F)),
    dict(name="flash-window-right-exclusive", api="flash-attn", fn="flash_window_right_exclusive", correct=False,
         bug="window-right-off-by-one", parameter="right window bound exclusive (<) instead of inclusive",
         source="huggingface/transformers#47010", report="https://github.com/huggingface/transformers/pull/47010",
         dtype="float64", features=list(_F)),
    dict(name="flash-softcap-scale-outside", api="flash-attn", fn="flash_softcap_scale_outside", correct=False,
         bug="softcap-before-scale", parameter="softcap on unscaled scores, softmax_scale outside tanh",
         source="huggingface/trl#5691", report="https://github.com/huggingface/trl/pull/5691",
         dtype="float64", features=list(_F)),
    dict(name="flash-softcap-after-mask", api="flash-attn", fn="flash_softcap_after_mask", correct=False,
         bug="softcap-after-masking", parameter="softcap applied after the causal/window mask",
         source="Dao-AILab/flash-attention#1025", report="https://github.com/Dao-AILab/flash-attention/pull/1025",
         dtype="float64", features=list(_F)),
    dict(name="flash-alibi-sign", api="flash-attn", fn="flash_alibi_sign", correct=False,
         bug="alibi-distance-sign", parameter="ALiBi bias slope * (i + off - j) instead of -slope * |i + off - j|",
         source="meta-pytorch/attention-gym#86", report="https://github.com/meta-pytorch/attention-gym/pull/86",
         dtype="float64", features=list(_F)),
    dict(name="flash-alibi-column-only", api="flash-attn", fn="flash_alibi_column_only", correct=False,
         bug="alibi-key-position-only", parameter="ALiBi bias slope * j ignoring the query position",
         source="Dao-AILab/flash-attention#540", report="https://github.com/Dao-AILab/flash-attention/pull/540",
         dtype="float64", features=list(_F)),
    dict(name="flash-alibi-batch-slopes", api="flash-attn", fn="flash_alibi_batch_slopes", correct=False,
         bug="alibi-batch-slopes-ignored", parameter="(B, Hq) alibi_slopes reduced to the first batch row",
         source="Dao-AILab/flash-attention#1585",
         report="https://github.com/Dao-AILab/flash-attention/issues/1585",
         dtype="float64", features=list(_F)),
    dict(name="flash-gqa-modulo", api="flash-attn", fn="flash_gqa_modulo", correct=False,
         bug="gqa-head-map-modulo", parameter="query head h uses kv head h % Hkv",
         source="apple/axlearn#842", report="https://github.com/apple/axlearn/pull/842",
         dtype="float64", features=list(_F)),
    dict(name="flash-splitkv-empty-lse", api="flash-attn", fn="flash_splitkv_empty_lse_zero", correct=False,
         bug="split-kv-empty-split-lse", parameter="LSE of a fully masked KV split stored as 0 instead of -inf",
         source="Dao-AILab/flash-attention#2573", report="https://github.com/Dao-AILab/flash-attention/pull/2573",
         dtype="float64", features=list(_F)),
]
