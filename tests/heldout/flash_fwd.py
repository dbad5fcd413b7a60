"""Held-out torch kernels with flash_attn_func semantics ("flash-attn" API).

Contract: fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
             window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
             deterministic=False, return_attn_probs=False)
  layout (B, S, H, D); k/v may have Hkv | Hq heads (q head h -> kv head h // (Hq//Hkv));
  causal is BOTTOM-RIGHT aligned: key j allowed iff j <= i + Sk - Sq;
  window (left, right): i + Sk - Sq - left <= j <= i + Sk - Sq + right (-1 = unbounded);
  softcap > 0: s = softcap * tanh(s / softcap) on the SCALED scores, before masking;
  alibi: bias -slope * |i + Sk - Sq - j| added to the scaled scores.
  Fully masked rows -> 0.  Output (B, Sq, Hq, Dv) in the input dtype.

Each broken kernel carries exactly one mistake, marked with "# BUG:".
"""
import math

import torch


# ---------------------------------------------------------------------------
# shared correct helpers
# ---------------------------------------------------------------------------
def _sm_scale(q, softmax_scale):
    return 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else float(softmax_scale)


def _to_bhsd(q, k, v):
    """(B,S,H,D) -> (B,H,S,D), kv heads expanded with repeat_interleave."""
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    hq, hkv = qh.shape[1], kh.shape[1]
    if hkv != hq:
        kh = kh.repeat_interleave(hq // hkv, dim=1)
        vh = vh.repeat_interleave(hq // hkv, dim=1)
    return qh, kh, vh


def _rows_cols(Sq, Sk, i0=0, i1=None, j0=0, j1=None):
    i1 = Sq if i1 is None else i1
    j1 = Sk if j1 is None else j1
    rows = torch.arange(i0, i1)[:, None]
    cols = torch.arange(j0, j1)[None, :]
    return rows, cols


def _keep(Sq, Sk, causal, window_size, i0=0, i1=None, j0=0, j1=None):
    rows, cols = _rows_cols(Sq, Sk, i0, i1, j0, j1)
    diag = rows + (Sk - Sq)
    keep = torch.ones(rows.shape[0], cols.shape[1], dtype=torch.bool)
    left, right = window_size
    if causal:
        keep &= cols <= diag
    if left >= 0:
        keep &= cols >= diag - left
    if right >= 0:
        keep &= cols <= diag + right
    return keep


def _slopes(alibi_slopes, B, H, dtype):
    s = alibi_slopes.to(dtype)
    return s.view(1, H, 1, 1) if s.dim() == 1 else s.view(B, H, 1, 1)


def _alibi_bias(alibi_slopes, B, H, Sq, Sk, dtype, i0=0, i1=None, j0=0, j1=None):
    rows, cols = _rows_cols(Sq, Sk, i0, i1, j0, j1)
    dist = (rows + (Sk - Sq) - cols).abs().to(dtype)
    return -_slopes(alibi_slopes, B, H, dtype) * dist


def _safe_softmax(s):
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    den = e.sum(dim=-1, keepdim=True)
    return e / torch.where(den == 0, torch.ones_like(den), den)


def _finish(s, vh, q, dropout_p, return_attn_probs):
    p = _safe_softmax(s)
    lse = torch.logsumexp(s, dim=-1)
    if dropout_p > 0.0:
        p = torch.nn.functional.dropout(p, p=dropout_p, training=True)
    out = torch.matmul(p, vh).transpose(1, 2).to(q.dtype)
    if return_attn_probs:
        return out, lse, p
    return out


# ---------------------------------------------------------------------------
# CORRECT kernels
# ---------------------------------------------------------------------------
def fa_dense_reference(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                       softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Dense flash_attn_func reference (same as flash-attn's tests' attention_ref)."""
    qh, kh, vh = _to_bhsd(q, k, v)
    B, H, Sq, _ = qh.shape
    Sk = kh.shape[2]
    s = torch.matmul(qh, kh.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi_bias(alibi_slopes, B, H, Sq, Sk, s.dtype)
    s = s.masked_fill(~_keep(Sq, Sk, causal, window_size), float("-inf"))
    return _finish(s, vh, q, dropout_p, return_attn_probs)


def fa2_blocked_online(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                       softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """FA2-style forward: Br=33 query tiles x Bc=80 key tiles, fp32+ accumulators."""
    BLOCK_M, BLOCK_N = 33, 80
    qh, kh, vh = _to_bhsd(q, k, v)
    B, H, Sq, _ = qh.shape
    Sk, Dv = kh.shape[2], vh.shape[-1]
    acc_t = torch.promote_types(q.dtype, torch.float32)
    qh, kh, vh = qh.to(acc_t), kh.to(acc_t), vh.to(acc_t)
    sm = _sm_scale(q, softmax_scale)
    out = torch.zeros(B, H, Sq, Dv, dtype=acc_t)
    for i0 in range(0, Sq, BLOCK_M):
        i1 = min(i0 + BLOCK_M, Sq)
        m_i = torch.full((B, H, i1 - i0), float("-inf"), dtype=acc_t)
        l_i = torch.zeros(B, H, i1 - i0, dtype=acc_t)
        acc = torch.zeros(B, H, i1 - i0, Dv, dtype=acc_t)
        for j0 in range(0, Sk, BLOCK_N):
            j1 = min(j0 + BLOCK_N, Sk)
            keep = _keep(Sq, Sk, causal, window_size, i0, i1, j0, j1)
            if not bool(keep.any()):
                continue  # tile entirely outside the causal/local band
            s = torch.matmul(qh[:, :, i0:i1], kh[:, :, j0:j1].transpose(-2, -1)) * sm
            if softcap > 0:
                s = softcap * torch.tanh(s / softcap)
            if alibi_slopes is not None:
                s = s + _alibi_bias(alibi_slopes, B, H, Sq, Sk, acc_t, i0, i1, j0, j1)
            s = s.masked_fill(~keep, float("-inf"))
            m_new = torch.maximum(m_i, s.amax(dim=-1))
            m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
            p = torch.exp(s - m_safe[..., None])
            alpha = torch.exp(m_i - m_safe)
            l_i = l_i * alpha + p.sum(dim=-1)
            acc = acc * alpha[..., None] + torch.matmul(p, vh[:, :, j0:j1])
            m_i = m_new
        out[:, :, i0:i1] = acc / torch.where(l_i == 0, torch.ones_like(l_i), l_i)[..., None]
    out = out.transpose(1, 2).to(q.dtype)
    if return_attn_probs:
        return out, None, None
    return out


# ---------------------------------------------------------------------------
# BROKEN kernels
# ---------------------------------------------------------------------------
def fa_causal_top_left(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                       softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qh, kh, vh = _to_bhsd(q, k, v)
    B, H, Sq, _ = qh.shape
    Sk = kh.shape[2]
    s = torch.matmul(qh, kh.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi_bias(alibi_slopes, B, H, Sq, Sk, s.dtype)
    keep = _keep(Sq, Sk, False, window_size)
    if causal:
        rows, cols = _rows_cols(Sq, Sk)
        # BUG: pre-2.1 top-left causal (j <= i); flash-attn aligns the diagonal bottom-right
        keep &= cols <= rows
    s = s.masked_fill(~keep, float("-inf"))
    return _finish(s, vh, q, dropout_p, return_attn_probs)


def fa_window_left_exclusive(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qh, kh, vh = _to_bhsd(q, k, v)
    B, H, Sq, _ = qh.shape
    Sk = kh.shape[2]
    s = torch.matmul(qh, kh.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi_bias(alibi_slopes, B, H, Sq, Sk, s.dtype)
    rows, cols = _rows_cols(Sq, Sk)
    diag = rows + (Sk - Sq)
    left, right = window_size
    keep = torch.ones(Sq, Sk, dtype=torch.bool)
    if causal:
        keep &= cols <= diag
    if left >= 0:
        # BUG: left bound exclusive ("window includes current token"): only left-1 past keys kept
        keep &= cols > diag - left
    if right >= 0:
        keep &= cols <= diag + right
    s = s.masked_fill(~keep, float("-inf"))
    return _finish(s, vh, q, dropout_p, return_attn_probs)


def fa_window_right_ignored(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qh, kh, vh = _to_bhsd(q, k, v)
    B, H, Sq, _ = qh.shape
    Sk = kh.shape[2]
    s = torch.matmul(qh, kh.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi_bias(alibi_slopes, B, H, Sq, Sk, s.dtype)
    left = window_size[0]
    # BUG: window_size[1] is silently dropped, so a bidirectional local window becomes (left, -1)
    keep = _keep(Sq, Sk, causal, (left, -1))
    s = s.masked_fill(~keep, float("-inf"))
    return _finish(s, vh, q, dropout_p, return_attn_probs)


def fa_window_no_kv_offset(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qh, kh, vh = _to_bhsd(q, k, v)
    B, H, Sq, _ = qh.shape
    Sk = kh.shape[2]
    s = torch.matmul(qh, kh.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi_bias(alibi_slopes, B, H, Sq, Sk, s.dtype)
    keep = _keep(Sq, Sk, causal, (-1, -1))
    rows, cols = _rows_cols(Sq, Sk)
    left, right = window_size
    # BUG: window band built from suffix-local query index i, not the absolute i + Sk - Sq
    if left >= 0:
        keep &= cols >= rows - left
    if right >= 0:
        keep &= cols <= rows + right
    s = s.masked_fill(~keep, float("-inf"))
    return _finish(s, vh, q, dropout_p, return_attn_probs)


def fa_softcap_after_mask(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                          softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qh, kh, vh = _to_bhsd(q, k, v)
    B, H, Sq, _ = qh.shape
    Sk = kh.shape[2]
    s = torch.matmul(qh, kh.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    if alibi_slopes is not None:
        s = s + _alibi_bias(alibi_slopes, B, H, Sq, Sk, s.dtype)
    s = s.masked_fill(~_keep(Sq, Sk, causal, window_size), float("-inf"))
    if softcap > 0:
        # BUG: softcap after masking maps -inf to -softcap, so masked keys leak into the softmax
        s = softcap * torch.tanh(s / softcap)
    return _finish(s, vh, q, dropout_p, return_attn_probs)


def fa_softcap_unscaled_logits(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qh, kh, vh = _to_bhsd(q, k, v)
    B, H, Sq, _ = qh.shape
    Sk = kh.shape[2]
    s = torch.matmul(qh, kh.transpose(-2, -1))
    sm = _sm_scale(q, softmax_scale)
    if softcap > 0:
        # BUG: tanh cap applied to raw q.k and softmax_scale multiplied afterwards
        s = softcap * torch.tanh(s / softcap) * sm
    else:
        s = s * sm
    if alibi_slopes is not None:
        s = s + _alibi_bias(alibi_slopes, B, H, Sq, Sk, s.dtype)
    s = s.masked_fill(~_keep(Sq, Sk, causal, window_size), float("-inf"))
    return _finish(s, vh, q, dropout_p, return_attn_probs)


def fa_alibi_key_column(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                        softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qh, kh, vh = _to_bhsd(q, k, v)
    B, H, Sq, _ = qh.shape
    Sk = kh.shape[2]
    s = torch.matmul(qh, kh.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        cols = torch.arange(Sk, dtype=s.dtype)[None, :]
        # BUG: causal-only shortcut slope * key_index used for every row, also when keys lie right of the diagonal
        s = s + _slopes(alibi_slopes, B, H, s.dtype) * cols
    s = s.masked_fill(~_keep(Sq, Sk, causal, window_size), float("-inf"))
    return _finish(s, vh, q, dropout_p, return_attn_probs)


def fa_alibi_batch_slopes_row0(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qh, kh, vh = _to_bhsd(q, k, v)
    B, H, Sq, _ = qh.shape
    Sk = kh.shape[2]
    s = torch.matmul(qh, kh.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        slopes = alibi_slopes
        if slopes.dim() == 2:
            # BUG: per-batch (B, H) slopes collapsed to the first batch row
            slopes = slopes[0]
        s = s + _alibi_bias(slopes, B, H, Sq, Sk, s.dtype)
    s = s.masked_fill(~_keep(Sq, Sk, causal, window_size), float("-inf"))
    return _finish(s, vh, q, dropout_p, return_attn_probs)


def fa_gqa_head_modulo(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                       softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    B, H, Sq, _ = qh.shape
    Sk, hkv = kh.shape[2], kh.shape[1]
    if hkv != H:
        # BUG: kv head chosen as h % Hkv (tiled groups) instead of h // (Hq // Hkv)
        kv_idx = torch.arange(H) % hkv
        kh = kh.index_select(1, kv_idx)
        vh = vh.index_select(1, kv_idx)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi_bias(alibi_slopes, B, H, Sq, Sk, s.dtype)
    s = s.masked_fill(~_keep(Sq, Sk, causal, window_size), float("-inf"))
    return _finish(s, vh, q, dropout_p, return_attn_probs)


def fa_online_finite_sentinel(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Split-K style single pass over key tiles of 40, whole query block at once."""
    BLOCK_N = 40
    qh, kh, vh = _to_bhsd(q, k, v)
    B, H, Sq, _ = qh.shape
    Sk, Dv = kh.shape[2], vh.shape[-1]
    acc_t = torch.promote_types(q.dtype, torch.float32)
    qh, kh, vh = qh.to(acc_t), kh.to(acc_t), vh.to(acc_t)
    NEG = torch.finfo(acc_t).min
    sm = _sm_scale(q, softmax_scale)
    m_i = torch.full((B, H, Sq), NEG, dtype=acc_t)
    l_i = torch.zeros(B, H, Sq, dtype=acc_t)
    acc = torch.zeros(B, H, Sq, Dv, dtype=acc_t)
    for j0 in range(0, Sk, BLOCK_N):
        j1 = min(j0 + BLOCK_N, Sk)
        s = torch.matmul(qh, kh[:, :, j0:j1].transpose(-2, -1)) * sm
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if alibi_slopes is not None:
            s = s + _alibi_bias(alibi_slopes, B, H, Sq, Sk, acc_t, 0, Sq, j0, j1)
        # BUG: finite -FLT_MAX sentinel; in an all-masked row exp(s - m) = exp(0) = 1 for masked keys
        s = s.masked_fill(~_keep(Sq, Sk, causal, window_size, 0, Sq, j0, j1), NEG)
        m_new = torch.maximum(m_i, s.amax(dim=-1))
        p = torch.exp(s - m_new[..., None])
        alpha = torch.exp(m_i - m_new)
        l_i = l_i * alpha + p.sum(dim=-1)
        acc = acc * alpha[..., None] + torch.matmul(p, vh[:, :, j0:j1])
        m_i = m_new
    out = acc / torch.where(l_i == 0, torch.ones_like(l_i), l_i)[..., None]
    out = out.transpose(1, 2).to(q.dtype)
    if return_attn_probs:
        return out, None, None
    return out


def fa_decode_window_dropped(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qh, kh, vh = _to_bhsd(q, k, v)
    B, H, Sq, _ = qh.shape
    Sk = kh.shape[2]
    s = torch.matmul(qh, kh.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi_bias(alibi_slopes, B, H, Sq, Sk, s.dtype)
    if Sq == 1:
        # BUG: single-token decode fast path attends the whole KV cache, dropping the sliding window
        keep = torch.ones(1, Sk, dtype=torch.bool)
    else:
        keep = _keep(Sq, Sk, causal, window_size)
    s = s.masked_fill(~keep, float("-inf"))
    return _finish(s, vh, q, dropout_p, return_attn_probs)


def fa_scale_model_dim(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                       softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qh, kh, vh = _to_bhsd(q, k, v)
    B, H, Sq, D = qh.shape
    Sk = kh.shape[2]
    # BUG: default scale from the full model width H*D instead of the head dim D
    sm = 1.0 / math.sqrt(H * D) if softmax_scale is None else float(softmax_scale)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * sm
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi_bias(alibi_slopes, B, H, Sq, Sk, s.dtype)
    s = s.masked_fill(~_keep(Sq, Sk, causal, window_size), float("-inf"))
    return _finish(s, vh, q, dropout_p, return_attn_probs)


_ALL = ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]


def _e(name, correct, bug, parameter, source, report, dtype="float64", features=_ALL):
    return {"name": name, "api": "flash-attn", "fn": name, "correct": correct, "bug": bug,
            "parameter": parameter, "source": source, "report": report, "dtype": dtype,
            "features": list(features)}


CATALOG = [
    _e("fa_dense_reference", True, None, None,
       "Dao-AILab/flash-attention#517 (https://github.com/Dao-AILab/flash-attention/issues/517)",
       "Explains that flash-attn's causal mask is aligned to the bottom-right corner, the convention this dense kernel implements."),
    _e("fa2_blocked_online", True, None, {"block_m": 33, "block_n": 80},
       "Dao-AILab/flash-attention#1778 (https://github.com/Dao-AILab/flash-attention/issues/1778)",
       "Maintainer: with bottom-right causal and seqlen_q > seqlen_k the top output rows are zero, which this tiled kernel reproduces."),
    _e("fa_causal_top_left", False, "causal-top-left-in-flash", "j <= i",
       "Dao-AILab/flash-attention#282 (https://github.com/Dao-AILab/flash-attention/issues/282)",
       "With seqlen_k > seqlen_q, causal=True let query i see keys 0..i (top-left) instead of aligning the last query with the last key."),
    _e("fa_window_left_exclusive", False, "window-left-off-by-one", "left-1 past keys",
       "NVIDIA-NeMo/Megatron-Bridge#2656 (https://github.com/NVIDIA-NeMo/Megatron-Bridge/pull/2656)",
       "Off-by-one between an inclusive flash window (W,0), which attends W+1 tokens, and a window size that counts the current token."),
    _e("fa_window_right_ignored", False, "window-right-dropped", "right treated as -1",
       "flashinfer-ai/flashinfer#4893 (https://github.com/flashinfer-ai/flashinfer/issues/4893)",
       "window_right was accepted but silently ignored, so bidirectional local attention became unbounded on the right."),
    _e("fa_window_no_kv_offset", False, "window-not-bottom-right-aligned", "band around i, not i+Sk-Sq",
       "trymirai/lalamo#200 (https://github.com/trymirai/lalamo/pull/200)",
       "The sliding-window mask used suffix-local query indices instead of absolute positions once a KV prefix was cached."),
    _e("fa_softcap_after_mask", False, "softcap-after-masking", "mask -> softcap",
       "onnx/onnx#7865 (https://github.com/onnx/onnx/issues/7865)",
       "The ONNX Attention spec applied softcap after the mask, mapping -inf to a finite -softcap that leaks probability to masked keys."),
    _e("fa_softcap_unscaled_logits", False, "softcap-before-scale", "softcap*tanh(qk/softcap)*scale",
       "Dao-AILab/flash-attention#1025 (https://github.com/Dao-AILab/flash-attention/pull/1025)",
       "Softcapping PR review on how softcap must combine with softmax_scale (tanh of the scaled scores) before masking.",
       dtype="float32"),
    _e("fa_alibi_key_column", False, "alibi-key-index-only", "+slope*j",
       "Dao-AILab/flash-attention#540 (https://github.com/Dao-AILab/flash-attention/pull/540)",
       "The default ALiBi implementation uses only the key column index, which matches |i-j| only for causal rows, not non-causal."),
    _e("fa_alibi_batch_slopes_row0", False, "alibi-batch-slopes-collapsed", "alibi_slopes[0]",
       "Dao-AILab/flash-attention#1585 (https://github.com/Dao-AILab/flash-attention/issues/1585)",
       "alibi_slopes of shape [batch_size, nheads] was documented but not handled in the MHA path."),
    _e("fa_gqa_head_modulo", False, "gqa-head-modulo", "kv = h % Hkv",
       "apple/axlearn#842 (https://github.com/apple/axlearn/pull/842)",
       "A GQA refactor changed which kv head each query head reads ([0,1,0,1] vs [0,0,1,1]); the PR restores the original grouping."),
    _e("fa_online_finite_sentinel", False, "finite-sentinel-fully-masked-row", {"block_n": 40, "fill": "finfo.min"},
       "llmmanorg/llmman#235 (https://github.com/llmmanorg/llmman/pull/235)",
       "Review: masking with -FLT_MAX in an online softmax makes exp(score - m) = 1 for masked positions when a row/tile is fully masked."),
    _e("fa_decode_window_dropped", False, "decode-path-ignores-window", "Sq == 1",
       "lightseekorg/tokenspeed#578 (https://github.com/lightseekorg/tokenspeed/pull/578)",
       "The single-token decode path handled the sliding window differently from prefill, attending the wrong number of keys."),
    _e("fa_scale_model_dim", False, "scale-from-model-width", "1/sqrt(Hq*D)",
       "karpathy/ng-video-lecture#6 (https://github.com/karpathy/ng-video-lecture/pull/6)",
       "Attention was scaled by the number of embedding channels instead of the head size."),
]
