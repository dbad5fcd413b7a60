"""Held-out attention kernels for the `flash-attn` API (flash_attn_func's signature) on torch tensors.

q (B, Sq, Hq, D), k (B, Sk, Hkv, D), v (B, Sk, Hkv, Dv) -> (B, Sq, Hq, Dv). Causal and windows are bottom-right
aligned (off = Sk - Sq); softcap is applied to the scaled scores before masking; ALiBi adds
-slope * |i + off - j|; query head h reads kv head h // (Hq // Hkv); rows with no visible key are zeros.
"""
import math

import numpy as np
import torch


def _window(causal, window_size):
    left, right = window_size
    if causal:
        right = 0
    return left, right


def _local_keep(sq, sk, causal, window_size):
    """Bottom-right aligned keep-mask (Sq, Sk)."""
    left, right = _window(causal, window_size)
    row = torch.arange(sq)[:, None] + (sk - sq)
    col = torch.arange(sk)[None, :]
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if left >= 0:
        keep &= col >= row - left
    if right >= 0:
        keep &= col <= row + right
    return keep


def _slopes(alibi_slopes, batch, nheads):
    """(B, Hq) float64 slopes from a (Hq,) or (B, Hq) tensor."""
    s = alibi_slopes.to(torch.float64)
    if s.dim() == 1:
        s = s[None, :].expand(batch, nheads)
    return s


def _abs_dist(sq, sk):
    row = torch.arange(sq)[:, None] + (sk - sq)
    col = torch.arange(sk)[None, :]
    return (row - col).abs().to(torch.float64)


def _safe_softmax_av(scores, keep, v):
    """scores (B, H, Sq, Sk) float64, keep broadcastable, v (B, H, Sk, Dv) -> (B, H, Sq, Dv)."""
    scores = scores.masked_fill(~keep, float("-inf"))
    m = scores.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(scores - m)
    l_sum = p.sum(dim=-1, keepdim=True)
    p = p / torch.where(l_sum > 0, l_sum, torch.ones_like(l_sum))
    return p @ v


def _bhsd(q, k, v):
    """(B, S, H, D) -> (B, H, S, D) float64 with kv heads expanded h // group."""
    hq, hkv = q.shape[2], k.shape[2]
    g = hq // hkv
    qh = q.permute(0, 2, 1, 3).to(torch.float64)
    kh = k.permute(0, 2, 1, 3).to(torch.float64).repeat_interleave(g, dim=1)
    vh = v.permute(0, 2, 1, 3).to(torch.float64).repeat_interleave(g, dim=1)
    return qh, kh, vh


# ---------------------------------------------------------------------------------------------------------
# flash-attn v1 era reference: causal mask aligned top-left (Dao-AILab/flash-attention#402)
def flash_v1_causal(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                    softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, hq, d = q.shape
    sk = k.shape[1]
    softmax_scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qh, kh, vh = _bhsd(q, k, v)
    scores = torch.einsum("bhtd,bhsd->bhts", qh, kh) * softmax_scale
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    if alibi_slopes is not None:
        scores = scores - _slopes(alibi_slopes, b, hq)[:, :, None, None] * _abs_dist(sq, sk)
    left, right = window_size
    row = torch.arange(sq)[:, None] + (sk - sq)
    col = torch.arange(sk)[None, :]
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if causal:
        # BUG: causal mask j <= i is top-left aligned; flash-attn aligns it bottom-right (j <= i + Sk - Sq)
        keep &= col <= torch.arange(sq)[:, None]
    elif right >= 0:
        keep &= col <= row + right
    if left >= 0:
        keep &= col >= row - left
    out = _safe_softmax_av(scores, keep, vh)
    return out.permute(0, 2, 1, 3).to(q.dtype)


# ---------------------------------------------------------------------------------------------------------
# transformers modeling_flash_attention_utils style window handling (huggingface/transformers#39408)
def hf_sliding_window_flash(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, hq, d = q.shape
    sk = k.shape[1]
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    qh, kh, vh = _bhsd(q, k, v)
    attn = qh @ kh.transpose(-1, -2) * scale
    if softcap > 0:
        attn = torch.tanh(attn / softcap) * softcap
    if alibi_slopes is not None:
        attn = attn - _slopes(alibi_slopes, b, hq)[:, :, None, None] * _abs_dist(sq, sk)
    sliding_window = window_size[0]
    # BUG: the left window is used on both sides, window_size[1] is ignored
    keep = _local_keep(sq, sk, causal, (sliding_window, sliding_window))
    out = _safe_softmax_av(attn, keep, vh)
    return out.transpose(1, 2).to(q.dtype)


# ---------------------------------------------------------------------------------------------------------
# zml flashattn window lowering (zml/zml#763)
def zml_flashattn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                  softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, hq, d = q.shape
    sk = k.shape[1]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qh, kh, vh = _bhsd(q, k, v)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s - _slopes(alibi_slopes, b, hq)[:, :, None, None] * _abs_dist(sq, sk)
    left, right = _window(causal, window_size)
    pos_q = torch.arange(sq)[:, None] + sk - sq
    pos_k = torch.arange(sk)[None, :]
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if left >= 0:
        # BUG: window_size_left treated as a count including the current token: keeps left - 1 past keys
        keep &= pos_k > pos_q - left
    if right >= 0:
        keep &= pos_k <= pos_q + right
    out = _safe_softmax_av(s, keep, vh)
    return out.permute(0, 2, 1, 3).to(q.dtype)


# ---------------------------------------------------------------------------------------------------------
# TRL-style chunked logits with softcapping (huggingface/trl#5691)
def trl_softcap_attention(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                          softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, hq, d = q.shape
    sk = k.shape[1]
    inv_t = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    qh, kh, vh = _bhsd(q, k, v)
    logits = torch.einsum("bhid,bhjd->bhij", qh, kh)
    if softcap > 0:
        # BUG: softcap applied to the raw logits before the scale: cap * tanh(raw / cap) * scale
        logits = logits.div(softcap).tanh().mul(softcap)
    logits = logits * inv_t
    if alibi_slopes is not None:
        logits = logits - _slopes(alibi_slopes, b, hq)[:, :, None, None] * _abs_dist(sq, sk)
    out = _safe_softmax_av(logits, _local_keep(sq, sk, causal, window_size), vh)
    return out.permute(0, 2, 1, 3).to(q.dtype)


# ---------------------------------------------------------------------------------------------------------
# fairseq-style ALiBi for a flash kernel (Dao-AILab/flash-attention#540)
def alibi_column_bias_flash(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, hq, d = q.shape
    sk = k.shape[1]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qh, kh, vh = _bhsd(q, k, v)
    acc_s = qh @ kh.transpose(-1, -2) * scale
    if softcap > 0:
        acc_s = softcap * torch.tanh(acc_s / softcap)
    if alibi_slopes is not None:
        slopes = _slopes(alibi_slopes, b, hq)[:, :, None, None]
        row_idx = torch.arange(sq)[:, None] + (sk - sq)
        col_idx = torch.arange(sk)[None, :]
        # BUG: causal-only form slope * (col - row) used for every query; non-causal needs -slope * |row - col|
        acc_s = acc_s + slopes * (col_idx - row_idx).to(torch.float64)
    out = _safe_softmax_av(acc_s, _local_keep(sq, sk, causal, window_size), vh)
    return out.permute(0, 2, 1, 3).to(q.dtype)


# ---------------------------------------------------------------------------------------------------------
# MHA wrapper with per-batch slopes (Dao-AILab/flash-attention#1585)
def mha_alibi_flash(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                    softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, hq, d = q.shape
    sk = k.shape[1]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qh, kh, vh = _bhsd(q, k, v)
    scores = qh @ kh.transpose(-1, -2) * scale
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    if alibi_slopes is not None:
        # BUG: slopes flattened and the first nheads taken: (B, Hq) slopes of batch 0 used for every batch
        slopes = alibi_slopes.reshape(-1)[:hq].to(torch.float64)
        scores = scores - slopes[None, :, None, None] * _abs_dist(sq, sk)
    out = _safe_softmax_av(scores, _local_keep(sq, sk, causal, window_size), vh)
    return out.permute(0, 2, 1, 3).to(q.dtype)


# ---------------------------------------------------------------------------------------------------------
# AXLearn-style GQA expansion with tile (apple/axlearn#842)
def axlearn_gqa_flash(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                      softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, num_heads, d = q.shape
    sk, num_kv_heads = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    if num_kv_heads != num_heads:
        # BUG: kv heads tiled [0, 1, 0, 1, ...] (query head h -> h % Hkv) instead of repeated (h // group)
        k = k.repeat(1, 1, num_heads // num_kv_heads, 1)
        v = v.repeat(1, 1, num_heads // num_kv_heads, 1)
    qh = q.permute(0, 2, 1, 3).to(torch.float64)
    kh = k.permute(0, 2, 1, 3).to(torch.float64)
    vh = v.permute(0, 2, 1, 3).to(torch.float64)
    logits = torch.einsum("bnqd,bnkd->bnqk", qh, kh) * scale
    if softcap > 0:
        logits = softcap * torch.tanh(logits / softcap)
    if alibi_slopes is not None:
        logits = logits - _slopes(alibi_slopes, b, num_heads)[:, :, None, None] * _abs_dist(sq, sk)
    out = _safe_softmax_av(logits, _local_keep(sq, sk, causal, window_size), vh)
    return out.permute(0, 2, 1, 3).to(q.dtype)


# ---------------------------------------------------------------------------------------------------------
# TensorRT-LLM style chunked context with exported softmax stats (NVIDIA/TensorRT-LLM#19112)
def trtllm_chunked_context(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    chunk = 40
    b, sq, hq, d = q.shape
    sk = k.shape[1]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qh, kh, vh = _bhsd(q, k, v)
    keep = _local_keep(sq, sk, causal, window_size)
    dist = _abs_dist(sq, sk)
    outs, stats = [], []
    for c0 in range(0, sk, chunk):
        c1 = min(sk, c0 + chunk)
        raw = qh @ kh[:, :, c0:c1].transpose(-1, -2)
        kc = keep[:, c0:c1]
        p_max = raw.masked_fill(~kc, float("-inf")).amax(dim=-1, keepdim=True)
        p_max = torch.where(torch.isfinite(p_max), p_max, torch.zeros_like(p_max))
        logit = raw * scale
        if softcap > 0:
            logit = softcap * torch.tanh(logit / softcap)
        if alibi_slopes is not None:
            logit = logit - _slopes(alibi_slopes, b, hq)[:, :, None, None] * dist[:, c0:c1]
        p = torch.exp(logit - p_max * scale).masked_fill(~kc, 0.0)
        p_sum = p.sum(dim=-1, keepdim=True)
        o = (p @ vh[:, :, c0:c1]) / torch.where(p_sum > 0, p_sum, torch.ones_like(p_sum))
        # BUG: exported max rescaled by 1/sqrt(head_dim) instead of the softmax scale actually used
        lse = torch.where(p_sum > 0, p_max / math.sqrt(d) + torch.log(p_sum), torch.full_like(p_sum, -math.inf))
        outs.append(o)
        stats.append(lse)
    lse_all = torch.stack(stats, dim=0)
    lse_max = lse_all.amax(dim=0)
    lse_max = torch.where(torch.isfinite(lse_max), lse_max, torch.zeros_like(lse_max))
    w = torch.exp(lse_all - lse_max)
    w_sum = w.sum(dim=0)
    out = sum(wi * oi for wi, oi in zip(w, outs)) / torch.where(w_sum > 0, w_sum, torch.ones_like(w_sum))
    return out.permute(0, 2, 1, 3).to(q.dtype)


# ---------------------------------------------------------------------------------------------------------
# FlashInfer sparse blk64 style: K/V tail read as zero-filled full blocks (flashinfer-ai/flashinfer#5090)
def flashinfer_blk_tail(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                        softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    blk = 32
    b, sq, hq, d = q.shape
    sk = k.shape[1]
    sm_scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qh, kh, vh = _bhsd(q, k, v)
    nb = (sk + blk - 1) // blk
    pad = nb * blk - sk
    kh = torch.nn.functional.pad(kh, (0, 0, 0, pad))
    vh = torch.nn.functional.pad(vh, (0, 0, 0, pad))
    skp = nb * blk
    left, right = _window(causal, window_size)
    row = torch.arange(sq)[:, None] + (sk - sq)
    col = torch.arange(skp)[None, :]
    # BUG: columns >= seqlen_k of the last block are not masked; zero-filled keys get score 0 (weight exp(0))
    keep = torch.ones(sq, skp, dtype=torch.bool)
    if left >= 0:
        keep &= col >= row - left
    if right >= 0:
        keep &= col <= row + right
    s = qh @ kh.transpose(-1, -2) * sm_scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s - _slopes(alibi_slopes, b, hq)[:, :, None, None] * (row - col).abs().to(torch.float64)
    out = _safe_softmax_av(s, keep, vh)
    return out.permute(0, 2, 1, 3).to(q.dtype)


def _round_tf32(x):
    """Round float32 values to TF32 (10 explicit mantissa bits, round-to-nearest-even)."""
    a = x.detach().cpu().numpy().astype(np.float32)
    bits = a.view(np.uint32).astype(np.uint64)
    bits = (bits + 0x0FFF + ((bits >> 13) & 1)) & 0xFFFFE000
    return torch.from_numpy(bits.astype(np.uint32).view(np.float32).copy())


# ---------------------------------------------------------------------------------------------------------
# Triton tutorial forward kernel port: tl.dot default input_precision for fp32 (triton-lang/triton#5895)
def triton_fused_fwd(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                     softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    BLOCK_N = 64
    b, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[3]
    group = hq // hkv
    sm_scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    keep_all = _local_keep(sq, sk, causal, window_size)
    dist = _abs_dist(sq, sk)
    slopes = None if alibi_slopes is None else _slopes(alibi_slopes, b, hq)
    qa, ka = q, k
    if q.dtype == torch.float32:
        # BUG: fp32 tl.dot runs in TF32 by default, q and k are rounded to 10 mantissa bits before QK^T
        qa, ka = _round_tf32(q), _round_tf32(k)
    out = torch.zeros(b, sq, hq, dv, dtype=torch.float64)
    for h in range(hq):
        qq = qa[:, :, h].to(torch.float64)
        kk = ka[:, :, h // group].to(torch.float64)
        vv = v[:, :, h // group].to(torch.float64)
        m_i = torch.full((b, sq, 1), -math.inf, dtype=torch.float64)
        l_i = torch.zeros(b, sq, 1, dtype=torch.float64)
        acc = torch.zeros(b, sq, dv, dtype=torch.float64)
        for n0 in range(0, sk, BLOCK_N):
            n1 = min(sk, n0 + BLOCK_N)
            qk = qq @ kk[:, n0:n1].transpose(-1, -2) * sm_scale
            if softcap > 0:
                qk = softcap * torch.tanh(qk / softcap)
            if slopes is not None:
                qk = qk - slopes[:, h, None, None] * dist[None, :, n0:n1]
            qk = qk.masked_fill(~keep_all[None, :, n0:n1], -math.inf)
            m_ij = torch.maximum(m_i, qk.amax(dim=-1, keepdim=True))
            m_use = torch.where(torch.isfinite(m_ij), m_ij, torch.zeros_like(m_ij))
            alpha = torch.where(torch.isfinite(m_i), torch.exp(m_i - m_use), torch.zeros_like(m_i))
            p = torch.exp(qk - m_use)
            l_i = l_i * alpha + p.sum(dim=-1, keepdim=True)
            acc = acc * alpha + p @ vv[:, n0:n1]
            m_i = m_ij
        out[:, :, h] = acc / torch.where(l_i > 0, l_i, torch.ones_like(l_i))
    return out.to(q.dtype)


# ---------------------------------------------------------------------------------------------------------
# correct: grouped reference, queries reshaped to (B, Sq, Hkv, G, D) so k/v are never expanded
def flash_grouped_reference(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[3]
    g = hq // hkv
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qg = q.to(torch.float64).reshape(b, sq, hkv, g, d)
    s = torch.einsum("bqhgd,bkhd->bhgqk", qg, k.to(torch.float64)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        sl = _slopes(alibi_slopes, b, hq).reshape(b, hkv, g)
        s = s - sl[..., None, None] * _abs_dist(sq, sk)
    keep = _local_keep(sq, sk, causal, window_size)
    s = s.masked_fill(~keep, -math.inf)
    mx = s.amax(dim=-1, keepdim=True)
    live = torch.isfinite(mx)
    p = torch.exp(s - torch.where(live, mx, torch.zeros_like(mx)))
    den = p.sum(dim=-1, keepdim=True)
    p = torch.where(live, p / torch.where(live, den, torch.ones_like(den)), torch.zeros_like(p))
    o = torch.einsum("bhgqk,bkhd->bqhgd", p, v.to(torch.float64))
    return o.reshape(b, sq, hq, dv).to(q.dtype)


# ---------------------------------------------------------------------------------------------------------
# correct: tiled online softmax, masks computed per key block (kBlockN = 32), fully masked blocks skipped
def flash_tiled_online(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                       softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    kBlockN = 32
    b, sq, hq, d = q.shape
    sk, dv = k.shape[1], v.shape[3]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    left, right = _window(causal, window_size)
    qh, kh, vh = _bhsd(q, k, v)
    slopes = None if alibi_slopes is None else _slopes(alibi_slopes, b, hq)[:, :, None, None]
    row = torch.arange(sq)[:, None] + (sk - sq)
    m_i = torch.full((b, hq, sq, 1), -math.inf, dtype=torch.float64)
    l_i = torch.zeros(b, hq, sq, 1, dtype=torch.float64)
    acc = torch.zeros(b, hq, sq, dv, dtype=torch.float64)
    for n0 in range(0, sk, kBlockN):
        n1 = min(sk, n0 + kBlockN)
        col = torch.arange(n0, n1)[None, :]
        keep = torch.ones(sq, n1 - n0, dtype=torch.bool)
        if left >= 0:
            keep &= col >= row - left
        if right >= 0:
            keep &= col <= row + right
        if not bool(keep.any()):
            continue
        s = qh @ kh[:, :, n0:n1].transpose(-1, -2) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if slopes is not None:
            s = s - slopes * (row - col).abs().to(torch.float64)
        s = s.masked_fill(~keep, -math.inf)
        m_new = torch.maximum(m_i, s.amax(dim=-1, keepdim=True))
        m_ref = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        scale_o = torch.where(torch.isfinite(m_i), torch.exp(m_i - m_ref), torch.zeros_like(m_i))
        p = torch.exp(s - m_ref)
        l_i = l_i * scale_o + p.sum(dim=-1, keepdim=True)
        acc = acc * scale_o + p @ vh[:, :, n0:n1]
        m_i = m_new
    out = torch.where(l_i > 0, acc / torch.where(l_i > 0, l_i, torch.ones_like(l_i)), torch.zeros_like(acc))
    return out.permute(0, 2, 1, 3).to(q.dtype)


# ---------------------------------------------------------------------------------------------------------
# correct: split-KV (flash-decoding) with a log-sum-exp combine that tolerates empty splits
def flash_split_kv(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                   softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    num_splits = 3
    b, sq, hq, d = q.shape
    sk = k.shape[1]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qh, kh, vh = _bhsd(q, k, v)
    keep = _local_keep(sq, sk, causal, window_size)
    dist = _abs_dist(sq, sk)
    per = max(1, -(-sk // num_splits))
    o_parts, lse_parts = [], []
    for n0 in range(0, sk, per):
        n1 = min(sk, n0 + per)
        s = qh @ kh[:, :, n0:n1].transpose(-1, -2) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if alibi_slopes is not None:
            s = s - _slopes(alibi_slopes, b, hq)[:, :, None, None] * dist[:, n0:n1]
        s = s.masked_fill(~keep[:, n0:n1], -math.inf)
        m = s.amax(dim=-1, keepdim=True)
        ok = torch.isfinite(m)
        p = torch.exp(s - torch.where(ok, m, torch.zeros_like(m)))
        l_sum = p.sum(dim=-1, keepdim=True)
        o_parts.append(torch.where(ok, (p @ vh[:, :, n0:n1]) / torch.where(ok, l_sum, torch.ones_like(l_sum)),
                                   torch.zeros(1, dtype=torch.float64)))
        lse_parts.append(torch.where(ok, m + torch.log(torch.where(ok, l_sum, torch.ones_like(l_sum))),
                                     torch.full_like(m, -math.inf)))
    lse = torch.stack(lse_parts)
    lse_max = lse.amax(dim=0)
    alive = torch.isfinite(lse_max)
    w = torch.exp(lse - torch.where(alive, lse_max, torch.zeros_like(lse_max)))
    w_sum = w.sum(dim=0)
    out = torch.zeros_like(o_parts[0])
    for wi, oi in zip(w, o_parts):
        out = out + wi * oi
    out = torch.where(alive, out / torch.where(alive, w_sum, torch.ones_like(w_sum)), torch.zeros_like(out))
    return out.permute(0, 2, 1, 3).to(q.dtype)


_FEATURES = ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]


def _entry(name, fn, bug=None, parameter=None, source=None, kind="issues", dtype="float64"):
    report = None
    if source is not None:
        repo, num = source.split("#")
        report = "https://github.com/{}/{}/{}".format(repo, kind, num)
    return {
        "name": name,
        "api": "flash-attn",
        "fn": fn,
        "correct": bug is None,
        "bug": bug,
        "parameter": parameter,
        "source": source,
        "report": report,
        "dtype": dtype,
        "features": list(_FEATURES),
    }


CATALOG = [
    _entry("flash-v1-causal-top-left", "flash_v1_causal", "causal-top-left-aligned",
           "causal keeps j <= i (top-left) instead of j <= i + Sk - Sq (bottom-right)",
           "Dao-AILab/flash-attention#402"),
    _entry("flash-hf-window-symmetric", "hf_sliding_window_flash", "window-left-used-for-right",
           "window_size[0] used for both sides; window_size[1] ignored",
           "huggingface/transformers#39408"),
    _entry("flash-zml-window-off-by-one", "zml_flashattn", "window-left-off-by-one",
           "left window bound exclusive (j > i + off - left) instead of inclusive",
           "zml/zml#763", "pull"),
    _entry("flash-trl-softcap-before-scale", "trl_softcap_attention", "softcap-before-scale",
           "softcap applied to the unscaled logits, scale applied after tanh",
           "huggingface/trl#5691", "pull"),
    _entry("flash-alibi-signed-distance", "alibi_column_bias_flash", "alibi-signed-distance",
           "ALiBi bias slope * (j - i - off) (causal form) instead of -slope * |i + off - j|",
           "Dao-AILab/flash-attention#540", "pull"),
    _entry("flash-mha-alibi-batch-slopes", "mha_alibi_flash", "alibi-batch-slopes-ignored",
           "(B, Hq) alibi_slopes flattened; batch 0's slopes used for every batch",
           "Dao-AILab/flash-attention#1585"),
    _entry("flash-axlearn-gqa-tile", "axlearn_gqa_flash", "gqa-kv-heads-tiled",
           "query head h mapped to kv head h % Hkv instead of h // (Hq // Hkv)",
           "apple/axlearn#842", "pull"),
    _entry("flash-trtllm-chunk-stats-scale", "trtllm_chunked_context", "split-lse-wrong-scale",
           "per-chunk softmax stats exported with 1/sqrt(head_dim) instead of softmax_scale",
           "NVIDIA/TensorRT-LLM#19112", "pull"),
    _entry("flash-flashinfer-tail-unmasked", "flashinfer_blk_tail", "tail-block-padding-unmasked",
           "zero-filled key columns past seqlen_k in the last block not masked",
           "flashinfer-ai/flashinfer#5090", "pull"),
    _entry("flash-triton-tf32-dot", "triton_fused_fwd", "fp32-dot-uses-tf32",
           "QK^T for float32 inputs computed with TF32-rounded operands",
           "triton-lang/triton#5895", dtype="float32"),
    _entry("flash-grouped-reference", "flash_grouped_reference"),
    _entry("flash-tiled-online", "flash_tiled_online"),
    _entry("flash-split-kv", "flash_split_kv"),
]
