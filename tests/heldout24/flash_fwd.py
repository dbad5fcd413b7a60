"""Held-out set 24, API flash-attn: flash_attn_func semantics on (B, S, H, D) torch tensors (bottom-right)."""
import math

import torch


def _heads_first(q, k, v):
    """(B, S, H, D) -> (B, H, S, D), kv heads repeated for GQA / MQA."""
    group = q.size(2) // k.size(2)
    qh = q.permute(0, 2, 1, 3)
    kh = k.permute(0, 2, 1, 3).repeat_interleave(group, dim=1)
    vh = v.permute(0, 2, 1, 3).repeat_interleave(group, dim=1)
    return qh, kh, vh


def _alibi_bias(alibi_slopes, b, h, sq, sk, dtype, device, n_keys=None):
    """-slope * |i + Sk - Sq - j| as (B or 1, H, Sq, n_keys); None without slopes."""
    if alibi_slopes is None:
        return None
    n_keys = sk if n_keys is None else n_keys
    slopes = alibi_slopes.to(dtype=dtype, device=device)
    slopes = slopes.reshape(1, h, 1, 1) if slopes.dim() == 1 else slopes.reshape(b, h, 1, 1)
    ii = torch.arange(sq, device=device).reshape(sq, 1) + (sk - sq)
    jj = torch.arange(n_keys, device=device).reshape(1, n_keys)
    return -slopes * (ii - jj).abs().to(dtype)


# --- kernel: flash_window_early_return ---
def _apply_masks(logits, causal, window_size):
    sq, sk = logits.size(-2), logits.size(-1)
    if not causal:  # BUG: early return also skips the local window when causal is off
        return logits
    left, right = window_size
    if causal:
        right = 0
    ii = torch.arange(sq, device=logits.device).reshape(sq, 1) + (sk - sq)
    jj = torch.arange(sk, device=logits.device).reshape(1, sk)
    keep = torch.ones(sq, sk, dtype=torch.bool, device=logits.device)
    if left >= 0:
        keep = keep & (jj >= ii - left)
    if right >= 0:
        keep = keep & (jj <= ii + right)
    return logits.masked_fill(keep.logical_not(), float("-inf"))


def flash_window_early_return(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """dot_product_attention-style: logits, softcap, bias, then _apply_masks."""
    scale = 1.0 / math.sqrt(q.size(-1)) if softmax_scale is None else softmax_scale
    qh, kh, vh = _heads_first(q, k, v)
    logits = torch.matmul(qh, kh.transpose(-2, -1)) * scale
    if softcap > 0:
        logits = softcap * torch.tanh(logits / softcap)
    bias = _alibi_bias(alibi_slopes, q.size(0), q.size(2), q.size(1), k.size(1), q.dtype, q.device)
    if bias is not None:
        logits = logits + bias
    logits = _apply_masks(logits, causal, tuple(window_size))
    m = logits.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(logits - m)
    den = p.sum(dim=-1, keepdim=True)
    out = torch.matmul(p / torch.where(den == 0, torch.ones_like(den), den), vh)
    return out.permute(0, 2, 1, 3)


# --- kernel: flash_causal_mask_missing ---
def flash_causal_mask_missing(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """compute_attention: row-wise softmax over the full [heads, seq_q, seq_k] score matrix."""
    scale = 1.0 / math.sqrt(q.size(-1)) if softmax_scale is None else softmax_scale
    qh, kh, vh = _heads_first(q, k, v)
    sq, sk = q.size(1), k.size(1)
    scores = torch.matmul(qh, kh.transpose(-2, -1)) * scale
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    bias = _alibi_bias(alibi_slopes, q.size(0), q.size(2), sq, sk, q.dtype, q.device)
    if bias is not None:
        scores = scores + bias
    ii = torch.arange(sq, device=q.device).reshape(sq, 1) + (sk - sq)
    jj = torch.arange(sk, device=q.device).reshape(1, sk)
    left, right = window_size
    if left >= 0:
        scores = scores.masked_fill(jj < ii - left, float("-inf"))
    if right >= 0:
        scores = scores.masked_fill(jj > ii + right, float("-inf"))
    causal_keep = None  # BUG: the causal mask is never built, causal=True attends future keys
    if causal_keep is not None:
        scores = scores.masked_fill(causal_keep.logical_not(), float("-inf"))
    m = scores.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(scores - m)
    den = p.sum(dim=-1, keepdim=True)
    out = torch.matmul(p / torch.where(den == 0, torch.ones_like(den), den), vh)
    return out.permute(0, 2, 1, 3)


# --- kernel: flash_causal_tril_zero ---
def flash_causal_tril_zero(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Cached multi-token forward: the causal mask is tril on [q_len, kv_len]."""
    scale = 1.0 / math.sqrt(q.size(-1)) if softmax_scale is None else softmax_scale
    qh, kh, vh = _heads_first(q, k, v)
    q_len, kv_len = q.size(1), k.size(1)
    att = torch.matmul(qh, kh.transpose(-2, -1)) * scale
    if softcap > 0:
        att = softcap * torch.tanh(att / softcap)
    bias = _alibi_bias(alibi_slopes, q.size(0), q.size(2), q_len, kv_len, q.dtype, q.device)
    if bias is not None:
        att = att + bias
    ii = torch.arange(q_len, device=q.device).reshape(q_len, 1) + (kv_len - q_len)
    jj = torch.arange(kv_len, device=q.device).reshape(1, kv_len)
    left, right = window_size
    keep = torch.ones(q_len, kv_len, dtype=torch.bool, device=q.device)
    if left >= 0:
        keep = keep & (jj >= ii - left)
    if right >= 0 and not causal:
        keep = keep & (jj <= ii + right)
    if causal:
        tri = torch.ones(q_len, kv_len, dtype=torch.bool, device=q.device).tril(0)  # BUG: not offset by kv - q
        keep = keep & tri
    att = att.masked_fill(keep.logical_not(), float("-inf"))
    m = att.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(att - m)
    den = p.sum(dim=-1, keepdim=True)
    out = torch.matmul(p / torch.where(den == 0, torch.ones_like(den), den), vh)
    return out.permute(0, 2, 1, 3)


# --- kernel: flash_kv_tiles_softcap_padding ---
def _cap(s, softcap):
    return softcap * torch.tanh(s / softcap) if softcap > 0 else s


def flash_kv_tiles_softcap_padding(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                                   window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                                   return_attn_probs=False):
    """CPU-style tiled kernel: KV in tiles of 64, the partial last tile padded, online softmax."""
    tile = 64
    scale = 1.0 / math.sqrt(q.size(-1)) if softmax_scale is None else softmax_scale
    qh, kh, vh = _heads_first(q, k, v)
    b, h, sq, _ = qh.shape
    sk = kh.size(2)
    n_pad = (-sk) % tile
    if n_pad:
        kh = torch.cat([kh, kh.new_zeros(b, h, n_pad, kh.size(3))], dim=2)
        vh = torch.cat([vh, vh.new_zeros(b, h, n_pad, vh.size(3))], dim=2)
    bias = _alibi_bias(alibi_slopes, b, h, sq, sk, q.dtype, q.device, n_keys=sk + n_pad)
    ii = torch.arange(sq, device=q.device).reshape(sq, 1) + (sk - sq)
    left, right = window_size
    if causal:
        right = 0
    neg_inf = torch.tensor(float("-inf"), dtype=q.dtype, device=q.device)
    m = torch.full((b, h, sq, 1), float("-inf"), dtype=q.dtype, device=q.device)
    den = torch.zeros((b, h, sq, 1), dtype=q.dtype, device=q.device)
    acc = torch.zeros((b, h, sq, vh.size(3)), dtype=q.dtype, device=q.device)
    for j0 in range(0, sk + n_pad, tile):
        jj = torch.arange(j0, j0 + tile, device=q.device).reshape(1, tile)
        valid_k = jj < sk
        s = torch.matmul(qh, kh[:, :, j0:j0 + tile].transpose(-2, -1)) * scale
        s = _cap(torch.where(valid_k, s, neg_inf), softcap)  # BUG: padding set to -inf before the softcap
        if bias is not None:
            s = s + bias[..., j0:j0 + tile]
        keep = torch.ones(sq, tile, dtype=torch.bool, device=q.device)
        if left >= 0:
            keep = keep & (jj >= ii - left)
        if right >= 0:
            keep = keep & (jj <= ii + right)
        s = s.masked_fill(keep.logical_not(), float("-inf"))
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
        m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        alpha = torch.exp(torch.where(torch.isfinite(m), m, m_safe) - m_safe)
        p = torch.exp(s - m_safe)
        den = den * alpha + p.sum(dim=-1, keepdim=True)
        acc = acc * alpha + torch.matmul(p, vh[:, :, j0:j0 + tile])
        m = m_new
    out = acc / torch.where(den == 0, torch.ones_like(den), den)
    return out.permute(0, 2, 1, 3)


# --- kernel: flash_local_mask_inclusive ---
def flash_local_mask_inclusive(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Splash-style: window_size converted to a sliding_window_size, then a LocalMask built from it."""
    scale = 1.0 / math.sqrt(q.size(-1)) if softmax_scale is None else softmax_scale
    qh, kh, vh = _heads_first(q, k, v)
    sq, sk = q.size(1), k.size(1)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    bias = _alibi_bias(alibi_slopes, q.size(0), q.size(2), sq, sk, q.dtype, q.device)
    if bias is not None:
        s = s + bias
    ii = torch.arange(sq, device=q.device).reshape(sq, 1) + (sk - sq)
    jj = torch.arange(sk, device=q.device).reshape(1, sk)
    left, right = window_size
    if causal:
        right = 0
    keep = torch.ones(sq, sk, dtype=torch.bool, device=q.device)
    if left >= 0:
        sliding_window_size = left + 1  # the query itself plus `left` keys behind it
        lo = ii - sliding_window_size  # BUG: LocalMask's left bound is inclusive, one key too many
        keep = keep & (jj >= lo)
    if right >= 0:
        keep = keep & (jj <= ii + right)
    s = s.masked_fill(keep.logical_not(), float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    den = p.sum(dim=-1, keepdim=True)
    out = torch.matmul(p / torch.where(den == 0, torch.ones_like(den), den), vh)
    return out.permute(0, 2, 1, 3)


# --- kernel: flash_tile_padded_softmax ---
def flash_tile_padded_softmax(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Tile-padded attention: K/V are padded to a multiple of 32 keys before the matmuls."""
    tile = 32
    scale = 1.0 / math.sqrt(q.size(-1)) if softmax_scale is None else softmax_scale
    qh, kh, vh = _heads_first(q, k, v)
    b, h, sq, _ = qh.shape
    sk = kh.size(2)
    skp = sk + (-sk) % tile
    kh = torch.cat([kh, kh.new_zeros(b, h, skp - sk, kh.size(3))], dim=2)
    vh = torch.cat([vh, vh.new_zeros(b, h, skp - sk, vh.size(3))], dim=2)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    bias = _alibi_bias(alibi_slopes, b, h, sq, sk, q.dtype, q.device, n_keys=skp)
    if bias is not None:
        s = s + bias
    ii = torch.arange(sq, device=q.device).reshape(sq, 1) + (sk - sq)
    jj = torch.arange(skp, device=q.device).reshape(1, skp)
    left, right = window_size
    if causal:
        right = 0
    pos_keep = torch.ones(sq, skp, dtype=torch.bool, device=q.device)
    if left >= 0:
        pos_keep = pos_keep & (jj >= ii - left)
    if right >= 0:
        pos_keep = pos_keep & (jj <= ii + right)
    keep = pos_keep  # BUG: the padded keys (j >= Sk) are not masked out of the softmax
    s = s.masked_fill(keep.logical_not(), float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    den = p.sum(dim=-1, keepdim=True)
    out = torch.matmul(p / torch.where(den == 0, torch.ones_like(den), den), vh)
    return out.permute(0, 2, 1, 3)


# --- kernel: flash_rowwise_band_lse ---
def flash_rowwise_band_lse(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """One query row at a time over its visible key band [lo, hi], weights exp(s - logsumexp)."""
    scale = 1.0 / math.sqrt(q.size(-1)) if softmax_scale is None else softmax_scale
    qh, kh, vh = _heads_first(q, k, v)
    b, h, sq, _ = qh.shape
    sk = kh.size(2)
    off = sk - sq
    left, right = window_size
    if causal:
        right = 0
    slopes = None
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(dtype=q.dtype, device=q.device)
        slopes = slopes.reshape(1, h, 1) if slopes.dim() == 1 else slopes.reshape(b, h, 1)
    out = torch.zeros((b, h, sq, vh.size(3)), dtype=q.dtype, device=q.device)
    for i in range(sq):
        lo = 0 if left < 0 else max(0, i + off - left)
        hi = sk - 1 if right < 0 else min(sk - 1, i + off + right)
        if hi < lo:
            continue
        s = torch.matmul(qh[:, :, i:i + 1], kh[:, :, lo:hi + 1].transpose(-2, -1)).squeeze(2) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if slopes is not None:
            dist = (torch.arange(lo, hi + 1, device=q.device) - (i + off)).abs().to(q.dtype)
            s = s - slopes * dist
        w = torch.exp(s - torch.logsumexp(s, dim=-1, keepdim=True))
        out[:, :, i] = torch.matmul(w.unsqueeze(2), vh[:, :, lo:hi + 1]).squeeze(2)
    return out.permute(0, 2, 1, 3)


# --- kernel: flash_tiled_base2_online ---
def flash_tiled_base2_online(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Query blocks of 16, key blocks of 40, online softmax in base 2 (exp2 with log2(e) folded in)."""
    log2e = 1.4426950408889634
    scale = 1.0 / math.sqrt(q.size(-1)) if softmax_scale is None else softmax_scale
    qh, kh, vh = _heads_first(q, k, v)
    b, h, sq, _ = qh.shape
    sk = kh.size(2)
    left, right = window_size
    if causal:
        right = 0
    bias = _alibi_bias(alibi_slopes, b, h, sq, sk, q.dtype, q.device)
    out = torch.zeros((b, h, sq, vh.size(3)), dtype=q.dtype, device=q.device)
    for i0 in range(0, sq, 16):
        i1 = min(i0 + 16, sq)
        ii = torch.arange(i0, i1, device=q.device).reshape(-1, 1) + (sk - sq)
        m = torch.full((b, h, i1 - i0, 1), float("-inf"), dtype=q.dtype, device=q.device)
        den = torch.zeros((b, h, i1 - i0, 1), dtype=q.dtype, device=q.device)
        acc = torch.zeros((b, h, i1 - i0, vh.size(3)), dtype=q.dtype, device=q.device)
        for j0 in range(0, sk, 40):
            j1 = min(j0 + 40, sk)
            jj = torch.arange(j0, j1, device=q.device).reshape(1, -1)
            s = torch.matmul(qh[:, :, i0:i1], kh[:, :, j0:j1].transpose(-2, -1)) * scale
            if softcap > 0:
                s = softcap * torch.tanh(s / softcap)
            if bias is not None:
                s = s + bias[:, :, i0:i1, j0:j1]
            keep = torch.ones(i1 - i0, j1 - j0, dtype=torch.bool, device=q.device)
            if left >= 0:
                keep = keep & (jj >= ii - left)
            if right >= 0:
                keep = keep & (jj <= ii + right)
            s2 = (s * log2e).masked_fill(keep.logical_not(), float("-inf"))
            m_new = torch.maximum(m, s2.amax(dim=-1, keepdim=True))
            m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
            alpha = torch.exp2(torch.where(torch.isfinite(m), m, m_safe) - m_safe)
            p = torch.exp2(s2 - m_safe)
            den = den * alpha + p.sum(dim=-1, keepdim=True)
            acc = acc * alpha + torch.matmul(p, vh[:, :, j0:j1])
            m = m_new
        out[:, :, i0:i1] = acc / torch.where(den == 0, torch.ones_like(den), den)
    return out.permute(0, 2, 1, 3)


_FEATURES = ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]

CATALOG = [
    dict(name="flash-jax-window-early-return", api="flash-attn", fn="flash_window_early_return", correct=False,
         bug="window-ignored-without-causal",
         parameter="the masking helper returns early when causal is off, so window_size is ignored unless "
                   "causal=True. Triggers: causal=False with a window that hides some key",
         source="jax-ml/jax#32300", report="https://github.com/jax-ml/jax/issues/32300", dtype="float64",
         features=_FEATURES),
    dict(name="flash-entrenar-causal-missing", api="flash-attn", fn="flash_causal_mask_missing", correct=False,
         bug="causal-ignored",
         parameter="no causal mask is ever built: causal=True attends the keys j > i + Sk - Sq (window bounds "
                   "and ALiBi still apply). Triggers: causal=True with a key right of the bottom-right "
                   "diagonal inside the window",
         source="paiml/entrenar#310", report="https://github.com/paiml/entrenar/issues/310", dtype="float64",
         features=_FEATURES),
    dict(name="flash-hyprstream-tril-zero", api="flash-attn", fn="flash_causal_tril_zero", correct=False,
         bug="causal-alignment-top-left",
         parameter="the causal mask is tril(0) on [Sq, Sk] (top-left, j <= i) instead of being offset by "
                   "Sk - Sq (bottom-right); window and ALiBi positions keep the offset. Triggers: causal=True "
                   "with Sq != Sk",
         source="hyprstream/hyprstream#1521", report="https://github.com/hyprstream/hyprstream/pull/1521",
         dtype="float64", features=_FEATURES),
    dict(name="flash-llamacpp-softcap-padded-tile", api="flash-attn", fn="flash_kv_tiles_softcap_padding",
         correct=False, bug="softcap-over-padding-sentinel",
         parameter="keys are processed in tiles of 64 and the padded keys of the partial last tile are set to "
                   "-inf before the softcap, which maps them to -softcap: they enter the softmax sum with "
                   "weight exp(-softcap - m) (their V is zero), shrinking the output. Triggers: softcap > 0, "
                   "Sk not a multiple of 64, and a row whose causal/window bound does not exclude the padded "
                   "positions",
         source="ggml-org/llama.cpp#29034", report="https://github.com/ggml-org/llama.cpp/pull/29034",
         dtype="float64", features=_FEATURES),
    dict(name="flash-maxtext-local-window-inclusive", api="flash-attn", fn="flash_local_mask_inclusive",
         correct=False, bug="window-left-off-by-one",
         parameter="window_size[0] is turned into sliding_window_size = left + 1 and handed to an inclusive "
                   "LocalMask, so the left bound is i + off - left - 1: one extra key on the left. Triggers: "
                   "window left >= 0 with key i + Sk - Sq - left - 1 >= 0 inside the other bounds",
         source="AI-Hypercomputer/maxtext#4289",
         report="https://github.com/AI-Hypercomputer/maxtext/pull/4289", dtype="float64", features=_FEATURES),
    dict(name="flash-ttmetal-tile-padding-softmax", api="flash-attn", fn="flash_tile_padded_softmax",
         correct=False, bug="padded-keys-in-softmax",
         parameter="K/V are zero-padded to a multiple of 32 keys and the padded keys are not masked: each "
                   "contributes exp(0 + bias - m) to the softmax sum with a zero value row. Triggers: Sk not a "
                   "multiple of 32 and a row whose causal/window bound does not exclude the padded positions",
         source="tenstorrent/tt-metal#6832", report="https://github.com/tenstorrent/tt-metal/issues/6832",
         dtype="float64", features=_FEATURES),
    dict(name="flash-rowwise-band-lse", api="flash-attn", fn="flash_rowwise_band_lse", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=_FEATURES),
    dict(name="flash-tiled-base2-online", api="flash-attn", fn="flash_tiled_base2_online", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64", features=_FEATURES),
]
