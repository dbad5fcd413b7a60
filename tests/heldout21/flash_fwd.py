"""Held-out flash-attn kernels: semantics of flash_attn_func on (B, S, H, D) torch tensors (torch 1.13).

fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
deterministic=False, return_attn_probs=False); q (B, Sq, Hq, D), k (B, Sk, Hkv, D), v (B, Sk, Hkv, Dv). Bottom-right
alignment, off = Sk - Sq: causal keeps j <= i + off; window (left, right) keeps i + off - left <= j <= i + off + right
(-1 unbounded; causal = right 0). softcap > 0: s = softcap * tanh(s / softcap) on the scaled scores before masking;
ALiBi adds -slope * |i + off - j| after the cap, slopes float32 (Hq,) or (B, Hq); query head h uses kv head
h // (Hq // Hkv); rows with no visible key are zeros. Returns (B, Sq, Hq, Dv) in the input dtype.
"""
import math

import torch


def _to_bhsd(x):
    return x.permute(0, 2, 1, 3)


def _slopes_bh11(alibi_slopes, b, hq, dtype):
    if alibi_slopes is None:
        return None
    slopes = alibi_slopes.to(dtype)
    if slopes.dim() == 1:
        slopes = slopes.unsqueeze(0).expand(b, hq)
    return slopes.reshape(b, hq, 1, 1)


# --- kernel: flash_triton_window_neg_inf ---
def flash_triton_window_neg_inf(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Triton forward style: query blocks of 32, key blocks of 32, online softmax, sliding-window masking."""
    b, m_len, hq, d = q.shape
    n_len, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    sm_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    left, right = window_size
    if causal:
        right = 0
    p_seq = n_len - m_len
    qh = _to_bhsd(q)
    kh = _to_bhsd(k).repeat_interleave(hq // hkv, dim=1)
    vh = _to_bhsd(v).repeat_interleave(hq // hkv, dim=1)
    slopes = _slopes_bh11(alibi_slopes, b, hq, q.dtype)
    out = torch.zeros(b, hq, m_len, dv, dtype=q.dtype)
    for start_m in range(0, m_len, 32):
        offs_m = torch.arange(start_m, min(start_m + 32, m_len))
        q_blk = qh[:, :, start_m:start_m + 32]
        m_i = torch.full((b, hq, offs_m.numel(), 1), float("-inf"), dtype=q.dtype)
        l_i = torch.zeros(b, hq, offs_m.numel(), 1, dtype=q.dtype)
        acc = torch.zeros(b, hq, offs_m.numel(), dv, dtype=q.dtype)
        has_key = torch.zeros(offs_m.numel(), 1, dtype=torch.bool)
        for start_n in range(0, n_len, 32):
            offs_n = torch.arange(start_n, min(start_n + 32, n_len))
            s = q_blk @ kh[:, :, start_n:start_n + 32].transpose(-1, -2) * sm_scale
            if softcap > 0:
                s = softcap * torch.tanh(s / softcap)
            dist = offs_m[:, None] + p_seq - offs_n[None, :]
            if slopes is not None:
                s = s - slopes * dist.abs().to(s.dtype)
            keep = torch.ones(offs_m.numel(), offs_n.numel(), dtype=torch.bool)
            if right >= 0:
                keep &= dist >= -right
            if left >= 0:
                keep &= dist <= left
            has_key |= keep.any(dim=-1, keepdim=True)
            s = torch.where(keep, s, torch.full_like(s, float("-inf")))  # BUG: -inf fill: NaN
            m_ij = torch.maximum(m_i, s.amax(dim=-1, keepdim=True))
            p = torch.exp(s - m_ij)
            alpha = torch.exp(m_i - m_ij)
            l_i = l_i * alpha + p.sum(dim=-1, keepdim=True)
            acc = acc * alpha + p @ vh[:, :, start_n:start_n + 32]
            m_i = m_ij
        out[:, :, start_m:start_m + 32] = torch.where(has_key, acc / l_i, torch.zeros_like(acc))
    return _to_bhsd(out).contiguous()


# --- kernel: flash_paged_sdpa_softcap_dropped ---
def _paged_sdpa_kernel(q, k, v, attn_scale, causal, window_size, alibi_slopes, softcap):
    b, sq, hq, _ = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    qh = _to_bhsd(q)
    kh = _to_bhsd(k).repeat_interleave(hq // hkv, dim=1)
    vh = _to_bhsd(v).repeat_interleave(hq // hkv, dim=1)
    s = qh @ kh.transpose(-1, -2) * attn_scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    rel = torch.arange(sq)[:, None] + (sk - sq) - torch.arange(sk)[None, :]
    slopes = _slopes_bh11(alibi_slopes, b, hq, q.dtype)
    if slopes is not None:
        s = s - slopes * rel.abs().to(s.dtype)
    left, right = window_size
    if causal:
        right = 0
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if right >= 0:
        keep &= rel >= -right
    if left >= 0:
        keep &= rel <= left
    s = s.masked_fill(~keep, float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    denom = p.sum(dim=-1, keepdim=True)
    o = torch.where(denom > 0, (p @ vh) / torch.where(denom > 0, denom, torch.ones_like(denom)),
                    torch.zeros(b, hq, sq, vh.shape[-1], dtype=q.dtype))
    return _to_bhsd(o).contiguous()


def flash_paged_sdpa_softcap_dropped(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                     softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Paged-attention backend wrapper style: the model's settings are forwarded to the attention kernel."""
    attn_scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    return _paged_sdpa_kernel(
        q, k, v,
        attn_scale,
        causal,
        window_size,
        alibi_slopes,
        0.0,  # BUG: softcap hard-coded to 0.0 (disabled) instead of forwarding the softcap argument
    )


# --- kernel: flash_logits_cap_legacy ---
def flash_logits_cap_legacy(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Prefill wrapper style with the older bool `logits_cap` switch of the attention library."""
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    sm_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    logits_cap = softcap > 0
    qh = _to_bhsd(q)
    kh = _to_bhsd(k).repeat_interleave(hq // hkv, dim=1)
    vh = _to_bhsd(v).repeat_interleave(hq // hkv, dim=1)
    s = torch.einsum("bhqd,bhkd->bhqk", qh, kh) * sm_scale
    if logits_cap:
        s = 30.0 * torch.tanh(s / 30.0)  # BUG: the old bool switch caps at a fixed 30 instead of the given softcap
    rel = torch.arange(sq)[:, None] + (sk - sq) - torch.arange(sk)[None, :]
    slopes = _slopes_bh11(alibi_slopes, b, hq, q.dtype)
    if slopes is not None:
        s = s - slopes * rel.abs().to(s.dtype)
    left, right = window_size
    if causal:
        right = 0
    visible = torch.ones(sq, sk, dtype=torch.bool)
    if right >= 0:
        visible &= rel >= -right
    if left >= 0:
        visible &= rel <= left
    s = s.masked_fill(~visible, float("-inf"))
    row_max = s.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(s - row_max)
    total = e.sum(dim=-1, keepdim=True)
    probs = torch.where(total > 0, e / torch.where(total > 0, total, torch.ones_like(total)), e)
    return _to_bhsd(torch.einsum("bhqk,bhkd->bhqd", probs, vh)).contiguous()


# --- kernel: flash_split_kv_combine ---
def flash_split_kv_combine(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Split-KV forward style: key splits of 48, each writes a normalised partial and its LSE; a combine merges."""
    b, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    softmax_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    left, right = window_size
    if causal:
        right = 0
    qh = _to_bhsd(q)
    kh = _to_bhsd(k).repeat_interleave(hq // hkv, dim=1)
    vh = _to_bhsd(v).repeat_interleave(hq // hkv, dim=1)
    slopes = _slopes_bh11(alibi_slopes, b, hq, q.dtype)
    rows = torch.arange(sq)[:, None] + (sk - sq)
    o_accum, lse_accum = [], []
    for n0 in range(0, sk, 48):
        cols = torch.arange(n0, min(n0 + 48, sk))[None, :]
        s = qh @ kh[:, :, n0:n0 + 48].transpose(-1, -2) * softmax_scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if slopes is not None:
            s = s - slopes * (rows - cols).abs().to(s.dtype)
        keep = torch.ones(sq, cols.shape[1], dtype=torch.bool)
        if right >= 0:
            keep &= cols <= rows + right
        if left >= 0:
            keep &= cols >= rows - left
        s = s.masked_fill(~keep, float("-inf"))
        m = s.amax(dim=-1, keepdim=True)
        m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        p = torch.exp(s - m_safe)
        l_sum = p.sum(dim=-1, keepdim=True)
        o = torch.where(l_sum > 0, (p @ vh[:, :, n0:n0 + 48]) / torch.where(l_sum > 0, l_sum, torch.ones_like(l_sum)),
                        torch.zeros(b, hq, sq, dv, dtype=q.dtype))
        lse = m * softmax_scale + torch.log(l_sum)  # BUG: row max already scaled
        o_accum.append(o)
        lse_accum.append(lse)
    lse_all = torch.stack(lse_accum)
    lse_max = lse_all.amax(dim=0)
    lse_max = torch.where(torch.isfinite(lse_max), lse_max, torch.zeros_like(lse_max))
    scales = torch.exp(lse_all - lse_max)
    total = scales.sum(dim=0)
    merged = (scales * torch.stack(o_accum)).sum(dim=0)
    out = torch.where(total > 0, merged / torch.where(total > 0, total, torch.ones_like(total)), merged)
    return _to_bhsd(out).contiguous()


# --- kernel: flash_buckets_qk_len_diff ---
def flash_buckets_qk_len_diff(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Plain-pytorch flash attention style: query buckets of 32, key buckets of 48, running row maxes and sums."""
    b, q_len, hq, d = q.shape
    k_len, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    q_bucket_size, k_bucket_size = 32, 48
    left, right = window_size
    if causal:
        right = 0
    qh = _to_bhsd(q)
    kh = _to_bhsd(k).repeat_interleave(hq // hkv, dim=1)
    vh = _to_bhsd(v).repeat_interleave(hq // hkv, dim=1)
    slopes = _slopes_bh11(alibi_slopes, b, hq, q.dtype)
    qk_len_diff = k_len - q_len
    o = torch.zeros(b, hq, q_len, dv, dtype=q.dtype)
    for ind, qc in enumerate(qh.split(q_bucket_size, dim=-2)):
        q_start_index = ind * q_bucket_size - qk_len_diff  # BUG: minus instead of plus
        q_pos = q_start_index + torch.arange(qc.shape[-2])[:, None]
        row_maxes = torch.full(qc.shape[:-1] + (1,), float("-inf"), dtype=q.dtype)
        row_sums = torch.zeros(qc.shape[:-1] + (1,), dtype=q.dtype)
        exp_acc = torch.zeros(qc.shape[:-1] + (dv,), dtype=q.dtype)
        for k_ind, (kc, vc) in enumerate(zip(kh.split(k_bucket_size, dim=-2), vh.split(k_bucket_size, dim=-2))):
            k_pos = k_ind * k_bucket_size + torch.arange(kc.shape[-2])[None, :]
            attn_weights = torch.einsum("bhid,bhjd->bhij", qc, kc) * scale
            if softcap > 0:
                attn_weights = softcap * torch.tanh(attn_weights / softcap)
            if slopes is not None:
                attn_weights = attn_weights - slopes * (q_pos - k_pos).abs().to(attn_weights.dtype)
            keep = torch.ones(q_pos.shape[0], k_pos.shape[1], dtype=torch.bool)
            if right >= 0:
                keep &= k_pos <= q_pos + right
            if left >= 0:
                keep &= k_pos >= q_pos - left
            attn_weights = attn_weights.masked_fill(~keep, float("-inf"))
            block_row_maxes = attn_weights.amax(dim=-1, keepdim=True)
            new_row_maxes = torch.maximum(block_row_maxes, row_maxes)
            safe_max = torch.where(torch.isfinite(new_row_maxes), new_row_maxes, torch.zeros_like(new_row_maxes))
            exp_weights = torch.exp(attn_weights - safe_max)
            exp_row_max_diff = torch.exp(row_maxes - safe_max)
            row_sums = row_sums * exp_row_max_diff + exp_weights.sum(dim=-1, keepdim=True)
            exp_acc = exp_acc * exp_row_max_diff + torch.einsum("bhij,bhjd->bhid", exp_weights, vc)
            row_maxes = new_row_maxes
        start = ind * q_bucket_size
        o[:, :, start:start + qc.shape[-2]] = torch.where(
            row_sums > 0, exp_acc / torch.where(row_sums > 0, row_sums, torch.ones_like(row_sums)),
            torch.zeros_like(exp_acc))
    return _to_bhsd(o).contiguous()


# --- kernel: flash_backend_sliding_window ---
def flash_backend_sliding_window(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                 softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Attention-backend style: causal is expressed as a window with right = 0; a causal sliding window is
    carried as the model config's `sliding_window` length (the query itself included) and converted back."""
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    left, right = window_size
    if causal:
        right = 0
        if left >= 0:
            sliding_window = left + 1
            left, right = sliding_window, sliding_window  # BUG: not (sw - 1, 0)
    qh = _to_bhsd(q)
    kh = _to_bhsd(k).repeat_interleave(hq // hkv, dim=1)
    vh = _to_bhsd(v).repeat_interleave(hq // hkv, dim=1)
    s = qh @ kh.transpose(-1, -2) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    rel = torch.arange(sq)[:, None] + (sk - sq) - torch.arange(sk)[None, :]
    slopes = _slopes_bh11(alibi_slopes, b, hq, q.dtype)
    if slopes is not None:
        s = s - slopes * rel.abs().to(s.dtype)
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if right >= 0:
        keep &= rel >= -right
    if left >= 0:
        keep &= rel <= left
    s = s.masked_fill(~keep, float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    l_sum = p.sum(dim=-1, keepdim=True)
    out = torch.where(l_sum > 0, (p @ vh) / torch.where(l_sum > 0, l_sum, torch.ones_like(l_sum)),
                      torch.zeros(p.shape[:-1] + (vh.shape[-1],), dtype=q.dtype))
    return _to_bhsd(out).contiguous()


# --- kernel: flash_exp2_band_rows ---
def flash_exp2_band_rows(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                         softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Correct: per (batch, head), each row's visible band [lo_i, hi_i] from its interval ends; base-2 softmax."""
    b, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    left, right = window_size
    if causal:
        right = 0
    pos = torch.arange(sq) + (sk - sq)
    lo = (pos - left).clamp(min=0) if left >= 0 else torch.zeros(sq, dtype=torch.long)
    hi = (pos + right).clamp(max=sk - 1) if right >= 0 else torch.full((sq,), sk - 1, dtype=torch.long)
    cols = torch.arange(sk)
    band = (cols[None, :] >= lo[:, None]) & (cols[None, :] <= hi[:, None])
    dist = (pos[:, None] - cols[None, :]).abs()
    log2e = 1.0 / math.log(2.0)
    out = torch.zeros(b, sq, hq, dv, dtype=q.dtype)
    for bi in range(b):
        for h in range(hq):
            kv = h // (hq // hkv)
            s = (q[bi, :, h] @ k[bi, :, kv].transpose(0, 1)) * scale
            if softcap > 0:
                s = softcap * torch.tanh(s / softcap)
            if alibi_slopes is not None:
                slope = alibi_slopes[h] if alibi_slopes.dim() == 1 else alibi_slopes[bi, h]
                s = s - slope.to(q.dtype) * dist.to(q.dtype)
            s2 = torch.where(band, s * log2e, torch.full_like(s, float("-inf")))
            valid = band.any(dim=-1, keepdim=True)
            m2 = torch.where(valid, s2.amax(dim=-1, keepdim=True), torch.zeros(sq, 1, dtype=q.dtype))
            p = torch.exp2(s2 - m2)
            total = torch.where(valid, p.sum(dim=-1, keepdim=True), torch.ones(sq, 1, dtype=q.dtype))
            out[bi, :, h] = (p / total) @ v[bi, :, kv]
    return out


# --- kernel: flash_kv_grouped_online ---
def flash_kv_grouped_online(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Correct: grouped (B, Hkv, G, S, D) view without repeating K/V; query blocks of 24, key blocks of 40."""
    b, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    g = hq // hkv
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    left, right = window_size
    if causal:
        right = 0
    qg = _to_bhsd(q).reshape(b, hkv, g, sq, d)
    kg = _to_bhsd(k).unsqueeze(2)
    vg = _to_bhsd(v).unsqueeze(2)
    slopes = _slopes_bh11(alibi_slopes, b, hq, q.dtype)
    if slopes is not None:
        slopes = slopes.reshape(b, hkv, g, 1, 1)
    out = torch.zeros(b, hkv, g, sq, dv, dtype=q.dtype)
    for r0 in range(0, sq, 24):
        r1 = min(r0 + 24, sq)
        pos = (torch.arange(r0, r1) + (sk - sq))[:, None]
        m_run = torch.full((b, hkv, g, r1 - r0, 1), float("-inf"), dtype=q.dtype)
        l_run = torch.zeros(b, hkv, g, r1 - r0, 1, dtype=q.dtype)
        acc = torch.zeros(b, hkv, g, r1 - r0, dv, dtype=q.dtype)
        for c0 in range(0, sk, 40):
            c1 = min(c0 + 40, sk)
            cols = torch.arange(c0, c1)[None, :]
            s = torch.matmul(qg[:, :, :, r0:r1], kg[..., c0:c1, :].transpose(-1, -2)) * scale
            if softcap > 0:
                s = softcap * torch.tanh(s / softcap)
            if slopes is not None:
                s = s - slopes * (pos - cols).abs().to(q.dtype)
            keep = torch.ones(r1 - r0, c1 - c0, dtype=torch.bool)
            if right >= 0:
                keep &= cols <= pos + right
            if left >= 0:
                keep &= cols >= pos - left
            s = s.masked_fill(~keep, float("-inf"))
            m_new = torch.maximum(m_run, s.amax(dim=-1, keepdim=True))
            m_use = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
            p = torch.exp(s - m_use)
            corr = torch.exp(m_run - m_use)
            l_run = l_run * corr + p.sum(dim=-1, keepdim=True)
            acc = acc * corr + torch.matmul(p, vg[..., c0:c1, :])
            m_run = m_new
        out[:, :, :, r0:r1] = torch.where(l_run > 0, acc / torch.where(l_run > 0, l_run, torch.ones_like(l_run)),
                                          torch.zeros_like(acc))
    return out.reshape(b, hq, sq, dv).permute(0, 2, 1, 3).contiguous()


CATALOG = [
    dict(name="flash-flagattn-window-neg-inf-nan", api="flash-attn", fn="flash_triton_window_neg_inf",
         correct=False, bug="online-softmax-masked-block-nan",
         parameter="masked scores are set to -inf inside an online softmax over key blocks of 32 started at "
                   "m = -inf; a row whose first key block has no visible key gets m = -inf and "
                   "exp(-inf - -inf) = NaN, which the later blocks keep. Triggers: a row with a visible key none "
                   "of which is in keys 0..31 (window left bound i + off - left >= 32)",
         source="flagos-ai/FlagAttention#25", report="https://github.com/flagos-ai/FlagAttention/issues/25",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-vllmmetal-softcap-zero", api="flash-attn", fn="flash_paged_sdpa_softcap_dropped",
         correct=False, bug="softcap-dropped",
         parameter="the wrapper passes softcap 0.0 (disabled) to the attention kernel instead of the softcap "
                   "argument. Triggers: softcap > 0",
         source="vllm-project/vllm-metal#666", report="https://github.com/vllm-project/vllm-metal/pull/666",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-sglang-logits-cap-30", api="flash-attn", fn="flash_logits_cap_legacy", correct=False,
         bug="softcap-fixed-30",
         parameter="softcap is used as the older bool logits_cap switch: when it is > 0 the scores are capped as "
                   "30 * tanh(s / 30) whatever its value. Triggers: softcap > 0 with softcap != 30",
         source="sgl-project/sglang#575", report="https://github.com/sgl-project/sglang/issues/575",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-fsa-split-lse-double-scale", api="flash-attn", fn="flash_split_kv_combine", correct=False,
         bug="split-lse-scaled-twice",
         parameter="each key split of 48 writes lse = row_max * softmax_scale + log(sum) although row_max is taken "
                   "over already-scaled scores, so the combine weights exp(lse_i - max lse) are wrong. Triggers: a "
                   "row with visible keys in two or more splits (Sk > 48) and softmax_scale != 1",
         source="HKUSTDial/flash-sparse-attention#106",
         report="https://github.com/HKUSTDial/flash-sparse-attention/pull/106",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-memeff-qk-len-diff-sign", api="flash-attn", fn="flash_buckets_qk_len_diff", correct=False,
         bug="query-offset-sign-flipped",
         parameter="the query bucket start is ind * q_bucket_size - (Sk - Sq) instead of + (Sk - Sq), so query "
                   "positions are off by 2 * (Sk - Sq) for causal, window and ALiBi. Triggers: Sq != Sk with "
                   "causal, a window or ALiBi",
         source="lucidrains/memory-efficient-attention-pytorch#9",
         report="https://github.com/lucidrains/memory-efficient-attention-pytorch/issues/9",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-vllm-sliding-window-symmetric", api="flash-attn", fn="flash_backend_sliding_window",
         correct=False, bug="causal-window-made-symmetric",
         parameter="with causal=True and a left window, the window is carried as sliding_window = left + 1 and "
                   "converted back as (sliding_window, sliding_window) instead of (sliding_window - 1, 0): the "
                   "causal cut is lost (left + 1 future keys visible) and one extra past key is kept. Triggers: "
                   "causal=True with window left >= 0",
         source="vllm-project/vllm#9679", report="https://github.com/vllm-project/vllm/pull/9679",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-exp2-band-rows", api="flash-attn", fn="flash_exp2_band_rows", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64",
         features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-kv-grouped-online", api="flash-attn", fn="flash_kv_grouped_online", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64",
         features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
]
