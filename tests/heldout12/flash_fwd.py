"""Held-out flash-attn style kernels (API ``flash-attn``), torch 1.13 math, no CUDA.

Semantics of ``flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False)`` on q (B, Sq, Hq, D),
k (B, Sk, Hkv, D), v (B, Sk, Hkv, Dv). Bottom-right alignment, off = Sk - Sq: causal keeps j <= i + off;
window (left, right) keeps i + off - left <= j <= i + off + right (-1 unbounded; causal = right 0);
softcap > 0: s = softcap * tanh(s / softcap) on the scaled scores before masking; ALiBi adds
-slope * |i + off - j| after the cap (slopes (Hq,) or (B, Hq)); query head h uses kv head h // (Hq // Hkv);
rows with no visible key are zeros. Returns (B, Sq, Hq, Dv) in the input dtype.
"""
import math

import torch

# --- kernel: flash_tril_buffer_slice ---


def flash_tril_buffer_slice(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """minGPT-style: a registered lower-triangular buffer sliced to the current lengths."""
    B, T_q, nh, hs = q.shape
    T_k, nkv = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(hs)
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(nh // nkv, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(nh // nkv, dim=1)
    att = (qh @ kh.transpose(-2, -1)) * scale
    if softcap > 0:
        att = softcap * torch.tanh(att / softcap)
    off = T_k - T_q
    i = torch.arange(T_q)[:, None]
    j = torch.arange(T_k)[None, :]
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(att.dtype).reshape(-1, nh)[:, :, None, None]
        att = att - slopes * (i + off - j).abs().to(att.dtype)
    keep = torch.ones(T_q, T_k, dtype=torch.bool)
    if causal:
        block = max(T_q, T_k)
        bias = torch.tril(torch.ones(block, block, dtype=torch.bool))
        keep = keep & bias[:T_q, :T_k]  # BUG: top-left slice; flash-attn aligns causal bottom-right
    left, right = window_size
    if left >= 0:
        keep = keep & (j >= i + off - left)
    if right >= 0 and not causal:
        keep = keep & (j <= i + off + right)
    att = att.masked_fill(~keep, float("-inf"))
    m = att.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(att - m)
    z = p.sum(-1, keepdim=True)
    p = torch.where(z > 0, p / torch.where(z > 0, z, torch.ones_like(z)), torch.zeros_like(p))
    y = p @ vh
    return y.transpose(1, 2).contiguous()


# --- kernel: flash_heads_merge_reshape ---


def flash_heads_merge_reshape(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """QANet-style: heads computed as (B, H, S, Dv), then merged back to the (B, S, H, Dv) layout."""
    batch_size, lq, n_heads, d = q.shape
    lk, n_kv = k.shape[1], k.shape[2]
    dv = v.shape[-1]
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    heads = torch.zeros(batch_size, n_heads, lq, dv, dtype=q.dtype)
    off = lk - lq
    qi = torch.arange(lq)[:, None] + off
    kj = torch.arange(lk)[None, :]
    left, right = window_size
    right = 0 if causal else right
    visible = torch.ones(lq, lk, dtype=torch.bool)
    if left >= 0:
        visible &= kj >= qi - left
    if right >= 0:
        visible &= kj <= qi + right
    for h in range(n_heads):
        hk = h // (n_heads // n_kv)
        s = torch.einsum("bid,bjd->bij", q[:, :, h], k[:, :, hk]) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if alibi_slopes is not None:
            sl = alibi_slopes.reshape(-1, n_heads)[:, h].to(s.dtype)[:, None, None]
            s = s - sl * (qi - kj).abs().to(s.dtype)
        s = s.masked_fill(~visible, float("-inf"))
        mx = s.amax(-1, keepdim=True)
        mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
        e = torch.exp(s - mx)
        tot = e.sum(-1, keepdim=True)
        w = torch.where(tot > 0, e / torch.where(tot > 0, tot, torch.ones_like(tot)), torch.zeros_like(e))
        heads[:, h] = torch.einsum("bij,bjd->bid", w, v[:, :, hk])
    x = heads.reshape(batch_size, lq, n_heads, dv)  # BUG: reshape without moving H behind S first
    return x.contiguous()


# --- kernel: flash_alibi_query_positions ---


def flash_alibi_query_positions(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Keras-hub Falcon style: the ALiBi tensor is built from position ranges, then added to the scores."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(D) if softmax_scale is None else softmax_scale
    g = Hq // Hkv
    qh = q.permute(0, 2, 1, 3)
    kh = k.permute(0, 2, 1, 3).repeat_interleave(g, dim=1)
    vh = v.permute(0, 2, 1, 3).repeat_interleave(g, dim=1)
    scores = torch.matmul(qh, kh.transpose(-1, -2)) * scale
    if softcap > 0:
        scores = torch.tanh(scores / softcap) * softcap
    key_pos = torch.arange(Sk)
    if alibi_slopes is not None:
        query_pos = torch.arange(Sq)  # BUG: ALiBi built over the query length, query positions not offset by Sk - Sq
        dist = (query_pos[:, None] - key_pos[None, :]).abs().to(scores.dtype)
        scores = scores - alibi_slopes.to(scores.dtype).reshape(-1, Hq, 1, 1) * dist
    qpos = torch.arange(Sq)[:, None] + (Sk - Sq)
    allowed = torch.ones(Sq, Sk, dtype=torch.bool)
    left, right = window_size
    if causal:
        right = 0
    if left >= 0:
        allowed = allowed & (key_pos[None, :] >= qpos - left)
    if right >= 0:
        allowed = allowed & (key_pos[None, :] <= qpos + right)
    scores = scores.masked_fill(~allowed, float("-inf"))
    m = scores.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(scores - m)
    z = p.sum(-1, keepdim=True)
    p = torch.where(z > 0, p / torch.where(z > 0, z, torch.ones_like(z)), torch.zeros_like(p))
    return torch.matmul(p, vh).permute(0, 2, 1, 3).contiguous()


# --- kernel: flash_window_start_plus_one ---


def flash_window_start_plus_one(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Steel-attention style: per query row the first and last visible key are computed, then masked."""
    B, qL, Hq, D = q.shape
    kL, Hkv = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(D) if softmax_scale is None else softmax_scale
    qL_off = kL - qL
    q_pos = torch.arange(qL) + qL_off
    left, right = window_size
    if causal:
        right = 0
    k_min = q_pos - left + 1 if left >= 0 else torch.full_like(q_pos, 0)  # BUG: "+ 1", first key is q - left
    k_max = q_pos + right if right >= 0 else torch.full_like(q_pos, kL - 1)
    j = torch.arange(kL)[None, :]
    visible = (j >= k_min[:, None]) & (j <= k_max[:, None])
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(Hq // Hkv, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(Hq // Hkv, dim=1)
    s = qh @ kh.transpose(-1, -2) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s - alibi_slopes.to(s.dtype).reshape(-1, Hq, 1, 1) * (q_pos[:, None] - j).abs().to(s.dtype)
    s = s.masked_fill(~visible, float("-inf"))
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    z = p.sum(-1, keepdim=True)
    p = torch.where(z > 0, p / torch.where(z > 0, z, torch.ones_like(z)), torch.zeros_like(p))
    return (p @ vh).transpose(1, 2).contiguous()


# --- kernel: flash_softcap_half_denominator ---


def flash_softcap_half_denominator(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                   softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """JAX-port style with a small apply_soft_capping helper inlined."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(D) if softmax_scale is None else softmax_scale
    grp = Hq // Hkv
    logits = torch.einsum("bqhd,bkhd->bhqk", q, k.repeat_interleave(grp, dim=2)) * scale
    if softcap > 0:
        logits = torch.tanh(logits / (softcap * 0.5)) * softcap  # BUG: tanh input doubled
    off = Sk - Sq
    i = torch.arange(Sq)[:, None] + off
    j = torch.arange(Sk)[None, :]
    if alibi_slopes is not None:
        logits = logits - alibi_slopes.to(logits.dtype).reshape(-1, Hq, 1, 1) * (i - j).abs().to(logits.dtype)
    left, right = window_size
    right = 0 if causal else right
    ok = torch.ones(Sq, Sk, dtype=torch.bool)
    if left >= 0:
        ok = ok & (j >= i - left)
    if right >= 0:
        ok = ok & (j <= i + right)
    logits = logits.masked_fill(~ok, float("-inf"))
    m = logits.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w = torch.exp(logits - m)
    z = w.sum(-1, keepdim=True)
    w = torch.where(z > 0, w / torch.where(z > 0, z, torch.ones_like(z)), torch.zeros_like(w))
    return torch.einsum("bhqk,bkhd->bqhd", w, v.repeat_interleave(grp, dim=2))


# --- kernel: flash_local_path_drops_causal ---


def flash_local_path_drops_causal(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                  softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Keras-MHA style dispatch: a causal-only fast path and a separate local (windowed) path."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(D) if softmax_scale is None else softmax_scale
    off = Sk - Sq
    i = torch.arange(Sq)[:, None] + off
    j = torch.arange(Sk)[None, :]
    if tuple(window_size) == (-1, -1):
        keep = (j <= i) if causal else torch.ones(Sq, Sk, dtype=torch.bool)
    else:
        left = window_size[0]
        right = window_size[1]  # BUG: the windowed path drops `causal`; with causal the right side must be 0
        keep = torch.ones(Sq, Sk, dtype=torch.bool)
        if left >= 0:
            keep = keep & (j >= i - left)
        if right >= 0:
            keep = keep & (j <= i + right)
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(Hq // Hkv, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(Hq // Hkv, dim=1)
    s = torch.matmul(qh, kh.transpose(-1, -2)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s - alibi_slopes.to(s.dtype).reshape(-1, Hq, 1, 1) * (i - j).abs().to(s.dtype)
    s = s.masked_fill(~keep, float("-inf"))
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    z = p.sum(-1, keepdim=True)
    p = torch.where(z > 0, p / torch.where(z > 0, z, torch.ones_like(z)), torch.zeros_like(p))
    return torch.matmul(p, vh).transpose(1, 2).contiguous()


# --- kernel: flash_row_slices ---


def flash_row_slices(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                     softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Correct: per (batch, query head, row) the visible key range [lo, hi] is computed by index
    arithmetic and only that slice of K/V is read; an empty range leaves the row zero."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(D) if softmax_scale is None else softmax_scale
    off = Sk - Sq
    left, right = window_size
    if causal:
        right = 0
    q64, k64, v64 = q.double(), k.double(), v.double()
    slopes = None if alibi_slopes is None else alibi_slopes.double().reshape(-1, Hq)
    out = torch.zeros(B, Sq, Hq, v.shape[-1], dtype=torch.float64)
    for b in range(B):
        for h in range(Hq):
            hk = h // (Hq // Hkv)
            for i in range(Sq):
                p_i = i + off
                lo = 0 if left < 0 else max(0, p_i - left)
                hi = Sk - 1 if right < 0 else min(Sk - 1, p_i + right)
                if lo > hi:
                    continue
                s = k64[b, lo:hi + 1, hk] @ q64[b, i, h] * scale
                if softcap > 0:
                    s = softcap * torch.tanh(s / softcap)
                if slopes is not None:
                    sl = slopes[b if slopes.shape[0] > 1 else 0, h]
                    s = s - sl * (p_i - torch.arange(lo, hi + 1, dtype=torch.float64)).abs()
                w = torch.softmax(s, dim=0)
                out[b, i, h] = w @ v64[b, lo:hi + 1, hk]
    return out.to(q.dtype)


# --- kernel: flash_grouped_online_exp2 ---


def flash_grouped_online_exp2(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Correct: grouped (B, Sq, Hkv, G, D) view without repeating K/V, online softmax in base 2 over
    key blocks of 48 with a clamped running max."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    G = Hq // Hkv
    scale = 1.0 / math.sqrt(D) if softmax_scale is None else softmax_scale
    LOG2E = 1.4426950408889634
    qg = q.double().reshape(B, Sq, Hkv, G, D)
    k64, v64 = k.double(), v.double()
    off = Sk - Sq
    left, right = window_size
    if causal:
        right = 0
    pos_q = torch.arange(Sq, dtype=torch.float64)[:, None] + off
    slopes = None
    if alibi_slopes is not None:
        slopes = alibi_slopes.double().reshape(-1, Hkv, G)[:, :, :, None, None]
    m2 = torch.full((B, Hkv, G, Sq, 1), float("-inf"), dtype=torch.float64)
    l_ = torch.zeros(B, Hkv, G, Sq, 1, dtype=torch.float64)
    acc = torch.zeros(B, Hkv, G, Sq, v.shape[-1], dtype=torch.float64)
    for j0 in range(0, Sk, 48):
        j1 = min(j0 + 48, Sk)
        s = torch.einsum("bqhgd,bkhd->bhgqk", qg, k64[:, j0:j1]) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        pos_k = torch.arange(j0, j1, dtype=torch.float64)[None, :]
        if slopes is not None:
            s = s - slopes * (pos_q - pos_k).abs()
        ok = torch.ones(Sq, j1 - j0, dtype=torch.bool)
        if left >= 0:
            ok = ok & (pos_k >= pos_q - left)
        if right >= 0:
            ok = ok & (pos_k <= pos_q + right)
        s2 = s.masked_fill(~ok, float("-inf")) * LOG2E
        m_new = torch.maximum(m2, s2.amax(-1, keepdim=True))
        m_ref = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        corr = torch.where(torch.isfinite(m2), torch.exp2(m2 - m_ref), torch.zeros_like(m2))
        p = torch.exp2(s2 - m_ref)
        l_ = corr * l_ + p.sum(-1, keepdim=True)
        acc = corr * acc + torch.einsum("bhgqk,bkhd->bhgqd", p, v64[:, j0:j1])
        m2 = m_new
    o = torch.where(l_ > 0, acc / torch.where(l_ > 0, l_, torch.ones_like(l_)), torch.zeros_like(acc))
    return o.permute(0, 3, 1, 2, 4).reshape(B, Sq, Hq, v.shape[-1]).to(q.dtype)


CATALOG = [
    dict(name="flash-cs224n-causal-top-left", api="flash-attn", fn="flash_tril_buffer_slice", correct=False,
         bug="causal-top-left-in-flash",
         parameter="causal takes the top-left [:Sq, :Sk] slice of a lower-triangular buffer (j <= i) instead of "
                   "flash-attn's bottom-right alignment (j <= i + Sk - Sq). Triggers: causal with Sq != Sk",
         source="floriankark/cs224n-win2223#5", report="https://github.com/floriankark/cs224n-win2223/issues/5",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-qanet-heads-reshape", api="flash-attn", fn="flash_heads_merge_reshape", correct=False,
         bug="head-merge-reshape-without-permute",
         parameter="the per-head results (B, H, Sq, Dv) are reshaped to (B, Sq, H, Dv) without moving the head "
                   "axis first, so rows and heads are scrambled. Triggers: Hq > 1 and Sq > 1",
         source="hackiey/QAnet-pytorch#2", report="https://github.com/hackiey/QAnet-pytorch/issues/2",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-falcon-alibi-query-len", api="flash-attn", fn="flash_alibi_query_positions", correct=False,
         bug="alibi-query-position-not-offset",
         parameter="the ALiBi distance uses query positions 0..Sq-1 instead of i + Sk - Sq (built over the query "
                   "length, as if there were no cached keys): -slope * |i - j| instead of -slope * |i + off - j|. "
                   "Triggers: alibi_slopes with Sq != Sk",
         source="keras-team/keras-hub#2862", report="https://github.com/keras-team/keras-hub/pull/2862",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-mlx-window-one-short", api="flash-attn", fn="flash_window_start_plus_one", correct=False,
         bug="window-left-one-short",
         parameter="the first visible key is q_pos - left + 1 instead of q_pos - left, so the left window sees "
                   "one key too few. Triggers: window left >= 0 with a visible key at i + off - left",
         source="ml-explore/mlx#3552", report="https://github.com/ml-explore/mlx/pull/3552",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-lalamo-softcap-half-denominator", api="flash-attn", fn="flash_softcap_half_denominator",
         correct=False, bug="softcap-denominator-halved",
         parameter="the soft cap is softcap * tanh(s / (softcap * 0.5)): the tanh input is doubled, so logits "
                   "saturate twice as early. Triggers: softcap > 0",
         source="trymirai/lalamo#275", report="https://github.com/trymirai/lalamo/pull/275",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-keras-window-drops-causal", api="flash-attn", fn="flash_local_path_drops_causal",
         correct=False, bug="causal-dropped-with-window",
         parameter="when window_size != (-1, -1) the windowed path uses window_size[1] as the right bound and "
                   "ignores causal, so future keys stay visible. Triggers: causal with a window whose right side "
                   "is not 0 and a key after i + off",
         source="keras-team/keras#23038", report="https://github.com/keras-team/keras/issues/23038",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-row-slices", api="flash-attn", fn="flash_row_slices", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64",
         features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-grouped-online-exp2", api="flash-attn", fn="flash_grouped_online_exp2", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64",
         features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
]
