"""heldout16 forward kernels for the `flash-attn` API.

Each kernel follows flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False) on torch
tensors q (B, Sq, Hq, D), k (B, Sk, Hkv, D), v (B, Sk, Hkv, Dv), bottom-right aligned. Six kernels carry one
mistake each (marked with a BUG comment), two are correct.
"""
import math

import torch


def _alibi(alibi_slopes, B, Hq, Sq, Sk, device, dtype):
    """-slope * |i + Sk - Sq - j| as (B, Hq, Sq, Sk)."""
    i = torch.arange(Sq, device=device).view(Sq, 1)
    j = torch.arange(Sk, device=device).view(1, Sk)
    dist = (i + (Sk - Sq) - j).abs().to(dtype)
    slopes = alibi_slopes.to(dtype)
    slopes = slopes.view(1, Hq) if slopes.dim() == 1 else slopes
    return -slopes.view(slopes.size(0), Hq, 1, 1) * dist


def _softmax_rows(s):
    """Softmax over the last axis with -inf for hidden keys; rows with no visible key give zeros."""
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    den = e.sum(dim=-1, keepdim=True)
    return e / torch.where(den > 0, den, torch.ones_like(den))


# --- kernel: flash_causal_top_left ---
def flash_causal_top_left(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                          softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Attention with a causal mask built from row / column indices (SYCL-style)."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(D)
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    kh = kh.repeat_interleave(Hq // Hkv, dim=1)
    vh = vh.repeat_interleave(Hq // Hkv, dim=1)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, B, Hq, Sq, Sk, q.device, q.dtype)
    row = torch.arange(Sq, device=q.device).view(Sq, 1)
    col = torch.arange(Sk, device=q.device).view(1, Sk)
    off = Sk - Sq
    keep = torch.ones(Sq, Sk, dtype=torch.bool, device=q.device)
    if causal:
        keep = keep & (col <= row)  # BUG: top-left diagonal; flash-attn aligns causal to the bottom right (row + off)
    left, right = window_size
    if left >= 0:
        keep = keep & (col >= row + off - left)
    if right >= 0:
        keep = keep & (col <= row + off + right)
    s = s.masked_fill(~keep, float('-inf'))
    out = torch.matmul(_softmax_rows(s), vh)
    return out.transpose(1, 2)


# --- kernel: flash_sliding_window_inclusive ---
def flash_sliding_window_inclusive(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                   softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Eager sliding-window attention: the window is turned into a mask over (query, key) positions."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else D ** -0.5
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(Hq // Hkv, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(Hq // Hkv, dim=1)
    s = torch.einsum('bhid,bhjd->bhij', qh, kh) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, B, Hq, Sq, Sk, q.device, q.dtype)
    pos_q = torch.arange(Sq, device=q.device).view(Sq, 1) + (Sk - Sq)
    pos_k = torch.arange(Sk, device=q.device).view(1, Sk)
    left, right = window_size
    if causal:
        right = 0
    keep = torch.ones(Sq, Sk, dtype=torch.bool, device=q.device)
    if left >= 0:
        keep = keep & (pos_k > pos_q - left)  # BUG: left taken as a window length that counts the query itself
    if right >= 0:
        keep = keep & (pos_k <= pos_q + right)
    s = s.masked_fill(~keep, float('-inf'))
    return torch.einsum('bhij,bhjd->bhid', _softmax_rows(s), vh).transpose(1, 2)


# --- kernel: flash_paged_softcap_dropped ---
def flash_paged_softcap_dropped(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Metal-style wrapper: gathers the parameters and calls one fused SDPA routine."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    attn_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(D)
    cap = 0.0  # BUG: softcap hard-coded to 0.0 (disabled) instead of the softcap argument
    left, right = window_size
    if causal:
        right = 0
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(Hq // Hkv, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(Hq // Hkv, dim=1)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * attn_scale
    if cap > 0:
        s = cap * torch.tanh(s / cap)
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, B, Hq, Sq, Sk, q.device, q.dtype)
    i = torch.arange(Sq, device=q.device).view(Sq, 1) + (Sk - Sq)
    j = torch.arange(Sk, device=q.device).view(1, Sk)
    keep = torch.ones(Sq, Sk, dtype=torch.bool, device=q.device)
    if left >= 0:
        keep = keep & (j >= i - left)
    if right >= 0:
        keep = keep & (j <= i + right)
    s = s.masked_fill(~keep, float('-inf'))
    return torch.matmul(_softmax_rows(s), vh).transpose(1, 2)


# --- kernel: flash_alibi_tp_partitions ---
def flash_alibi_tp_partitions(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Heads processed in two tensor-parallel partitions; each partition builds its own ALiBi bias."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(D)
    tp = 2 if Hq % 2 == 0 else 1
    hp = Hq // tp
    group = Hq // Hkv
    i = torch.arange(Sq, device=q.device).view(Sq, 1) + (Sk - Sq)
    j = torch.arange(Sk, device=q.device).view(1, Sk)
    left, right = window_size
    if causal:
        right = 0
    keep = torch.ones(Sq, Sk, dtype=torch.bool, device=q.device)
    if left >= 0:
        keep = keep & (j >= i - left)
    if right >= 0:
        keep = keep & (j <= i + right)
    outs = []
    for rank in range(tp):
        heads = list(range(rank * hp, (rank + 1) * hp))
        qh = q[:, :, heads].transpose(1, 2)
        kv_idx = [h // group for h in heads]
        kh = k[:, :, kv_idx].transpose(1, 2)
        vh = v[:, :, kv_idx].transpose(1, 2)
        s = torch.matmul(qh, kh.transpose(-2, -1)) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if alibi_slopes is not None:
            slopes_part = alibi_slopes[..., 0:hp]  # BUG: no tp_rank offset; should be rank * hp:(rank + 1) * hp
            dist = (i - j).abs().to(q.dtype)
            sp = slopes_part.to(q.dtype)
            sp = sp.view(1, hp) if sp.dim() == 1 else sp
            s = s - sp.view(sp.size(0), hp, 1, 1) * dist
        s = s.masked_fill(~keep, float('-inf'))
        outs.append(torch.matmul(_softmax_rows(s), vh))
    return torch.cat(outs, dim=1).transpose(1, 2)


# --- kernel: flash_swa_gated_on_mask ---
def flash_swa_gated_on_mask(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Unfused fallback: causal mask built first, the sliding-window band folded into it."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(D)
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(Hq // Hkv, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(Hq // Hkv, dim=1)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, B, Hq, Sq, Sk, q.device, q.dtype)
    i = torch.arange(Sq, device=q.device).view(Sq, 1) + (Sk - Sq)
    j = torch.arange(Sk, device=q.device).view(1, Sk)
    mask = torch.ones(Sq, Sk, dtype=torch.bool, device=q.device)
    if causal:
        mask = mask & (j <= i)
    left, right = window_size
    if causal and (left >= 0 or right >= 0):  # BUG: the window band is only built when a causal mask exists
        band = torch.ones_like(mask)
        if left >= 0:
            band = band & (j >= i - left)
        if right >= 0:
            band = band & (j <= i + right)
        mask = mask & band
    s = s.masked_fill(~mask, float('-inf'))
    return torch.matmul(_softmax_rows(s), vh).transpose(1, 2)


# --- kernel: flash_packgqa_row_divided ---
def flash_packgqa_row_divided(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Per kv head: the group's query heads are processed together; mask rows use qhead_per_kvhead."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    qhead_per_kvhead = Hq // Hkv
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(D)
    left, right = window_size
    if causal:
        right = 0
    m_idx = torch.arange(Sq, device=q.device).view(Sq, 1)
    row = m_idx // qhead_per_kvhead  # BUG: rows divided by qhead_per_kvhead although q is not packed
    i = row + (Sk - Sq)
    j = torch.arange(Sk, device=q.device).view(1, Sk)
    keep = torch.ones(Sq, Sk, dtype=torch.bool, device=q.device)
    if left >= 0:
        keep = keep & (j >= i - left)
    if right >= 0:
        keep = keep & (j <= i + right)
    out = torch.empty(B, Sq, Hq, v.shape[-1], dtype=q.dtype, device=q.device)
    for kvh in range(Hkv):
        hs = slice(kvh * qhead_per_kvhead, (kvh + 1) * qhead_per_kvhead)
        qg = q[:, :, hs].transpose(1, 2)
        s = torch.matmul(qg, k[:, :, kvh].unsqueeze(1).transpose(-2, -1)) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if alibi_slopes is not None:
            s = s + _alibi(alibi_slopes, B, Hq, Sq, Sk, q.device, q.dtype)[:, hs]
        s = s.masked_fill(~keep, float('-inf'))
        out[:, :, hs] = torch.matmul(_softmax_rows(s), v[:, :, kvh].unsqueeze(1)).transpose(1, 2)
    return out


# --- kernel: flash_group_rows_online ---
def flash_group_rows_online(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Pack-GQA done right: a kv head's query group stacked along rows (row r is query r % Sq), key blocks of 32."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    G = Hq // Hkv
    Dv = v.shape[-1]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(D)
    left, right = window_size
    if causal:
        right = 0
    alibi = None if alibi_slopes is None else _alibi(alibi_slopes, B, Hq, Sq, Sk, q.device, q.dtype)
    out = torch.zeros(B, Sq, Hq, Dv, dtype=q.dtype, device=q.device)
    qi = (torch.arange(G * Sq, device=q.device) % Sq).view(G * Sq, 1) + (Sk - Sq)
    for kvh in range(Hkv):
        qp = q[:, :, kvh * G:(kvh + 1) * G].permute(0, 2, 1, 3).reshape(B, G * Sq, D)
        m_i = torch.full((B, G * Sq, 1), float('-inf'), dtype=q.dtype, device=q.device)
        l_i = torch.zeros(B, G * Sq, 1, dtype=q.dtype, device=q.device)
        acc = torch.zeros(B, G * Sq, Dv, dtype=q.dtype, device=q.device)
        for n0 in range(0, Sk, 32):
            n1 = min(n0 + 32, Sk)
            s = torch.matmul(qp, k[:, n0:n1, kvh].transpose(-2, -1)) * scale
            if softcap > 0:
                s = softcap * torch.tanh(s / softcap)
            if alibi is not None:
                s = s + alibi[:, kvh * G:(kvh + 1) * G, :, n0:n1].reshape(alibi.size(0), G * Sq, n1 - n0)
            j = torch.arange(n0, n1, device=q.device).view(1, n1 - n0)
            keep = torch.ones(G * Sq, n1 - n0, dtype=torch.bool, device=q.device)
            if left >= 0:
                keep = keep & (j >= qi - left)
            if right >= 0:
                keep = keep & (j <= qi + right)
            s = s.masked_fill(~keep, float('-inf'))
            m_new = torch.maximum(m_i, s.amax(dim=-1, keepdim=True))
            m_use = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
            p = torch.exp(s - m_use)
            alpha = torch.exp(m_i - m_use)
            l_i = l_i * alpha + p.sum(dim=-1, keepdim=True)
            acc = acc * alpha + torch.matmul(p, v[:, n0:n1, kvh])
            m_i = m_new
        o = acc / torch.where(l_i > 0, l_i, torch.ones_like(l_i))
        out[:, :, kvh * G:(kvh + 1) * G] = o.reshape(B, G, Sq, Dv).permute(0, 2, 1, 3)
    return out


# --- kernel: flash_dense_lse_weights ---
def flash_dense_lse_weights(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Dense scores on a (B, Hkv, G, Sq, Sk) view, weights exp(s - logsumexp(s)) with a 0 / -inf band."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    G = Hq // Hkv
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(D)
    qg = q.permute(0, 2, 1, 3).reshape(B, Hkv, G, Sq, D)
    s = torch.einsum('bhgid,bjhd->bhgij', qg, k) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, B, Hq, Sq, Sk, q.device, q.dtype).reshape(-1, Hkv, G, Sq, Sk)
    i = torch.arange(Sq, device=q.device).view(Sq, 1) + (Sk - Sq)
    j = torch.arange(Sk, device=q.device).view(1, Sk)
    left, right = window_size
    right = 0 if causal else right
    lo = torch.full_like(i, -10 ** 9) if left < 0 else i - left
    hi = torch.full_like(i, 10 ** 9) if right < 0 else i + right
    inside = (j >= lo) & (j <= hi)
    band = torch.zeros(Sq, Sk, dtype=q.dtype, device=q.device).masked_fill(~inside, float('-inf'))
    s = s + band
    lse = torch.logsumexp(s, dim=-1, keepdim=True)
    lse = torch.where(torch.isfinite(lse), lse, torch.full_like(lse, float('inf')))
    w = torch.exp(s - lse)
    out = torch.einsum('bhgij,bjhd->bhgid', w, v)
    return out.reshape(B, Hq, Sq, v.shape[-1]).permute(0, 2, 1, 3)


_FEATURES = ['causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d']

CATALOG = [
    dict(name='flash-sycltla-causal-top-left', api='flash-attn', fn='flash_causal_top_left', correct=False,
         bug='causal-top-left-alignment',
         parameter='the causal mask keeps col <= row (top-left) instead of col <= row + Sk - Sq (bottom-right, as '
                   'flash-attn); windows keep the right offset. Triggers: causal=True with Sq != Sk',
         source='intel/sycl-tla#314', report='https://github.com/intel/sycl-tla/pull/314',
         dtype='float64', features=_FEATURES),
    dict(name='flash-transformers-window-counts-self', api='flash-attn', fn='flash_sliding_window_inclusive',
         correct=False, bug='window-left-short-by-one',
         parameter='window_size[0] is read as a sliding-window length that includes the query itself: keys need '
                   'j > i + off - left, so key i + off - left is hidden (left = 0 hides the diagonal). Triggers: '
                   'window left >= 0 with key i + off - left inside the other bounds for some row',
         source='huggingface/transformers#29623', report='https://github.com/huggingface/transformers/issues/29623',
         dtype='float64', features=_FEATURES),
    dict(name='flash-vllmmetal-softcap-hardcoded-zero', api='flash-attn', fn='flash_paged_softcap_dropped',
         correct=False, bug='softcap-ignored',
         parameter='the wrapper passes a hard-coded softcap of 0.0 (disabled) to the attention routine instead of '
                   'the softcap argument, so scores are never capped. Triggers: softcap > 0',
         source='vllm-project/vllm-metal#665', report='https://github.com/vllm-project/vllm-metal/issues/665',
         dtype='float64', features=_FEATURES),
    dict(name='flash-bigscience-alibi-tp-rank-offset', api='flash-attn', fn='flash_alibi_tp_partitions',
         correct=False, bug='alibi-slopes-partition-offset',
         parameter='heads run in two tensor-parallel partitions of Hq / 2 and every partition takes '
                   'alibi_slopes[..., 0:Hq/2] (no rank offset), so head h uses the slope of head h % (Hq / 2). '
                   'Triggers: alibi_slopes with Hq even and a slope of the second half differing from its '
                   'first-half counterpart',
         source='bigscience-workshop/Megatron-DeepSpeed#222',
         report='https://github.com/bigscience-workshop/Megatron-DeepSpeed/pull/222',
         dtype='float64', features=_FEATURES),
    dict(name='flash-megatronbridge-swa-gate', api='flash-attn', fn='flash_swa_gated_on_mask', correct=False,
         bug='window-ignored-without-causal',
         parameter='the sliding-window band is only folded into the mask when a causal mask is being built; with '
                   'causal=False the window is skipped and every key is attended. Triggers: window_size != (-1, -1) '
                   'with causal=False and a key outside the band',
         source='NVIDIA-NeMo/Megatron-Bridge#4308', report='https://github.com/NVIDIA-NeMo/Megatron-Bridge/pull/4308',
         dtype='float64', features=_FEATURES),
    dict(name='flash-fa-packgqa-row-divided', api='flash-attn', fn='flash_packgqa_row_divided', correct=False,
         bug='mask-row-divided-by-group',
         parameter='the causal / window limits use row = m // qhead_per_kvhead (pack-GQA indexing) although q is '
                   'not packed, so with Hq > Hkv row m is masked as row m // (Hq / Hkv). Triggers: Hq > Hkv with '
                   'causal or a window, Sq > 1',
         source='Dao-AILab/flash-attention#2528', report='https://github.com/Dao-AILab/flash-attention/pull/2528',
         dtype='float64', features=_FEATURES),
    dict(name='flash-group-rows-online', api='flash-attn', fn='flash_group_rows_online', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=_FEATURES),
    dict(name='flash-dense-lse-weights', api='flash-attn', fn='flash_dense_lse_weights', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=_FEATURES),
]
