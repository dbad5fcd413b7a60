"""heldout13 forward kernels, API `flash-attn`: flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None,
causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False).

q (B, Sq, Hq, D), k (B, Sk, Hkv, D), v (B, Sk, Hkv, Dv) torch tensors; bottom-right alignment off = Sk - Sq:
causal keeps j <= i + off; window (left, right) keeps i + off - left <= j <= i + off + right (-1 unbounded; causal
sets right = 0); softcap > 0: s = softcap * tanh(s / softcap) on the scaled scores before masking; ALiBi adds
-slope * |i + off - j| after the cap (slopes (Hq,) or (B, Hq)); query head h reads kv head h // (Hq // Hkv); rows
with no visible key are zeros. Returns (B, Sq, Hq, Dv) in the input dtype.
"""
import math

import torch


def _safe_softmax_pv(s, v):
    mx = s.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    e = torch.exp(s - mx)
    den = e.sum(dim=-1, keepdim=True)
    p = torch.where(den > 0, e / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(e))
    return p @ v


def _alibi_rows(alibi_slopes, b, h):
    sl = alibi_slopes.to(torch.float64)
    if sl.dim() == 1:
        sl = sl[None].expand(b, h)
    return sl


# --- kernel: flash_sliding_window_length ---
def flash_sliding_window_length(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """SlidingWindowAttention: window_size stored as a length (left + 1) and converted back for the kernel."""
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    left, right = window_size
    if left >= 0:
        sliding_size = left + 1
        left = sliding_size - 1 - 1  # BUG: the "minus one" is applied twice (window one key short; 0 becomes -1)
    if causal:
        right = 0
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(hq // hkv, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(hq // hkv, dim=1)
    s = qh @ kh.transpose(-1, -2) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    row = torch.arange(sq)[:, None] + (sk - sq)
    col = torch.arange(sk)[None, :]
    if alibi_slopes is not None:
        sl = _alibi_rows(alibi_slopes, b, hq).to(s.dtype)
        s = s - sl[:, :, None, None] * (row - col).abs().to(s.dtype)
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if left >= 0:
        keep &= col >= row - left
    if right >= 0:
        keep &= col <= row + right
    s = s.masked_fill(~keep, float('-inf'))
    return _safe_softmax_pv(s, vh).transpose(1, 2)


# --- kernel: flash_extend_swa_one_extra ---
def flash_extend_swa_one_extra(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Extend-attention style: per query block of 32, a mask from q positions (prefix + i) and kv positions."""
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    sm_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    kv_group_num = hq // hkv
    window_left, window_right = window_size
    if causal:
        window_right = 0
    prefix = sk - sq
    out = torch.zeros(b, sq, hq, v.shape[-1], dtype=q.dtype)
    offs_n = torch.arange(sk)
    for cur_head in range(hq):
        cur_kv_head = cur_head // kv_group_num
        kk = k[:, :, cur_kv_head]
        vv = v[:, :, cur_kv_head]
        for m0 in range(0, sq, 32):
            offs_m = torch.arange(m0, min(m0 + 32, sq))
            q_pos = prefix + offs_m
            qk = q[:, m0:m0 + 32, cur_head] @ kk.transpose(-1, -2) * sm_scale
            if softcap > 0:
                qk = softcap * torch.tanh(qk / softcap)
            if alibi_slopes is not None:
                slope = _alibi_rows(alibi_slopes, b, hq)[:, cur_head].to(qk.dtype)
                qk = qk - slope[:, None, None] * (q_pos[:, None] - offs_n[None, :]).abs().to(qk.dtype)
            mask = torch.ones(len(offs_m), sk, dtype=torch.bool)
            if window_left >= 0:
                mask &= offs_n[None, :] >= q_pos[:, None] - window_left - 1  # BUG: one extra kv token
            if window_right >= 0:
                mask &= offs_n[None, :] <= q_pos[:, None] + window_right
            qk = qk.masked_fill(~mask, float('-inf'))
            out[:, m0:m0 + 32, cur_head] = _safe_softmax_pv(qk, vv)
    return out


# --- kernel: flash_causal_larger_m ---
def flash_causal_larger_m(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                          softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Piecewise-attention style: the diagonal offset between query and key positions computed up front."""
    b, m, hq, d = q.shape
    n, hkv = k.shape[1], k.shape[2]
    sm_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    larger_m = m > n
    p_seqlen = 0 if larger_m else n - m  # BUG: top-left when m > n
    qh = q.permute(0, 2, 1, 3)
    kh = k.permute(0, 2, 1, 3).repeat_interleave(hq // hkv, dim=1)
    vh = v.permute(0, 2, 1, 3).repeat_interleave(hq // hkv, dim=1)
    s = torch.matmul(qh, kh.transpose(-1, -2)) * sm_scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    offs_m = torch.arange(m)[:, None] + p_seqlen
    offs_n = torch.arange(n)[None, :]
    if alibi_slopes is not None:
        sl = _alibi_rows(alibi_slopes, b, hq).to(s.dtype)
        s = s - sl[:, :, None, None] * (offs_m - offs_n).abs().to(s.dtype)
    left, right = window_size
    if causal:
        right = 0
    keep = torch.ones(m, n, dtype=torch.bool)
    if left >= 0:
        keep &= offs_n >= offs_m - left
    if right >= 0:
        keep &= offs_n <= offs_m + right
    s = s.masked_fill(~keep, float('-inf'))
    return _safe_softmax_pv(s, vh).permute(0, 2, 1, 3)


# --- kernel: flash_alibi_prebuilt_bias ---
def _build_alibi_bias(n_heads, seq_len, slopes):
    """Full (non-causal) ALiBi bias -slope * |i - j| over (seq_len, seq_len), built once for max_seq_len."""
    pos = torch.arange(seq_len, dtype=torch.float64)
    rel = -(pos[None, :] - pos[:, None]).abs()
    return slopes[:, :, None, None] * rel[None, None]


def flash_alibi_prebuilt_bias(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """MosaicGPT style: attn_bias built at max_seq_len = 256 and sliced to the current (s_q, s_k)."""
    max_seq_len = 256
    b, s_q, hq, d = q.shape
    s_k, hkv = k.shape[1], k.shape[2]
    softmax_scale = softmax_scale if softmax_scale is not None else 1 / math.sqrt(d)
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(hq // hkv, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(hq // hkv, dim=1)
    attn_weight = qh.matmul(kh.transpose(-1, -2)) * softmax_scale
    if softcap > 0:
        attn_weight = softcap * torch.tanh(attn_weight / softcap)
    if alibi_slopes is not None:
        attn_bias = _build_alibi_bias(hq, max_seq_len, _alibi_rows(alibi_slopes, b, hq))
        attn_bias = attn_bias[:, :, -s_q:, :s_k]  # BUG: should be [-s_k:]
        attn_weight = attn_weight + attn_bias.to(attn_weight.dtype)
    i = torch.arange(s_q)[:, None] + (s_k - s_q)
    j = torch.arange(s_k)[None, :]
    left, right = window_size
    if causal:
        right = 0
    keep = torch.ones(s_q, s_k, dtype=torch.bool)
    if left >= 0:
        keep &= j >= i - left
    if right >= 0:
        keep &= j <= i + right
    attn_weight = attn_weight.masked_fill(~keep, float('-inf'))
    return _safe_softmax_pv(attn_weight, vh).transpose(1, 2)


# --- kernel: flash_softcap_tanh_times_cap ---
def flash_softcap_tanh_times_cap(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                 softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Scores, softcap, mask, softmax, with the softcap written as tanh(x) * softcap."""
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    g = hq // hkv
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(g, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(g, dim=1)
    scores = torch.matmul(qh, kh.transpose(2, 3)) * scale
    if softcap > 0:
        scores = torch.tanh(scores) * softcap  # BUG: tanh(s / softcap) expected
    qpos = torch.arange(sq)[:, None] + sk - sq
    kpos = torch.arange(sk)[None, :]
    if alibi_slopes is not None:
        sl = _alibi_rows(alibi_slopes, b, hq).to(scores.dtype)
        scores = scores - sl[:, :, None, None] * (qpos - kpos).abs().to(scores.dtype)
    wl, wr = window_size
    if causal:
        wr = 0
    visible = torch.ones(sq, sk, dtype=torch.bool)
    if wl >= 0:
        visible &= kpos >= qpos - wl
    if wr >= 0:
        visible &= kpos <= qpos + wr
    scores = scores.masked_fill(~visible, float('-inf'))
    return _safe_softmax_pv(scores, vh).transpose(1, 2)


# --- kernel: flash_fallback_kv_not_repeated ---
def flash_fallback_kv_not_repeated(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                   softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """MHA fallback path: q, k, v rearranged 'b s h d -> b h s d' and multiplied directly."""
    b, sq, hq, d = q.shape
    sk = k.shape[1]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    qh = q.permute(0, 2, 1, 3)
    kh, vh = k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)  # BUG: repeat_kv missing
    s = torch.matmul(qh, kh.transpose(-1, -2)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    i = torch.arange(sq)[:, None] + (sk - sq)
    j = torch.arange(sk)[None, :]
    if alibi_slopes is not None:
        sl = _alibi_rows(alibi_slopes, b, hq).to(s.dtype)
        s = s - sl[:, :, None, None] * (i - j).abs().to(s.dtype)
    left, right = window_size
    if causal:
        right = 0
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if left >= 0:
        keep &= j >= i - left
    if right >= 0:
        keep &= j <= i + right
    s = s.masked_fill(~keep, float('-inf'))
    return _safe_softmax_pv(s, vh).permute(0, 2, 1, 3)


# --- kernel: flash_rowwise_band_online ---
def flash_rowwise_band_online(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Correct: per (batch, head), each row's visible band [lo, hi] visited in key blocks of 20, online exp."""
    b, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    left, right = window_size
    if causal:
        right = 0
    off = sk - sq
    slopes = None if alibi_slopes is None else _alibi_rows(alibi_slopes, b, hq)
    out = torch.zeros(b, sq, hq, dv, dtype=q.dtype)
    for bi in range(b):
        for h in range(hq):
            kvh = h // (hq // hkv)
            for i in range(sq):
                lo = 0 if left < 0 else max(0, i + off - left)
                hi = sk - 1 if right < 0 else min(sk - 1, i + off + right)
                if hi < lo:
                    continue
                m = torch.tensor(float('-inf'), dtype=q.dtype)
                lsum = torch.zeros((), dtype=q.dtype)
                acc = torch.zeros(dv, dtype=q.dtype)
                for j0 in range(lo, hi + 1, 20):
                    j1 = min(j0 + 20, hi + 1)
                    s = k[bi, j0:j1, kvh] @ q[bi, i, h] * scale
                    if softcap > 0:
                        s = softcap * torch.tanh(s / softcap)
                    if slopes is not None:
                        dist = (i + off - torch.arange(j0, j1)).abs().to(q.dtype)
                        s = s - slopes[bi, h].to(q.dtype) * dist
                    m_new = torch.maximum(m, s.max())
                    corr = torch.exp(m - m_new)
                    p = torch.exp(s - m_new)
                    lsum = lsum * corr + p.sum()
                    acc = acc * corr + p @ v[bi, j0:j1, kvh]
                    m = m_new
                out[bi, i, h] = acc / lsum
    return out


# --- kernel: flash_grouped_einsum_bias ---
def flash_grouped_einsum_bias(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Correct: q viewed (B, Sq, Hkv, G, D) against unexpanded K/V; one additive bias (0 / -inf and ALiBi)."""
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    g = hq // hkv
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    q5 = q.reshape(b, sq, hkv, g, d)
    s = torch.einsum('bqkgd,bskd->bkgqs', q5, k) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    rel = torch.arange(sk)[None, :] - (torch.arange(sq)[:, None] + sk - sq)
    left, right = window_size
    if causal:
        right = 0
    dead = torch.zeros(sq, sk, dtype=torch.bool)
    if left >= 0:
        dead |= rel < -left
    if right >= 0:
        dead |= rel > right
    bias = torch.zeros(b, hkv, g, sq, sk, dtype=q.dtype)
    if alibi_slopes is not None:
        sl = _alibi_rows(alibi_slopes, b, hq).to(q.dtype).reshape(b, hkv, g, 1, 1)
        bias = bias - sl * rel.abs().to(q.dtype)
    s = s + bias.masked_fill(dead, float('-inf'))
    mx = s.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    w = torch.exp(s - mx)
    tot = w.sum(dim=-1, keepdim=True)
    w = torch.where(tot > 0, w / torch.where(tot > 0, tot, torch.ones_like(tot)), torch.zeros_like(w))
    o = torch.einsum('bkgqs,bskd->bqkgd', w, v)
    return o.reshape(b, sq, hq, v.shape[-1])


_F = ['causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d']
CATALOG = [
    dict(name='flash-yoco-window-minus-one-twice', api='flash-attn', fn='flash_sliding_window_length',
         correct=False, bug='window-left-short-by-one',
         parameter='window_size is turned into a sliding length (left + 1) and back with the minus one applied '
                   'twice: the left bound becomes left - 1, so key i + off - left is hidden, and left = 0 becomes '
                   '-1 (unbounded). Triggers: window left >= 0 with key i + off - left visible for some row',
         source='microsoft/unilm#1612', report='https://github.com/microsoft/unilm/issues/1612', dtype='float64',
         features=_F),
    dict(name='flash-sglang-swa-extra-kv-token', api='flash-attn', fn='flash_extend_swa_one_extra',
         correct=False, bug='window-left-off-by-one',
         parameter='the sliding-window test is kv_pos >= q_pos - window_left - 1, so one extra key on the left '
                   '(i + off - left - 1) is attended. Triggers: window left >= 0 with a key at i + off - left - 1 '
                   'inside the other bounds',
         source='sgl-project/sglang#34273', report='https://github.com/sgl-project/sglang/pull/34273',
         dtype='float64', features=_F),
    dict(name='flash-flagattn-causal-larger-m', api='flash-attn', fn='flash_causal_larger_m',
         correct=False, bug='causal-top-left-when-sq-gt-sk',
         parameter='the query/key position offset is Sk - Sq only when Sq <= Sk and 0 (top-left) when Sq > Sk, '
                   'so causal, window and ALiBi positions shift for Sq > Sk (leading rows attend instead of being '
                   'empty). Triggers: Sq > Sk with causal, a window or ALiBi',
         source='flagos-ai/FlagAttention#12', report='https://github.com/flagos-ai/FlagAttention/pull/12',
         dtype='float64', features=_F),
    dict(name='flash-mosaic-alibi-bias-slice', api='flash-attn', fn='flash_alibi_prebuilt_bias',
         correct=False, bug='alibi-bias-key-slice',
         parameter='the ALiBi bias is built once for max_seq_len = 256 and sliced [-s_q:, :s_k] instead of '
                   '[-s_q:, -s_k:], so the key positions are shifted by 256 - Sk: a per-row constant (harmless) '
                   'for keys left of the diagonal, wrong for keys right of it. Triggers: alibi_slopes with some '
                   'visible key j > i + off (not causal)',
         source='mosaicml/examples#259', report='https://github.com/mosaicml/examples/pull/259', dtype='float64',
         features=_F),
    dict(name='flash-fa-softcap-tanh-times-cap', api='flash-attn', fn='flash_softcap_tanh_times_cap',
         correct=False, bug='softcap-missing-inner-division',
         parameter='softcap is computed as tanh(s) * softcap instead of softcap * tanh(s / softcap). '
                   'Triggers: softcap > 0',
         source='Dao-AILab/flash-attention#1181', report='https://github.com/Dao-AILab/flash-attention/issues/1181',
         dtype='float64', features=_F),
    dict(name='flash-mamba-kv-not-repeated', api='flash-attn', fn='flash_fallback_kv_not_repeated',
         correct=False, bug='gqa-kv-not-repeated',
         parameter='the fallback multiplies q (B, Hq, S, D) with k (B, Hkv, S, D) without repeating the kv heads: '
                   'right by broadcasting when Hkv == 1, a shape error when 1 < Hkv < Hq. '
                   'Triggers: 1 < Hkv < Hq',
         source='state-spaces/mamba#462', report='https://github.com/state-spaces/mamba/pull/462', dtype='float64',
         features=_F),
    dict(name='flash-rowwise-band-online', api='flash-attn', fn='flash_rowwise_band_online', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=_F),
    dict(name='flash-grouped-einsum-bias', api='flash-attn', fn='flash_grouped_einsum_bias', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=_F),
]
