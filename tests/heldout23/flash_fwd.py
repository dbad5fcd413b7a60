"""Held-out attention kernels, API ``flash-attn``: the semantics of ``flash_attn_func(q, k, v, dropout_p=0.0,
softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
return_attn_probs=False)`` on torch tensors q (B, Sq, Hq, D), k (B, Sk, Hkv, D), v (B, Sk, Hkv, Dv). Bottom-
right alignment (off = Sk - Sq), softcap on the scaled scores before masking, ALiBi -slope * |i + off - j|
after the cap, query head h reads kv head h // (Hq // Hkv), rows with no visible key are zeros. Six kernels
carry one mistake each (marked by a BUG comment on the mistake line), two are correct. See README.md.
"""
import math

import torch


def _visible(sq, sk, causal, window_size):
    """Bool (Sq, Sk): key j visible from query i (bottom-right aligned causal / window)."""
    left, right = window_size
    if causal:
        right = 0
    i = torch.arange(sq).unsqueeze(1) + (sk - sq)
    j = torch.arange(sk).unsqueeze(0)
    vis = torch.ones(sq, sk, dtype=torch.bool)
    if left >= 0:
        vis &= j >= i - left
    if right >= 0:
        vis &= j <= i + right
    return vis


def _alibi(alibi_slopes, b, hq, sq, sk, dtype):
    """ALiBi bias (B, Hq, Sq, Sk) or None."""
    if alibi_slopes is None:
        return None
    sl = alibi_slopes.to(dtype)
    if sl.dim() == 1:
        sl = sl.unsqueeze(0).expand(b, hq)
    dist = ((torch.arange(sq).unsqueeze(1) + (sk - sq)) - torch.arange(sk).unsqueeze(0)).abs().to(dtype)
    return -sl[:, :, None, None] * dist


def _softmax_rows(s):
    mx = s.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isinf(mx) & (mx < 0), torch.zeros_like(mx), mx)
    e = torch.exp(s - mx)
    z = e.sum(dim=-1, keepdim=True)
    return torch.where(z > 0, e / torch.where(z > 0, z, torch.ones_like(z)), torch.zeros_like(e))


# --- kernel: flash_strided_row_offsets ---
def _sro_rows(t, bi, hi):
    sb, sm, sh = t.stride(0), t.stride(1), t.stride(2)
    base = (bi * sb + hi * sh) // sm * sm  # BUG: head offset converted to a row index (floors to 0 in BSHD)
    return torch.as_strided(t, (t.shape[1], t.shape[3]), (sm, 1), t.storage_offset() + base)


def flash_strided_row_offsets(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Per-(batch, head) program reading its rows through the tensor strides."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    b, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    sc = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    vis = _visible(sq, sk, causal, window_size)
    bias = _alibi(alibi_slopes, b, hq, sq, sk, q.dtype)
    out = torch.zeros(b, sq, hq, dv, dtype=q.dtype)
    for bi in range(b):
        for h in range(hq):
            kh = h // (hq // hkv)
            s = torch.matmul(_sro_rows(q, bi, h), _sro_rows(k, bi, kh).transpose(0, 1)) * sc
            if softcap > 0:
                s = softcap * torch.tanh(s / softcap)
            if bias is not None:
                s = s + bias[bi, h]
            s = s.masked_fill(~vis, float('-inf'))
            out[bi, :, h] = torch.matmul(_softmax_rows(s), _sro_rows(v, bi, kh))
    return out


# --- kernel: flash_tile_scale_loop ---
def flash_tile_scale_loop(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                          softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Tiles of block_M = 32 queries by block_N = 64 keys; the scale is applied to each score tile."""
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    g = hq // hkv
    sc = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qh = q.permute(0, 2, 1, 3)
    kh = k.permute(0, 2, 1, 3).repeat_interleave(g, dim=1)
    vh = v.permute(0, 2, 1, 3).repeat_interleave(g, dim=1)
    s_full = torch.empty(b, hq, sq, sk, dtype=q.dtype)
    for i0 in range(0, sq, 32):
        for j0 in range(0, sk, 64):
            acc_s = torch.matmul(qh[:, :, i0:i0 + 32], kh[:, :, j0:j0 + 64].transpose(-2, -1))
            acc_s[..., :d] *= sc  # BUG: scale loop runs over (block_M, dim) instead of (block_M, block_N)
            s_full[:, :, i0:i0 + 32, j0:j0 + 64] = acc_s
    if softcap > 0:
        s_full = softcap * torch.tanh(s_full / softcap)
    bias = _alibi(alibi_slopes, b, hq, sq, sk, q.dtype)
    if bias is not None:
        s_full = s_full + bias
    s_full = s_full.masked_fill(~_visible(sq, sk, causal, window_size), float('-inf'))
    return torch.matmul(_softmax_rows(s_full), vh).permute(0, 2, 1, 3)


# --- kernel: flash_dispatch_causal_fast_path ---
def flash_dispatch_causal_fast_path(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                                    window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                                    return_attn_probs=False):
    """Dispatcher: plain causal attention when no softcap/ALiBi is asked for, a general path otherwise."""
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    g = hq // hkv
    sc = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qh = q.permute(0, 2, 1, 3)
    kh = k.permute(0, 2, 1, 3).repeat_interleave(g, dim=1)
    vh = v.permute(0, 2, 1, 3).repeat_interleave(g, dim=1)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * sc
    if causal and softcap == 0 and alibi_slopes is None:
        vis = _visible(sq, sk, True, (-1, -1))  # BUG: window_size never reaches the causal fast path
    else:
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        bias = _alibi(alibi_slopes, b, hq, sq, sk, q.dtype)
        if bias is not None:
            s = s + bias
        vis = _visible(sq, sk, causal, window_size)
    s = s.masked_fill(~vis, float('-inf'))
    return torch.matmul(_softmax_rows(s), vh).permute(0, 2, 1, 3)


# --- kernel: flash_gqa_decode_folded ---
def flash_gqa_decode_folded(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Decode (Sq = 1) with GQA: the query heads of one kv head are folded into one program."""
    b, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    g = hq // hkv
    sc = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    vis = _visible(sq, sk, causal, window_size)
    bias = _alibi(alibi_slopes, b, hq, sq, sk, q.dtype)
    if sq == 1 and g > 1:
        k_rows = k.permute(0, 2, 1, 3).reshape(b * hkv, sk, d)
        v_rows = v.permute(0, 2, 1, 3).reshape(b * hkv, sk, dv)
        out = torch.zeros(b, 1, hq, dv, dtype=q.dtype)
        for bi in range(b):
            for kvh in range(hkv):
                kv_idx = kvh  # BUG: batch term missing from the kv index (b * Hkv + kvh)
                qf = q[bi, 0, kvh * g:(kvh + 1) * g]
                s = torch.matmul(qf, k_rows[kv_idx].transpose(0, 1)) * sc
                if softcap > 0:
                    s = softcap * torch.tanh(s / softcap)
                if bias is not None:
                    s = s + bias[bi, kvh * g:(kvh + 1) * g, 0]
                s = s.masked_fill(~vis, float('-inf'))
                out[bi, 0, kvh * g:(kvh + 1) * g] = torch.matmul(_softmax_rows(s), v_rows[kv_idx])
        return out
    qh = q.permute(0, 2, 1, 3)
    kh = k.permute(0, 2, 1, 3).repeat_interleave(g, dim=1)
    vh = v.permute(0, 2, 1, 3).repeat_interleave(g, dim=1)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * sc
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if bias is not None:
        s = s + bias
    s = s.masked_fill(~vis, float('-inf'))
    return torch.matmul(_softmax_rows(s), vh).permute(0, 2, 1, 3)


# --- kernel: flash_thread_per_head_dim ---
def flash_thread_per_head_dim(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """One thread per head-dim element (threadIdx.x) for the Q.K dot products, block rows = queries."""
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    g = hq // hkv
    sc = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    block_x = min(d, 32)  # BUG: launch width capped at one warp while threadIdx.x indexes the head dim
    qh = q.permute(0, 2, 1, 3)[..., :block_x]
    kh = k.permute(0, 2, 1, 3).repeat_interleave(g, dim=1)[..., :block_x]
    vh = v.permute(0, 2, 1, 3).repeat_interleave(g, dim=1)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * sc
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    bias = _alibi(alibi_slopes, b, hq, sq, sk, q.dtype)
    if bias is not None:
        s = s + bias
    s = s.masked_fill(~_visible(sq, sk, causal, window_size), float('-inf'))
    return torch.matmul(_softmax_rows(s), vh).permute(0, 2, 1, 3)


# --- kernel: flash_merge_heads_reshape ---
def flash_merge_heads_reshape(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Attention computed head-major (B, H, S, D), then the heads are merged back to (B, S, H, D)."""
    b, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    g = hq // hkv
    sc = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qh = q.permute(0, 2, 1, 3)
    kh = k.permute(0, 2, 1, 3).repeat_interleave(g, dim=1)
    vh = v.permute(0, 2, 1, 3).repeat_interleave(g, dim=1)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * sc
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    bias = _alibi(alibi_slopes, b, hq, sq, sk, q.dtype)
    if bias is not None:
        s = s + bias
    s = s.masked_fill(~_visible(sq, sk, causal, window_size), float('-inf'))
    o = torch.matmul(_softmax_rows(s), vh)
    return o.reshape(b, sq, hq, dv)  # BUG: missing permute(0, 2, 1, 3) before the reshape


# --- kernel: flash_kv_blocks_online ---
def flash_kv_blocks_online(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Online softmax over key blocks of 32 with the band and ALiBi built per block, unexpanded K/V."""
    b, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    g = hq // hkv
    sc = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qg = q.permute(0, 2, 1, 3).reshape(b, hkv, g, sq, d)
    kk = k.permute(0, 2, 1, 3).unsqueeze(2)
    vv = v.permute(0, 2, 1, 3).unsqueeze(2)
    vis = _visible(sq, sk, causal, window_size)
    bias = _alibi(alibi_slopes, b, hq, sq, sk, q.dtype)
    if bias is not None:
        bias = bias.reshape(b, hkv, g, sq, sk)
    m = torch.full((b, hkv, g, sq, 1), float('-inf'), dtype=q.dtype)
    l_run = torch.zeros_like(m)
    acc = torch.zeros(b, hkv, g, sq, dv, dtype=q.dtype)
    for j in range(0, sk, 32):
        s = torch.matmul(qg, kk[..., j:j + 32, :].transpose(-2, -1)) * sc
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if bias is not None:
            s = s + bias[..., j:j + 32]
        s = s.masked_fill(~vis[:, j:j + 32], float('-inf'))
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
        m_ref = torch.where(torch.isinf(m_new) & (m_new < 0), torch.zeros_like(m_new), m_new)
        corr = torch.exp(m - m_ref)
        p = torch.exp(s - m_ref)
        l_run = corr * l_run + p.sum(dim=-1, keepdim=True)
        acc = corr * acc + torch.matmul(p, vv[..., j:j + 32, :])
        m = m_new
    o = torch.where(l_run > 0, acc / torch.where(l_run > 0, l_run, torch.ones_like(l_run)), torch.zeros_like(acc))
    return o.reshape(b, hq, sq, dv).permute(0, 2, 1, 3)


# --- kernel: flash_split_kv_lse_combine ---
def flash_split_kv_lse_combine(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Split-KV: three key splits computed with einsum, combined through their log-sum-exp."""
    b, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    g = hq // hkv
    sc = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qg = q.reshape(b, sq, hkv, g, d)
    vis = _visible(sq, sk, causal, window_size)
    bias = _alibi(alibi_slopes, b, hq, sq, sk, q.dtype)
    if bias is not None:
        bias = bias.reshape(b, hkv, g, sq, sk)
    n = -(-sk // 3)
    outs, lses = [], []
    for j in range(0, sk, n):
        s = torch.einsum('bqhgd,bkhd->bhgqk', qg, k[:, j:j + n]) * sc
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if bias is not None:
            s = s + bias[..., j:j + n]
        s = s.masked_fill(~vis[:, j:j + n], float('-inf'))
        lses.append(torch.logsumexp(s, dim=-1, keepdim=True))
        outs.append(torch.einsum('bhgqk,bkhd->bhgqd', _softmax_rows(s), v[:, j:j + n]))
    lse = torch.logsumexp(torch.stack(lses), dim=0)
    ref = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
    o = torch.zeros_like(outs[0])
    for part, lp in zip(outs, lses):
        o = o + torch.where(torch.isinf(lp), torch.zeros_like(lp), torch.exp(lp - ref)) * part
    return o.reshape(b, hq, sq, dv).permute(0, 2, 1, 3)


CATALOG = [
    {
        'name': 'flash-attorch-head-offset-floored', 'api': 'flash-attn', 'fn': 'flash_strided_row_offsets',
        'correct': False, 'bug': 'head-offset-floored-to-row',
        'parameter': ('each (batch, head) program converts its element offset b * stride_b + h * stride_h to a '
                      'whole row index by dividing by stride_m; in the (B, S, H, D) layout stride_h = D < '
                      "stride_m = H * D, so the head term floors to 0 and every query head reads head 0's q "
                      "(every kv head kv head 0's k and v). Triggers: Hq > 1."),
        'source': 'BobMcDear/attorch#14',
        'report': 'https://github.com/BobMcDear/attorch/issues/14',
        'dtype': 'float64', 'features': ['causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d'],
    },
    {
        'name': 'flash-tilelang-scale-loop-bound', 'api': 'flash-attn', 'fn': 'flash_tile_scale_loop',
        'correct': False, 'bug': 'scale-loop-head-dim-bound',
        'parameter': ('the softmax scale is applied to each (block_M, block_N = 64) score tile over (block_M, '
                      'dim) instead of (block_M, block_N): key columns at tile offset >= D stay unscaled. '
                      'Triggers: D < 64 with a key tile wider than D (more than D keys in a tile).'),
        'source': 'tile-ai/tilelang#2867',
        'report': 'https://github.com/tile-ai/tilelang/issues/2867',
        'dtype': 'float64', 'features': ['causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d'],
    },
    {
        'name': 'flash-unsloth-window-causal-path', 'api': 'flash-attn', 'fn': 'flash_dispatch_causal_fast_path',
        'correct': False, 'bug': 'window-dropped-on-causal-path',
        'parameter': ("the dispatcher's plain-causal fast path (taken when causal and no softcap or ALiBi) "
                      'never receives window_size, so the sliding window is ignored there; the general path '
                      'applies it. Triggers: causal=True with a window left >= 0 that hides a key, no softcap '
                      'and no ALiBi.'),
        'source': 'unslothai/unsloth#8253',
        'report': 'https://github.com/unslothai/unsloth/pull/8253',
        'dtype': 'float64', 'features': ['causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d'],
    },
    {
        'name': 'flash-mlx-gqa-decode-batch-offset', 'api': 'flash-attn', 'fn': 'flash_gqa_decode_folded',
        'correct': False, 'bug': 'kv-batch-offset-missing',
        'parameter': ('the decode path that folds the query heads of one kv head indexes the (B * Hkv, Sk, D) '
                      "K/V rows with kvh instead of b * Hkv + kvh: every batch reads batch 0's keys and values. "
                      'Triggers: Sq == 1 with Hq > Hkv and B > 1.'),
        'source': 'ml-explore/mlx#4431',
        'report': 'https://github.com/ml-explore/mlx/pull/4431',
        'dtype': 'float64', 'features': ['causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d'],
    },
    {
        'name': 'flash-mniml-head-dim-warp-cap', 'api': 'flash-attn', 'fn': 'flash_thread_per_head_dim',
        'correct': False, 'bug': 'head-dim-truncated-to-warp',
        'parameter': ('the launch width is min(D, 32) while threadIdx.x indexes the head dim, so only the first '
                      '32 channels of q and k enter the dot products (the output channels are all computed). '
                      'Triggers: D > 32.'),
        'source': 'mni-ml/framework#38',
        'report': 'https://github.com/mni-ml/framework/pull/38',
        'dtype': 'float64', 'features': ['causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d'],
    },
    {
        'name': 'flash-ajhalthor-merge-heads-no-permute', 'api': 'flash-attn', 'fn': 'flash_merge_heads_reshape',
        'correct': False, 'bug': 'heads-merged-without-permute',
        'parameter': ('the (B, H, Sq, Dv) result is reshaped to (B, Sq, H, Dv) without permute(0, 2, 1, 3): '
                      'positions and heads are interleaved in the output. Triggers: Hq > 1 and Sq > 1.'),
        'source': 'ajhalthor/Transformer-Neural-Network#4',
        'report': 'https://github.com/ajhalthor/Transformer-Neural-Network/pull/4',
        'dtype': 'float64', 'features': ['causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d'],
    },
    {
        'name': 'flash-kv-blocks-online', 'api': 'flash-attn', 'fn': 'flash_kv_blocks_online',
        'correct': True, 'bug': None,
        'parameter': None,
        'source': None,
        'report': None,
        'dtype': 'float64', 'features': ['causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d'],
    },
    {
        'name': 'flash-split-kv-lse-combine', 'api': 'flash-attn', 'fn': 'flash_split_kv_lse_combine',
        'correct': True, 'bug': None,
        'parameter': None,
        'source': None,
        'report': None,
        'dtype': 'float64', 'features': ['causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d'],
    },
]
