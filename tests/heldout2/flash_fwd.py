"""Held-out attention kernels, API "flash-attn".

Each kernel follows ``flash_attn_func(q, k, v, dropout_p=0.0,
softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
alibi_slopes=None, deterministic=False, return_attn_probs=False)``:

* q (B, Sq, Hq, D), k (B, Sk, Hkv, D), v (B, Sk, Hkv, Dv) torch tensors;
* causal / window are BOTTOM-RIGHT aligned: with off = Sk - Sq, query i may
  see key j iff j <= i + off (causal) and i + off - left <= j <= i + off + right
  (window, -1 = unbounded side);
* softcap > 0: s = softcap * tanh(s / softcap) on the scaled scores, before
  masking; alibi adds -slope * |i + off - j| to the (capped) scaled scores;
* GQA: query head h uses kv head h // (Hq // Hkv);
* output (B, Sq, Hq, Dv); rows with no visible key are zeros.

Broken kernels carry exactly one mistake, marked ``# BUG:``.
"""
import math

import torch


# ---------------------------------------------------------------------------
# shared (correct) building blocks
# ---------------------------------------------------------------------------

def _bhsd(x):
    """(B, S, H, D) -> (B, H, S, D)"""
    return x.transpose(1, 2)


def _expand_kv(k, v, n_q_heads):
    """repeat_kv: (B, Hkv, S, D) -> (B, Hq, S, D), head h -> kv head h // G."""
    n_kv = k.size(1)
    if n_kv == n_q_heads:
        return k, v
    g = n_q_heads // n_kv
    return k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)


def _positions(Sq, Sk, device=None):
    i = torch.arange(Sq, device=device).view(Sq, 1)
    j = torch.arange(Sk, device=device).view(1, Sk)
    return i, j


def _local_keep(Sq, Sk, causal, window_size, device=None):
    """Bottom-right aligned causal / sliding-window keep mask (Sq, Sk) or None."""
    left, right = window_size
    if causal:
        right = 0 if right < 0 else min(right, 0)
    if left < 0 and right < 0:
        return None
    i, j = _positions(Sq, Sk, device)
    diag = i + (Sk - Sq)
    keep = torch.ones(Sq, Sk, dtype=torch.bool, device=device)
    if right >= 0:
        keep = keep & (j <= diag + right)
    if left >= 0:
        keep = keep & (j >= diag - left)
    return keep


def _alibi_bias(alibi_slopes, B, Hq, Sq, Sk, dtype, device=None):
    slopes = alibi_slopes.to(dtype).reshape(-1, Hq, 1, 1)      # (1|B, Hq, 1, 1)
    i, j = _positions(Sq, Sk, device)
    dist = (i + (Sk - Sq) - j).abs().to(dtype)
    return -slopes * dist


def _softcap(s, softcap):
    return softcap * torch.tanh(s / softcap)


def _safe_softmax_av(scores, keep, v):
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    row_max = scores.amax(dim=-1, keepdim=True)
    has_key = torch.isfinite(row_max)
    probs = torch.exp(scores - row_max.masked_fill(~has_key, 0.0))
    denom = probs.sum(dim=-1, keepdim=True)
    out = torch.matmul(probs, v) / denom.masked_fill(denom <= 0, 1.0)
    return out.masked_fill(~has_key, 0.0)


def _scale_of(q, softmax_scale):
    return 1.0 / math.sqrt(q.size(-1)) if softmax_scale is None else float(softmax_scale)


# ---------------------------------------------------------------------------
# correct kernels
# ---------------------------------------------------------------------------

def flash_reference(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                    window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                    deterministic=False, return_attn_probs=False):
    """Dense reference in the style of flash-attn's attention_ref."""
    B, Sq, Hq, _ = q.shape
    Sk = k.size(1)
    qh, kh, vh = _bhsd(q), _bhsd(k), _bhsd(v)
    kh, vh = _expand_kv(kh, vh, Hq)
    scores = torch.matmul(qh, kh.transpose(-2, -1)) * _scale_of(q, softmax_scale)
    if softcap:
        scores = _softcap(scores, softcap)
    if alibi_slopes is not None:
        scores = scores + _alibi_bias(alibi_slopes, B, Hq, Sq, Sk, scores.dtype)
    keep = _local_keep(Sq, Sk, causal, window_size)
    out = _safe_softmax_av(scores, keep, vh)
    return out.transpose(1, 2).to(q.dtype)


def _tiled_forward(q, k, v, softmax_scale, causal, window_size, softcap,
                   alibi_slopes, block_m, block_n, n_block_range):
    """FA2-style tiled forward: for each query block iterate over the key
    blocks given by ``n_block_range`` with an online softmax."""
    B, Sq, Hq, _ = q.shape
    Sk, Dv = k.size(1), v.size(-1)
    sm_scale = _scale_of(q, softmax_scale)
    qh, kh, vh = _bhsd(q), _bhsd(k), _bhsd(v)
    kh, vh = _expand_kv(kh, vh, Hq)
    keep_all = _local_keep(Sq, Sk, causal, window_size)
    bias_all = None
    if alibi_slopes is not None:
        bias_all = _alibi_bias(alibi_slopes, B, Hq, Sq, Sk, q.dtype)
    out = torch.zeros(B, Hq, Sq, Dv, dtype=q.dtype)
    for m_block in range(-(-Sq // block_m)):
        r0, r1 = m_block * block_m, min((m_block + 1) * block_m, Sq)
        q_blk = qh[:, :, r0:r1]
        acc = torch.zeros(B, Hq, r1 - r0, Dv, dtype=q.dtype)
        m_i = torch.full((B, Hq, r1 - r0, 1), float("-inf"), dtype=q.dtype)
        l_i = torch.zeros(B, Hq, r1 - r0, 1, dtype=q.dtype)
        n_lo, n_hi = n_block_range(m_block)
        for n_block in range(n_lo, n_hi):
            c0, c1 = n_block * block_n, min((n_block + 1) * block_n, Sk)
            s = torch.matmul(q_blk, kh[:, :, c0:c1].transpose(-2, -1)) * sm_scale
            if softcap:
                s = _softcap(s, softcap)
            if bias_all is not None:
                s = s + bias_all[..., r0:r1, c0:c1]
            if keep_all is not None:
                s = s.masked_fill(~keep_all[r0:r1, c0:c1], float("-inf"))
            m_new = torch.maximum(m_i, s.amax(dim=-1, keepdim=True))
            m_safe = m_new.masked_fill(~torch.isfinite(m_new), 0.0)
            alpha = torch.exp(m_i - m_safe)
            p = torch.exp(s - m_safe)
            l_i = l_i * alpha + p.sum(dim=-1, keepdim=True)
            acc = acc * alpha + torch.matmul(p, vh[:, :, c0:c1])
            m_i = m_new
        out[:, :, r0:r1] = acc / l_i.masked_fill(l_i <= 0, 1.0)
    return out.transpose(1, 2).to(q.dtype)


def _block_range(Sq, Sk, causal, window_size, block_m, block_n):
    """Correct [n_block_min, n_block_max) for a query block."""
    left, right = window_size
    if causal:
        right = 0 if right < 0 else min(right, 0)
    n_blocks = -(-Sk // block_n)

    def rng(m_block):
        hi = n_blocks
        if right >= 0:
            last_key = min(Sk, (m_block + 1) * block_m + Sk - Sq + right)
            hi = max(0, min(n_blocks, -(-last_key // block_n)))
        lo = 0
        if left >= 0:
            first_key = m_block * block_m + Sk - Sq - left
            lo = max(0, first_key // block_n)
        return lo, hi
    return rng


def flash_tiled(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                deterministic=False, return_attn_probs=False,
                block_m=64, block_n=64):
    """Tiled online-softmax forward with causal/local block skipping."""
    Sq, Sk = q.size(1), k.size(1)
    rng = _block_range(Sq, Sk, causal, window_size, block_m, block_n)
    return _tiled_forward(q, k, v, softmax_scale, causal, window_size, softcap,
                          alibi_slopes, block_m, block_n, rng)


# ---------------------------------------------------------------------------
# broken kernels
# ---------------------------------------------------------------------------

def flash_causal_top_left(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                          window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                          deterministic=False, return_attn_probs=False):
    B, Sq, Hq, _ = q.shape
    Sk = k.size(1)
    qh, kh, vh = _bhsd(q), _bhsd(k), _bhsd(v)
    kh, vh = _expand_kv(kh, vh, Hq)
    scores = torch.matmul(qh, kh.transpose(-2, -1)) * _scale_of(q, softmax_scale)
    if softcap:
        scores = _softcap(scores, softcap)
    if alibi_slopes is not None:
        scores = scores + _alibi_bias(alibi_slopes, B, Hq, Sq, Sk, scores.dtype)
    left, right = window_size
    if causal:
        right = 0 if right < 0 else min(right, 0)
    keep = None
    if left >= 0 or right >= 0:
        i, j = _positions(Sq, Sk)
        # BUG: query i is placed at key position i (top-left alignment); the
        # Sk - Sq offset of the bottom-right convention is missing.
        diag = i
        keep = torch.ones(Sq, Sk, dtype=torch.bool)
        if right >= 0:
            keep = keep & (j <= diag + right)
        if left >= 0:
            keep = keep & (j >= diag - left)
    out = _safe_softmax_av(scores, keep, vh)
    return out.transpose(1, 2).to(q.dtype)


def flash_symmetric_window(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                           window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           deterministic=False, return_attn_probs=False):
    B, Sq, Hq, _ = q.shape
    Sk = k.size(1)
    qh, kh, vh = _bhsd(q), _bhsd(k), _bhsd(v)
    kh, vh = _expand_kv(kh, vh, Hq)
    scores = torch.matmul(qh, kh.transpose(-2, -1)) * _scale_of(q, softmax_scale)
    if softcap:
        scores = _softcap(scores, softcap)
    if alibi_slopes is not None:
        scores = scores + _alibi_bias(alibi_slopes, B, Hq, Sq, Sk, scores.dtype)
    # BUG: a single sliding_window value is used for both sides: the right
    # extent is taken from window_size[0] instead of window_size[1].
    sliding_window = window_size[0]
    window = (sliding_window, sliding_window)
    keep = _local_keep(Sq, Sk, causal, window)
    out = _safe_softmax_av(scores, keep, vh)
    return out.transpose(1, 2).to(q.dtype)


def flash_window_exclusive_left(q, k, v, dropout_p=0.0, softmax_scale=None,
                                causal=False, window_size=(-1, -1), softcap=0.0,
                                alibi_slopes=None, deterministic=False,
                                return_attn_probs=False):
    B, Sq, Hq, _ = q.shape
    Sk = k.size(1)
    qh, kh, vh = _bhsd(q), _bhsd(k), _bhsd(v)
    kh, vh = _expand_kv(kh, vh, Hq)
    scores = torch.matmul(qh, kh.transpose(-2, -1)) * _scale_of(q, softmax_scale)
    if softcap:
        scores = _softcap(scores, softcap)
    if alibi_slopes is not None:
        scores = scores + _alibi_bias(alibi_slopes, B, Hq, Sq, Sk, scores.dtype)
    left, right = window_size
    if causal:
        right = 0 if right < 0 else min(right, 0)
    keep = None
    if left >= 0 or right >= 0:
        i, j = _positions(Sq, Sk)
        diag = i + (Sk - Sq)
        keep = torch.ones(Sq, Sk, dtype=torch.bool)
        if right >= 0:
            keep = keep & (j <= diag + right)
        if left >= 0:
            # BUG: left window bound treated as exclusive (window counts the
            # current token), so the key at distance exactly `left` is dropped.
            keep = keep & (j > diag - left)
    out = _safe_softmax_av(scores, keep, vh)
    return out.transpose(1, 2).to(q.dtype)


def flash_softcap_unscaled(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                           window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           deterministic=False, return_attn_probs=False):
    B, Sq, Hq, _ = q.shape
    Sk = k.size(1)
    qh, kh, vh = _bhsd(q), _bhsd(k), _bhsd(v)
    kh, vh = _expand_kv(kh, vh, Hq)
    sm_scale = _scale_of(q, softmax_scale)
    scores = torch.matmul(qh, kh.transpose(-2, -1))
    if softcap:
        # BUG: the cap is applied to the raw q.k logits and the softmax
        # scale multiplied afterwards (scale outside the tanh).
        scores = _softcap(scores, softcap) * sm_scale
    else:
        scores = scores * sm_scale
    if alibi_slopes is not None:
        scores = scores + _alibi_bias(alibi_slopes, B, Hq, Sq, Sk, scores.dtype)
    keep = _local_keep(Sq, Sk, causal, window_size)
    out = _safe_softmax_av(scores, keep, vh)
    return out.transpose(1, 2).to(q.dtype)


def flash_softcap_after_mask(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                             window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                             deterministic=False, return_attn_probs=False):
    B, Sq, Hq, _ = q.shape
    Sk = k.size(1)
    qh, kh, vh = _bhsd(q), _bhsd(k), _bhsd(v)
    kh, vh = _expand_kv(kh, vh, Hq)
    scores = torch.matmul(qh, kh.transpose(-2, -1)) * _scale_of(q, softmax_scale)
    keep = _local_keep(Sq, Sk, causal, window_size)
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    if softcap:
        # BUG: soft-capping after masking maps the masked -inf logits to
        # -softcap, so masked keys leak a little probability mass.
        scores = _softcap(scores, softcap)
    if alibi_slopes is not None:
        scores = scores + _alibi_bias(alibi_slopes, B, Hq, Sq, Sk, scores.dtype)
    has_key = None if keep is None else keep.any(dim=-1, keepdim=True)
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = row_max.masked_fill(~torch.isfinite(row_max), 0.0)
    probs = torch.exp(scores - row_max)
    out = torch.matmul(probs, vh) / probs.sum(dim=-1, keepdim=True).clamp_min(1e-300)
    if has_key is not None:
        out = out.masked_fill(~has_key, 0.0)
    return out.transpose(1, 2).to(q.dtype)


def flash_alibi_key_position(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                             window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                             deterministic=False, return_attn_probs=False):
    B, Sq, Hq, _ = q.shape
    Sk = k.size(1)
    qh, kh, vh = _bhsd(q), _bhsd(k), _bhsd(v)
    kh, vh = _expand_kv(kh, vh, Hq)
    scores = torch.matmul(qh, kh.transpose(-2, -1)) * _scale_of(q, softmax_scale)
    if softcap:
        scores = _softcap(scores, softcap)
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(scores.dtype).reshape(-1, Hq, 1, 1)
        # BUG: causal-LM shortcut bias slope * j (key position only); it equals
        # -slope*|i+off-j| up to a per-row constant only below the diagonal,
        # so it is wrong for keys right of the diagonal (non-causal/windowed).
        key_pos = torch.arange(Sk, dtype=scores.dtype).view(1, 1, 1, Sk)
        scores = scores + slopes * key_pos
    keep = _local_keep(Sq, Sk, causal, window_size)
    out = _safe_softmax_av(scores, keep, vh)
    return out.transpose(1, 2).to(q.dtype)


def flash_alibi_query_frame(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                            window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                            deterministic=False, return_attn_probs=False):
    B, Sq, Hq, _ = q.shape
    Sk = k.size(1)
    qh, kh, vh = _bhsd(q), _bhsd(k), _bhsd(v)
    kh, vh = _expand_kv(kh, vh, Hq)
    scores = torch.matmul(qh, kh.transpose(-2, -1)) * _scale_of(q, softmax_scale)
    if softcap:
        scores = _softcap(scores, softcap)
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(scores.dtype).reshape(-1, Hq, 1, 1)
        i, j = _positions(Sq, Sk)
        # BUG: relative distance measured as |i - j| with i the index inside
        # the query chunk; the KV-cache offset Sk - Sq is not added.
        scores = scores - slopes * (i - j).abs().to(scores.dtype)
    keep = _local_keep(Sq, Sk, causal, window_size)
    out = _safe_softmax_av(scores, keep, vh)
    return out.transpose(1, 2).to(q.dtype)


def flash_gqa_div_kv_heads(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                           window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           deterministic=False, return_attn_probs=False):
    B, Sq, Hq, _ = q.shape
    Sk, Hkv = k.size(1), k.size(2)
    qh, kh, vh = _bhsd(q), _bhsd(k), _bhsd(v)
    if Hkv != Hq:
        # BUG: kv head index computed as h // Hkv (dividing by the number of
        # kv heads) instead of h // (Hq // Hkv).
        kv_idx = torch.arange(Hq) // Hkv
        kh, vh = kh[:, kv_idx], vh[:, kv_idx]
    scores = torch.matmul(qh, kh.transpose(-2, -1)) * _scale_of(q, softmax_scale)
    if softcap:
        scores = _softcap(scores, softcap)
    if alibi_slopes is not None:
        scores = scores + _alibi_bias(alibi_slopes, B, Hq, Sq, Sk, scores.dtype)
    keep = _local_keep(Sq, Sk, causal, window_size)
    out = _safe_softmax_av(scores, keep, vh)
    return out.transpose(1, 2).to(q.dtype)


def flash_tiled_causal_nblock(q, k, v, dropout_p=0.0, softmax_scale=None,
                              causal=False, window_size=(-1, -1), softcap=0.0,
                              alibi_slopes=None, deterministic=False,
                              return_attn_probs=False, block_m=64, block_n=64):
    Sq, Sk = q.size(1), k.size(1)
    left, right = window_size
    if causal:
        right = 0 if right < 0 else min(right, 0)
    n_blocks = -(-Sk // block_n)

    def rng(m_block):
        hi = n_blocks
        if right >= 0:
            # BUG: last visible key block computed without the Sk - Sq shift:
            # key blocks past (m_block+1)*block_m are skipped even though the
            # bottom-right diagonal makes them visible when Sk > Sq.
            last_key = min(Sk, (m_block + 1) * block_m + right)
            hi = max(0, min(n_blocks, -(-last_key // block_n)))
        lo = 0
        if left >= 0:
            lo = max(0, (m_block * block_m + Sk - Sq - left) // block_n)
        return lo, hi
    return _tiled_forward(q, k, v, softmax_scale, causal, window_size, softcap,
                          alibi_slopes, block_m, block_n, rng)


def flash_tiled_unbounded_left(q, k, v, dropout_p=0.0, softmax_scale=None,
                               causal=False, window_size=(-1, -1), softcap=0.0,
                               alibi_slopes=None, deterministic=False,
                               return_attn_probs=False, block_m=64, block_n=64):
    Sq, Sk = q.size(1), k.size(1)
    left, right = window_size
    if causal:
        right = 0 if right < 0 else min(right, 0)
    is_local = window_size[0] >= 0 or window_size[1] >= 0
    n_blocks = -(-Sk // block_n)

    def rng(m_block):
        hi = n_blocks
        if right >= 0:
            last_key = min(Sk, (m_block + 1) * block_m + Sk - Sq + right)
            hi = max(0, min(n_blocks, -(-last_key // block_n)))
        lo = 0
        if is_local:
            # BUG: an unbounded left side (-1) is clamped to 0 when sizing the
            # local key range, so key blocks left of the diagonal are skipped.
            first_key = m_block * block_m + Sk - Sq - max(left, 0)
            lo = max(0, first_key // block_n)
        return lo, hi
    return _tiled_forward(q, k, v, softmax_scale, causal, window_size, softcap,
                          alibi_slopes, block_m, block_n, rng)


def flash_heads_reshape(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                        window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                        deterministic=False, return_attn_probs=False):
    B, Sq, Hq, D = q.shape
    Sk, Hkv, Dv = k.size(1), k.size(2), v.size(-1)
    # BUG: (B, S, H, D) -> (B, H, S, D) done with reshape instead of
    # transpose, scrambling heads and positions (and back at the end).
    qh = q.reshape(B, Hq, Sq, D)
    kh = k.reshape(B, Hkv, Sk, D)
    vh = v.reshape(B, Hkv, Sk, Dv)
    kh, vh = _expand_kv(kh, vh, Hq)
    scores = torch.matmul(qh, kh.transpose(-2, -1)) * _scale_of(q, softmax_scale)
    if softcap:
        scores = _softcap(scores, softcap)
    if alibi_slopes is not None:
        scores = scores + _alibi_bias(alibi_slopes, B, Hq, Sq, Sk, scores.dtype)
    keep = _local_keep(Sq, Sk, causal, window_size)
    out = _safe_softmax_av(scores, keep, vh)
    return out.reshape(B, Sq, Hq, Dv).to(q.dtype)


_ALL = ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]


def _entry(name, fn, correct, bug, parameter, source, report, dtype="float64",
           features=_ALL):
    return dict(name=name, api="flash-attn", fn=fn, correct=correct, bug=bug,
                parameter=parameter, source=source, report=report, dtype=dtype,
                features=list(features))


CATALOG = [
    _entry("flash_dense_reference", "flash_reference", True, None, None, None, None),
    _entry("flash_tiled_64x64", "flash_tiled", True, None, None, None, None),
    _entry("flash_causal_top_left", "flash_causal_top_left", False,
           "causal-window-top-left-aligned", "diag = i (no Sk-Sq offset)",
           "Dao-AILab/flash-attention#282",
           "https://github.com/Dao-AILab/flash-attention/issues/282"),
    _entry("flash_symmetric_window", "flash_symmetric_window", False,
           "window-right-taken-from-left", "window=(w[0], w[0])",
           "huggingface/transformers#39408",
           "https://github.com/huggingface/transformers/issues/39408"),
    _entry("flash_window_exclusive_left", "flash_window_exclusive_left", False,
           "window-left-bound-off-by-one", "j > i+off-left (left-1 keys)",
           "zml/zml#763", "https://github.com/zml/zml/pull/763"),
    _entry("flash_softcap_unscaled", "flash_softcap_unscaled", False,
           "softcap-on-unscaled-logits", "cap*tanh(qk/cap)*scale",
           "huggingface/trl#5691", "https://github.com/huggingface/trl/pull/5691"),
    _entry("flash_softcap_after_mask", "flash_softcap_after_mask", False,
           "softcap-after-masking-leaks", "masked -inf -> -softcap",
           "Dao-AILab/flash-attention#1025",
           "https://github.com/Dao-AILab/flash-attention/pull/1025"),
    _entry("flash_alibi_key_position", "flash_alibi_key_position", False,
           "alibi-one-sided-key-position-bias", "bias = slope * j",
           "ofirpress/attention_with_linear_biases#5",
           "https://github.com/ofirpress/attention_with_linear_biases/issues/5"),
    _entry("flash_alibi_query_frame", "flash_alibi_query_frame", False,
           "alibi-distance-missing-kv-offset", "bias = -slope*|i-j|",
           "keras-team/keras-hub#2861",
           "https://github.com/keras-team/keras-hub/issues/2861"),
    _entry("flash_gqa_div_kv_heads", "flash_gqa_div_kv_heads", False,
           "gqa-kv-index-divides-by-kv-heads", "kv = h // Hkv",
           "PSAL-POSTECH/ONNXim#33",
           "https://github.com/PSAL-POSTECH/ONNXim/issues/33"),
    _entry("flash_tiled_causal_nblock", "flash_tiled_causal_nblock", False,
           "causal-n-block-max-missing-offset", "block_m=block_n=64",
           "Dao-AILab/flash-attention#1778",
           "https://github.com/Dao-AILab/flash-attention/issues/1778"),
    _entry("flash_tiled_unbounded_left", "flash_tiled_unbounded_left", False,
           "local-unbounded-left-clamped-to-zero", "max(window_left, 0), block_n=64",
           "flashinfer-ai/flashinfer#4873",
           "https://github.com/flashinfer-ai/flashinfer/pull/4873"),
    _entry("flash_heads_reshape", "flash_heads_reshape", False,
           "heads-split-by-reshape-not-transpose", "q.reshape(B,H,S,D)",
           "reczoo/FuxiCTR#30", "https://github.com/reczoo/FuxiCTR/issues/30"),
]
