"""Held-out attention kernels for the `flash-attn` API (flash_attn_func's signature), torch.

q (B, Sq, Hq, D), k (B, Sk, Hkv, D), v (B, Sk, Hkv, Dv). Bottom-right alignment, off = Sk - Sq: causal keeps
j <= i + off; window (left, right) keeps i + off - left <= j <= i + off + right (-1 unbounded; causal means
right = 0). softcap > 0: s = softcap * tanh(s / softcap) on the scaled scores; ALiBi then adds
-slope * |i + off - j| (slopes float32 (Hq,) or (B, Hq)); query head h uses kv head h // (Hq // Hkv); rows
with no visible key are zeros. Returns (B, Sq, Hq, Dv) in the input dtype. Broken kernels carry one
mistake each, adapted from the public report named in CATALOG.
"""
import math

import torch


def _sm_scale(q, softmax_scale):
    return 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else float(softmax_scale)


def _visible(sq, sk, causal, window_size, device, offset=None):
    left, right = window_size
    if causal:
        right = 0
    off = sk - sq if offset is None else offset
    i = torch.arange(sq, device=device).view(-1, 1) + off
    j = torch.arange(sk, device=device).view(1, -1)
    keep = torch.ones(sq, sk, dtype=torch.bool, device=device)
    if left >= 0:
        keep &= j >= i - left
    if right >= 0:
        keep &= j <= i + right
    return keep


def _alibi(alibi_slopes, batch, heads, sq, sk, dtype, device):
    """(B, Hq, Sq, Sk) bias -slope * |i + off - j|, or None."""
    if alibi_slopes is None:
        return None
    slopes = alibi_slopes.to(dtype)
    if slopes.dim() == 1:
        slopes = slopes.view(1, heads).expand(batch, heads)
    i = torch.arange(sq, device=device).view(-1, 1) + (sk - sq)
    j = torch.arange(sk, device=device).view(1, -1)
    dist = (i - j).abs().to(dtype)
    return -slopes.view(batch, heads, 1, 1) * dist


def _bhsd(q, k, v):
    """(B, S, H, D) -> (B, H, S, D) with kv heads repeated to the query heads."""
    rep = q.shape[2] // k.shape[2]
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(rep, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(rep, dim=1)
    return qh, kh, vh


def _masked_softmax_pv(s, keep, vh):
    s = s.masked_fill(~keep, float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
    p = torch.exp(s - m)
    z = p.sum(dim=-1, keepdim=True)
    return torch.matmul(p / torch.where(z == 0, torch.ones_like(z), z), vh)


# -------------------------------------------------------------------------------------------------------
# flash_api.cpp-style dispatch: a causal call is routed to the causal kernel (Dao-AILab/flash-attention#1133)
def flash_causal_dispatch(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                          softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, hq, _ = q.shape
    sk = k.shape[1]
    if causal:
        window_size = (-1, 0)  # BUG: the causal path forgets window_size[0] (the left window is dropped)
    qh, kh, vh = _bhsd(q, k, v)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    if softcap > 0.0:
        s = softcap * torch.tanh(s / softcap)
    bias = _alibi(alibi_slopes, b, hq, sq, sk, q.dtype, q.device)
    if bias is not None:
        s = s + bias
    out = _masked_softmax_pv(s, _visible(sq, sk, causal, window_size, q.device), vh)
    return out.transpose(1, 2).contiguous().to(q.dtype)


# -------------------------------------------------------------------------------------------------------
# TVM BYOC libflash_attn style: is_causal derived from the window parameters (tlc-pack/libflash_attn#11)
def flash_window_params(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                        softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, hq, _ = q.shape
    sk = k.shape[1]
    window_size_left, window_size_right = window_size
    is_causal = causal and window_size_left < 0 and window_size_right < 0  # BUG: causal lost with a window
    if is_causal:
        window_size_right = 0
    qh, kh, vh = _bhsd(q, k, v)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    if softcap > 0.0:
        s = softcap * torch.tanh(s / softcap)
    bias = _alibi(alibi_slopes, b, hq, sq, sk, q.dtype, q.device)
    if bias is not None:
        s = s + bias
    keep = _visible(sq, sk, False, (window_size_left, window_size_right), q.device)
    return _masked_softmax_pv(s, keep, vh).transpose(1, 2).contiguous().to(q.dtype)


# -------------------------------------------------------------------------------------------------------
# onnxruntime GQA softcap helper: tanh(x * softcap) * softcap (microsoft/onnxruntime#21683)
def flash_softcap_helper(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                         softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, hq, _ = q.shape
    sk = k.shape[1]
    qh, kh, vh = _bhsd(q, k, v)
    scores = torch.matmul(qh, kh.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    if softcap > 0.0:
        scores = torch.tanh(scores * softcap) * softcap  # BUG: multiplies by softcap inside tanh (not 1/softcap)
    bias = _alibi(alibi_slopes, b, hq, sq, sk, q.dtype, q.device)
    if bias is not None:
        scores = scores + bias
    out = _masked_softmax_pv(scores, _visible(sq, sk, causal, window_size, q.device), vh)
    return out.transpose(1, 2).contiguous().to(q.dtype)


# -------------------------------------------------------------------------------------------------------
# unsloth-zoo style capping: logits * tanh(logits / cap) (unslothai/unsloth-zoo#593)
def flash_softcap_logits_times_tanh(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                                    window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                                    return_attn_probs=False):
    b, sq, hq, _ = q.shape
    sk = k.shape[1]
    qh, kh, vh = _bhsd(q, k, v)
    logits = torch.matmul(qh, kh.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    if softcap > 0.0:
        logits = logits * torch.tanh(logits / softcap)  # BUG: logits * tanh(.) instead of softcap * tanh(.)
    bias = _alibi(alibi_slopes, b, hq, sq, sk, q.dtype, q.device)
    if bias is not None:
        logits = logits + bias
    out = _masked_softmax_pv(logits, _visible(sq, sk, causal, window_size, q.device), vh)
    return out.transpose(1, 2).contiguous().to(q.dtype)


# -------------------------------------------------------------------------------------------------------
# TransformerEngine unfused path: additive bias folded in before the cap (NVIDIA/TransformerEngine#3391)
def flash_unfused_bias_then_cap(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, hq, _ = q.shape
    sk = k.shape[1]
    qh, kh, vh = _bhsd(q, k, v)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    bias = _alibi(alibi_slopes, b, hq, sq, sk, q.dtype, q.device)
    if bias is not None:
        s = s + bias
    if softcap > 0.0:
        s = softcap * torch.tanh(s / softcap)  # BUG: ALiBi bias is capped too (cap(s + bias), not cap(s) + bias)
    out = _masked_softmax_pv(s, _visible(sq, sk, causal, window_size, q.device), vh)
    return out.transpose(1, 2).contiguous().to(q.dtype)


# -------------------------------------------------------------------------------------------------------
# vLLM MPT + GQA: ALiBi bias laid out per kv head (vllm-project/vllm#1938)
def flash_alibi_grouped(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                        softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, num_heads, _ = q.shape
    sk, num_kv_heads = k.shape[1], k.shape[2]
    num_queries_per_kv = num_heads // num_kv_heads
    qh, kh, vh = _bhsd(q, k, v)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    if softcap > 0.0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(q.dtype)
        if slopes.dim() == 1:
            slopes = slopes.view(1, num_heads).expand(b, num_heads)
        head_idx = torch.arange(num_heads, device=q.device) // num_queries_per_kv
        slopes = slopes[:, head_idx]  # BUG: slope of kv head h // G used for query head h
        i = torch.arange(sq, device=q.device).view(-1, 1) + (sk - sq)
        j = torch.arange(sk, device=q.device).view(1, -1)
        s = s - slopes.view(b, num_heads, 1, 1) * (i - j).abs().to(q.dtype)
    out = _masked_softmax_pv(s, _visible(sq, sk, causal, window_size, q.device), vh)
    return out.transpose(1, 2).contiguous().to(q.dtype)


# -------------------------------------------------------------------------------------------------------
# rten MultiHeadAttention style: past length computed as an unsigned-safe difference (robertknight/rten#1323)
def flash_past_len(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                   softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, hq, _ = q.shape
    sk = k.shape[1]
    past_len = max(sk - sq, 0)  # BUG: clamped at 0, so Sq > Sk is aligned top-left instead of bottom-right
    qh, kh, vh = _bhsd(q, k, v)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    if softcap > 0.0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, b, hq, sq, sk, q.dtype, q.device)
    keep = _visible(sq, sk, causal, window_size, q.device, offset=past_len)
    return _masked_softmax_pv(s, keep, vh).transpose(1, 2).contiguous().to(q.dtype)


# -------------------------------------------------------------------------------------------------------
# flashinfer cascade style: split-KV states merged pairwise with merge_state (flashinfer-ai/flashinfer#4051)
def _merge_state(v_a, s_a, v_b, s_b):
    s_max = torch.maximum(s_a, s_b)
    w_a = torch.exp(s_a - s_max)  # BUG: -inf - -inf = NaN when both states are empty
    w_b = torch.exp(s_b - s_max)
    v = (w_a * v_a + w_b * v_b) / (w_a + w_b)
    return v, s_max + torch.log(w_a + w_b)


def flash_cascade_merge(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                        softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    chunk = 32
    b, sq, hq, _ = q.shape
    sk = k.shape[1]
    qh, kh, vh = _bhsd(q, k, v)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    if softcap > 0.0:
        s = softcap * torch.tanh(s / softcap)
    bias = _alibi(alibi_slopes, b, hq, sq, sk, q.dtype, q.device)
    if bias is not None:
        s = s + bias
    s = s.masked_fill(~_visible(sq, sk, causal, window_size, q.device), float("-inf"))
    state_v, state_s = None, None
    for c0 in range(0, sk, chunk):
        sc = s[..., c0:c0 + chunk]
        m = sc.amax(dim=-1, keepdim=True)
        m_safe = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
        p = torch.exp(sc - m_safe)
        z = p.sum(dim=-1, keepdim=True)
        part_v = torch.matmul(p, vh[..., c0:c0 + chunk, :]) / torch.where(z == 0, torch.ones_like(z), z)
        part_s = torch.log(z) + m_safe
        if state_v is None:
            state_v, state_s = part_v, part_s
        else:
            state_v, state_s = _merge_state(state_v, state_s, part_v, part_s)
    return state_v.transpose(1, 2).contiguous().to(q.dtype)


# -------------------------------------------------------------------------------------------------------
# sglang extend-attention style: fully masked KV tiles skipped for sliding windows (sgl-project/sglang#39769)
def flash_window_tile_skip(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    BLOCK_M, BLOCK_N = 16, 32
    b, sq, hq, _ = q.shape
    sk = k.shape[1]
    off = sk - sq
    left, right = window_size
    if causal:
        right = 0
    qh, kh, vh = _bhsd(q, k, v)
    sm = _sm_scale(q, softmax_scale)
    keep_all = _visible(sq, sk, causal, window_size, q.device)
    bias_all = _alibi(alibi_slopes, b, hq, sq, sk, q.dtype, q.device)
    out = torch.zeros(b, hq, sq, vh.shape[-1], dtype=q.dtype, device=q.device)
    for m0 in range(0, sq, BLOCK_M):
        m1 = min(m0 + BLOCK_M, sq)
        start_n, end_n = 0, sk
        if left >= 0:
            start_n = max((m1 - 1) + off - left, 0) // BLOCK_N * BLOCK_N  # BUG: uses the block's last row
        if right >= 0:
            end_n = min(max((m1 - 1) + off + right + 1, 0), sk)
        acc = torch.zeros(b, hq, m1 - m0, vh.shape[-1], dtype=q.dtype, device=q.device)
        m_i = torch.full((b, hq, m1 - m0, 1), float("-inf"), dtype=q.dtype, device=q.device)
        l_i = torch.zeros(b, hq, m1 - m0, 1, dtype=q.dtype, device=q.device)
        for n0 in range(start_n, end_n, BLOCK_N):
            n1 = min(n0 + BLOCK_N, sk)
            qk = torch.matmul(qh[:, :, m0:m1], kh[:, :, n0:n1].transpose(-2, -1)) * sm
            if softcap > 0.0:
                qk = softcap * torch.tanh(qk / softcap)
            if bias_all is not None:
                qk = qk + bias_all[:, :, m0:m1, n0:n1]
            qk = qk.masked_fill(~keep_all[m0:m1, n0:n1], float("-inf"))
            m_new = torch.maximum(m_i, qk.amax(dim=-1, keepdim=True))
            m_ref = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
            alpha = torch.exp(m_i - m_ref)
            p = torch.exp(qk - m_ref)
            l_i = alpha * l_i + p.sum(dim=-1, keepdim=True)
            acc = alpha * acc + torch.matmul(p, vh[:, :, n0:n1])
            m_i = m_new
        out[:, :, m0:m1] = acc / torch.where(l_i == 0, torch.ones_like(l_i), l_i)
    return out.transpose(1, 2).contiguous()


# -------------------------------------------------------------------------------------------------------
# TVM TIR attention before fp32 accumulation: Q K^T taken on fp16 operands (apache/tvm#16667)
def flash_half_qk(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                  softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, hq, _ = q.shape
    sk = k.shape[1]
    qh, kh, vh = _bhsd(q, k, v)
    q16 = qh.to(torch.float16).to(q.dtype)  # BUG: Q and K rounded to fp16 before the Q K^T product
    k16 = kh.to(torch.float16).to(q.dtype)
    s = torch.matmul(q16, k16.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    if softcap > 0.0:
        s = softcap * torch.tanh(s / softcap)
    bias = _alibi(alibi_slopes, b, hq, sq, sk, q.dtype, q.device)
    if bias is not None:
        s = s + bias
    out = _masked_softmax_pv(s, _visible(sq, sk, causal, window_size, q.device), vh)
    return out.transpose(1, 2).contiguous().to(q.dtype)


# -------------------------------------------------------------------------------------------------------
# correct: dense per-group computation without repeating kv heads
def flash_grouped_dense(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                        softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    b, sq, hq, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    g = hq // hk
    qg = q.permute(0, 2, 1, 3).reshape(b, hk, g, sq, d)
    kg = k.permute(0, 2, 1, 3).unsqueeze(2)
    vg = v.permute(0, 2, 1, 3).unsqueeze(2)
    s = torch.matmul(qg, kg.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    if softcap > 0.0:
        s = softcap * torch.tanh(s / softcap)
    bias = _alibi(alibi_slopes, b, hq, sq, sk, q.dtype, q.device)
    if bias is not None:
        s = s + bias.reshape(b, hk, g, sq, sk)
    out = _masked_softmax_pv(s, _visible(sq, sk, causal, window_size, q.device), vg)
    return out.reshape(b, hq, sq, v.shape[-1]).transpose(1, 2).contiguous().to(q.dtype)


# -------------------------------------------------------------------------------------------------------
# correct: tiled online softmax that skips key tiles outside the causal/window band of each query block
def flash_tiled_banded(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                       softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    BM, BN = 24, 40
    b, sq, hq, _ = q.shape
    sk = k.shape[1]
    off = sk - sq
    left, right = window_size
    if causal:
        right = 0
    qh, kh, vh = _bhsd(q, k, v)
    sm = _sm_scale(q, softmax_scale)
    keep_all = _visible(sq, sk, causal, window_size, q.device)
    bias_all = _alibi(alibi_slopes, b, hq, sq, sk, q.dtype, q.device)
    out = torch.zeros(b, hq, sq, vh.shape[-1], dtype=q.dtype, device=q.device)
    for m0 in range(0, sq, BM):
        m1 = min(m0 + BM, sq)
        lo = 0 if left < 0 else max(m0 + off - left, 0) // BN * BN
        hi = sk if right < 0 else min(max(m1 - 1 + off + right + 1, 0), sk)
        m_i = torch.full((b, hq, m1 - m0, 1), float("-inf"), dtype=q.dtype, device=q.device)
        l_i = torch.zeros(b, hq, m1 - m0, 1, dtype=q.dtype, device=q.device)
        acc = torch.zeros(b, hq, m1 - m0, vh.shape[-1], dtype=q.dtype, device=q.device)
        for n0 in range(lo, hi, BN):
            n1 = min(n0 + BN, sk)
            s = torch.matmul(qh[:, :, m0:m1], kh[:, :, n0:n1].transpose(-2, -1)) * sm
            if softcap > 0.0:
                s = softcap * torch.tanh(s / softcap)
            if bias_all is not None:
                s = s + bias_all[:, :, m0:m1, n0:n1]
            s = s.masked_fill(~keep_all[m0:m1, n0:n1], float("-inf"))
            m_new = torch.maximum(m_i, s.amax(dim=-1, keepdim=True))
            m_ref = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
            alpha = torch.exp(m_i - m_ref)
            p = torch.exp(s - m_ref)
            l_i = alpha * l_i + p.sum(dim=-1, keepdim=True)
            acc = alpha * acc + torch.matmul(p, vh[:, :, n0:n1])
            m_i = m_new
        out[:, :, m0:m1] = acc / torch.where(l_i == 0, torch.ones_like(l_i), l_i)
    return out.transpose(1, 2).contiguous()


# -------------------------------------------------------------------------------------------------------
# correct: split-KV (splits of 50 keys) merged with an empty-state-safe log-sum-exp combine
def flash_split_kv(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                   softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    split = 50
    b, sq, hq, _ = q.shape
    sk = k.shape[1]
    qh, kh, vh = _bhsd(q, k, v)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * _sm_scale(q, softmax_scale)
    if softcap > 0.0:
        s = softcap * torch.tanh(s / softcap)
    bias = _alibi(alibi_slopes, b, hq, sq, sk, q.dtype, q.device)
    if bias is not None:
        s = s + bias
    s = s.masked_fill(~_visible(sq, sk, causal, window_size, q.device), float("-inf"))
    outs, lses = [], []
    for c0 in range(0, sk, split):
        sc = s[..., c0:c0 + split]
        m = sc.amax(dim=-1, keepdim=True)
        m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
        p = torch.exp(sc - m)
        z = p.sum(dim=-1, keepdim=True)
        outs.append(torch.matmul(p, vh[..., c0:c0 + split, :]) / torch.where(z == 0, torch.ones_like(z), z))
        lses.append(torch.log(z) + m)
    lse = torch.stack(lses)
    top = lse.amax(dim=0)
    top = torch.where(torch.isneginf(top), torch.zeros_like(top), top)
    w = torch.exp(lse - top)
    den = w.sum(dim=0)
    num = (w * torch.stack(outs)).sum(dim=0)
    out = num / torch.where(den == 0, torch.ones_like(den), den)
    return out.transpose(1, 2).contiguous().to(q.dtype)


def _entry(name, fn, bug=None, parameter=None, source=None, kind="issues", dtype="float64",
           features=("causal", "window", "softcap", "alibi", "gqa", "dv-ne-d")):
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
        "features": list(features),
    }


CATALOG = [
    _entry("flash-causal-dispatch-drops-left", "flash_causal_dispatch", "causal-path-drops-left-window",
           "causal=True routed to the plain causal path: window_size[0] ignored",
           "Dao-AILab/flash-attention#1133"),
    _entry("flash-tvm-window-drops-causal", "flash_window_params", "window-disables-causal",
           "is_causal recomputed from the window, so causal with a window keeps the window's right bound",
           "tlc-pack/libflash_attn#11", "pull"),
    _entry("flash-ort-softcap-not-inverted", "flash_softcap_helper", "softcap-multiplied-inside-tanh",
           "softcap computed as tanh(s * softcap) * softcap instead of tanh(s / softcap) * softcap",
           "microsoft/onnxruntime#21683", "pull"),
    _entry("flash-unsloth-logits-times-tanh", "flash_softcap_logits_times_tanh", "softcap-outer-factor-is-logit",
           "softcap computed as s * tanh(s / softcap) instead of softcap * tanh(s / softcap)",
           "unslothai/unsloth-zoo#593", "pull"),
    _entry("flash-te-alibi-inside-cap", "flash_unfused_bias_then_cap", "alibi-added-before-softcap",
           "ALiBi bias added before the tanh cap (cap(s + bias) instead of cap(s) + bias)",
           "NVIDIA/TransformerEngine#3391", "pull"),
    _entry("flash-vllm-alibi-kv-head", "flash_alibi_grouped", "alibi-slope-per-kv-head",
           "ALiBi slope taken from index h // (Hq // Hkv) instead of query head h",
           "vllm-project/vllm#1938", "pull"),
    _entry("flash-rten-past-len-clamped", "flash_past_len", "bottom-right-offset-clamped-at-zero",
           "bottom-right offset Sk - Sq clamped at 0 (Sq > Sk aligned top-left)",
           "robertknight/rten#1323", "pull"),
    _entry("flash-flashinfer-merge-empty", "flash_cascade_merge", "merge-empty-states-nan",
           "merging two empty split states (lse -inf) evaluates -inf - -inf = NaN",
           "flashinfer-ai/flashinfer#4051"),
    _entry("flash-sglang-window-tile-skip", "flash_window_tile_skip", "window-tile-skip-uses-last-row",
           "first key tile of a query block computed from its last row, dropping keys of earlier rows",
           "sgl-project/sglang#39769", "pull"),
    _entry("flash-tvm-fp16-qk", "flash_half_qk", "qk-operands-rounded-to-fp16",
           "Q and K rounded to float16 before the Q K^T product",
           "apache/tvm#16667", "pull", dtype="float32"),
    _entry("flash-grouped-dense", "flash_grouped_dense"),
    _entry("flash-tiled-banded", "flash_tiled_banded"),
    _entry("flash-split-kv", "flash_split_kv"),
]
