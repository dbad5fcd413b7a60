"""heldout20 torch kernels, API ``flash-attn``: the semantics of flash_attn_func.

fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
alibi_slopes=None, deterministic=False, return_attn_probs=False) with q (B, Sq, Hq, D), k (B, Sk, Hkv, D),
v (B, Sk, Hkv, Dv). Bottom-right alignment, off = Sk - Sq: causal keeps j <= i + off, a window (left, right)
keeps i + off - left <= j <= i + off + right (-1 unbounded, causal = right 0); softcap before masking;
ALiBi adds -slope * |i + off - j| after the cap; query head h reads kv head h // (Hq // Hkv); rows with no
visible key are zeros. Six kernels carry one mistake each (marked by a BUG comment), two are correct.
"""
import math

import torch


def _repeat_kv(x, n_rep):
    """(B, S, Hkv, D) -> (B, S, Hkv * n_rep, D), query head h reading kv head h // n_rep."""
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=2)


def _alibi_slopes_bh(alibi_slopes, batch, heads, dtype):
    """(Hq,) or (B, Hq) float32 slopes -> (B, Hq, 1, 1) in the compute dtype."""
    slopes = alibi_slopes.to(dtype)
    if slopes.dim() == 1:
        slopes = slopes.unsqueeze(0).expand(batch, heads)
    return slopes.reshape(batch, heads, 1, 1)


# --- kernel: flash_v1_causal_top_left ---
def flash_v1_causal_top_left(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    batch, seqlen_q, nheads, d = q.shape
    seqlen_k, nheads_k = k.shape[1], k.shape[2]
    k, v = _repeat_kv(k, nheads // nheads_k), _repeat_kv(v, nheads // nheads_k)
    scale = d ** -0.5 if softmax_scale is None else softmax_scale
    scores = torch.einsum("bthd,bshd->bhts", q, k) * scale
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    row = torch.arange(seqlen_q).view(-1, 1)
    col = torch.arange(seqlen_k).view(1, -1)
    off = seqlen_k - seqlen_q
    if alibi_slopes is not None:
        scores = scores - _alibi_slopes_bh(alibi_slopes, batch, nheads, q.dtype) * (row + off - col).abs().to(q.dtype)
    visible = torch.ones(seqlen_q, seqlen_k, dtype=torch.bool)
    if causal:
        visible &= col <= row  # BUG: v1 alignment, query i attends keys 0..i (top-left) whatever Sk - Sq
    if window_size[0] >= 0:
        visible &= col >= row + off - window_size[0]
    if window_size[1] >= 0:
        visible &= col <= row + off + window_size[1]
    scores = scores.masked_fill(~visible, float("-inf"))
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    p = torch.exp(scores - row_max)
    denom = p.sum(dim=-1, keepdim=True)
    p = torch.where(denom > 0, p / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(p))
    return torch.einsum("bhts,bshd->bthd", p, v)


# --- kernel: flash_cute_window_none_only ---
def flash_cute_window_none_only(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    batch, seqlen_q, num_head, head_dim = q.shape
    seqlen_k, num_head_kv = k.shape[1], k.shape[2]
    qhead_per_kvhead = num_head // num_head_kv
    k, v = _repeat_kv(k, qhead_per_kvhead), _repeat_kv(v, qhead_per_kvhead)
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(head_dim)
    ws = tuple(window_size)
    window_size_left, window_size_right = (None, None) if ws == (-1, -1) else ws  # BUG: a lone -1 stays a bound
    if causal:
        window_size_right = 0
    s = torch.einsum("bmhd,bnhd->bhmn", q, k) * softmax_scale
    if softcap > 0:
        s = torch.tanh(s / softcap) * softcap
    m_idx = torch.arange(seqlen_q)[:, None] + (seqlen_k - seqlen_q)
    n_idx = torch.arange(seqlen_k)[None, :]
    if alibi_slopes is not None:
        s = s - _alibi_slopes_bh(alibi_slopes, batch, num_head, q.dtype) * (m_idx - n_idx).abs().to(q.dtype)
    keep = torch.ones(seqlen_q, seqlen_k, dtype=torch.bool)
    if window_size_left is not None:
        keep &= n_idx >= m_idx - window_size_left
    if window_size_right is not None:
        keep &= n_idx <= m_idx + window_size_right
    s = s.masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(s, dim=-1, keepdim=True)
    p = torch.where(torch.isfinite(lse), torch.exp(s - lse.nan_to_num(posinf=0.0, neginf=0.0)), torch.zeros_like(s))
    return torch.einsum("bhmn,bnhd->bmhd", p, v)


# --- kernel: flash_window_loaded_or_fallback ---
def flash_window_loaded_or_fallback(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                    softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, seqlen_q, h, d = q.shape
    seqlen_k, h_k = k.shape[1], k.shape[2]
    k, v = _repeat_kv(k, h // h_k), _repeat_kv(v, h // h_k)
    sm_scale = softmax_scale if softmax_scale is not None else d ** -0.5
    wl = None if window_size[0] < 0 else window_size[0]
    wr = None if window_size[1] < 0 else window_size[1]
    if causal:
        wr = 0
    max_span = seqlen_q + seqlen_k
    left, right = (wl or max_span), (wr or max_span)  # BUG: an explicit 0 bound is falsy and reads as unbounded
    qk = torch.matmul(q.transpose(1, 2), k.permute(0, 2, 3, 1)) * sm_scale
    if softcap > 0:
        qk = softcap * torch.tanh(qk / softcap)
    i = torch.arange(seqlen_q).unsqueeze(1) + seqlen_k - seqlen_q
    j = torch.arange(seqlen_k).unsqueeze(0)
    if alibi_slopes is not None:
        qk = qk - _alibi_slopes_bh(alibi_slopes, b, h, q.dtype) * (i - j).abs().to(q.dtype)
    qk = qk.masked_fill((j < i - left) | (j > i + right), float("-inf"))
    mx = qk.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    e = torch.exp(qk - mx)
    z = e.sum(dim=-1, keepdim=True)
    p = torch.where(z > 0, e / torch.where(z > 0, z, torch.ones_like(z)), torch.zeros_like(e))
    return torch.matmul(p, v.transpose(1, 2)).transpose(1, 2)


# --- kernel: flash_fwd_causal_seqlen_k_longer ---
def flash_fwd_causal_seqlen_k_longer(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                     softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False,
                                     block_m=64, block_n=32):
    batch, seqlen_q, nheads, d = q.shape
    seqlen_k, nheads_k, d_v = k.shape[1], k.shape[2], v.shape[3]
    k, v = _repeat_kv(k, nheads // nheads_k), _repeat_kv(v, nheads // nheads_k)
    scale = d ** -0.5 if softmax_scale is None else softmax_scale
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    slopes = None if alibi_slopes is None else _alibi_slopes_bh(alibi_slopes, batch, nheads, q.dtype)
    off = seqlen_k - seqlen_q
    n_block_total = -(-seqlen_k // block_n)
    out = torch.zeros(batch, nheads, seqlen_q, d_v, dtype=q.dtype)
    for m0 in range(0, seqlen_q, block_m):
        m1 = min(seqlen_q, m0 + block_m)
        rows = torch.arange(m0, m1).view(-1, 1)
        n_block_max = n_block_total
        if causal:
            n_block_max = min(n_block_total, max(0, (m1 - 1 + off) // block_n + 1))
        m_i = torch.full((batch, nheads, m1 - m0, 1), float("-inf"), dtype=q.dtype)
        l_i = torch.zeros(batch, nheads, m1 - m0, 1, dtype=q.dtype)
        acc = torch.zeros(batch, nheads, m1 - m0, d_v, dtype=q.dtype)
        for n_block in range(n_block_max):
            n0, n1 = n_block * block_n, min(seqlen_k, (n_block + 1) * block_n)
            cols = torch.arange(n0, n1).view(1, -1)
            s = torch.matmul(qh[:, :, m0:m1], kh[:, :, n0:n1].transpose(-2, -1)) * scale
            if softcap > 0:
                s = softcap * torch.tanh(s / softcap)
            if slopes is not None:
                s = s - slopes * (rows + off - cols).abs().to(q.dtype)
            keep = torch.ones(m1 - m0, n1 - n0, dtype=torch.bool)
            if window_size[0] >= 0:
                keep &= cols >= rows + off - window_size[0]
            if window_size[1] >= 0:
                keep &= cols <= rows + off + window_size[1]
            if causal and n_block == n_block_max - 1:  # BUG: only the last key block is assumed to cross the diagonal
                keep &= cols <= rows + off
            s = s.masked_fill(~keep, float("-inf"))
            m_new = torch.maximum(m_i, s.amax(dim=-1, keepdim=True))
            m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
            alpha = torch.exp(m_i - m_safe)
            p = torch.exp(s - m_safe)
            l_i = l_i * alpha + p.sum(dim=-1, keepdim=True)
            acc = acc * alpha + torch.matmul(p, vh[:, :, n0:n1])
            m_i = m_new
        out[:, :, m0:m1] = torch.where(l_i > 0, acc / torch.where(l_i > 0, l_i, torch.ones_like(l_i)),
                                       torch.zeros_like(acc))
    return out.transpose(1, 2)


# --- kernel: flash_alibi_partitioned_heads ---
def flash_alibi_partitioned_heads(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                  softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    batch, sq, num_attention_heads, head_dim = q.shape
    sk, num_partitions = k.shape[1], k.shape[2]
    heads_per_partition = num_attention_heads // num_partitions
    norm_factor = head_dim ** 0.5 if softmax_scale is None else 1.0 / softmax_scale
    alibi = None
    if alibi_slopes is not None:
        alibi = _alibi_slopes_bh(alibi_slopes, batch, num_attention_heads, q.dtype)
    pos_q = torch.arange(sq).view(-1, 1) + (sk - sq)
    pos_k = torch.arange(sk).view(1, -1)
    allowed = torch.ones(sq, sk, dtype=torch.bool)
    right = 0 if causal else window_size[1]
    if window_size[0] >= 0:
        allowed &= pos_k >= pos_q - window_size[0]
    if right >= 0:
        allowed &= pos_k <= pos_q + right
    outputs = []
    for rank in range(num_partitions):
        h0 = rank * heads_per_partition
        q_part = q[:, :, h0:h0 + heads_per_partition].transpose(1, 2)
        k_part = k[:, :, rank:rank + 1].transpose(1, 2)
        v_part = v[:, :, rank:rank + 1].transpose(1, 2)
        scores = torch.matmul(q_part, k_part.transpose(-2, -1)) / norm_factor
        if softcap > 0:
            scores = softcap * torch.tanh(scores / softcap)
        if alibi is not None:
            alibi_part = alibi[:, :heads_per_partition]  # BUG: every partition takes the first partition's slopes
            scores = scores - alibi_part * (pos_q - pos_k).abs().to(q.dtype)
        scores = scores.masked_fill(~allowed, float("-inf"))
        top = scores.amax(dim=-1, keepdim=True)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        probs = torch.exp(scores - top)
        total = probs.sum(dim=-1, keepdim=True)
        probs = torch.where(total > 0, probs / torch.where(total > 0, total, torch.ones_like(total)),
                            torch.zeros_like(probs))
        outputs.append(torch.matmul(probs, v_part))
    return torch.cat(outputs, dim=1).transpose(1, 2)


# --- kernel: flash_sliding_window_diagonal ---
def flash_sliding_window_diagonal(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                  softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    bsz, tgt_len, num_heads, head_dim = q.shape
    src_len, num_key_value_heads = k.shape[1], k.shape[2]
    n_rep = num_heads // num_key_value_heads
    key_states, value_states = _repeat_kv(k, n_rep), _repeat_kv(v, n_rep)
    scaling = head_dim ** -0.5 if softmax_scale is None else softmax_scale
    attn_weights = torch.matmul(q.transpose(1, 2), key_states.permute(0, 2, 3, 1)) * scaling
    if softcap > 0:
        attn_weights = softcap * torch.tanh(attn_weights / softcap)
    past_key_values_length = src_len - tgt_len
    row = torch.arange(tgt_len).unsqueeze(-1) + past_key_values_length
    col = torch.arange(src_len).unsqueeze(0)
    if alibi_slopes is not None:
        attn_weights = attn_weights - _alibi_slopes_bh(alibi_slopes, bsz, num_heads, q.dtype) * (row - col).abs().to(
            q.dtype)
    masked = torch.zeros(tgt_len, src_len, dtype=torch.bool)
    if causal:
        masked |= col > row
    elif window_size[1] >= 0:
        masked |= col > row + window_size[1]
    if window_size[0] >= 0:
        sliding_window = window_size[0] + 1  # HF convention: visible tokens including the current one
        too_old = col < row - sliding_window  # BUG: diagonal = -sliding_window keeps one key too many on the left
        masked |= too_old
    attn_weights = attn_weights.masked_fill(masked, float("-inf"))
    peak = attn_weights.amax(dim=-1, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    attn_weights = torch.exp(attn_weights - peak)
    norm = attn_weights.sum(dim=-1, keepdim=True)
    attn_weights = torch.where(norm > 0, attn_weights / torch.where(norm > 0, norm, torch.ones_like(norm)),
                               torch.zeros_like(attn_weights))
    return torch.matmul(attn_weights, value_states.transpose(1, 2)).transpose(1, 2)


# --- kernel: flash_exp2_online_tiles ---
def flash_exp2_online_tiles(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False, tile_n=40):
    log2e = 1.4426950408889634
    batch, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[3]
    group = hq // hkv
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qg = q.reshape(batch, sq, hkv, group, d).permute(0, 2, 3, 1, 4)
    kg, vg = k.permute(0, 2, 1, 3).unsqueeze(2), v.permute(0, 2, 1, 3).unsqueeze(2)
    slopes = None
    if alibi_slopes is not None:
        slopes = _alibi_slopes_bh(alibi_slopes, batch, hq, q.dtype).reshape(batch, hkv, group, 1, 1)
    left = window_size[0]
    right = 0 if causal else window_size[1]
    pos_q = (torch.arange(sq) + (sk - sq)).view(-1, 1)
    m2 = torch.full((batch, hkv, group, sq, 1), float("-inf"), dtype=q.dtype)
    l2 = torch.zeros(batch, hkv, group, sq, 1, dtype=q.dtype)
    acc = torch.zeros(batch, hkv, group, sq, dv, dtype=q.dtype)
    for j0 in range(0, sk, tile_n):
        j1 = min(sk, j0 + tile_n)
        pos_k = torch.arange(j0, j1).view(1, -1)
        s = torch.matmul(qg, kg[..., j0:j1, :].transpose(-2, -1)) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if slopes is not None:
            s = s - slopes * (pos_q - pos_k).abs().to(q.dtype)
        ok = torch.ones(sq, j1 - j0, dtype=torch.bool)
        if left >= 0:
            ok &= pos_k >= pos_q - left
        if right >= 0:
            ok &= pos_k <= pos_q + right
        s2 = (s * log2e).masked_fill(~ok, float("-inf"))
        m_new = torch.maximum(m2, s2.amax(dim=-1, keepdim=True))
        m_use = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        corr = torch.exp2(m2 - m_use)
        p = torch.exp2(s2 - m_use)
        l2 = l2 * corr + p.sum(dim=-1, keepdim=True)
        acc = acc * corr + torch.matmul(p, vg[..., j0:j1, :])
        m2 = m_new
    out = torch.where(l2 > 0, acc / torch.where(l2 > 0, l2, torch.ones_like(l2)), torch.zeros_like(acc))
    return out.reshape(batch, hq, sq, dv).transpose(1, 2)


# --- kernel: flash_grouped_lse_weights ---
def flash_grouped_lse_weights(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[3]
    g = hq // hkv
    scale = d ** -0.5 if softmax_scale is None else softmax_scale
    s = torch.einsum("bqngd,bknd->bngqk", q.reshape(b, sq, hkv, g, d), k) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    dist = (torch.arange(sq).view(-1, 1) + sk - sq - torch.arange(sk).view(1, -1))
    if alibi_slopes is not None:
        s = s - _alibi_slopes_bh(alibi_slopes, b, hq, q.dtype).reshape(b, hkv, g, 1, 1) * dist.abs().to(q.dtype)
    wl, wr = window_size[0], (0 if causal else window_size[1])
    hidden = torch.zeros(sq, sk, dtype=torch.bool)
    if wl >= 0:
        hidden |= dist > wl
    if wr >= 0:
        hidden |= -dist > wr
    s = s.masked_fill(hidden, float("-inf"))
    lse = torch.logsumexp(s, dim=-1, keepdim=True)
    live = torch.isfinite(lse)
    w = torch.where(live, torch.exp(s - torch.where(live, lse, torch.zeros_like(lse))), torch.zeros_like(s))
    out = torch.einsum("bngqk,bknd->bqngd", w, v)
    return out.reshape(b, sq, hq, dv)


CATALOG = [
    {
        "name": "flash-fa1-causal-top-left",
        "api": "flash-attn",
        "fn": "flash_v1_causal_top_left",
        "correct": False,
        "bug": "causal-alignment-top-left",
        "parameter": (
            "causal keeps j <= i (query i attends keys 0..i, the early FlashAttention alignment) instead of the "
            "bottom-right j <= i + Sk - Sq; windows and ALiBi keep the bottom-right offset. "
            "Triggers: causal=True with Sq != Sk"
        ),
        "source": "Dao-AILab/flash-attention#20",
        "report": "https://github.com/Dao-AILab/flash-attention/issues/20",
        "dtype": "float64",
        "features": ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"],
    },
    {
        "name": "flash-cute-negative-window-literal",
        "api": "flash-attn",
        "fn": "flash_cute_window_none_only",
        "correct": False,
        "bug": "window-minus-one-used-as-bound",
        "parameter": (
            "only window_size == (-1, -1) is mapped to 'no local window'; a single -1 side is kept as a "
            "literal bound, so (L, -1) hides the diagonal and everything right of it and (-1, R) hides the "
            "diagonal and everything left of it. Triggers: a window with exactly one side -1 and causal=False"
        ),
        "source": "Dao-AILab/flash-attention#2251",
        "report": "https://github.com/Dao-AILab/flash-attention/pull/2251",
        "dtype": "float64",
        "features": ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"],
    },
    {
        "name": "flash-fa-window-zero-falsy",
        "api": "flash-attn",
        "fn": "flash_window_loaded_or_fallback",
        "correct": False,
        "bug": "window-zero-bound-treated-as-unbounded",
        "parameter": (
            "the window bounds are resolved with `bound or max_span`, so a legitimate 0 (the right bound of "
            "every causal call, or a window side of 0) is falsy and becomes unbounded: causal is dropped and "
            "a window (0, R) loses its left bound. Triggers: causal=True with Sq > 1, or a window side equal to 0"
        ),
        "source": "Dao-AILab/flash-attention#2624",
        "report": "https://github.com/Dao-AILab/flash-attention/pull/2624",
        "dtype": "float64",
        "features": ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"],
    },
    {
        "name": "flash-fa2-causal-last-block-only",
        "api": "flash-attn",
        "fn": "flash_fwd_causal_seqlen_k_longer",
        "correct": False,
        "bug": "causal-mask-only-on-last-key-block",
        "parameter": (
            "query blocks of 64 rows visit key blocks of 32 up to the diagonal, and the causal mask is applied "
            "to the last visited key block only, assuming the diagonal crosses one block; when it crosses "
            "more (bottom-right offset, tall query blocks), keys right of the diagonal in the earlier blocks "
            "leak in. Triggers: causal=True with a query block of 64 rows whose last visible keys i + Sk - Sq "
            "(those >= 0) fall in two or more key blocks of 32"
        ),
        "source": "Dao-AILab/flash-attention#436",
        "report": "https://github.com/Dao-AILab/flash-attention/pull/436",
        "dtype": "float64",
        "features": ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"],
    },
    {
        "name": "flash-bigscience-alibi-partition-slice",
        "api": "flash-attn",
        "fn": "flash_alibi_partitioned_heads",
        "correct": False,
        "bug": "alibi-slopes-partition-not-offset",
        "parameter": (
            "heads are processed in partitions of Hq // Hkv query heads (one per kv head, like tensor-parallel "
            "shards) and every partition takes the ALiBi slopes of the first partition ([:heads_per_partition]) "
            "instead of its own slice. Triggers: alibi_slopes with Hkv > 1 (slopes differing between partitions)"
        ),
        "source": "bigscience-workshop/Megatron-DeepSpeed#227",
        "report": "https://github.com/bigscience-workshop/Megatron-DeepSpeed/issues/227",
        "dtype": "float64",
        "features": ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"],
    },
    {
        "name": "flash-hf-sliding-window-diagonal",
        "api": "flash-attn",
        "fn": "flash_sliding_window_diagonal",
        "correct": False,
        "bug": "window-left-one-extra",
        "parameter": (
            "window_size[0] is turned into the HF sliding_window = left + 1 and keys with j < i + off - "
            "sliding_window are dropped (triu diagonal = -sliding_window), so key i + off - left - 1 stays "
            "visible. Triggers: window left >= 0 with key i + off - left - 1 inside the other bounds for some row"
        ),
        "source": "huggingface/transformers#26792",
        "report": "https://github.com/huggingface/transformers/pull/26792",
        "dtype": "float64",
        "features": ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"],
    },
    {
        "name": "flash-exp2-online-tiles",
        "api": "flash-attn",
        "fn": "flash_exp2_online_tiles",
        "correct": True,
        "bug": None,
        "parameter": None,
        "source": None,
        "report": None,
        "dtype": "float64",
        "features": ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"],
    },
    {
        "name": "flash-grouped-lse-weights",
        "api": "flash-attn",
        "fn": "flash_grouped_lse_weights",
        "correct": True,
        "bug": None,
        "parameter": None,
        "source": None,
        "report": None,
        "dtype": "float64",
        "features": ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"],
    },
]
