"""Held-out attention kernels, API `flash-attn`: semantics of flash_attn_func.

q (B, Sq, Hq, D), k (B, Sk, Hkv, D), v (B, Sk, Hkv, Dv). Bottom-right alignment with off = Sk - Sq:
causal keeps j <= i + off; window (left, right) keeps i + off - left <= j <= i + off + right (-1 unbounded,
causal = right 0); softcap > 0 applies softcap * tanh(s / softcap) to the scaled scores before masking;
ALiBi adds -slope * |i + off - j| after the cap (slopes float32 (Hq,) or (B, Hq)); query head h reads kv
head h // (Hq // Hkv); rows with no visible key are zeros. Returns (B, Sq, Hq, Dv) in the input dtype.
Six kernels carry one mistake each (each marked with a single BUG comment on its mistake line); two are correct.
"""
import math

import torch


def _bhsd(x):
    return x.permute(0, 2, 1, 3)


def _masked_softmax_v(scores, visible, v):
    scores = scores.masked_fill(~visible, float("-inf"))
    has = visible.any(dim=-1, keepdim=True)
    scores = torch.where(has, scores, torch.zeros_like(scores))
    p = torch.softmax(scores, dim=-1) * has
    return torch.matmul(p, v)


# --- kernel: flash_swa_inclusive_window ---
def flash_swa_inclusive_window(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Serving-engine backend: window_size is turned into an HF-style inclusive sliding window, then
    into the engine's exclusive left bound."""
    b, sq, hq, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    qh, kh, vh = _bhsd(q), _bhsd(k).repeat_interleave(hq // hk, dim=1), _bhsd(v).repeat_interleave(hq // hk, dim=1)
    s = torch.matmul(qh, kh.transpose(-1, -2)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    pos_q = torch.arange(sq)[:, None] + (sk - sq)
    pos_k = torch.arange(sk)[None, :]
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(s.dtype).reshape(-1, hq)[:, :, None, None]
        s = s - slopes * (pos_q - pos_k).abs().to(s.dtype)
    left, right = window_size
    if causal:
        right = 0
    visible = torch.ones(sq, sk, dtype=torch.bool)
    if left >= 0:
        sliding_window = left + 1
        window_left = sliding_window  # BUG: missing the -1 (inclusive HF length -> exclusive left bound)
        visible &= pos_k >= pos_q - window_left
    if right >= 0:
        visible &= pos_k <= pos_q + right
    return _bhsd(_masked_softmax_v(s, visible, vh))


# --- kernel: flash_alibi_local_slopes ---
def _get_alibi_slopes(n_heads):
    n = 2 ** math.floor(math.log2(n_heads))
    m0 = 2.0 ** (-8.0 / n)
    slopes = [m0 ** (i + 1) for i in range(n)]
    if n < n_heads:
        m1 = 2.0 ** (-4.0 / n)
        slopes += [m1 ** (2 * i + 1) for i in range(n_heads - n)]
    return torch.tensor(slopes, dtype=torch.float32)


def flash_alibi_local_slopes(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Prefill wrapper with pos_encoding_mode="ALIBI": the bias slopes come from the head count."""
    b, sq, hq, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    sm_scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qh = _bhsd(q)
    kh = _bhsd(k).repeat_interleave(hq // hk, dim=1)
    vh = _bhsd(v).repeat_interleave(hq // hk, dim=1)
    logits = torch.matmul(qh, kh.transpose(-1, -2)) * sm_scale
    if softcap > 0:
        logits = softcap * torch.tanh(logits / softcap)
    qo_idx = torch.arange(sq)[:, None] + (sk - sq)
    kv_idx = torch.arange(sk)[None, :]
    if alibi_slopes is not None:
        slopes = _get_alibi_slopes(hq)  # BUG: slopes regenerated from the head count; alibi_slopes ignored
        slopes = slopes.to(logits.dtype).reshape(-1, hq)[:, :, None, None]
        logits = logits - slopes * (qo_idx - kv_idx).abs().to(logits.dtype)
    left, right = window_size
    right = 0 if causal else right
    ok = torch.ones(sq, sk, dtype=torch.bool)
    if left >= 0:
        ok &= kv_idx >= qo_idx - left
    if right >= 0:
        ok &= kv_idx <= qo_idx + right
    return _bhsd(_masked_softmax_v(logits, ok, vh))


# --- kernel: flash_local_softcap_config ---
def flash_local_softcap_config(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Local (unfused) attention path of a training framework with a softcap config field."""
    b, sq, hq, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    rep = hq // hk
    scale = d ** -0.5 if softmax_scale is None else softmax_scale
    query = q.transpose(1, 2)
    key = k.transpose(1, 2).repeat_interleave(rep, dim=1)
    value = v.transpose(1, 2).repeat_interleave(rep, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scale
    if softcap is not None:  # BUG: 0.0 (disabled) is applied as a cap: s becomes 0 * tanh(s / 0)
        scores = softcap * torch.tanh(scores / softcap)
    row = torch.arange(sq).view(sq, 1) + (sk - sq)
    col = torch.arange(sk).view(1, sk)
    if alibi_slopes is not None:
        sl = alibi_slopes.to(scores.dtype).reshape(-1, hq, 1, 1)
        scores = scores - sl * (row - col).abs()
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if causal:
        keep &= col <= row
    if window_size[0] >= 0:
        keep &= col >= row - window_size[0]
    if window_size[1] >= 0:
        keep &= col <= row + window_size[1]
    return _masked_softmax_v(scores, keep, value).transpose(1, 2)


# --- kernel: flash_causal_mask_offset_abs ---
def flash_causal_mask_offset_abs(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                 softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Relax-style legalisation with a "BottomRight" causal mask for seq_len != seq_len_kv."""
    batch, seq_len, heads, dim = q.shape
    seq_len_kv, kv_heads = k.shape[1], k.shape[2]
    offset = abs(seq_len_kv - seq_len)  # BUG: abs() of the difference: for Sq > Sk the diagonal moves right, not left
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(dim)
    group = heads // kv_heads
    out = torch.empty(batch, seq_len, heads, v.shape[-1], dtype=q.dtype)
    rows = torch.arange(seq_len).unsqueeze(1) + offset
    cols = torch.arange(seq_len_kv).unsqueeze(0)
    allow = torch.ones(seq_len, seq_len_kv, dtype=torch.bool)
    left, right = window_size
    if causal:
        right = 0
    if left >= 0:
        allow &= cols >= rows - left
    if right >= 0:
        allow &= cols <= rows + right
    for h in range(heads):
        kh, vh = k[:, :, h // group], v[:, :, h // group]
        s = torch.einsum("bqd,bkd->bqk", q[:, :, h], kh) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if alibi_slopes is not None:
            slope = alibi_slopes.to(s.dtype).reshape(-1, heads)[:, h].view(-1, 1, 1)
            s = s - slope * (rows - cols).abs().to(s.dtype)
        out[:, :, h] = _masked_softmax_v(s, allow, vh)
    return out


# --- kernel: flash_tiled_causal_condition ---
def flash_tiled_causal_condition(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                 softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Tile-language style example: key blocks of 32 (zero-padded), online softmax, in-block masks."""
    block_n = 32
    b, sq, hq, d = q.shape
    sk, hk, dv = k.shape[1], k.shape[2], v.shape[-1]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    groups = hq // hk
    n_blocks = (sk + block_n - 1) // block_n
    pad = n_blocks * block_n - sk
    kp = torch.cat([k, k.new_zeros(b, pad, hk, d)], dim=1)
    vp = torch.cat([v, v.new_zeros(b, pad, hk, dv)], dim=1)
    qs = _bhsd(q)
    kt = _bhsd(kp).repeat_interleave(groups, dim=1)
    vt = _bhsd(vp).repeat_interleave(groups, dim=1)
    off = sk - sq
    q_pos = torch.arange(sq)[:, None] + off
    left, right = window_size
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(q.dtype).reshape(-1, hq)[:, :, None, None]
    m_i = torch.full((b, hq, sq, 1), float("-inf"), dtype=q.dtype)
    l_i = torch.zeros((b, hq, sq, 1), dtype=q.dtype)
    acc = torch.zeros((b, hq, sq, dv), dtype=q.dtype)
    for kb in range(n_blocks):
        k_pos = kb * block_n + torch.arange(block_n)[None, :]
        acc_s = torch.matmul(qs, kt[:, :, kb * block_n:(kb + 1) * block_n].transpose(-1, -2)) * scale
        if softcap > 0:
            acc_s = softcap * torch.tanh(acc_s / softcap)
        if alibi_slopes is not None:
            acc_s = acc_s - slopes * (q_pos - k_pos).abs().to(acc_s.dtype)
        if causal:
            masked = (q_pos >= k_pos) & (k_pos >= sk)  # BUG: inverted causal test (future keys kept)
        else:
            masked = k_pos >= sk
            if right >= 0:
                masked = masked | (k_pos > q_pos + right)
        if left >= 0:
            masked = masked | (k_pos < q_pos - left)
        acc_s = acc_s.masked_fill(masked, float("-inf"))
        m_new = torch.maximum(m_i, acc_s.amax(dim=-1, keepdim=True))
        m_safe = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
        alpha = torch.exp(m_i - m_safe)
        p = torch.exp(acc_s - m_safe)
        l_i = l_i * alpha + p.sum(dim=-1, keepdim=True)
        acc = acc * alpha + torch.matmul(p, vt[:, :, kb * block_n:(kb + 1) * block_n])
        m_i = m_new
    out = torch.where(l_i > 0, acc / torch.where(l_i > 0, l_i, torch.ones_like(l_i)), torch.zeros_like(acc))
    return _bhsd(out)


# --- kernel: flash_gguf_kv_head_order ---
def flash_gguf_kv_head_order(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Torch fallback of a Metal serving path that gathers each query head's kv head explicitly."""
    b, sq, hq, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    ratio = hq // hk
    assert ratio * hk == hq
    kv_index = torch.arange(hq) % hk  # BUG: tiled (h % Hkv) head order instead of the grouped h // (Hq // Hkv)
    k_hv = k.index_select(2, kv_index)
    v_hv = v.index_select(2, kv_index)
    scale = d ** -0.5 if softmax_scale is None else softmax_scale
    s = torch.einsum("bqhd,bkhd->bhqk", q, k_hv) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    i = torch.arange(sq)[:, None] + (sk - sq)
    j = torch.arange(sk)[None, :]
    if alibi_slopes is not None:
        s = s - alibi_slopes.to(s.dtype).reshape(-1, hq, 1, 1) * (i - j).abs()
    vis = torch.ones(sq, sk, dtype=torch.bool)
    if causal or window_size[1] >= 0:
        vis &= j <= i + (0 if causal else window_size[1])
    if window_size[0] >= 0:
        vis &= j >= i - window_size[0]
    return _masked_softmax_v(s, vis, _bhsd(v_hv)).transpose(1, 2)


# --- kernel: flash_rowwise_visible_range ---
def flash_rowwise_visible_range(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Per query row, compute the visible key range [lo, hi] and attend to that slice only."""
    b, sq, hq, d = q.shape
    sk, hk, dv = k.shape[1], k.shape[2], v.shape[-1]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    g = hq // hk
    left, right = window_size
    if causal:
        right = 0
    out = torch.zeros(b, sq, hq, dv, dtype=q.dtype)
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(q.dtype).reshape(-1, hq)
    for i in range(sq):
        pos = i + sk - sq
        lo = 0 if left < 0 else max(0, pos - left)
        hi = sk - 1 if right < 0 else min(sk - 1, pos + right)
        if hi < lo:
            continue
        for h in range(hq):
            kk = k[:, lo:hi + 1, h // g]
            s = torch.einsum("bd,bkd->bk", q[:, i, h], kk) * scale
            if softcap > 0:
                s = softcap * torch.tanh(s / softcap)
            if alibi_slopes is not None:
                dist = (pos - torch.arange(lo, hi + 1)).abs().to(q.dtype)
                s = s - slopes[:, h:h + 1] * dist
            p = torch.softmax(s, dim=-1)
            out[:, i, h] = torch.einsum("bk,bkd->bd", p, v[:, lo:hi + 1, h // g])
    return out


# --- kernel: flash_grouped_online_blocks ---
def flash_grouped_online_blocks(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Grouped (B, Hkv, G, Sq, D) queries against unexpanded K/V, online softmax over key blocks of 24."""
    b, sq, hq, d = q.shape
    sk, hk, dv = k.shape[1], k.shape[2], v.shape[-1]
    g = hq // hk
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qg = q.permute(0, 2, 1, 3).reshape(b, hk, g, sq, d)
    kk = k.permute(0, 2, 1, 3)
    vv = v.permute(0, 2, 1, 3)
    i = torch.arange(sq).view(sq, 1) + (sk - sq)
    left, right = window_size
    if causal:
        right = 0
    slopes = None
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(q.dtype).reshape(-1, hk, g, 1, 1)
    m = torch.full((b, hk, g, sq, 1), float("-inf"), dtype=q.dtype)
    den = torch.zeros((b, hk, g, sq, 1), dtype=q.dtype)
    num = torch.zeros((b, hk, g, sq, dv), dtype=q.dtype)
    for c0 in range(0, sk, 24):
        c1 = min(c0 + 24, sk)
        j = torch.arange(c0, c1).view(1, c1 - c0)
        s = torch.einsum("bngqd,bnkd->bngqk", qg, kk[:, :, c0:c1]) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if slopes is not None:
            s = s - slopes * (i - j).abs().to(q.dtype)
        bad = torch.zeros(sq, c1 - c0, dtype=torch.bool)
        if left >= 0:
            bad |= j < i - left
        if right >= 0:
            bad |= j > i + right
        s = s.masked_fill(bad, float("-inf"))
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
        base = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
        corr = torch.exp(m - base)
        p = torch.exp(s - base)
        den = den * corr + p.sum(dim=-1, keepdim=True)
        num = num * corr + torch.einsum("bngqk,bnkd->bngqd", p, vv[:, :, c0:c1])
        m = m_new
    out = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))
    return out.reshape(b, hq, sq, dv).permute(0, 2, 1, 3)


CATALOG = [
    dict(name="flash-sglang-swa-window-plus-one", api="flash-attn", fn="flash_swa_inclusive_window",
         correct=False, bug="window-left-off-by-one",
         parameter="window_size[0] is converted to an inclusive sliding-window length (left + 1) and passed on "
                   "as the exclusive left bound without the -1, so one extra key on the left (i + off - left - 1) "
                   "is attended. Triggers: window left >= 0 with key i + off - left - 1 inside the other bounds "
                   "for some row",
         source="sgl-project/sglang#26147", report="https://github.com/sgl-project/sglang/pull/26147",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-flashinfer-alibi-local-slopes", api="flash-attn", fn="flash_alibi_local_slopes",
         correct=False, bug="alibi-slopes-regenerated",
         parameter="when alibi_slopes is given the kernel regenerates the standard geometric slopes for heads "
                   "0..Hq-1 from the head count and ignores the values (and per-batch rows) it was passed. "
                   "Triggers: alibi_slopes that differ from the standard slopes for Hq heads",
         source="flashinfer-ai/flashinfer#1606", report="https://github.com/flashinfer-ai/flashinfer/issues/1606",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-megatron-softcap-zero-applied", api="flash-attn", fn="flash_local_softcap_config",
         correct=False, bug="softcap-zero-not-disabled",
         parameter="softcap is applied whenever it is not None, so the default 0.0 (disabled) computes "
                   "0 * tanh(s / 0) and collapses every score to 0: uniform weights over the visible keys. "
                   "Triggers: softcap == 0 (no softcap) with a row that sees two or more keys",
         source="NVIDIA/Megatron-LM#6590", report="https://github.com/NVIDIA/Megatron-LM/pull/6590",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-tvm-bottom-right-abs-offset", api="flash-attn", fn="flash_causal_mask_offset_abs",
         correct=False, bug="bottom-right-offset-abs",
         parameter="the bottom-right offset is abs(Sk - Sq) (as in the documented BottomRight masks), so for "
                   "Sq > Sk the causal/window diagonal and the ALiBi distances shift right by Sq - Sk instead of "
                   "left. Triggers: Sq > Sk with causal, a window or ALiBi",
         source="apache/tvm#14907", report="https://github.com/apache/tvm/pull/14907",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-tilelang-causal-condition", api="flash-attn", fn="flash_tiled_causal_condition",
         correct=False, bug="causal-condition-inverted",
         parameter="with causal=True a score is masked only when i + off >= j and the key is padding, instead of "
                   "when j > i + off or the key is padding: future keys stay visible and the zero-padded keys of "
                   "the last block of 32 are never masked. Triggers: causal=True with a future key for some row "
                   "or with Sk not a multiple of 32",
         source="tile-ai/tilelang#1139", report="https://github.com/tile-ai/tilelang/issues/1139",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-slimserve-tiled-kv-heads", api="flash-attn", fn="flash_gguf_kv_head_order",
         correct=False, bug="gqa-tiled-head-order",
         parameter="query head h reads kv head h % Hkv (the tiled GGUF order) instead of h // (Hq // Hkv). "
                   "Triggers: 1 < Hkv < Hq",
         source="QuixiAI/SlimServe#12", report="https://github.com/QuixiAI/SlimServe/pull/12",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-rowwise-visible-range", api="flash-attn", fn="flash_rowwise_visible_range",
         correct=True, bug=None, parameter=None, source=None, report=None,
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-grouped-online-blocks", api="flash-attn", fn="flash_grouped_online_blocks",
         correct=True, bug=None, parameter=None, source=None, report=None,
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
]
