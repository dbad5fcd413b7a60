"""Held-out kernels with flash_attn_func's semantics (API `flash-attn`).

fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
alibi_slopes=None, deterministic=False, return_attn_probs=False) on torch tensors q (B, Sq, Hq, D),
k (B, Sk, Hkv, D), v (B, Sk, Hkv, Dv).  Causal and local windows are bottom-right aligned (off = Sk - Sq);
softcap is applied to the scaled scores, then ALiBi (-slope * |i + off - j|), then the mask; query head h reads
kv head h // (Hq // Hkv); rows with no visible key are zeros.
"""
import math

import numpy as np
import torch


# ----------------------------------------------------------------------------------------------------------------
# helpers shared by the kernels (index arithmetic as in flash_attn/bert_padding-style reference code)
# ----------------------------------------------------------------------------------------------------------------

def _local_keep(seqlen_q, seqlen_k, causal, window_size):
    """Bool (Sq, Sk): key j visible to query i, bottom-right aligned."""
    left, right = window_size
    if causal:
        right = 0
    row = np.arange(seqlen_q)[:, None] + (seqlen_k - seqlen_q)
    col = np.arange(seqlen_k)[None, :]
    keep = np.ones((seqlen_q, seqlen_k), dtype=bool)
    if left >= 0:
        keep &= col >= row - left
    if right >= 0:
        keep &= col <= row + right
    return keep


def _slopes_bh(alibi_slopes, batch, nheads):
    """alibi_slopes (H,) or (B, H) -> float64 (B, H)."""
    s = alibi_slopes.detach().cpu().to(torch.float64).numpy()
    if s.ndim == 1:
        s = np.broadcast_to(s[None, :], (batch, nheads))
    return s


def _alibi_bias(slopes_bh, seqlen_q, seqlen_k):
    row = np.arange(seqlen_q)[:, None] + (seqlen_k - seqlen_q)
    col = np.arange(seqlen_k)[None, :]
    return -slopes_bh[:, :, None, None] * np.abs(row - col)[None, None]


def _softmax_dead_rows_zero(scores, axis=-1):
    m = scores.max(axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(scores - m)
    z = e.sum(axis=axis, keepdims=True)
    return e / np.where(z > 0, z, 1.0)


def _to_bhsd(x):
    return x.detach().cpu().numpy().transpose(0, 2, 1, 3)


def _from_bhsd(o, like):
    return torch.from_numpy(np.ascontiguousarray(o.transpose(0, 2, 1, 3))).to(like.dtype)


# ----------------------------------------------------------------------------------------------------------------
# correct kernels
# ----------------------------------------------------------------------------------------------------------------

def flash_attn_dense_torch(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Like flash_attn's tests `attention_ref`: repeat kv heads, einsum scores, softcap, ALiBi, mask, softmax."""
    batch, seqlen_q, nheads, d = q.shape
    seqlen_k, nheads_k = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    k = k.repeat_interleave(nheads // nheads_k, dim=2)
    v = v.repeat_interleave(nheads // nheads_k, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) * scale
    if softcap > 0:
        scores = torch.tanh(scores / softcap) * softcap
    if alibi_slopes is not None:
        bias = _alibi_bias(_slopes_bh(alibi_slopes, batch, nheads), seqlen_q, seqlen_k)
        scores = scores + torch.from_numpy(bias).to(scores.dtype)
    keep = torch.from_numpy(_local_keep(seqlen_q, seqlen_k, causal, window_size))
    scores = scores.masked_fill(~keep, float("-inf"))
    dead = torch.isneginf(scores).all(dim=-1, keepdim=True)
    attn = torch.softmax(scores.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    return torch.einsum("bhts,bshd->bthd", attn, v)


def flash_attn_tiled_numpy(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """FlashAttention-2 forward in NumPy: (BLOCK_M x BLOCK_N) tiles, online softmax, GQA by head index."""
    BLOCK_M, BLOCK_N = 64, 64
    Q, K, V = _to_bhsd(q), _to_bhsd(k), _to_bhsd(v)
    batch, nheads, seqlen_q, d = Q.shape
    nheads_k, seqlen_k, dv = K.shape[1], K.shape[2], V.shape[-1]
    kv_head = np.arange(nheads) // (nheads // nheads_k)
    K, V = K[:, kv_head], V[:, kv_head]
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    keep = _local_keep(seqlen_q, seqlen_k, causal, window_size)
    bias = None
    if alibi_slopes is not None:
        bias = _alibi_bias(_slopes_bh(alibi_slopes, batch, nheads), seqlen_q, seqlen_k)
    out_acc = np.zeros((batch, nheads, seqlen_q, dv), dtype=Q.dtype)
    for start_m in range(0, seqlen_q, BLOCK_M):
        end_m = min(start_m + BLOCK_M, seqlen_q)
        q_tile = Q[:, :, start_m:end_m]
        m_i = np.full((batch, nheads, end_m - start_m, 1), -np.inf, dtype=Q.dtype)
        l_i = np.zeros_like(m_i)
        acc = np.zeros((batch, nheads, end_m - start_m, dv), dtype=Q.dtype)
        for start_n in range(0, seqlen_k, BLOCK_N):
            end_n = min(start_n + BLOCK_N, seqlen_k)
            s = q_tile @ K[:, :, start_n:end_n].swapaxes(-1, -2) * scale
            if softcap > 0:
                s = softcap * np.tanh(s / softcap)
            if bias is not None:
                s = s + bias[:, :, start_m:end_m, start_n:end_n]
            s = np.where(keep[start_m:end_m, start_n:end_n], s, -np.inf)
            m_ij = np.maximum(m_i, s.max(axis=-1, keepdims=True))
            m_ij_safe = np.where(np.isneginf(m_ij), 0.0, m_ij)
            p = np.exp(s - m_ij_safe)
            alpha = np.exp(m_i - m_ij_safe)
            l_i = alpha * l_i + p.sum(axis=-1, keepdims=True)
            acc = acc * alpha + p @ V[:, :, start_n:end_n]
            m_i = m_ij
        out_acc[:, :, start_m:end_m] = np.where(l_i > 0, acc / np.where(l_i > 0, l_i, 1.0), 0.0)
    return _from_bhsd(out_acc, q)


def flash_attn_splitkv_grouped(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Flash-decoding style: q grouped as (B, Sq, Hkv, G, D) against unrepeated K/V, keys split in 4 chunks,
    partial outputs combined with their log-sum-exp."""
    num_splits = 4
    batch, seqlen_q, nheads, d = q.shape
    seqlen_k, nheads_k, dv = k.shape[1], k.shape[2], v.shape[-1]
    ngroups = nheads // nheads_k
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    qg = q.reshape(batch, seqlen_q, nheads_k, ngroups, d)
    keep = torch.from_numpy(_local_keep(seqlen_q, seqlen_k, causal, window_size))
    bias = None
    if alibi_slopes is not None:
        b = _alibi_bias(_slopes_bh(alibi_slopes, batch, nheads), seqlen_q, seqlen_k)
        bias = torch.from_numpy(b.reshape(batch, nheads_k, ngroups, seqlen_q, seqlen_k)).to(q.dtype)
    chunk = -(-seqlen_k // num_splits)
    outs, lses = [], []
    for n0 in range(0, seqlen_k, chunk):
        n1 = min(n0 + chunk, seqlen_k)
        s = torch.einsum("bqhgd,bkhd->bhgqk", qg, k[:, n0:n1]) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if bias is not None:
            s = s + bias[..., n0:n1]
        s = s.masked_fill(~keep[:, n0:n1], float("-inf"))
        lse = torch.logsumexp(s, dim=-1, keepdim=True)
        lse_safe = torch.where(torch.isneginf(lse), torch.zeros_like(lse), lse)
        p = torch.exp(s - lse_safe)
        outs.append(torch.einsum("bhgqk,bkhd->bhgqd", p, v[:, n0:n1]))
        lses.append(lse)
    lse_all = torch.stack(lses)
    lse_max = lse_all.amax(dim=0)
    lse_max = torch.where(torch.isneginf(lse_max), torch.zeros_like(lse_max), lse_max)
    w = torch.exp(lse_all - lse_max)
    denom = w.sum(dim=0)
    out = sum(wi * oi for wi, oi in zip(w, outs))
    out = torch.where(denom > 0, out / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(out))
    return out.reshape(batch, nheads, seqlen_q, dv).permute(0, 2, 1, 3).contiguous()


# ----------------------------------------------------------------------------------------------------------------
# broken kernels
# ----------------------------------------------------------------------------------------------------------------

def _dense_core(Q, K, V, s_mod, keep):
    """scores already built by the caller; returns softmax(scores masked) @ V in numpy (B, H, Sq, Dv)."""
    s = np.where(keep, s_mod, -np.inf)
    return _softmax_dead_rows_zero(s) @ V


def _gqa_np(q, k, v):
    Q, K, V = _to_bhsd(q), _to_bhsd(k), _to_bhsd(v)
    rep = Q.shape[1] // K.shape[1]
    return Q, np.repeat(K, rep, axis=1), np.repeat(V, rep, axis=1)


def cutlass_fmha_causal(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                        softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """CUTLASS FMHA fusion style: a causal mask functor comparing tile row / column coordinates."""
    Q, K, V = _gqa_np(q, k, v)
    batch, nheads, seqlen_q, d = Q.shape
    seqlen_k = K.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    s = Q @ K.swapaxes(-1, -2) * scale
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi_bias(_slopes_bh(alibi_slopes, batch, nheads), seqlen_q, seqlen_k)
    offset = seqlen_k - seqlen_q
    row = np.arange(seqlen_q)[:, None]
    col = np.arange(seqlen_k)[None, :]
    keep = np.ones((seqlen_q, seqlen_k), dtype=bool)
    left, right = window_size
    if causal:
        # BUG: causal predicate col <= row is top-left; flash-attn's causal is bottom-right (col <= row + Sk - Sq)
        keep &= col <= row
    elif right >= 0:
        keep &= col <= row + offset + right
    if left >= 0:
        keep &= col >= row + offset - left
    return _from_bhsd(_dense_core(Q, K, V, s, keep), q)


def hf_flash_sliding_window(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """transformers' flash-attention glue style: a `sliding_window` turned into flash kwargs."""
    Q, K, V = _gqa_np(q, k, v)
    batch, nheads, seqlen_q, d = Q.shape
    seqlen_k = K.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    s = Q @ K.swapaxes(-1, -2) * scale
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi_bias(_slopes_bh(alibi_slopes, batch, nheads), seqlen_q, seqlen_k)
    sliding_window = window_size[0]
    use_sliding_windows = sliding_window >= 0
    # BUG: window_size=(sliding_window, sliding_window): the left size is reused for the right side
    flash_window = (sliding_window, sliding_window) if use_sliding_windows else (-1, -1)
    keep = _local_keep(seqlen_q, seqlen_k, causal, flash_window)
    return _from_bhsd(_dense_core(Q, K, V, s, keep), q)


def hf_mask_function_window(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """transformers masking_utils style: a (left, right) sliding-window mask function on q_idx - kv_idx."""
    Q, K, V = _gqa_np(q, k, v)
    batch, nheads, seqlen_q, d = Q.shape
    seqlen_k = K.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    s = Q @ K.swapaxes(-1, -2) * scale
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi_bias(_slopes_bh(alibi_slopes, batch, nheads), seqlen_q, seqlen_k)
    left_window_size, right_window_size = window_size
    q_idx = np.arange(seqlen_q)[:, None] + (seqlen_k - seqlen_q)
    kv_idx = np.arange(seqlen_k)[None, :]
    dist = q_idx - kv_idx
    left_mask = (dist >= 0) & ((left_window_size < 0) | (dist <= left_window_size))
    if causal:
        right_mask = np.zeros_like(left_mask)
    else:
        # BUG: strict `<` drops the key exactly right_window_size positions ahead (should be `<=`)
        right_mask = (dist < 0) & ((right_window_size < 0) | (-dist < right_window_size))
    keep = left_mask | right_mask
    return _from_bhsd(_dense_core(Q, K, V, s, keep), q)


def onnx_cgen_softcap_bias(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """ONNX Attention codegen style: score -> (+ bias) -> softcap -> mask -> softmax."""
    Q, K, V = _gqa_np(q, k, v)
    batch, nheads, seqlen_q, d = Q.shape
    seqlen_k = K.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    score = Q @ K.swapaxes(-1, -2) * scale
    if alibi_slopes is not None:
        # BUG: the ALiBi bias is added before the softcap, so it is squashed by tanh (cap first, then bias)
        score = score + _alibi_bias(_slopes_bh(alibi_slopes, batch, nheads), seqlen_q, seqlen_k)
    if softcap > 0:
        score = softcap * np.tanh(score / softcap)
    keep = _local_keep(seqlen_q, seqlen_k, causal, window_size)
    return _from_bhsd(_dense_core(Q, K, V, score, keep), q)


def attention_gym_alibi(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                        softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """attention-gym score_mod style: score + alibi_bias[h] * (q_idx - kv_idx)."""
    Q, K, V = _gqa_np(q, k, v)
    batch, nheads, seqlen_q, d = Q.shape
    seqlen_k = K.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    score = Q @ K.swapaxes(-1, -2) * scale
    if softcap > 0:
        score = softcap * np.tanh(score / softcap)
    if alibi_slopes is not None:
        alibi_bias = _slopes_bh(alibi_slopes, batch, nheads)
        q_idx = np.arange(seqlen_q)[:, None] + (seqlen_k - seqlen_q)
        kv_idx = np.arange(seqlen_k)[None, :]
        # BUG: bias = slope * (q_idx - kv_idx): positive for past keys (should be -slope * |q_idx - kv_idx|)
        score = score + alibi_bias[:, :, None, None] * (q_idx - kv_idx)[None, None]
    keep = _local_keep(seqlen_q, seqlen_k, causal, window_size)
    return _from_bhsd(_dense_core(Q, K, V, score, keep), q)


def mha_fwd_alibi_slopes(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                         softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """flash_api.cpp set_params_alibi style: one slope per head read through a flat pointer."""
    batch, seqlen_q, nheads, d = q.shape
    seqlen_k, nheads_k = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    kk = k.repeat_interleave(nheads // nheads_k, dim=2)
    vv = v.repeat_interleave(nheads // nheads_k, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, kk) * scale
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    if alibi_slopes is not None:
        # BUG: (B, H) slopes flattened and read with stride 0 over the batch: every sequence gets batch 0's slopes
        slopes = alibi_slopes.reshape(-1)[:nheads].to(torch.float64)
        row = torch.arange(seqlen_q)[:, None] + (seqlen_k - seqlen_q)
        col = torch.arange(seqlen_k)[None, :]
        scores = scores - (slopes[:, None, None] * (row - col).abs()).to(scores.dtype)
    keep = torch.from_numpy(_local_keep(seqlen_q, seqlen_k, causal, window_size))
    scores = scores.masked_fill(~keep, float("-inf"))
    dead = torch.isneginf(scores).all(dim=-1, keepdim=True)
    attn = torch.softmax(scores.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    return torch.einsum("bhts,bshd->bthd", attn, vv)


def splitkv_decode_nan_alpha(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Triton AOT decode-kernel style online softmax over 64-key tiles (m_i starts at -inf)."""
    BLOCK_N = 64
    Q, K, V = _gqa_np(q, k, v)
    batch, nheads, seqlen_q, d = Q.shape
    seqlen_k, dv = K.shape[2], V.shape[-1]
    sm_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    keep = _local_keep(seqlen_q, seqlen_k, causal, window_size)
    bias = None
    if alibi_slopes is not None:
        bias = _alibi_bias(_slopes_bh(alibi_slopes, batch, nheads), seqlen_q, seqlen_k)
    m_i = np.full((batch, nheads, seqlen_q, 1), -np.inf, dtype=Q.dtype)
    l_i = np.zeros_like(m_i)
    acc = np.zeros((batch, nheads, seqlen_q, dv), dtype=Q.dtype)
    with np.errstate(invalid="ignore"):
        for start_n in range(0, seqlen_k, BLOCK_N):
            end_n = min(start_n + BLOCK_N, seqlen_k)
            qk = Q @ K[:, :, start_n:end_n].swapaxes(-1, -2) * sm_scale
            if softcap > 0:
                qk = softcap * np.tanh(qk / softcap)
            if bias is not None:
                qk = qk + bias[..., start_n:end_n]
            qk = np.where(keep[:, start_n:end_n], qk, -np.inf)
            m_ij = np.maximum(m_i, qk.max(axis=-1, keepdims=True))
            # BUG: no guard for a tile where every key is masked: m_i = m_ij = -inf gives exp(-inf - -inf) = NaN
            alpha = np.exp(m_i - m_ij)
            p = np.exp(qk - m_ij)
            l_i = l_i * alpha + p.sum(axis=-1, keepdims=True)
            acc = acc * alpha + p @ V[:, :, start_n:end_n]
            m_i = m_ij
        out = np.where(l_i == 0, 0.0, acc / np.where(l_i == 0, 1.0, l_i))
    return _from_bhsd(out, q)


def migraphx_flash_decoding(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """MIGraphX flash-decoding plan: kernel 1 per KV group -> (O', L); kernel 2 rescales with softmax over L."""
    G = 4
    batch, seqlen_q, nheads, d = q.shape
    seqlen_k, nheads_k = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    kk = k.repeat_interleave(nheads // nheads_k, dim=2)
    vv = v.repeat_interleave(nheads // nheads_k, dim=2)
    keep = torch.from_numpy(_local_keep(seqlen_q, seqlen_k, causal, window_size))
    bias = None
    if alibi_slopes is not None:
        bias = torch.from_numpy(_alibi_bias(_slopes_bh(alibi_slopes, batch, nheads), seqlen_q, seqlen_k))
    o_parts, l_parts = [], []
    step = -(-seqlen_k // G)
    for n0 in range(0, seqlen_k, step):
        n1 = min(n0 + step, seqlen_k)
        S = torch.einsum("bthd,bshd->bhts", q, kk[:, n0:n1]) * scale
        if softcap > 0:
            S = softcap * torch.tanh(S / softcap)
        if bias is not None:
            S = S + bias[..., n0:n1].to(S.dtype)
        S = S.masked_fill(~keep[:, n0:n1], float("-inf"))
        L = torch.logsumexp(S, dim=-1, keepdim=True)
        P = torch.exp(S - torch.where(torch.isneginf(L), torch.zeros_like(L), L))
        o_parts.append(torch.einsum("bhts,bshd->bhtd", P, vv[:, n0:n1]))
        l_parts.append(L)
    L = torch.stack(l_parts)
    # BUG: scale = exp(L) / sum(exp(L)) without subtracting max(L): exp overflows once the LSE is large
    alpha = torch.exp(L)
    scale_g = alpha / alpha.sum(dim=0, keepdim=True)
    out = (torch.stack(o_parts) * scale_g).sum(dim=0)
    dead = torch.stack(l_parts).isneginf().all(dim=0)
    out = out.masked_fill(dead, 0.0)
    return out.permute(0, 2, 1, 3).contiguous()


def softcap_after_mask(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                       softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """First-draft softcapping in a flash kernel: gemm, apply mask, then tanh softcap, then softmax."""
    Q, K, V = _gqa_np(q, k, v)
    batch, nheads, seqlen_q, d = Q.shape
    seqlen_k = K.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    S = Q @ K.swapaxes(-1, -2) * scale
    keep = _local_keep(seqlen_q, seqlen_k, causal, window_size)
    S = np.where(keep, S, -np.inf)
    if softcap > 0:
        # BUG: softcap after masking maps -inf to -softcap, so masked keys leak weight (cap must precede the mask)
        S = softcap * np.tanh(S / softcap)
    if alibi_slopes is not None:
        S = S + _alibi_bias(_slopes_bh(alibi_slopes, batch, nheads), seqlen_q, seqlen_k)
    return _from_bhsd(_softmax_dead_rows_zero(S) @ V, q)


_MMA_OPERAND_DTYPE = {torch.float32: torch.bfloat16}


def flash_pv_low_precision(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Port of the FA forward epilogue: row sum of P in fp32, P converted to the MMA operand dtype for P @ V."""
    batch, seqlen_q, nheads, d = q.shape
    seqlen_k, nheads_k = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    kk = k.repeat_interleave(nheads // nheads_k, dim=2)
    vv = v.repeat_interleave(nheads // nheads_k, dim=2)
    s = torch.einsum("bthd,bshd->bhts", q, kk) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + torch.from_numpy(_alibi_bias(_slopes_bh(alibi_slopes, batch, nheads), seqlen_q, seqlen_k)).to(s.dtype)
    keep = torch.from_numpy(_local_keep(seqlen_q, seqlen_k, causal, window_size))
    s = s.masked_fill(~keep, float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
    p = torch.exp(s - m)
    row_sum = p.sum(dim=-1, keepdim=True)
    # BUG: P rounded to bf16 for the P @ V product while the denominator uses the fp32 P (float32 inputs)
    p_mma = p.to(_MMA_OPERAND_DTYPE.get(q.dtype, q.dtype)).to(q.dtype)
    o = torch.einsum("bhts,bshd->bhtd", p_mma, vv)
    o = torch.where(row_sum > 0, o / torch.where(row_sum > 0, row_sum, torch.ones_like(row_sum)),
                    torch.zeros_like(o))
    return o.permute(0, 2, 1, 3).contiguous()


_ALL = ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]

CATALOG = [
    dict(name="fa-dense-torch", api="flash-attn", fn="flash_attn_dense_torch", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=list(_ALL)),
    dict(name="fa-tiled-numpy", api="flash-attn", fn="flash_attn_tiled_numpy", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=list(_ALL)),
    dict(name="fa-splitkv-grouped", api="flash-attn", fn="flash_attn_splitkv_grouped", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=list(_ALL)),
    dict(name="fa-causal-top-left", api="flash-attn", fn="cutlass_fmha_causal", correct=False,
         bug="causal-alignment-top-left", parameter="causal diagonal alignment (top-left instead of bottom-right)",
         source="NVIDIA/cutlass#2336", report="https://github.com/NVIDIA/cutlass/issues/2336",
         dtype="float64", features=list(_ALL)),
    dict(name="fa-window-symmetric", api="flash-attn", fn="hf_flash_sliding_window", correct=False,
         bug="window-right-uses-left", parameter="window_size right bound (set to the left size)",
         source="huggingface/transformers#39408", report="https://github.com/huggingface/transformers/issues/39408",
         dtype="float64", features=list(_ALL)),
    dict(name="fa-window-right-exclusive", api="flash-attn", fn="hf_mask_function_window", correct=False,
         bug="window-right-off-by-one", parameter="window right bound (exclusive instead of inclusive)",
         source="huggingface/transformers#47010", report="https://github.com/huggingface/transformers/pull/47010",
         dtype="float64", features=list(_ALL)),
    dict(name="fa-alibi-before-softcap", api="flash-attn", fn="onnx_cgen_softcap_bias", correct=False,
         bug="bias-before-softcap", parameter="order of ALiBi bias and softcap (bias added before the cap)",
         source="emmtrix/emx-onnx-cgen#731", report="https://github.com/emmtrix/emx-onnx-cgen/pull/731",
         dtype="float64", features=list(_ALL)),
    dict(name="fa-alibi-sign", api="flash-attn", fn="attention_gym_alibi", correct=False,
         bug="alibi-sign-flipped", parameter="ALiBi relative distance sign (q_idx - kv_idx, no abs)",
         source="meta-pytorch/attention-gym#86", report="https://github.com/meta-pytorch/attention-gym/pull/86",
         dtype="float64", features=list(_ALL)),
    dict(name="fa-alibi-batch-slopes", api="flash-attn", fn="mha_fwd_alibi_slopes", correct=False,
         bug="alibi-batch-slopes-ignored", parameter="alibi_slopes of shape (B, Hq) (batch 0's slopes for all)",
         source="Dao-AILab/flash-attention#1585", report="https://github.com/Dao-AILab/flash-attention/issues/1585",
         dtype="float64", features=list(_ALL)),
    dict(name="fa-online-softmax-nan-tile", api="flash-attn", fn="splitkv_decode_nan_alpha", correct=False,
         bug="online-softmax-masked-tile-nan", parameter="rescale factor for a fully masked key tile (-inf - -inf)",
         source="pegainfer-project/pegainfer#21", report="https://github.com/pegainfer-project/pegainfer/pull/21",
         dtype="float64", features=list(_ALL)),
    dict(name="fa-splitkv-merge-overflow", api="flash-attn", fn="migraphx_flash_decoding", correct=False,
         bug="lse-merge-without-max", parameter="split-KV LSE merge weights (exp(L) without max subtraction)",
         source="ROCm/AMDMIGraphX#4334", report="https://github.com/ROCm/AMDMIGraphX/issues/4334",
         dtype="float64", features=list(_ALL)),
    dict(name="fa-softcap-after-mask", api="flash-attn", fn="softcap_after_mask", correct=False,
         bug="softcap-after-masking", parameter="order of softcap and masking (-inf capped to -softcap)",
         source="Dao-AILab/flash-attention#1025", report="https://github.com/Dao-AILab/flash-attention/pull/1025",
         dtype="float64", features=list(_ALL)),
    dict(name="fa-pv-bf16", api="flash-attn", fn="flash_pv_low_precision", correct=False,
         bug="p-rounded-before-pv", parameter="P operand precision in P @ V (bf16 for float32 inputs)",
         source="Dao-AILab/flash-attention#2721", report="https://github.com/Dao-AILab/flash-attention/pull/2721",
         dtype="float32", features=list(_ALL)),
]
