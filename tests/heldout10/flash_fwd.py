"""Held-out attention kernels, API `flash-attn`: the semantics of flash_attn_func.

fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
deterministic=False, return_attn_probs=False) on torch tensors q (B, Sq, Hq, D), k (B, Sk, Hkv, D),
v (B, Sk, Hkv, Dv). Bottom-right alignment (off = Sk - Sq); softcap on the scaled scores before masking; ALiBi
-slope * |i + off - j| after the cap; query head h uses kv head h // (Hq // Hkv); rows with no visible key are
zeros. Returns (B, Sq, Hq, Dv). See README.md.
"""
import math

import torch


def _to_bhsd(q, k, v):
    """(B, S, H, D) -> (B, H, S, D), K/V heads repeated to the query heads."""
    group = q.size(2) // k.size(2)
    q = q.transpose(1, 2)
    k = k.transpose(1, 2).repeat_interleave(group, dim=1)
    v = v.transpose(1, 2).repeat_interleave(group, dim=1)
    return q, k, v


def _finish(scores, v, dtype):
    """Safe softmax over keys (-inf rows -> zeros), PV, back to (B, Sq, H, Dv)."""
    m = scores.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(scores - m)
    denom = p.sum(dim=-1, keepdim=True)
    out = torch.matmul(p, v)
    out = torch.where(denom > 0, out / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(out))
    return out.transpose(1, 2).to(dtype)


def _alibi(alibi_slopes, batch, nheads, seqlen_q, seqlen_k, dtype):
    """-slope * |i + off - j| as (B or 1, H, Sq, Sk)."""
    slopes = alibi_slopes.to(dtype)
    if slopes.dim() == 1:
        slopes = slopes.unsqueeze(0)
    row = torch.arange(seqlen_q).view(-1, 1) + (seqlen_k - seqlen_q)
    col = torch.arange(seqlen_k).view(1, -1)
    dist = (row - col).abs().to(dtype)
    return -slopes[:, :, None, None] * dist


def _local_keep(seqlen_q, seqlen_k, causal, window_size):
    """Bottom-right causal / local keep-mask (Sq, Sk)."""
    left, right = window_size
    if causal:
        right = 0
    row = torch.arange(seqlen_q).view(-1, 1) + (seqlen_k - seqlen_q)
    col = torch.arange(seqlen_k).view(1, -1)
    keep = torch.ones(seqlen_q, seqlen_k, dtype=torch.bool)
    if left >= 0:
        keep &= col >= row - left
    if right >= 0:
        keep &= col <= row + right
    return keep


# --- kernel: flash_causal_upper_left ---
def flash_causal_upper_left(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Attention-op reference style: is_causal frontier computed from the in-block query index."""
    seqlen_q, seqlen_k = q.size(1), k.size(1)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.size(-1))
    qh, kh, vh = _to_bhsd(q, k, v)
    scores = torch.matmul(qh, kh.transpose(-2, -1)) * scale
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    if alibi_slopes is not None:
        scores = scores + _alibi(alibi_slopes, q.size(0), q.size(2), seqlen_q, seqlen_k, scores.dtype)
    q_idx = torch.arange(seqlen_q).view(-1, 1)
    kv_idx = torch.arange(seqlen_k).view(1, -1)
    keep = _local_keep(seqlen_q, seqlen_k, False, window_size)
    if causal:
        keep &= kv_idx <= q_idx  # BUG: top-left frontier; needs the offset seqlen_k - seqlen_q (bottom-right)
    scores = scores.masked_fill(~keep, float("-inf"))
    return _finish(scores, vh, q.dtype)


# --- kernel: flash_local_right_bound_dropped ---
def flash_local_right_bound_dropped(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                    softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """dot_product_attention dispatch style: the band is passed as a left sliding-window length plus a mask type."""
    seqlen_q, seqlen_k = q.size(1), k.size(1)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.size(-1))
    qh, kh, vh = _to_bhsd(q, k, v)
    scores = torch.matmul(qh, kh.transpose(-2, -1)) * scale
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    if alibi_slopes is not None:
        scores = scores + _alibi(alibi_slopes, q.size(0), q.size(2), seqlen_q, seqlen_k, scores.dtype)
    l_window, r_window = window_size
    row = torch.arange(seqlen_q).view(-1, 1) + (seqlen_k - seqlen_q)
    col = torch.arange(seqlen_k).view(1, -1)
    keep = torch.ones(seqlen_q, seqlen_k, dtype=torch.bool)
    if causal:
        keep &= col <= row
    if l_window >= 0:
        sliding_window = l_window + 1
        keep &= row - col < sliding_window
    if r_window >= 0 and causal:  # BUG: the right bound is only forwarded on the causal path
        keep &= col <= row + r_window
    scores = scores.masked_fill(~keep, float("-inf"))
    return _finish(scores, vh, q.dtype)


# --- kernel: flash_splitkv_unguarded_reduce ---
def flash_splitkv_unguarded_reduce(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                   softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Split-KV decode style: 3 partitions write (partial_output, partial_lse), a reduce kernel merges them."""
    num_splits = 3
    seqlen_q, seqlen_k = q.size(1), k.size(1)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.size(-1))
    qh, kh, vh = _to_bhsd(q, k, v)
    keep = _local_keep(seqlen_q, seqlen_k, causal, window_size)
    bias = None
    if alibi_slopes is not None:
        bias = _alibi(alibi_slopes, q.size(0), q.size(2), seqlen_q, seqlen_k, qh.dtype)
    split_size = -(-seqlen_k // num_splits)
    partial_out, partial_lse = [], []
    for n_start in range(0, seqlen_k, split_size):
        n_end = min(n_start + split_size, seqlen_k)
        s = torch.matmul(qh, kh[:, :, n_start:n_end].transpose(-2, -1)) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if bias is not None:
            s = s + bias[..., n_start:n_end]
        s = s.masked_fill(~keep[:, n_start:n_end], float("-inf"))
        m = s.amax(dim=-1, keepdim=True)
        m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        p = torch.exp(s - m_safe)
        l_s = p.sum(dim=-1, keepdim=True)
        partial_out.append(torch.matmul(p, vh[:, :, n_start:n_end]) / l_s)
        partial_lse.append(m_safe + torch.log(l_s))
    max_lse = torch.stack(partial_lse).amax(dim=0)
    max_lse = torch.where(torch.isfinite(max_lse), max_lse, torch.zeros_like(max_lse))
    reg_out = torch.zeros_like(partial_out[0])
    sum_e_lse = torch.zeros_like(max_lse)
    for o_s, lse_s in zip(partial_out, partial_lse):
        e = torch.exp(lse_s - max_lse)
        reg_out = reg_out + e * o_s  # BUG: trusts every partial: an empty split's NaN output (0/0) poisons the row
        sum_e_lse = sum_e_lse + e
    out = torch.where(sum_e_lse > 0, reg_out / torch.where(sum_e_lse > 0, sum_e_lse, torch.ones_like(sum_e_lse)),
                      torch.zeros_like(reg_out))
    return out.transpose(1, 2).to(q.dtype)


# --- kernel: flash_softcap_scoremod ---
def flash_softcap_scoremod(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Score-mod style: softcap applied as a pre-mask score modification with a precomputed 1/softcap."""
    seqlen_q, seqlen_k = q.size(1), k.size(1)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.size(-1))
    qh, kh, vh = _to_bhsd(q, k, v)
    acc_s = torch.matmul(qh, kh.transpose(-2, -1)) * scale
    if softcap > 0:
        inv_softcap = 1.0 / softcap
        scores = acc_s * inv_softcap
        acc_s = scores * torch.tanh(scores)  # BUG: multiplies by scores instead of softcap_val: nothing is capped
    if alibi_slopes is not None:
        acc_s = acc_s + _alibi(alibi_slopes, q.size(0), q.size(2), seqlen_q, seqlen_k, acc_s.dtype)
    acc_s = acc_s.masked_fill(~_local_keep(seqlen_q, seqlen_k, causal, window_size), float("-inf"))
    return _finish(acc_s, vh, q.dtype)


# --- kernel: flash_alibi_chunk_positions ---
def flash_alibi_chunk_positions(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Chunked-sequence style: the ALiBi bias is generated from the positions inside the query chunk."""
    seqlen_q, seqlen_k = q.size(1), k.size(1)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.size(-1))
    qh, kh, vh = _to_bhsd(q, k, v)
    scores = torch.matmul(qh, kh.transpose(-2, -1)) * scale
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(scores.dtype)
        if slopes.dim() == 1:
            slopes = slopes.unsqueeze(0)
        row_idx = torch.arange(seqlen_q).view(-1, 1)  # BUG: chunk-local query positions, no seqlen_k - seqlen_q offset
        col_idx = torch.arange(seqlen_k).view(1, -1)
        scores = scores - slopes[:, :, None, None] * (row_idx - col_idx).abs().to(scores.dtype)
    scores = scores.masked_fill(~_local_keep(seqlen_q, seqlen_k, causal, window_size), float("-inf"))
    return _finish(scores, vh, q.dtype)


# --- kernel: flash_native_backend_local ---
def flash_native_backend_local(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Torch-native backend style: sliding-window masking lives in the causal branch of the extend path."""
    seqlen_q, seqlen_k = q.size(1), k.size(1)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.size(-1))
    qh, kh, vh = _to_bhsd(q, k, v)
    scores = torch.matmul(qh, kh.transpose(-2, -1)) * scale
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    if alibi_slopes is not None:
        scores = scores + _alibi(alibi_slopes, q.size(0), q.size(2), seqlen_q, seqlen_k, scores.dtype)
    q_pos = torch.arange(seqlen_q).view(-1, 1) + (seqlen_k - seqlen_q)
    k_pos = torch.arange(seqlen_k).view(1, -1)
    keep = torch.ones(seqlen_q, seqlen_k, dtype=torch.bool)
    if causal:
        keep &= k_pos <= q_pos
    left, right = window_size
    if causal and (left >= 0 or right >= 0):  # BUG: sliding window only enabled when causal=True
        if left >= 0:
            keep &= k_pos >= q_pos - left
        if right >= 0:
            keep &= k_pos <= q_pos + right
    scores = scores.masked_fill(~keep, float("-inf"))
    return _finish(scores, vh, q.dtype)


# --- kernel: flash_splitkv_exp2_guarded ---
def flash_splitkv_exp2_guarded(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Correct: 4 KV splits in base 2 (log2 LSEs), empty splits written as (0, -inf) and skipped in the merge."""
    num_splits = 4
    log2e = 1.4426950408889634
    seqlen_q, seqlen_k = q.size(1), k.size(1)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.size(-1))
    qh, kh, vh = _to_bhsd(q, k, v)
    keep = _local_keep(seqlen_q, seqlen_k, causal, window_size)
    bias = None
    if alibi_slopes is not None:
        bias = _alibi(alibi_slopes, q.size(0), q.size(2), seqlen_q, seqlen_k, qh.dtype)
    split_size = -(-seqlen_k // num_splits)
    outs, lses = [], []
    for n_start in range(0, seqlen_k, split_size):
        n_end = min(n_start + split_size, seqlen_k)
        s = torch.matmul(qh, kh[:, :, n_start:n_end].transpose(-2, -1)) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if bias is not None:
            s = s + bias[..., n_start:n_end]
        s = s.masked_fill(~keep[:, n_start:n_end], float("-inf")) * log2e
        m = s.amax(dim=-1, keepdim=True)
        m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        p = torch.exp2(s - m_safe)
        l_s = p.sum(dim=-1, keepdim=True)
        empty = l_s == 0
        l_div = torch.where(empty, torch.ones_like(l_s), l_s)
        outs.append(torch.where(empty, torch.zeros(1, dtype=p.dtype), torch.matmul(p, vh[:, :, n_start:n_end]) / l_div))
        lses.append(torch.where(empty, torch.full_like(l_s, float("-inf")),
                                m_safe + torch.log2(torch.where(empty, torch.ones_like(l_s), l_s))))
    lse_max = torch.stack(lses).amax(dim=0)
    lse_max = torch.where(torch.isfinite(lse_max), lse_max, torch.zeros_like(lse_max))
    num = torch.zeros_like(outs[0])
    den = torch.zeros_like(lse_max)
    for o_s, lse_s in zip(outs, lses):
        w = torch.exp2(lse_s - lse_max)
        num = num + w * o_s
        den = den + w
    out = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))
    return out.transpose(1, 2).to(q.dtype)


# --- kernel: flash_grouped_band_rows ---
def flash_grouped_band_rows(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Correct: per kv head, the whole query group at once, each query row visiting only its band of keys."""
    batch, seqlen_q, nheads, _ = q.shape
    seqlen_k, nheads_k = k.size(1), k.size(2)
    group = nheads // nheads_k
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.size(-1))
    left, right = window_size
    if causal:
        right = 0
    off = seqlen_k - seqlen_q
    out = torch.zeros(batch, seqlen_q, nheads, v.size(-1), dtype=q.dtype)
    slopes = None
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(q.dtype)
        if slopes.dim() == 1:
            slopes = slopes.unsqueeze(0).expand(batch, nheads)
    for i in range(seqlen_q):
        lo = 0 if left < 0 else max(0, i + off - left)
        hi = seqlen_k if right < 0 else min(seqlen_k, i + off + right + 1)
        if hi <= lo:
            continue
        for hk in range(nheads_k):
            qg = q[:, i, hk * group:(hk + 1) * group, :]
            kb = k[:, lo:hi, hk, :]
            s = torch.einsum("bgd,bnd->bgn", qg, kb) * scale
            if softcap > 0:
                s = softcap * torch.tanh(s / softcap)
            if slopes is not None:
                dist = (torch.arange(lo, hi) - (i + off)).abs().to(s.dtype)
                s = s - slopes[:, hk * group:(hk + 1) * group, None] * dist
            p = torch.softmax(s, dim=-1)
            out[:, i, hk * group:(hk + 1) * group, :] = torch.einsum("bgn,bnd->bgd", p, v[:, lo:hi, hk, :])
    return out


# --- kernel: flash_dense_bias_exp2 ---
def flash_dense_bias_exp2(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                          softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Correct: grouped einsum without K/V expansion; causal/window/ALiBi folded into one additive bias; exp2."""
    batch, seqlen_q, nheads, dim = q.shape
    seqlen_k, nheads_k = k.size(1), k.size(2)
    group = nheads // nheads_k
    scale = softmax_scale if softmax_scale is not None else dim ** -0.5
    q5 = q.reshape(batch, seqlen_q, nheads_k, group, dim)
    s = torch.einsum("bqhgd,bkhd->bhgqk", q5, k) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    s = s.reshape(batch, nheads, seqlen_q, seqlen_k)
    left, right = window_size
    if causal:
        right = 0
    delta = torch.arange(seqlen_k).view(1, -1) - torch.arange(seqlen_q).view(-1, 1) - (seqlen_k - seqlen_q)
    blocked = torch.zeros_like(delta, dtype=torch.bool)
    if left >= 0:
        blocked |= delta < -left
    if right >= 0:
        blocked |= delta > right
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(s.dtype)
        slopes = slopes.view(1, nheads) if slopes.dim() == 1 else slopes
        s = s - slopes[:, :, None, None] * delta.abs().to(s.dtype)
    s = s.masked_fill(blocked, float("-inf")) * 1.4426950408889634
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp2(s - m)
    z = p.sum(dim=-1, keepdim=True)
    p = torch.where(z > 0, p / torch.where(z > 0, z, torch.ones_like(z)), torch.zeros_like(p))
    p5 = p.reshape(batch, nheads_k, group, seqlen_q, seqlen_k)
    out = torch.einsum("bhgqk,bkhd->bqhgd", p5, v)
    return out.reshape(batch, seqlen_q, nheads, v.size(-1)).to(q.dtype)


CATALOG = [
    dict(name="flash-onnx-causal-upper-left", api="flash-attn", fn="flash_causal_upper_left", correct=False,
         bug="causal-alignment-top-left",
         parameter="causal frontier kv_idx <= q_idx (top-left) without the seqlen_k - seqlen_q offset, where "
                   "flash-attn aligns causal bottom-right. Triggers: causal=True with Sq != Sk",
         source="onnx/onnx#8068", report="https://github.com/onnx/onnx/pull/8068",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-jax-window-right-dropped", api="flash-attn", fn="flash_local_right_bound_dropped",
         correct=False, bug="window-right-bound-dropped",
         parameter="window (left, right) forwarded as a left sliding-window length only; the right bound is "
                   "applied only with causal, so a non-causal window attends to every future key. "
                   "Triggers: causal=False with window right >= 0 and keys past i + off + right",
         source="jax-ml/jax#39576", report="https://github.com/jax-ml/jax/pull/39576",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-aiter-empty-split-nan", api="flash-attn", fn="flash_splitkv_unguarded_reduce", correct=False,
         bug="split-merge-empty-split-nan",
         parameter="the split-KV reduce trusts every partial: a split with no visible key for a row has output 0/0 "
                   "= NaN and lse -inf, and exp(-inf) * NaN = NaN poisons that row. Triggers: a row with visible "
                   "keys and at least one of the 3 splits of ceil(Sk / 3) keys fully masked (causal, windows)",
         source="ROCm/aiter#4420", report="https://github.com/ROCm/aiter/pull/4420",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-fa4-softcap-scores-times-tanh", api="flash-attn", fn="flash_softcap_scoremod", correct=False,
         bug="softcap-formula-wrong-multiplier",
         parameter="softcap computed as (s / c) * tanh(s / c) instead of c * tanh(s / c): unbounded, SiLU-like. "
                   "Triggers: softcap > 0",
         source="Dao-AILab/flash-attention#2396", report="https://github.com/Dao-AILab/flash-attention/issues/2396",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-te-alibi-chunk-offset", api="flash-attn", fn="flash_alibi_chunk_positions", correct=False,
         bug="alibi-query-offset-missing",
         parameter="ALiBi distance |i - j| from the query's position inside its chunk instead of |i + Sk - Sq - j|. "
                   "Triggers: alibi_slopes with Sq != Sk",
         source="NVIDIA/TransformerEngine#1046", report="https://github.com/NVIDIA/TransformerEngine/issues/1046",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-sglang-window-causal-only", api="flash-attn", fn="flash_native_backend_local", correct=False,
         bug="window-ignored-when-not-causal",
         parameter="window_size only applied on the causal path: a non-causal (bidirectional) local window "
                   "silently becomes full attention. Triggers: causal=False with window left or right >= 0 "
                   "dropping keys",
         source="sgl-project/sglang#39300", report="https://github.com/sgl-project/sglang/issues/39300",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-splitkv-exp2-guarded", api="flash-attn", fn="flash_splitkv_exp2_guarded", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64",
         features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-grouped-band-rows", api="flash-attn", fn="flash_grouped_band_rows", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64",
         features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-dense-bias-exp2", api="flash-attn", fn="flash_dense_bias_exp2", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64",
         features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
]
