"""heldout20 torch kernels, API ``torch-sdpa``: the semantics of torch.nn.functional.scaled_dot_product_attention.

fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False) on
(B, H, S, D) tensors; ``attn_mask`` bool (True = attend) or additive float; ``is_causal`` top-left;
``enable_gqa``: query head h reads kv head h // (Hq // Hkv); rows with no visible key give zeros.
Six kernels carry one mistake each (marked by a BUG comment), two are correct alternative implementations.
"""
import math

import torch


# --- kernel: sdpa_te_unfused_softmax_fallback ---
def _future_positions(sq, sk):
    return torch.ones(sq, sk, dtype=torch.bool).triu(1)


def _is_softmax_kernel_available(batch, heads, q_seqlen, k_seqlen):
    return q_seqlen == k_seqlen and 16 < k_seqlen <= 16384 and q_seqlen % 4 == 0 and (batch * heads) % 4 == 0


def _scaled_upper_triang_masked_softmax(logits, scale_factor):
    sq, sk = logits.shape[-2:]
    return torch.softmax((logits * scale_factor).masked_fill(_future_positions(sq, sk), float("-inf")), dim=-1)


def _scaled_masked_softmax(logits, bias, scale_factor):
    x = logits * scale_factor + bias
    x_max = x.amax(dim=-1, keepdim=True)
    x_max = torch.where(torch.isfinite(x_max), x_max, torch.zeros_like(x_max))
    e = torch.exp(x - x_max)
    denom = e.sum(dim=-1, keepdim=True)
    return torch.where(denom > 0, e / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(e))


def sdpa_te_unfused_softmax_fallback(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                     enable_gqa=False):
    batch, heads, sq, head_dim = query.shape
    sk = key.shape[-2]
    if enable_gqa and key.shape[1] != heads:
        key = key.repeat_interleave(heads // key.shape[1], dim=1)
        value = value.repeat_interleave(heads // value.shape[1], dim=1)
    scale_factor = 1.0 / math.sqrt(head_dim) if scale is None else scale
    logits = torch.matmul(query, key.transpose(-2, -1))
    if is_causal:
        # SCALED_UPPER_TRIANG_MASKED: fused kernel when available, plain softmax otherwise
        if _is_softmax_kernel_available(batch, heads, sq, sk):
            probs = _scaled_upper_triang_masked_softmax(logits, scale_factor)
        else:
            probs = torch.softmax(logits * scale_factor, dim=-1)  # BUG: the fallback drops the causal softmax type
    else:
        bias = torch.zeros(batch, heads, sq, sk, dtype=query.dtype)
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                bias = bias.masked_fill(attn_mask.logical_not(), float("-inf"))
            else:
                bias = bias + attn_mask.to(query.dtype)
        probs = _scaled_masked_softmax(logits, bias, scale_factor)
    return torch.matmul(probs, value)


# --- kernel: sdpa_separate_kv_head_index ---
def sdpa_separate_kv_head_index(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                enable_gqa=False):
    batch, num_heads, sq, head_size = query.shape
    num_kv_heads, sk = key.shape[1], key.shape[2]
    heads_per_kv = num_heads // num_kv_heads
    assert heads_per_kv * num_kv_heads == num_heads
    softmax_scale = head_size ** -0.5 if scale is None else scale
    bias = torch.zeros(batch, num_heads, sq, sk, dtype=query.dtype)
    if is_causal:
        bias = bias.masked_fill(torch.ones(sq, sk, dtype=torch.bool).triu(1), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            bias = bias + attn_mask.to(query.dtype)
    out = query.new_zeros(batch, num_heads, sq, value.shape[-1])
    for bidh in range(num_heads):
        k_head, v_head = key[:, bidh], value[:, bidh]  # BUG: the query head index addresses the separate K/V tensors
        s = torch.matmul(query[:, bidh], k_head.transpose(-2, -1)) * softmax_scale + bias[:, bidh]
        row_max = s.amax(dim=-1, keepdim=True)
        row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
        p = torch.exp(s - row_max)
        row_sum = p.sum(dim=-1, keepdim=True)
        p = torch.where(row_sum > 0, p / torch.where(row_sum > 0, row_sum, torch.ones_like(row_sum)),
                        torch.zeros_like(p))
        out[:, bidh] = torch.matmul(p, v_head)
    return out


# --- kernel: sdpa_tma_flat_offsets ---
def sdpa_tma_flat_offsets(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                          enable_gqa=False):
    Z, H, N_CTX, HEAD_DIM = query.shape
    N_KV, HEAD_DIM_V = key.shape[2], value.shape[3]
    if key.shape[1] != H:
        key = key.repeat_interleave(H // key.shape[1], dim=1)
        value = value.repeat_interleave(H // value.shape[1], dim=1)
    sm_scale = 1.0 / math.sqrt(HEAD_DIM) if scale is None else scale
    desc_q = query.reshape(Z * H * N_CTX, HEAD_DIM)
    desc_k = key.reshape(Z * H * N_KV, HEAD_DIM)
    desc_v = value.reshape(Z * H * N_KV, HEAD_DIM_V)
    desc_o = torch.zeros(Z * H * N_CTX, HEAD_DIM_V, dtype=query.dtype)
    bias = torch.zeros(Z, H, N_CTX, N_KV, dtype=query.dtype)
    if is_causal:
        bias = bias.masked_fill(torch.ones(N_CTX, N_KV, dtype=torch.bool).triu(1), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            bias = bias + attn_mask.to(query.dtype)
    for off_hz in range(Z * H):
        off_z = off_hz // H
        off_h = off_hz % H
        offset_y, offset_kv = off_z + off_h * N_CTX, off_z + off_h * N_KV  # BUG: batch offset not scaled by H * N_CTX
        q = desc_q[offset_y:offset_y + N_CTX]
        k = desc_k[offset_kv:offset_kv + N_KV]
        v = desc_v[offset_kv:offset_kv + N_KV]
        qk = torch.matmul(q, k.t()) * sm_scale + bias[off_z, off_h]
        m_i = qk.amax(dim=1, keepdim=True)
        m_i = torch.where(torch.isfinite(m_i), m_i, torch.zeros_like(m_i))
        p = torch.exp(qk - m_i)
        l_i = p.sum(dim=1, keepdim=True)
        acc = torch.matmul(p, v)
        desc_o[offset_y:offset_y + N_CTX] = torch.where(l_i > 0, acc / torch.where(l_i > 0, l_i, torch.ones_like(l_i)),
                                                        torch.zeros_like(acc))
    return desc_o.reshape(Z, H, N_CTX, HEAD_DIM_V)


# --- kernel: sdpa_npu_fusion_bool_mask ---
def _npu_fusion_attention(query, key, value, atten_mask, pse, scale_value):
    """Fused-op convention: ``atten_mask`` True marks a position that does NOT take part in attention."""
    s = torch.matmul(query, key.transpose(-2, -1)) * scale_value
    if pse is not None:
        s = s + pse
    if atten_mask is not None:
        s = s.masked_fill(atten_mask, float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    z = p.sum(dim=-1, keepdim=True)
    p = torch.where(z > 0, p / torch.where(z > 0, z, torch.ones_like(z)), torch.zeros_like(p))
    return torch.matmul(p, value)


def sdpa_npu_fusion_bool_mask(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                              enable_gqa=False):
    if key.shape[1] != query.shape[1]:
        key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
        value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
    scale_value = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    atten_mask, pse = None, None
    if is_causal:
        atten_mask = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool).triu(1)
    elif attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            atten_mask = attn_mask  # BUG: SDPA's True = attend is handed on as the fused op's True = masked
        else:
            pse = attn_mask.to(query.dtype)
    return _npu_fusion_attention(query, key, value, atten_mask, pse, scale_value)


# --- kernel: sdpa_mhsa_sqrt_feats ---
def sdpa_mhsa_sqrt_feats(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    b, head, n, d_k = query.shape
    if key.shape[1] != head:
        key = key.repeat_interleave(head // key.shape[1], dim=1)
        value = value.repeat_interleave(head // value.shape[1], dim=1)
    feats = head * d_k
    sqrt_d = feats ** 0.5 if scale is None else 1.0 / scale  # BUG: sqrt of the model width, not of the head dim
    score = torch.einsum("bhif,bhjf->bhij", query, key) / sqrt_d
    if is_causal:
        score = score.masked_fill(torch.ones(n, key.shape[2], dtype=torch.bool).triu(1), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            score = score.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            score = score + attn_mask.to(query.dtype)
    top = score.amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    att = torch.exp(score - top)
    den = att.sum(dim=-1, keepdim=True)
    att = torch.where(den > 0, att / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(att))
    return torch.einsum("bhij,bhjf->bhif", att, value)


# --- kernel: sdpa_flashmha_bshd_core ---
def _flash_core_bshd(q, k, v, mask, causal, softmax_scale):
    """q (b, s, h, d), k/v (b, s_k, h_kv, d); mask broadcastable to (b, h, s, s_k); returns (b, s, h, d_v)."""
    b, s, h, d = q.shape
    s_k, h_kv = k.shape[1], k.shape[2]
    if h_kv != h:
        k = k.repeat_interleave(h // h_kv, dim=2)
        v = v.repeat_interleave(h // h_kv, dim=2)
    qh, kh, vh = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
    attn = torch.matmul(qh, kh.transpose(-2, -1)) * softmax_scale
    if causal:
        attn = attn.masked_fill(torch.ones(s, s_k, dtype=torch.bool).triu(1), float("-inf"))
    if mask is not None:
        if mask.dtype == torch.bool:
            attn = attn.masked_fill(mask.logical_not(), float("-inf"))
        else:
            attn = attn + mask.to(q.dtype)
    mx = attn.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    ex = torch.exp(attn - mx)
    sm = ex.sum(dim=-1, keepdim=True)
    attn = torch.where(sm > 0, ex / torch.where(sm > 0, sm, torch.ones_like(sm)), torch.zeros_like(ex))
    return torch.matmul(attn, vh).permute(0, 2, 1, 3)


def sdpa_flashmha_bshd_core(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    softmax_scale = query.shape[-1] ** -0.5 if scale is None else scale
    q, k, v = query, key, value  # BUG: (b, h, n, d) tensors handed to the (b, s, h, d) core without the transpose
    out = _flash_core_bshd(q, k, v, attn_mask, is_causal, softmax_scale)
    return out.transpose(1, 2)


# --- kernel: sdpa_split_kv_lse_merge ---
def sdpa_split_kv_lse_merge(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False, num_splits=3):
    b, hq, sq, d = query.shape
    if key.shape[1] != hq:
        key = key.repeat_interleave(hq // key.shape[1], dim=1)
        value = value.repeat_interleave(hq // value.shape[1], dim=1)
    sk = key.shape[-2]
    sm_scale = 1.0 / math.sqrt(d) if scale is None else scale
    bias = torch.zeros(b, hq, sq, sk, dtype=query.dtype)
    if is_causal:
        bias = bias.masked_fill(torch.ones(sq, sk, dtype=torch.bool).triu(1), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(~attn_mask, float("-inf"))
        else:
            bias = bias + attn_mask.to(query.dtype)
    split = -(-sk // num_splits)
    outs, lses = [], []
    for j0 in range(0, sk, split):
        j1 = min(sk, j0 + split)
        s = torch.matmul(query, key[:, :, j0:j1].transpose(-2, -1)) * sm_scale + bias[..., j0:j1]
        lse = torch.logsumexp(s, dim=-1, keepdim=True)
        finite = torch.isfinite(lse)
        p = torch.where(finite, torch.exp(s - torch.where(finite, lse, torch.zeros_like(lse))), torch.zeros_like(s))
        outs.append(torch.matmul(p, value[:, :, j0:j1]))
        lses.append(lse)
    lse_all = torch.logsumexp(torch.stack(lses, dim=0), dim=0)
    ok = torch.isfinite(lse_all)
    lse_safe = torch.where(ok, lse_all, torch.zeros_like(lse_all))
    out = torch.zeros(b, hq, sq, value.shape[-1], dtype=query.dtype)
    for o, lse in zip(outs, lses):
        out = out + torch.where(ok, torch.exp(lse - lse_safe), torch.zeros_like(lse)) * o
    return out


# --- kernel: sdpa_grouped_view_bias ---
def sdpa_grouped_view_bias(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                           enable_gqa=False):
    b, hq, sq, d = query.shape
    hkv, sk, dv = key.shape[1], key.shape[2], value.shape[3]
    group = hq // hkv
    qg = query.reshape(b, hkv, group, sq, d)
    scores = torch.einsum("bngqd,bnkd->bngqk", qg, key) * (d ** -0.5 if scale is None else scale)
    bias = torch.zeros(b, hq, sq, sk, dtype=query.dtype)
    if is_causal:
        i = torch.arange(sq).unsqueeze(-1)
        j = torch.arange(sk).unsqueeze(0)
        bias = bias.masked_fill(j > i, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            bias = bias + attn_mask.to(query.dtype)
    scores = scores + bias.reshape(b, hkv, group, sq, sk)
    peak = scores.amax(dim=-1, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    w = torch.exp(scores - peak)
    tot = w.sum(dim=-1, keepdim=True)
    w = torch.where(tot > 0, w / torch.where(tot > 0, tot, torch.ones_like(tot)), torch.zeros_like(w))
    out = torch.einsum("bngqk,bnkd->bngqd", w, value)
    return out.reshape(b, hq, sq, dv)


CATALOG = [
    {
        "name": "sdpa-te-fallback-causal-dropped",
        "api": "torch-sdpa",
        "fn": "sdpa_te_unfused_softmax_fallback",
        "correct": False,
        "bug": "causal-dropped-in-fallback-path",
        "parameter": (
            "is_causal selects the upper-triangular-masked softmax; when the 'fused kernel' is unavailable "
            "(it needs Sq == Sk, 16 < Sk, Sq % 4 == 0 and B*H % 4 == 0) the fallback is a plain scaled softmax "
            "that ignores the softmax type, so no causal mask is applied. Triggers: is_causal=True with "
            "Sq != Sk, Sk <= 16, Sq % 4 != 0 or B*H % 4 != 0"
        ),
        "source": "NVIDIA/TransformerEngine#1524",
        "report": "https://github.com/NVIDIA/TransformerEngine/issues/1524",
        "dtype": "float64",
        "features": ["mask", "causal", "gqa", "dv-ne-d"],
    },
    {
        "name": "sdpa-trtllm-kv-head-from-q-head",
        "api": "torch-sdpa",
        "fn": "sdpa_separate_kv_head_index",
        "correct": False,
        "bug": "gqa-kv-head-index-is-query-head",
        "parameter": (
            "with separate K/V tensors the head index of K and V is the query head index (bidh) instead of "
            "bidh // (Hq // Hkv): right when Hkv == Hq, an out-of-range head index (IndexError) when Hkv < Hq. "
            "Triggers: enable_gqa with Hkv < Hq"
        ),
        "source": "NVIDIA/TensorRT-LLM#6538",
        "report": "https://github.com/NVIDIA/TensorRT-LLM/pull/6538",
        "dtype": "float64",
        "features": ["mask", "causal", "gqa", "dv-ne-d"],
    },
    {
        "name": "sdpa-triton-tma-batch-offset",
        "api": "torch-sdpa",
        "fn": "sdpa_tma_flat_offsets",
        "correct": False,
        "bug": "flat-row-offset-missing-batch-stride",
        "parameter": (
            "the (batch, head) block of the flattened (B*H*S, D) tensors starts at off_z + off_h * N_CTX "
            "instead of off_z * (N_CTX * H) + off_h * N_CTX: batch 0 is right, batches z > 0 read and write "
            "rows shifted by z inside the head blocks of batch 0. Triggers: B > 1"
        ),
        "source": "triton-lang/triton#6242",
        "report": "https://github.com/triton-lang/triton/issues/6242",
        "dtype": "float64",
        "features": ["mask", "causal", "gqa", "dv-ne-d"],
    },
    {
        "name": "sdpa-ascend-bool-mask-polarity",
        "api": "torch-sdpa",
        "fn": "sdpa_npu_fusion_bool_mask",
        "correct": False,
        "bug": "bool-mask-polarity-inverted",
        "parameter": (
            "a bool attn_mask (True = attend) is passed unchanged to a fused op whose atten_mask marks the "
            "positions NOT attended, so kept and dropped keys swap (a row whose keys are all kept becomes "
            "empty); float masks and is_causal are right. Triggers: a bool attn_mask"
        ),
        "source": "Ascend/pytorch#88",
        "report": "https://github.com/Ascend/pytorch/issues/88",
        "dtype": "float64",
        "features": ["mask", "causal", "gqa", "dv-ne-d"],
    },
    {
        "name": "sdpa-vitcifar-sqrt-feats",
        "api": "torch-sdpa",
        "fn": "sdpa_mhsa_sqrt_feats",
        "correct": False,
        "bug": "default-scale-from-model-width",
        "parameter": (
            "with scale=None the scores are divided by sqrt(feats) = sqrt(Hq * D), the model width, instead of "
            "sqrt(D), the per-head dimension. Triggers: scale=None with Hq > 1"
        ),
        "source": "omihub777/ViT-CIFAR#11",
        "report": "https://github.com/omihub777/ViT-CIFAR/pull/11",
        "dtype": "float64",
        "features": ["mask", "causal", "gqa", "dv-ne-d"],
    },
    {
        "name": "sdpa-flashmha-layout-not-transposed",
        "api": "torch-sdpa",
        "fn": "sdpa_flashmha_bshd_core",
        "correct": False,
        "bug": "bhsd-passed-as-bshd",
        "parameter": (
            "the (B, H, S, D) inputs reach a core written for (B, S, H, D) without the transpose, so heads "
            "are taken for positions and positions for heads (a wrong result, shape or a broadcast error). "
            "Triggers: always"
        ),
        "source": "kyegomez/FlashMHA#1",
        "report": "https://github.com/kyegomez/FlashMHA/issues/1",
        "dtype": "float64",
        "features": ["mask", "causal", "gqa", "dv-ne-d"],
    },
    {
        "name": "sdpa-split-kv-lse-merge",
        "api": "torch-sdpa",
        "fn": "sdpa_split_kv_lse_merge",
        "correct": True,
        "bug": None,
        "parameter": None,
        "source": None,
        "report": None,
        "dtype": "float64",
        "features": ["mask", "causal", "gqa", "dv-ne-d"],
    },
    {
        "name": "sdpa-grouped-view-bias",
        "api": "torch-sdpa",
        "fn": "sdpa_grouped_view_bias",
        "correct": True,
        "bug": None,
        "parameter": None,
        "source": None,
        "report": None,
        "dtype": "float64",
        "features": ["mask", "causal", "gqa", "dv-ne-d"],
    },
]
