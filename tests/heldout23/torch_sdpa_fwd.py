"""Held-out attention kernels, API ``torch-sdpa``: the semantics of
``torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
is_causal=False, scale=None, enable_gqa=False)`` on (B, H, S, D) tensors, written with matmul/softmax (torch
1.13). ``attn_mask`` bool (True = attend) or additive float; ``is_causal`` top-left (j <= i); ``enable_gqa``:
query head h reads kv head h // (Hq // Hkv); a row with no visible key gives zeros. Six kernels carry one
mistake each (marked by a BUG comment on the mistake line), two are correct. See README.md.
"""
import math

import torch


def _additive(attn_mask, is_causal, sq, sk, dtype, device):
    """Additive 0 / -inf (or float) bias for the mask and the top-left causal pattern, or None."""
    bias = None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = torch.zeros(attn_mask.shape, dtype=dtype, device=device)
            bias = bias.masked_fill(~attn_mask, float('-inf'))
        else:
            bias = attn_mask.to(dtype)
    if is_causal:
        tl = torch.ones(sq, sk, dtype=torch.bool, device=device).tril(diagonal=0)
        cb = torch.zeros(sq, sk, dtype=dtype, device=device).masked_fill(~tl, float('-inf'))
        bias = cb if bias is None else bias + cb
    return bias


def _softmax_rows(s, dim=-1):
    """Softmax along ``dim``; a slice with no finite score gives zeros."""
    mx = s.amax(dim=dim, keepdim=True)
    mx = torch.where(torch.isinf(mx) & (mx < 0), torch.zeros_like(mx), mx)
    e = torch.exp(s - mx)
    z = e.sum(dim=dim, keepdim=True)
    return torch.where(z > 0, e / torch.where(z > 0, z, torch.ones_like(z)), torch.zeros_like(e))


def _expand_kv(t, hq):
    hkv = t.shape[1]
    if hkv == hq:
        return t
    return t.repeat_interleave(hq // hkv, dim=1)


# --- kernel: sdpa_grouped_reshape ---
def sdpa_grouped_reshape(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    """Grouped view (B, Hkv, G, S, D) so K/V are never repeated."""
    b, hq, sq, d = query.shape
    hkv, sk, dv = key.shape[1], key.shape[2], value.shape[-1]
    g = hq // hkv
    sc = 1.0 / math.sqrt(d) if scale is None else scale
    qg = query.reshape(b, hkv, g, sq, d)
    kg = key.reshape(b, hkv, 1, sk, d)
    vg = key.reshape(b, hkv, 1, sk, dv)  # BUG: values reshaped from key instead of value
    s = torch.matmul(qg, kg.transpose(-2, -1)) * sc
    bias = _additive(attn_mask, is_causal, sq, sk, query.dtype, query.device)
    if bias is not None:
        s = s + bias.expand(b, hq, sq, sk).reshape(b, hkv, g, sq, sk)
    out = torch.matmul(_softmax_rows(s), vg)
    return out.reshape(b, hq, sq, dv)


# --- kernel: sdpa_sqrt_prescaled_qk ---
def sdpa_sqrt_prescaled_qk(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                           enable_gqa=False):
    """Q and K each pre-scaled before the matmul for numerical stability."""
    hq, d = query.shape[1], query.shape[-1]
    sq, sk = query.shape[-2], key.shape[-2]
    sc = 1.0 / math.sqrt(d) if scale is None else scale
    k, v = _expand_kv(key, hq), _expand_kv(value, hq)
    root = sc  # BUG: each of Q and K scaled by scale (scale squared overall) instead of sqrt(scale)
    s = torch.matmul(query * root, (k * root).transpose(-2, -1))
    bias = _additive(attn_mask, is_causal, sq, sk, query.dtype, query.device)
    if bias is not None:
        s = s + bias
    return torch.matmul(_softmax_rows(s), v)


# --- kernel: sdpa_broadcast_scores_keepdim ---
def sdpa_broadcast_scores_keepdim(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                  scale=None, enable_gqa=False):
    """Scores by broadcasting with a trailing singleton axis, (B, H, Sq, Sk, 1)."""
    hq, d = query.shape[1], query.shape[-1]
    sq, sk = query.shape[-2], key.shape[-2]
    sc = 1.0 / math.sqrt(d) if scale is None else scale
    k, v = _expand_kv(key, hq), _expand_kv(value, hq)
    s = (query.unsqueeze(-2) * k.unsqueeze(-3)).sum(dim=-1, keepdim=True) * sc
    bias = _additive(attn_mask, is_causal, sq, sk, query.dtype, query.device)
    if bias is not None:
        s = s + bias.unsqueeze(-1)
    a = _softmax_rows(s, dim=-1)  # BUG: softmax over the trailing singleton axis instead of the key axis (-2)
    return (a * v.unsqueeze(-3)).sum(dim=-2)


# --- kernel: sdpa_fa2_row_blocks ---
def sdpa_fa2_row_blocks(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                        enable_gqa=False):
    """FlashAttention-2 forward (algorithm 1) with query blocks Br = 16 and key blocks Bc = 32."""
    hq, d = query.shape[1], query.shape[-1]
    sq, sk = query.shape[-2], key.shape[-2]
    sc = 1.0 / math.sqrt(d) if scale is None else scale
    k, v = _expand_kv(key, hq), _expand_kv(value, hq)
    bias = _additive(attn_mask, is_causal, sq, sk, query.dtype, query.device)
    if bias is not None:
        bias = bias.expand(query.shape[0], hq, sq, sk)
    out = torch.zeros(query.shape[:-1] + (v.shape[-1],), dtype=query.dtype)
    br, bc = 16, 32
    for i in range(0, sq, br):
        q_i = query[..., i:i + br, :]
        m_i = torch.full(q_i.shape[:-1] + (1,), float('-inf'), dtype=query.dtype)
        l_i = torch.zeros_like(m_i)
        o_i = torch.zeros(q_i.shape[:-1] + (v.shape[-1],), dtype=query.dtype)
        for j in range(0, sq, bc):  # BUG: key loop bounded by the query length instead of the key length
            s_ij = torch.matmul(q_i, k[..., j:j + bc, :].transpose(-2, -1)) * sc
            if bias is not None:
                s_ij = s_ij + bias[..., i:i + br, j:j + bc]
            m_new = torch.maximum(m_i, s_ij.amax(dim=-1, keepdim=True))
            m_ref = torch.where(torch.isinf(m_new) & (m_new < 0), torch.zeros_like(m_new), m_new)
            p_ij = torch.exp(s_ij - m_ref)
            alpha = torch.exp(m_i - m_ref)
            l_i = alpha * l_i + p_ij.sum(dim=-1, keepdim=True)
            o_i = alpha * o_i + torch.matmul(p_ij, v[..., j:j + bc, :])
            m_i = m_new
        out[..., i:i + br, :] = torch.where(l_i > 0, o_i / torch.where(l_i > 0, l_i, torch.ones_like(l_i)),
                                            torch.zeros_like(o_i))
    return out


# --- kernel: sdpa_flat_bias_per_head ---
def sdpa_flat_bias_per_head(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """Per-(batch, head) loop that reads its bias slice from the flat mask buffer (stride-0 broadcast dims)."""
    b, hq, sq, d = query.shape
    sk = key.shape[-2]
    sc = 1.0 / math.sqrt(d) if scale is None else scale
    k, v = _expand_kv(key, hq), _expand_kv(value, hq)
    flat, bm, head_extent = None, 1, 1
    if attn_mask is not None:
        bias = _additive(attn_mask, False, sq, sk, query.dtype, query.device)
        bias = bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape))
        bm, head_extent = bias.shape[0], bias.shape[1]
        flat = bias.expand(bm, head_extent, sq, sk).contiguous().reshape(-1)
    causal = _additive(None, is_causal, sq, sk, query.dtype, query.device)
    out = torch.zeros(b, hq, sq, v.shape[-1], dtype=query.dtype)
    for bi in range(b):
        for h in range(hq):
            s = torch.matmul(query[bi, h], k[bi, h].transpose(-2, -1)) * sc
            if flat is not None:
                bb = 0 if bm == 1 else bi
                hh = 0 if head_extent == 1 else h
                off = bb * hq * sq * sk + hh * sq * sk  # BUG: batch stride uses num_heads, not the bias head extent
                s = s + flat[off:off + sq * sk].view(sq, sk)
            if causal is not None:
                s = s + causal
            out[bi, h] = torch.matmul(_softmax_rows(s), v[bi, h])
    return out


# --- kernel: sdpa_kvcache_causal_diagonal ---
def sdpa_kvcache_causal_diagonal(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False):
    """Explicit causal mask built as for a KV cache (new queries after the cached keys)."""
    hq, d = query.shape[1], query.shape[-1]
    sq, sk = query.shape[-2], key.shape[-2]
    sc = 1.0 / math.sqrt(d) if scale is None else scale
    k, v = _expand_kv(key, hq), _expand_kv(value, hq)
    s = torch.matmul(query, k.transpose(-2, -1)) * sc
    bias = _additive(attn_mask, False, sq, sk, query.dtype, query.device)
    if bias is not None:
        s = s + bias
    if is_causal:
        keep = torch.ones(sq, sk, dtype=torch.bool).tril(diagonal=sk - sq)  # BUG: diagonal aligned to the last key
        s = s.masked_fill(~keep, float('-inf'))
    return torch.matmul(_softmax_rows(s), v)


# --- kernel: sdpa_key_chunks_lse_merge ---
def sdpa_key_chunks_lse_merge(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                              scale=None, enable_gqa=False):
    """Keys in chunks of 40; each chunk's output and torch.logsumexp merged at the end."""
    hq, d = query.shape[1], query.shape[-1]
    sq, sk = query.shape[-2], key.shape[-2]
    sc = 1.0 / math.sqrt(d) if scale is None else scale
    k, v = _expand_kv(key, hq), _expand_kv(value, hq)
    bias = _additive(attn_mask, is_causal, sq, sk, query.dtype, query.device)
    outs, lses = [], []
    for j in range(0, sk, 40):
        s = torch.matmul(query, k[..., j:j + 40, :].transpose(-2, -1)) * sc
        if bias is not None:
            s = s + bias.expand(s.shape[:-1] + (sk,))[..., j:j + 40]
        lse = torch.logsumexp(s, dim=-1, keepdim=True)
        outs.append(torch.matmul(_softmax_rows(s), v[..., j:j + 40, :]))
        lses.append(lse)
    lse_all = torch.logsumexp(torch.stack(lses), dim=0)
    ref = torch.where(torch.isinf(lse_all), torch.zeros_like(lse_all), lse_all)
    out = torch.zeros_like(outs[0])
    for o, lse in zip(outs, lses):
        w = torch.where(torch.isinf(lse), torch.zeros_like(lse), torch.exp(lse - ref))
        out = out + w * o
    return out


# --- kernel: sdpa_grouped_base2_online ---
def sdpa_grouped_base2_online(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                              scale=None, enable_gqa=False):
    """Grouped (B, Hkv, G, Sq, D) view, online softmax in base 2 over key blocks of 24."""
    b, hq, sq, d = query.shape
    hkv, sk, dv = key.shape[1], key.shape[2], value.shape[-1]
    g = hq // hkv
    sc2 = (1.0 / math.sqrt(d) if scale is None else scale) * math.log2(math.e)
    qg = query.reshape(b, hkv, g, sq, d)
    bias = _additive(attn_mask, is_causal, sq, sk, query.dtype, query.device)
    if bias is not None:
        bias = bias.expand(b, hq, sq, sk).reshape(b, hkv, g, sq, sk) * math.log2(math.e)
    m = torch.full((b, hkv, g, sq, 1), float('-inf'), dtype=query.dtype)
    l_run = torch.zeros_like(m)
    acc = torch.zeros(b, hkv, g, sq, dv, dtype=query.dtype)
    for j in range(0, sk, 24):
        s = torch.matmul(qg, key[:, :, None, j:j + 24, :].transpose(-2, -1)) * sc2
        if bias is not None:
            s = s + bias[..., j:j + 24]
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
        m_ref = torch.where(torch.isinf(m_new) & (m_new < 0), torch.zeros_like(m_new), m_new)
        corr = torch.exp2(m - m_ref)
        p = torch.exp2(s - m_ref)
        l_run = corr * l_run + p.sum(dim=-1, keepdim=True)
        acc = corr * acc + torch.matmul(p, value[:, :, None, j:j + 24, :])
        m = m_new
    out = torch.where(l_run > 0, acc / torch.where(l_run > 0, l_run, torch.ones_like(l_run)), torch.zeros_like(acc))
    return out.reshape(b, hq, sq, dv)


CATALOG = [
    {
        'name': 'sdpa-torchtune-values-from-keys', 'api': 'torch-sdpa', 'fn': 'sdpa_grouped_reshape',
        'correct': False, 'bug': 'values-taken-from-keys',
        'parameter': ('in the grouped (B, Hkv, G, S, D) reshape the values are reshaped from key instead of '
                      'value, so the output is a weighted sum of K rows (a reshape error when Dv != D). '
                      'Triggers: always.'),
        'source': 'meta-pytorch/torchtune#21',
        'report': 'https://github.com/meta-pytorch/torchtune/pull/21',
        'dtype': 'float64', 'features': ['mask', 'causal', 'gqa', 'dv-ne-d'],
    },
    {
        'name': 'sdpa-onnx-prescale-by-scale', 'api': 'torch-sdpa', 'fn': 'sdpa_sqrt_prescaled_qk',
        'correct': False, 'bug': 'prescale-qk-by-scale-not-sqrt',
        'parameter': ('Q and K are each multiplied by scale before Q K^T (the numerically stable form) instead '
                      'of by sqrt(scale), so the scores carry scale squared. Triggers: scale != 1 (including '
                      'the default 1/sqrt(D)).'),
        'source': 'onnx/onnx#6984',
        'report': 'https://github.com/onnx/onnx/pull/6984',
        'dtype': 'float64', 'features': ['mask', 'causal', 'gqa', 'dv-ne-d'],
    },
    {
        'name': 'sdpa-swiftformer-singleton-softmax', 'api': 'torch-sdpa', 'fn': 'sdpa_broadcast_scores_keepdim',
        'correct': False, 'bug': 'softmax-over-singleton-axis',
        'parameter': ('the broadcast scores keep a trailing singleton axis (B, H, Sq, Sk, 1) and the softmax is '
                      'taken over it (dim=-1) instead of the key axis: every visible key gets weight 1 and the '
                      'output is the sum of the visible V rows. Triggers: a row with two or more visible keys.'),
        'source': 'Amshaker/SwiftFormer#4',
        'report': 'https://github.com/Amshaker/SwiftFormer/issues/4',
        'dtype': 'float64', 'features': ['mask', 'causal', 'gqa', 'dv-ne-d'],
    },
    {
        'name': 'sdpa-fa2-key-loop-query-bound', 'api': 'torch-sdpa', 'fn': 'sdpa_fa2_row_blocks',
        'correct': False, 'bug': 'key-loop-bound-query-length',
        'parameter': ('the FlashAttention-2 inner loop over key blocks of 32 runs to Sq instead of Sk: for Sq < '
                      'Sk the keys from ceil(Sq / 32) * 32 on are never visited, for Sq > Sk the loop reaches '
                      'empty key blocks and raises. Triggers: Sq > Sk, or Sq < Sk with a visible key at j >= '
                      'ceil(Sq / 32) * 32.'),
        'source': 'Dao-AILab/flash-attention#333',
        'report': 'https://github.com/Dao-AILab/flash-attention/issues/333',
        'dtype': 'float64', 'features': ['mask', 'causal', 'gqa', 'dv-ne-d'],
    },
    {
        'name': 'sdpa-onnxruntime-bias-batch-stride', 'api': 'torch-sdpa', 'fn': 'sdpa_flat_bias_per_head',
        'correct': False, 'bug': 'broadcast-bias-batch-stride',
        'parameter': ('the per-(batch, head) loop reads its bias slice from the flat (Bm, Hm, Sq, Sk) mask '
                      'buffer with a batch stride of num_heads * Sq * Sk even when the mask broadcasts over '
                      "heads (Hm = 1): batch b >= 1 reads another batch's slice or runs past the buffer (an "
                      'error). Triggers: an attn_mask with a head axis of 1 and a batch axis > 1, with Hq > 1.'),
        'source': 'microsoft/onnxruntime#28963',
        'report': 'https://github.com/microsoft/onnxruntime/pull/28963',
        'dtype': 'float64', 'features': ['mask', 'causal', 'gqa', 'dv-ne-d'],
    },
    {
        'name': 'sdpa-pytorch-kvcache-causal-diagonal', 'api': 'torch-sdpa', 'fn': 'sdpa_kvcache_causal_diagonal',
        'correct': False, 'bug': 'causal-alignment-bottom-right',
        'parameter': ('is_causal builds tril(diagonal=Sk - Sq), the KV-cache (lower-right) alignment the report '
                      "expected, instead of SDPA's top-left j <= i. Triggers: is_causal=True with Sq != Sk."),
        'source': 'pytorch/pytorch#110144',
        'report': 'https://github.com/pytorch/pytorch/issues/110144',
        'dtype': 'float64', 'features': ['mask', 'causal', 'gqa', 'dv-ne-d'],
    },
    {
        'name': 'sdpa-key-chunks-lse-merge', 'api': 'torch-sdpa', 'fn': 'sdpa_key_chunks_lse_merge',
        'correct': True, 'bug': None,
        'parameter': None,
        'source': None,
        'report': None,
        'dtype': 'float64', 'features': ['mask', 'causal', 'gqa', 'dv-ne-d'],
    },
    {
        'name': 'sdpa-grouped-base2-online', 'api': 'torch-sdpa', 'fn': 'sdpa_grouped_base2_online',
        'correct': True, 'bug': None,
        'parameter': None,
        'source': None,
        'report': None,
        'dtype': 'float64', 'features': ['mask', 'causal', 'gqa', 'dv-ne-d'],
    },
]
