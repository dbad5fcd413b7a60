"""Held-out torch kernels, API `torch-sdpa`: the semantics of torch.nn.functional.scaled_dot_product_attention.

fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False) on
(B, H, S, D) tensors, written with matmul/softmax (torch 1.13). attn_mask is bool (True = attend) or an
additive float mask; is_causal is top-left (j <= i); with enable_gqa query head h uses kv head h // (Hq // Hkv);
rows with no visible key give zeros.
Six kernels carry one mistake each (marked by a BUG comment), two are correct.
"""
import math

import torch

_EPS_FILL = 1e-12


# --- kernel: sdpa_label_attention_mask ---
def sdpa_label_attention_mask(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                              enable_gqa=False):
    """LabelAttention-style wrapper that builds the additive bias from a padding mask."""
    L, S = query.size(-2), key.size(-2)
    scale_factor = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    if enable_gqa and key.size(-3) != query.size(-3):
        rep = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    attn_bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        future = torch.ones(L, S, dtype=torch.bool).triu(diagonal=1)
        attn_bias = attn_bias.masked_fill(future, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_bias = attn_bias.masked_fill(attn_mask, float("-inf"))  # BUG: True (attend) masked out
        else:
            attn_bias = attn_bias + attn_mask
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale_factor + attn_bias
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(scores - row_max)
    den = e.sum(dim=-1, keepdim=True)
    w = e / torch.where(den > 0, den, torch.ones_like(den))
    return torch.matmul(w, value)


# --- kernel: sdpa_causal_anchored_bottom_right ---
def sdpa_causal_anchored_bottom_right(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                      scale=None, enable_gqa=False):
    """Lowering of SDPA onto a backend whose 'causal' mask is anchored at the bottom right."""
    L, S = query.size(-2), key.size(-2)
    sm_scale = query.size(-1) ** -0.5 if scale is None else scale
    if enable_gqa:
        group = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(group, dim=-3)
        value = value.repeat_interleave(group, dim=-3)
    s = torch.matmul(query, key.transpose(-2, -1)) * sm_scale
    if is_causal:
        offset = S - L if L < S else 0  # BUG: bottom-right when L < S, SDPA is top-left
        allowed = torch.ones(L, S, dtype=torch.bool).tril(diagonal=offset)
        s = s.masked_fill(~allowed, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            s = s.masked_fill(~attn_mask, float("-inf"))
        else:
            s = s + attn_mask
    m = s.amax(dim=-1, keepdim=True).nan_to_num(0.0, posinf=0.0, neginf=0.0)
    p = torch.exp(s - m)
    z = p.sum(dim=-1, keepdim=True)
    p = p / z.clamp_min(torch.finfo(p.dtype).tiny)
    return torch.matmul(p, value)


# --- kernel: sdpa_float_mask_canonicalised ---
def sdpa_float_mask_canonicalised(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                  enable_gqa=False):
    """Math path that canonicalises every mask to a bool 'masked' pattern before a masked softmax."""
    sm_scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if enable_gqa and key.shape[1] != query.shape[1]:
        idx = torch.arange(query.shape[1]) // (query.shape[1] // key.shape[1])
        key, value = key[:, idx], value[:, idx]
    attn = torch.matmul(query * sm_scale, key.transpose(-2, -1))
    if is_causal:
        L, S = attn.shape[-2:]
        attn = attn.masked_fill(torch.ones(L, S, dtype=torch.bool).triu(1), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn = attn.masked_fill(~attn_mask, float("-inf"))
        else:
            attn = attn.masked_fill(attn_mask != 0, float("-inf"))  # BUG: any non-zero bias masks its key
    mx = attn.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isinf(mx), torch.zeros_like(mx), mx)
    ex = torch.exp(attn - mx)
    sm = ex.sum(dim=-1, keepdim=True)
    ex = ex / torch.where(sm == 0, torch.ones_like(sm), sm)
    return torch.matmul(ex, value)


# --- kernel: sdpa_gqa_tiled_heads ---
def sdpa_gqa_tiled_heads(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    """Port of dot-product attention from a JS array library: kv heads expanded by a gather index."""
    hq, hkv = query.shape[1], key.shape[1]
    sc = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if enable_gqa and hq != hkv:
        kv_index = torch.arange(hq) % hkv  # BUG: tiled, not repeated (h // (Hq // Hkv))
        key = key.index_select(1, kv_index)
        value = value.index_select(1, kv_index)
    logits = torch.einsum("bhqd,bhkd->bhqk", query, key) * sc
    if is_causal:
        lq, lk = logits.shape[-2:]
        keep = torch.arange(lk)[None, :] <= torch.arange(lq)[:, None]
        logits = logits.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        else:
            logits = logits + attn_mask
    top = logits.amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    w = torch.exp(logits - top)
    w = w / w.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    return torch.einsum("bhqk,bhkd->bhqd", w, value)


# --- kernel: sdpa_vector_decode_path ---
def sdpa_vector_decode_path(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """A 'vector' kernel for short queries (L <= 8) walks flat (B * H) rows; longer queries use full matmuls."""
    B, Hq, L, D = query.shape
    Hkv, S = key.shape[1], key.shape[2]
    rep = Hq // Hkv if enable_gqa else 1
    sm_scale = 1.0 / math.sqrt(D) if scale is None else scale
    bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        bias = bias.masked_fill(torch.ones(L, S, dtype=torch.bool).triu(1), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            extra = torch.zeros(attn_mask.shape, dtype=query.dtype).masked_fill(~attn_mask, float("-inf"))
        else:
            extra = attn_mask
        bias = bias + extra
    bias = bias.expand(B, Hq, L, S)
    if L > 8:
        k_full = key.repeat_interleave(rep, dim=1)
        v_full = value.repeat_interleave(rep, dim=1)
        s = torch.matmul(query, k_full.transpose(-2, -1)) * sm_scale + bias
        m = s.amax(dim=-1, keepdim=True)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        p = torch.exp(s - m)
        p = p / p.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
        return torch.matmul(p, v_full)
    k_rows = key.reshape(B * Hkv, S, D)
    v_rows = value.reshape(B * Hkv, S, value.shape[-1])
    out = torch.empty(B, Hq, L, value.shape[-1], dtype=query.dtype)
    for b in range(B):
        for h in range(Hq):
            kv_row = h // rep  # BUG: the batch stride (b * Hkv) is missing: every batch reads batch 0's keys and values
            s = torch.matmul(query[b, h], k_rows[kv_row].transpose(0, 1)) * sm_scale + bias[b, h]
            m = s.amax(dim=-1, keepdim=True)
            m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
            p = torch.exp(s - m)
            p = p / p.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
            out[b, h] = torch.matmul(p, v_rows[kv_row])
    return out


# --- kernel: sdpa_masked_fill_small_negative ---
def sdpa_masked_fill_small_negative(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                    scale=None, enable_gqa=False):
    """ScaleDotProductAttention of a from-scratch Transformer: score.masked_fill(mask == 0, -e)."""
    e = _EPS_FILL
    if enable_gqa:
        n_rep = query.size(1) // key.size(1)
        key = key.repeat_interleave(n_rep, dim=1)
        value = value.repeat_interleave(n_rep, dim=1)
    d_tensor = key.size(-1)
    score = (query @ key.transpose(2, 3)) * (1.0 / math.sqrt(d_tensor) if scale is None else scale)
    if is_causal:
        tri = torch.tril(torch.ones(score.size(-2), score.size(-1), dtype=torch.bool))
        score = score.masked_fill(~tri, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            score = score.masked_fill(~attn_mask, -e)  # BUG: -e (-1e-12) instead of -inf
        else:
            score = score + attn_mask
    peak = score.amax(dim=-1, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    score = torch.exp(score - peak)
    total = score.sum(dim=-1, keepdim=True)
    score = score / torch.where(total > 0, total, torch.ones_like(total))
    return score @ value


# --- kernel: sdpa_split_kv_lse_merge ---
def sdpa_split_kv_lse_merge(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """Split-KV: keys in 3 splits, each with its own output and log-sum-exp, merged by the LSE weights."""
    B, Hq, L, D = query.shape
    S = key.shape[-2]
    if enable_gqa and key.shape[1] != Hq:
        g = Hq // key.shape[1]
        key = key.repeat_interleave(g, dim=1)
        value = value.repeat_interleave(g, dim=1)
    sm = 1.0 / math.sqrt(D) if scale is None else scale
    bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        bias = bias.masked_fill(torch.arange(S)[None, :] > torch.arange(L)[:, None], float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias + torch.zeros(attn_mask.shape, dtype=query.dtype).masked_fill(~attn_mask, float("-inf"))
        else:
            bias = bias + attn_mask
    bias = bias.expand(B, Hq, L, S)
    bounds = [0, S // 3, (2 * S) // 3, S]
    outs, lses = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b <= a:
            continue
        s = torch.matmul(query, key[..., a:b, :].transpose(-2, -1)) * sm + bias[..., a:b]
        lse = torch.logsumexp(s, dim=-1, keepdim=True)
        safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
        p = torch.exp(s - safe)
        outs.append(torch.matmul(p, value[..., a:b, :]))
        lses.append(lse)
    lse_all = torch.logsumexp(torch.cat(lses, dim=-1), dim=-1, keepdim=True)
    lse_safe = torch.where(torch.isfinite(lse_all), lse_all, torch.zeros_like(lse_all))
    out = torch.zeros(B, Hq, L, value.shape[-1], dtype=query.dtype)
    for o, lse in zip(outs, lses):
        w = torch.where(torch.isfinite(lse), torch.exp(lse - lse_safe), torch.zeros_like(lse))
        out = out + w * o
    return out


# --- kernel: sdpa_grouped_view_bias ---
def sdpa_grouped_view_bias(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                           enable_gqa=False):
    """Queries viewed as (B, Hkv, G, L, D) against unexpanded K/V, one additive bias, softmax with dim=-1."""
    B, Hq, L, D = query.shape
    Hkv, S = key.shape[1], key.shape[2]
    G = Hq // Hkv
    sm = 1.0 / math.sqrt(D) if scale is None else scale
    bias = torch.zeros(1, 1, L, S, dtype=query.dtype)
    if is_causal:
        bias = bias.masked_fill(torch.ones(L, S, dtype=torch.bool).tril().logical_not(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(~attn_mask, float("-inf"))
        else:
            bias = bias + attn_mask
    bias = bias.expand(B, Hq, L, S).reshape(B, Hkv, G, L, S)
    qg = query.reshape(B, Hkv, G, L, D)
    s = torch.einsum("bkgld,bksd->bkgls", qg, key) * sm + bias
    dead = torch.isneginf(s).all(dim=-1, keepdim=True)
    p = torch.softmax(s.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    out = torch.einsum("bkgls,bksd->bkgld", p, value)
    return out.reshape(B, Hq, L, value.shape[-1])


CATALOG = [
    dict(name="sdpa-textclassifiers-bool-mask-inverted", api="torch-sdpa", fn="sdpa_label_attention_mask",
         correct=False, bug="bool-mask-inverted",
         parameter="a bool attn_mask is used as a padding mask: True (attend) entries are filled with -inf and "
                   "False ones kept. Triggers: a bool attn_mask",
         source="InseeFrLab/torchTextClassifiers#92",
         report="https://github.com/InseeFrLab/torchTextClassifiers/pull/92",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-executorch-causal-bottom-right", api="torch-sdpa", fn="sdpa_causal_anchored_bottom_right",
         correct=False, bug="causal-alignment-bottom-right-short-query",
         parameter="is_causal keeps the backend's bottom-right anchoring (j <= i + Sk - Sq) when the query is "
                   "shorter than the keys; Sq >= Sk gets SDPA's top-left j <= i. "
                   "Triggers: is_causal=True with Sq < Sk",
         source="pytorch/executorch#22443", report="https://github.com/pytorch/executorch/pull/22443",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-pytorch-float-mask-as-bool", api="torch-sdpa", fn="sdpa_float_mask_canonicalised",
         correct=False, bug="float-mask-treated-as-bool",
         parameter="an additive float attn_mask is canonicalised to a bool pattern in which every non-zero "
                   "entry is masked out (-inf) instead of added. "
                   "Triggers: a float attn_mask with a finite non-zero entry",
         source="pytorch/pytorch#107084", report="https://github.com/pytorch/pytorch/issues/107084",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-jaxjs-gqa-tile-not-repeat", api="torch-sdpa", fn="sdpa_gqa_tiled_heads", correct=False,
         bug="gqa-heads-tiled",
         parameter="with enable_gqa the kv heads are tiled, query head h reading kv head h % Hkv, instead of "
                   "repeated (h // (Hq // Hkv)). Triggers: enable_gqa with 1 < Hkv < Hq",
         source="ekzhang/jax-js#180", report="https://github.com/ekzhang/jax-js/pull/180",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-mlx-vector-batch-stride", api="torch-sdpa", fn="sdpa_vector_decode_path", correct=False,
         bug="decode-path-batch-offset-missing",
         parameter="the short-query (Sq <= 8) path indexes the flat (B * Hkv) key/value rows without the batch "
                   "offset, so every batch attends to batch 0's keys and values. "
                   "Triggers: Sq <= 8 with B > 1",
         source="ml-explore/mlx#2152", report="https://github.com/ml-explore/mlx/pull/2152",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-hyunwoongko-fill-minus-eps", api="torch-sdpa", fn="sdpa_masked_fill_small_negative",
         correct=False, bug="mask-fill-value-near-zero",
         parameter="False entries of a bool attn_mask are filled with -e = -1e-12 (about 0) instead of -inf, so "
                   "dropped keys keep roughly the weight of a zero score. "
                   "Triggers: a bool attn_mask with at least one False entry",
         source="hyunwoongko/transformer#10", report="https://github.com/hyunwoongko/transformer/issues/10",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-split-kv-lse-merge", api="torch-sdpa", fn="sdpa_split_kv_lse_merge", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64",
         features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-grouped-view-bias", api="torch-sdpa", fn="sdpa_grouped_view_bias", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64",
         features=["mask", "causal", "gqa", "dv-ne-d"]),
]
