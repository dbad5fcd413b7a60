"""Held-out set 22, API `torch-sdpa`: scaled_dot_product_attention semantics on (B, H, S, D) tensors.

fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False);
attn_mask bool (True = attend) or additive float; is_causal top-left (j <= i); enable_gqa maps query head h
to kv head h // (Hq // Hkv); fully masked rows give zeros. Written with matmul/softmax for torch 1.13.
Six kernels carry one mistake each (marked by a BUG comment), two are correct alternative implementations.
"""
import math

import torch


def _expand_kv(x, hq):
    """Repeat kv heads (dim 1) so that query head h reads kv head h // (hq // hkv)."""
    if x.shape[1] == hq:
        return x
    return x.repeat_interleave(hq // x.shape[1], dim=1)


def _safe_softmax(scores):
    """Softmax over the last axis; a row that is all -inf gives zeros."""
    m = scores.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(scores - m)
    z = e.sum(dim=-1, keepdim=True)
    return e / torch.where(z == 0, torch.ones_like(z), z)


# --- kernel: sdpa_additive_mask_as_keep ---
def _normalize_attention_mask(attn_mask, dtype):
    if attn_mask.dtype == torch.bool:
        zero = torch.zeros((), dtype=dtype)
        return torch.where(attn_mask, zero, torch.full((), float("-inf"), dtype=dtype))
    keep = attn_mask.bool()  # BUG: an additive float mask is read as a bool keep-mask (0.0 = keep becomes dropped)
    return torch.where(keep, torch.zeros((), dtype=dtype), torch.full((), float("-inf"), dtype=dtype))


def sdpa_additive_mask_as_keep(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                               enable_gqa=False):
    hq = query.shape[1]
    key, value = _expand_kv(key, hq), _expand_kv(value, hq)
    sq, sk = query.shape[-2], key.shape[-2]
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    attn = torch.matmul(query, key.transpose(-2, -1)) * scale
    if is_causal:
        causal = torch.ones(sq, sk, dtype=torch.bool).tril()
        attn = attn.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        attn = attn + _normalize_attention_mask(attn_mask, attn.dtype)
    return torch.matmul(_safe_softmax(attn), value)


# --- kernel: sdpa_softmax_offset_fixed_scale ---
def sdpa_softmax_offset_fixed_scale(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                    enable_gqa=False):
    q_head_dim = query.shape[-1]
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:
        key = key.repeat_interleave(n_rep, dim=1)
        value = value.repeat_interleave(n_rep, dim=1)
    scale_f = float(q_head_dim) ** -0.5  # BUG: the manual path ignores a caller-supplied scale
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale_f
    if is_causal:
        scores = scores.masked_fill(torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.nan_to_num(row_max, neginf=0.0)
    exp_s = torch.exp(scores - row_max)
    row_sum = exp_s.sum(dim=-1, keepdim=True)
    weights = exp_s / row_sum.clamp_min(torch.finfo(scores.dtype).tiny)
    return torch.matmul(weights, value)


# --- kernel: sdpa_padding_rows_nan ---
def sdpa_padding_rows_nan(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                          enable_gqa=False):
    key, value = _expand_kv(key, query.shape[1]), _expand_kv(value, query.shape[1])
    scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    att = (query @ key.transpose(-2, -1)) * scale
    if is_causal:
        l_q, l_k = query.size(-2), key.size(-2)
        att = att.masked_fill(~torch.ones(l_q, l_k, dtype=torch.bool).tril(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            att = att.masked_fill(~attn_mask, float("-inf"))
        else:
            att = att + attn_mask
    att = torch.softmax(att, dim=-1)  # BUG: a padded row with every key masked becomes NaN, not zeros
    return att @ value


# --- kernel: sdpa_emb_size_scale ---
def sdpa_emb_size_scale(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                        enable_gqa=False):
    num_heads, head_size = query.shape[1], query.shape[-1]
    emb_size = num_heads * head_size
    scaling = (emb_size) ** -0.5 if scale is None else scale  # BUG: scaled by the model width, not the head size
    key, value = _expand_kv(key, num_heads), _expand_kv(value, num_heads)
    energy = torch.einsum("bhqd,bhkd->bhqk", query, key)
    bias = torch.zeros((), dtype=query.dtype)
    if is_causal:
        tri = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool).tril()
        bias = torch.where(tri, bias, torch.full((), float("-inf"), dtype=query.dtype))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias + torch.where(attn_mask, torch.zeros((), dtype=query.dtype),
                                      torch.full((), float("-inf"), dtype=query.dtype))
        else:
            bias = bias + attn_mask
    att = _safe_softmax(energy * scaling + bias)
    return torch.einsum("bhqk,bhkd->bhqd", att, value)


# --- kernel: sdpa_gqa_repeat_seq_axis ---
def sdpa_gqa_repeat_seq_axis(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                             enable_gqa=False):
    num_query_heads, num_kv_heads = query.shape[1], key.shape[1]
    if num_query_heads != num_kv_heads:
        n_rep = num_query_heads // num_kv_heads
        key, value = (torch.repeat_interleave(t, n_rep, dim=2) for t in (key, value))  # BUG: dim 2 is the sequence
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    logits = torch.matmul(query, key.transpose(-1, -2)) * scale
    if is_causal:
        logits = torch.where(torch.ones(logits.shape[-2:], dtype=torch.bool).tril(), logits,
                             torch.full((), float("-inf"), dtype=logits.dtype))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = torch.where(attn_mask, logits, torch.full((), float("-inf"), dtype=logits.dtype))
        else:
            logits = logits + attn_mask
    return torch.matmul(_safe_softmax(logits), value)


# --- kernel: sdpa_mask_not_broadcast ---
def sdpa_mask_not_broadcast(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    b, hq, sq, d = query.shape
    key, value = _expand_kv(key, hq), _expand_kv(value, hq)
    sk, dv = key.shape[-2], value.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    q3 = query.reshape(b * hq, sq, d)
    k3 = key.reshape(b * hq, sk, d)
    v3 = value.reshape(b * hq, sk, dv)
    scores = torch.bmm(q3, k3.transpose(1, 2)) * scale
    if is_causal:
        scores = scores.masked_fill(~torch.ones(sq, sk, dtype=torch.bool).tril(), float("-inf"))
    if attn_mask is not None:
        mask3 = attn_mask.reshape(-1, sq, sk)  # BUG: not broadcast to (B, H, Sq, Sk) before flattening
        if mask3.dtype == torch.bool:
            scores = scores.masked_fill(~mask3, float("-inf"))
        else:
            scores = scores + mask3
    out = torch.bmm(_safe_softmax(scores), v3)
    return out.reshape(b, hq, sq, dv)


# --- kernel: sdpa_per_head_logsumexp ---
def sdpa_per_head_logsumexp(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """One (batch, query head) at a time, weights exp(s - logsumexp(s)), bias 0 / -inf / additive."""
    b, hq, sq, d = query.shape
    hkv, sk = key.shape[1], key.shape[2]
    group = hq // hkv
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    bias = torch.zeros(b, hq, sq, sk, dtype=query.dtype)
    if is_causal:
        bias = bias.masked_fill(~torch.ones(sq, sk, dtype=torch.bool).tril(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(~attn_mask.expand(b, hq, sq, sk), float("-inf"))
        else:
            bias = bias + attn_mask.expand(b, hq, sq, sk)
    out = torch.zeros(b, hq, sq, value.shape[-1], dtype=query.dtype)
    for bi in range(b):
        for h in range(hq):
            s = query[bi, h] @ key[bi, h // group].T * scale + bias[bi, h]
            lse = torch.logsumexp(s, dim=-1, keepdim=True)
            w = torch.exp(s - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse)))
            w = torch.where(torch.isfinite(lse), w, torch.zeros_like(w))
            out[bi, h] = w @ value[bi, h // group]
    return out


# --- kernel: sdpa_grouped_key_blocks ---
def sdpa_grouped_key_blocks(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """Grouped (B, Hkv, G, Sq, D) view against unexpanded K/V, keys visited online in blocks of 24."""
    b, hq, sq, d = query.shape
    hkv, sk, dv = key.shape[1], key.shape[2], value.shape[-1]
    g = hq // hkv
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    qg = query.reshape(b, hkv, g, sq, d)
    bias = torch.zeros(b, hq, sq, sk, dtype=query.dtype)
    if is_causal:
        bias = bias.masked_fill(~torch.ones(sq, sk, dtype=torch.bool).tril(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(~attn_mask.expand(b, hq, sq, sk), float("-inf"))
        else:
            bias = bias + attn_mask.expand(b, hq, sq, sk)
    bias = bias.reshape(b, hkv, g, sq, sk)
    m = torch.full((b, hkv, g, sq, 1), float("-inf"), dtype=query.dtype)
    den = torch.zeros((b, hkv, g, sq, 1), dtype=query.dtype)
    acc = torch.zeros((b, hkv, g, sq, dv), dtype=query.dtype)
    for k0 in range(0, sk, 24):
        k1 = min(k0 + 24, sk)
        s = torch.einsum("bhgqd,bhkd->bhgqk", qg, key[:, :, k0:k1]) * scale + bias[..., k0:k1]
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
        m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        corr = torch.where(torch.isfinite(m), torch.exp(m - m_safe), torch.zeros_like(m))
        p = torch.exp(s - m_safe)
        den = den * corr + p.sum(dim=-1, keepdim=True)
        acc = acc * corr + torch.einsum("bhgqk,bhkd->bhgqd", p, value[:, :, k0:k1])
        m = m_new
    out = acc / torch.where(den == 0, torch.ones_like(den), den)
    return out.reshape(b, hq, sq, dv)


CATALOG = [
    dict(name="sdpa-unturtle-additive-mask-as-bool", api="torch-sdpa", fn="sdpa_additive_mask_as_keep",
         correct=False, bug="additive-mask-read-as-keep-mask",
         parameter="a float (additive) attn_mask is normalised with .bool() as if it were a keep-mask: 0.0 "
                   "entries (keep) become dropped keys and every non-zero bias (including -inf) becomes a kept "
                   "key with bias 0. Triggers: a float attn_mask",
         source="nishide-dev/unturtle#56", report="https://github.com/nishide-dev/unturtle/pull/56",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-paddlefleet-manual-scale", api="torch-sdpa", fn="sdpa_softmax_offset_fixed_scale",
         correct=False, bug="custom-scale-ignored",
         parameter="the hand-written path always scales by q_head_dim ** -0.5 and ignores the scale argument. "
                   "Triggers: an explicit scale != 1/sqrt(D)",
         source="PaddlePaddle/PaddleFleet#1439", report="https://github.com/PaddlePaddle/PaddleFleet/pull/1439",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-olmo-padding-row-nan", api="torch-sdpa", fn="sdpa_padding_rows_nan", correct=False,
         bug="fully-masked-row-nan",
         parameter="the masked scores go through a plain torch.softmax, so a padded query row whose keys are "
                   "all masked gives NaN instead of zeros. Triggers: a row with no visible key (bool mask or "
                   "additive -inf row)",
         source="allenai/OLMo#322", report="https://github.com/allenai/OLMo/issues/322",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-tmunet-emb-size-scale", api="torch-sdpa", fn="sdpa_emb_size_scale", correct=False,
         bug="default-scale-from-model-dim",
         parameter="with scale=None the energy is scaled by emb_size ** -0.5 = (Hq * D) ** -0.5 instead of "
                   "D ** -0.5. Triggers: scale=None with Hq > 1",
         source="rezazad68/TMUnet#13", report="https://github.com/rezazad68/TMUnet/issues/13",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-maxtext-repeat-seq-axis", api="torch-sdpa", fn="sdpa_gqa_repeat_seq_axis", correct=False,
         bug="gqa-repeat-wrong-axis",
         parameter="for GQA the keys are repeated along axis 2, which in (B, H, S, D) is the sequence axis, "
                   "instead of the head axis: each key is duplicated Hq // Hkv times and the head counts no "
                   "longer match (an error with 1 < Hkv < Hq or with a mask; duplicated keys otherwise). "
                   "Triggers: Hkv < Hq with Hkv > 1, or with a mask or is_causal",
         source="AI-Hypercomputer/maxtext#1377", report="https://github.com/AI-Hypercomputer/maxtext/pull/1377",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-mlx-mask-not-broadcast", api="torch-sdpa", fn="sdpa_mask_not_broadcast", correct=False,
         bug="mask-not-broadcast",
         parameter="the attn_mask is flattened to (-1, Sq, Sk) without first being broadcast to (B, H, Sq, Sk), "
                   "so a mask with size-1 batch, head or query axes is misaligned with the folded scores (or "
                   "fails to reshape). Triggers: a mask with a size-1 head axis while B > 1 and H > 1, e.g. "
                   "(B, 1, Sq, Sk) or (B, 1, 1, Sk)",
         source="ml-explore/mlx#1980", report="https://github.com/ml-explore/mlx/pull/1980",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-per-head-logsumexp", api="torch-sdpa", fn="sdpa_per_head_logsumexp", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64",
         features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-grouped-key-blocks", api="torch-sdpa", fn="sdpa_grouped_key_blocks", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64",
         features=["mask", "causal", "gqa", "dv-ne-d"]),
]
