"""Held-out attention kernels, API `flash-attn`.

fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
deterministic=False, return_attn_probs=False) on torch tensors q (B, Sq, Hq, D), k (B, Sk, Hkv, D), v (B, Sk, Hkv, Dv)
with flash_attn_func's semantics: bottom-right alignment (off = Sk - Sq), causal keeps j <= i + off, window (left,
right) keeps i + off - left <= j <= i + off + right (-1 unbounded, causal sets right to 0), softcap on the scaled
scores before masking, ALiBi -slope * |i + off - j| after the cap, query head h uses kv head h // (Hq // Hkv), rows with
no visible key are zeros. Returns (B, Sq, Hq, Dv) in the input dtype.
"""
import math

import torch


# --- kernel: flash_swa_kv_start ---
def flash_swa_kv_start(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                       alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Sliding-window kernel that derives the first visible key from a window length that includes the query."""
    batch, seqlen_q, nheads, d = q.shape
    seqlen_k, nheads_k = k.shape[1], k.shape[2]
    if softmax_scale is None:
        softmax_scale = d ** -0.5
    left, right = window_size
    if causal:
        right = 0
    q_pos = torch.arange(seqlen_q)[:, None] + (seqlen_k - seqlen_q)
    kv_idx = torch.arange(seqlen_k)[None, :]
    keep = torch.ones(seqlen_q, seqlen_k, dtype=torch.bool)
    if right >= 0:
        keep &= kv_idx <= q_pos + right
    if left >= 0:
        sliding_window_size = left + 1  # keys attended to, the query's own position included
        kv_offset_start = (q_pos - sliding_window_size).clamp(min=0)  # BUG: should be q_pos + 1 - sliding_window_size
        keep &= kv_idx >= kv_offset_start
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(nheads // nheads_k, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(nheads // nheads_k, dim=1)
    s = torch.matmul(qh, kh.transpose(-1, -2)) * softmax_scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(s.dtype).reshape(-1, nheads, 1, 1)
        s = s - slopes * (q_pos - kv_idx).abs().to(s.dtype)
    s = s.masked_fill(~keep, float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    p = torch.exp(s - m)
    l_sum = p.sum(dim=-1, keepdim=True)
    p = p / torch.where(l_sum > 0, l_sum, torch.ones_like(l_sum))
    return torch.matmul(p, vh).transpose(1, 2)


# --- kernel: flash_alibi_key_bias ---
def flash_alibi_key_bias(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                         alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """ALiBi built once as a (1, H, 1, Sk) key-position bias and broadcast over the query rows."""
    B, Sq, H, D = q.shape
    Sk, Hk = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(D) if softmax_scale is None else softmax_scale
    rows = torch.arange(Sq).view(Sq, 1) + Sk - Sq
    cols = torch.arange(Sk).view(1, Sk)
    wl, wr = window_size
    if causal:
        wr = 0
    visible = torch.ones(Sq, Sk, dtype=torch.bool)
    if wl >= 0:
        visible = visible & (cols >= rows - wl)
    if wr >= 0:
        visible = visible & (cols <= rows + wr)
    rep = H // Hk
    kh = k.permute(0, 2, 1, 3).repeat_interleave(rep, dim=1)
    vh = v.permute(0, 2, 1, 3).repeat_interleave(rep, dim=1)
    scores = torch.einsum('bihd,bhjd->bhij', q, kh) * scale
    if softcap > 0:
        scores = torch.tanh(scores / softcap) * softcap
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(scores.dtype).reshape(-1, H, 1, 1)
        alibi = -(Sk - 1 - cols).to(scores.dtype).view(1, 1, 1, Sk)  # BUG: key-only form, valid only when causal
        scores = scores + slopes * alibi
    scores = scores.masked_fill(~visible, float("-inf"))
    has_key = visible.any(dim=-1, keepdim=True)
    scores = torch.where(has_key, scores, torch.zeros_like(scores))
    probs = torch.softmax(scores, dim=-1) * has_key
    return torch.einsum('bhij,bhjd->bihd', probs, vh)


# --- kernel: flash_gemma_softcap_unused ---
def flash_gemma_softcap_unused(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Gemma-style port: logits scaled, masked, ALiBi-biased, softmaxed in float32-or-better."""
    n_q_heads, head_dim = q.shape[2], q.shape[3]
    n_kv_heads = k.shape[2]
    L, S = q.shape[1], k.shape[1]
    scale = head_dim ** -0.5 if softmax_scale is None else softmax_scale
    n_rep = n_q_heads // n_kv_heads
    queries = q.transpose(1, 2)
    keys = k.transpose(1, 2)[:, :, None].expand(-1, -1, n_rep, -1, -1).flatten(1, 2)
    values = v.transpose(1, 2)[:, :, None].expand(-1, -1, n_rep, -1, -1).flatten(1, 2)
    logits = torch.matmul(queries, keys.transpose(-1, -2)) * scale  # BUG: attn_logit_softcapping never applied here
    i = torch.arange(L)[:, None] + (S - L)
    j = torch.arange(S)[None, :]
    if alibi_slopes is not None:
        logits = logits - alibi_slopes.to(logits.dtype).reshape(-1, n_q_heads, 1, 1) * (i - j).abs().to(logits.dtype)
    allowed = torch.ones(L, S, dtype=torch.bool)
    left, right = window_size
    if causal:
        right = 0
    if left >= 0:
        allowed = allowed & (j >= i - left)
    if right >= 0:
        allowed = allowed & (j <= i + right)
    logits = logits.masked_fill(~allowed, float("-inf"))
    mx = logits.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    w = torch.exp(logits - mx)
    den = w.sum(dim=-1, keepdim=True)
    w = torch.where(den > 0, w / den.clamp(min=torch.finfo(w.dtype).tiny), torch.zeros_like(w))
    return torch.matmul(w, values).transpose(1, 2)


# --- kernel: flash_sdpa_path_repeat_kv ---
def flash_sdpa_path_repeat_kv(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Fallback path for (bs, sl, nkv, d) inputs: repeat K/V to the query heads, then dense attention."""
    bs, seqlen_q, num_heads, head_dim = q.shape
    num_queries_per_kv = num_heads // k.shape[2]
    if num_queries_per_kv > 1:
        k, v = (t.repeat_interleave(num_queries_per_kv, dim=1) for t in (k, v))  # BUG: dim 1 is the sequence axis
    seqlen_k = k.shape[1]
    scale = 1.0 / math.sqrt(head_dim) if softmax_scale is None else softmax_scale
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    attn = torch.matmul(qt, kt.transpose(-2, -1)) * scale
    if softcap > 0:
        attn = softcap * torch.tanh(attn / softcap)
    pos_q = torch.arange(seqlen_q).unsqueeze(1) + (seqlen_k - seqlen_q)
    pos_k = torch.arange(seqlen_k).unsqueeze(0)
    if alibi_slopes is not None:
        attn = attn - alibi_slopes.to(attn.dtype).view(-1, num_heads, 1, 1) * (pos_q - pos_k).abs().to(attn.dtype)
    left, right = window_size
    if causal:
        right = 0
    ok = torch.ones(seqlen_q, seqlen_k, dtype=torch.bool)
    if left >= 0:
        ok = ok & (pos_k >= pos_q - left)
    if right >= 0:
        ok = ok & (pos_k <= pos_q + right)
    attn = attn.masked_fill(~ok, float("-inf"))
    row_ok = ok.any(dim=-1, keepdim=True)
    attn = torch.softmax(torch.where(row_ok, attn, torch.zeros_like(attn)), dim=-1) * row_ok
    return torch.matmul(attn, vt).transpose(1, 2)


# --- kernel: flash_splitkv_combine_tiles ---
def flash_splitkv_combine_tiles(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Two key splits; the combine kernel writes BLOCK_M rows at a time into the (B, Sq, H, Dv) output."""
    BLOCK_M = 16
    NUM_SPLITS = 2
    batch, seqlen_q, num_heads, head_size = q.shape
    seqlen_k, num_heads_k, head_size_v = k.shape[1], k.shape[2], v.shape[3]
    scale = head_size ** -0.5 if softmax_scale is None else softmax_scale
    g = num_heads // num_heads_k
    qh = q.permute(0, 2, 1, 3)
    kh = k.permute(0, 2, 1, 3)[:, torch.arange(num_heads) // g]
    vh = v.permute(0, 2, 1, 3)[:, torch.arange(num_heads) // g]
    s = torch.matmul(qh, kh.transpose(-1, -2)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    i = torch.arange(seqlen_q)[:, None] + seqlen_k - seqlen_q
    j = torch.arange(seqlen_k)[None, :]
    if alibi_slopes is not None:
        s = s - alibi_slopes.to(s.dtype).reshape(-1, num_heads, 1, 1) * (i - j).abs().to(s.dtype)
    wl, wr = window_size
    wr = 0 if causal else wr
    vis = torch.ones(seqlen_q, seqlen_k, dtype=torch.bool)
    if wl >= 0:
        vis = vis & (j >= i - wl)
    if wr >= 0:
        vis = vis & (j <= i + wr)
    s = s.masked_fill(~vis, float("-inf"))
    bounds = [0, (seqlen_k + 1) // 2, seqlen_k]
    o_parts, lse_parts = [], []
    for n_split in range(NUM_SPLITS):
        sb = s[..., bounds[n_split]:bounds[n_split + 1]]
        lse = torch.logsumexp(sb, dim=-1, keepdim=True)
        fin = torch.isfinite(lse)
        p = torch.where(fin, torch.exp(sb - torch.where(fin, lse, torch.zeros_like(lse))), torch.zeros_like(sb))
        o_parts.append(torch.matmul(p, vh[:, :, bounds[n_split]:bounds[n_split + 1]]))
        lse_parts.append(lse)
    lse_all = torch.stack(lse_parts)
    lse_tot = torch.logsumexp(lse_all, dim=0)
    fin = torch.isfinite(lse_tot)
    scl = torch.where(fin, torch.exp(lse_all - torch.where(fin, lse_tot, torch.zeros_like(lse_tot))),
                      torch.zeros_like(lse_all))
    o_comb = (scl * torch.stack(o_parts)).sum(dim=0)  # (B, H, Sq, Dv)
    out = torch.zeros(batch * seqlen_q * num_heads * head_size_v, dtype=q.dtype)
    stride_b, stride_s, stride_h = seqlen_q * num_heads * head_size_v, num_heads * head_size_v, head_size_v
    for m_block in range(-(-seqlen_q // BLOCK_M)):
        m0, m1 = m_block * BLOCK_M, min((m_block + 1) * BLOCK_M, seqlen_q)
        rows = torch.arange(m1 - m0)
        for b in range(batch):
            for h in range(num_heads):
                base = b * stride_b + h * stride_h + m0 * head_size_v  # BUG: tile start uses head_size, not stride_s
                offs = base + rows[:, None] * stride_s + torch.arange(head_size_v)[None, :]
                inb = offs < out.numel()
                out[offs[inb]] = o_comb[b, h, m0:m1].to(q.dtype)[inb]
    return out.view(batch, seqlen_q, num_heads, head_size_v)


# --- kernel: flash_local_window_tuple ---
def _local_keep(q_pos, kv_pos, window_size):
    """flash-attn semantics: keys in [i - left, i + right]; a negative side is unbounded."""
    left, right = window_size
    keep = torch.ones(q_pos.shape[0], kv_pos.shape[1], dtype=torch.bool)
    if left >= 0:
        keep &= kv_pos >= q_pos - left
    if right >= 0:
        keep &= kv_pos <= q_pos + right
    return keep


def flash_local_window_tuple(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Window attention for a DiT block; the window is handed to a flash-style helper as a signed range."""
    B, Sq, H, D = q.shape
    Sk, Hk = k.shape[1], k.shape[2]
    scale = D ** -0.5 if softmax_scale is None else softmax_scale
    q_pos = torch.arange(Sq)[:, None] + (Sk - Sq)
    kv_pos = torch.arange(Sk)[None, :]
    keep = torch.ones(Sq, Sk, dtype=torch.bool)
    if tuple(window_size) != (-1, -1):
        keep &= _local_keep(q_pos, kv_pos, (-window_size[0], window_size[1]))  # BUG: left passed negated
    if causal:
        keep &= kv_pos <= q_pos
    idx = torch.arange(H) // (H // Hk)
    qb, kb, vb = q.transpose(1, 2), k.transpose(1, 2)[:, idx], v.transpose(1, 2)[:, idx]
    s = qb @ kb.transpose(-1, -2) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s - alibi_slopes.to(s.dtype).reshape(-1, H, 1, 1) * (q_pos - kv_pos).abs().to(s.dtype)
    s = s.masked_fill(~keep, float("-inf"))
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    e = torch.exp(s - m)
    z = e.sum(-1, keepdim=True)
    return (torch.where(z > 0, e / torch.where(z > 0, z, torch.ones_like(z)), e) @ vb).transpose(1, 2)


# --- kernel: flash_rowband_online_exp2 ---
def flash_rowband_online_exp2(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Per (batch, head) program, online softmax in base 2 over key blocks of 32, band bounds per row."""
    BLOCK_N = 32
    LOG2E = 1.4426950408889634
    B, Sq, Hq, D = q.shape
    Sk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[3]
    scale = 1.0 / math.sqrt(D) if softmax_scale is None else softmax_scale
    left, right = window_size
    if causal:
        right = 0
    off = Sk - Sq
    row = torch.arange(Sq, dtype=torch.float64)[:, None] + off
    lo = row - left if left >= 0 else torch.full_like(row, -math.inf)
    hi = row + right if right >= 0 else torch.full_like(row, math.inf)
    out = torch.zeros(B, Sq, Hq, Dv, dtype=torch.float64)
    for b in range(B):
        for h in range(Hq):
            kvh = h // (Hq // Hkv)
            qi = q[b, :, h].to(torch.float64)
            m_i = torch.full((Sq, 1), -math.inf, dtype=torch.float64)
            l_i = torch.zeros(Sq, 1, dtype=torch.float64)
            acc = torch.zeros(Sq, Dv, dtype=torch.float64)
            slope = None
            if alibi_slopes is not None:
                sl = alibi_slopes.to(torch.float64)
                slope = sl[b, h] if sl.dim() == 2 else sl[h]
            for n0 in range(0, Sk, BLOCK_N):
                n1 = min(n0 + BLOCK_N, Sk)
                col = torch.arange(n0, n1, dtype=torch.float64)[None, :]
                s = qi @ k[b, n0:n1, kvh].to(torch.float64).T * scale
                if softcap > 0:
                    s = softcap * torch.tanh(s / softcap)
                if slope is not None:
                    s = s - slope * (row - col).abs()
                s = s * LOG2E
                s = torch.where((col >= lo) & (col <= hi), s, torch.full_like(s, -math.inf))
                m_new = torch.maximum(m_i, s.amax(dim=-1, keepdim=True))
                dead = torch.isinf(m_new)
                m_use = torch.where(dead, torch.zeros_like(m_new), m_new)
                alpha = torch.where(dead, torch.ones_like(m_i), torch.exp2(m_i - m_use))
                p = torch.exp2(s - m_use)
                l_i = l_i * alpha + p.sum(dim=-1, keepdim=True)
                acc = acc * alpha + p @ v[b, n0:n1, kvh].to(torch.float64)
                m_i = m_new
            out[b, :, h] = torch.where(l_i > 0, acc / torch.where(l_i > 0, l_i, torch.ones_like(l_i)),
                                       torch.zeros_like(acc))
    return out.to(q.dtype)


# --- kernel: flash_grouped_dense_bias ---
def flash_grouped_dense_bias(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Queries viewed as (B, Sq, Hkv, G, D); causal, window and ALiBi folded into one dense additive bias."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[3]
    G = Hq // Hkv
    scale = D ** -0.5 if softmax_scale is None else softmax_scale
    qg = q.reshape(B, Sq, Hkv, G, D)
    s = torch.einsum('bihgd,bjhd->bhgij', qg, k) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    i = torch.arange(Sq)[:, None] + (Sk - Sq)
    j = torch.arange(Sk)[None, :]
    left, right = window_size
    right = 0 if causal else right
    allowed = torch.ones(Sq, Sk, dtype=torch.bool)
    if left >= 0:
        allowed &= j >= i - left
    if right >= 0:
        allowed &= j <= i + right
    bias = torch.zeros(B, Hkv, G, Sq, Sk, dtype=s.dtype).masked_fill(~allowed, float("-inf"))
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(s.dtype).reshape(-1, Hkv, G, 1, 1)
        bias = bias - slopes * (i - j).abs().to(s.dtype)
    s = s + bias
    live = allowed.any(dim=-1, keepdim=True)
    s = torch.where(live, s, torch.zeros_like(s))
    p = torch.softmax(s, dim=-1) * live
    o = torch.einsum('bhgij,bjhd->bihgd', p, v)
    return o.reshape(B, Sq, Hq, Dv)


CATALOG = [
    {
        "name": "flash-trtllm-swa-start-off-by-one",
        "api": "flash-attn",
        "fn": "flash_swa_kv_start",
        "correct": False,
        "bug": "window-left-off-by-one",
        "parameter": "the window left bound is converted to a window length left + 1 and the first visible key is "
                     "taken as q_pos - length instead of q_pos + 1 - length: one extra key (i + off - left - 1) is "
                     "visible on the left. Triggers: window left >= 0 with a key at i + off - left - 1 >= 0",
        "source": "NVIDIA/TensorRT-LLM#6379",
        "report": "https://github.com/NVIDIA/TensorRT-LLM/pull/6379",
        "dtype": "float64",
        "features": ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"],
    },
    {
        "name": "flash-nemo-alibi-key-only",
        "api": "flash-attn",
        "fn": "flash_alibi_key_bias",
        "correct": False,
        "bug": "alibi-key-position-only",
        "parameter": "ALiBi built as the (1, H, 1, Sk) key-only bias -slope * (Sk - 1 - j), shared by every query "
                     "row: equal to -slope * |i + off - j| up to a per-row constant only when causal, wrong "
                     "otherwise. Triggers: alibi_slopes with causal=False",
        "source": "NVIDIA-NeMo/Speech#7105",
        "report": "https://github.com/NVIDIA-NeMo/Speech/pull/7105",
        "dtype": "float64",
        "features": ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"],
    },
    {
        "name": "flash-mlx-softcap-unused",
        "api": "flash-attn",
        "fn": "flash_gemma_softcap_unused",
        "correct": False,
        "bug": "softcap-not-applied",
        "parameter": "softcap is accepted and stored but the scaled logits are never passed through "
                     "softcap * tanh(s / softcap). Triggers: softcap > 0",
        "source": "ml-explore/mlx-swift-examples#99",
        "report": "https://github.com/ml-explore/mlx-swift-examples/pull/99",
        "dtype": "float64",
        "features": ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"],
    },
    {
        "name": "flash-primerl-repeat-kv-seq-axis",
        "api": "flash-attn",
        "fn": "flash_sdpa_path_repeat_kv",
        "correct": False,
        "bug": "gqa-repeat-on-sequence-axis",
        "parameter": "K/V are expanded to the query heads with repeat_interleave on dim 1, which is the sequence "
                     "axis of (B, S, H, D): with Hkv > 1 the heads no longer match (error), with one kv head every "
                     "key is duplicated G times and positions (causal, window, ALiBi) refer to the stretched "
                     "sequence. Triggers: Hq > Hkv > 1, or Hkv = 1 < Hq with causal, a window or ALiBi",
        "source": "PrimeIntellect-ai/prime-rl#2681",
        "report": "https://github.com/PrimeIntellect-ai/prime-rl/pull/2681",
        "dtype": "float64",
        "features": ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"],
    },
    {
        "name": "flash-flaggems-combine-row-stride",
        "api": "flash-attn",
        "fn": "flash_splitkv_combine_tiles",
        "correct": False,
        "bug": "combine-output-row-stride",
        "parameter": "the split-KV combine places a tile of BLOCK_M = 16 rows at m0 * head_size instead of "
                     "m0 * out.stride(-3) (= H * Dv) while stepping rows by out.stride(-3): tiles after the first "
                     "land on other rows (or past the buffer) and some rows are never written. "
                     "Triggers: Hq > 1 and Sq > 16",
        "source": "flagos-ai/FlagGems#5235",
        "report": "https://github.com/flagos-ai/FlagGems/issues/5235",
        "dtype": "float64",
        "features": ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"],
    },
    {
        "name": "flash-ditfastattn-window-left-negated",
        "api": "flash-attn",
        "fn": "flash_local_window_tuple",
        "correct": False,
        "bug": "window-left-negated",
        "parameter": "the window is passed on as (-left, right) to a helper with flash-attn's convention, where a "
                     "negative side means unbounded: a left window becomes unbounded and an unbounded left (-1) "
                     "becomes a 1-key left window. Triggers: window_size != (-1, -1) with left != 0 where the left "
                     "bound changes the visible keys",
        "source": "thu-nics/DiTFastAttn#7",
        "report": "https://github.com/thu-nics/DiTFastAttn/issues/7",
        "dtype": "float64",
        "features": ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"],
    },
    {
        "name": "flash-rowband-online-exp2",
        "api": "flash-attn",
        "fn": "flash_rowband_online_exp2",
        "correct": True,
        "bug": None,
        "parameter": None,
        "source": None,
        "report": None,
        "dtype": "float64",
        "features": ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"],
    },
    {
        "name": "flash-grouped-dense-bias",
        "api": "flash-attn",
        "fn": "flash_grouped_dense_bias",
        "correct": True,
        "bug": None,
        "parameter": None,
        "source": None,
        "report": None,
        "dtype": "float64",
        "features": ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"],
    },
]
