"""Held-out attention kernels, API `torch-sdpa`: semantics of torch.nn.functional.scaled_dot_product_attention.

fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False) on
(B, H, S, D) tensors. attn_mask is bool (True = attend) or an additive float mask; is_causal is top-left
(j <= i); enable_gqa maps query head h to kv head h // (Hq // Hkv); rows with no visible key give zeros.
Six kernels carry one mistake each (each marked with a single BUG comment on its mistake line); two are correct.
"""
import math

import torch


# --- kernel: sdpa_masked_fill_not_inplace ---
def sdpa_masked_fill_not_inplace(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False):
    """RL-library transformer attention: bool masks through masked_fill, float masks added."""
    L, S = query.size(-2), key.size(-2)
    scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    if enable_gqa:
        group = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(group, dim=-3)
        value = value.repeat_interleave(group, dim=-3)
    attn = torch.matmul(query, key.transpose(-2, -1)) * scale
    if is_causal:
        lower = torch.ones(L, S, dtype=torch.bool, device=query.device).tril()
        attn = attn.masked_fill(~lower, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn.masked_fill(~attn_mask, float("-inf"))  # BUG: out-of-place masked_fill whose result is discarded
        else:
            attn = attn + attn_mask
    row_max = attn.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isneginf(row_max), torch.zeros_like(row_max), row_max)
    e = torch.exp(attn - row_max)
    total = e.sum(dim=-1, keepdim=True)
    weights = e / torch.where(total > 0, total, torch.ones_like(total))
    return torch.matmul(weights, value)


# --- kernel: sdpa_micro_causal_paged_only ---
def sdpa_micro_causal_paged_only(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False):
    """Micro-kernel style SDPA: a config struct selects the mask the kernel is specialised for."""
    conf = {"is_causal": is_causal, "is_paged_attention": False,
            "scale": 1.0 / math.sqrt(query.size(-1)) if scale is None else scale}
    with_causal_mask = conf["is_causal"] and conf["is_paged_attention"]  # BUG: causal mask only enabled in paged mode
    b, hq, lq, _ = query.shape
    hk, lk = key.size(-3), key.size(-2)
    if enable_gqa and hk != hq:
        key = key.repeat_interleave(hq // hk, dim=1)
        value = value.repeat_interleave(hq // hk, dim=1)
    qk = torch.einsum("bhqd,bhkd->bhqk", query, key) * conf["scale"]
    bias = torch.zeros(lq, lk, dtype=query.dtype, device=query.device)
    if with_causal_mask:
        bias = bias.masked_fill(torch.ones(lq, lk, dtype=torch.bool).triu(1), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(~attn_mask, float("-inf"))
        else:
            bias = bias + attn_mask
    qk = qk + bias
    visible = ~torch.isneginf(qk)
    any_visible = visible.any(dim=-1, keepdim=True)
    qk = torch.where(any_visible, qk, torch.zeros_like(qk))
    p = torch.softmax(qk, dim=-1) * any_visible
    return torch.einsum("bhqk,bhkd->bhqd", p, value)


# --- kernel: sdpa_decomposed_bool_mask_nan ---
def sdpa_decomposed_bool_mask_nan(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                  scale=None, enable_gqa=False):
    """Graph decomposition of SDPA: bool mask -> select(0, -inf) -> add -> softmax -> matmul."""
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    if enable_gqa:
        rep = query.shape[-3] // key.shape[-3]
        key = torch.repeat_interleave(key, rep, dim=-3)
        value = torch.repeat_interleave(value, rep, dim=-3)
    scaled = torch.matmul(query * scale, key.transpose(-1, -2))
    l_q, l_k = scaled.shape[-2:]
    if is_causal:
        tri = torch.tril(torch.ones(l_q, l_k, dtype=torch.bool))
        scaled = scaled + torch.zeros(l_q, l_k, dtype=scaled.dtype).masked_fill(~tri, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            minus_inf = torch.full((), float("-inf"), dtype=scaled.dtype)
            zero = torch.zeros((), dtype=scaled.dtype)
            atten_mask = torch.where(attn_mask, zero, minus_inf)
        else:
            atten_mask = attn_mask
        scaled = scaled + atten_mask
    weights = torch.softmax(scaled, dim=-1)  # BUG: plain softmax: a row with no visible key is 0/0 and comes back NaN
    return torch.matmul(weights, value)


# --- kernel: sdpa_default_softmax_scale ---
def sdpa_default_softmax_scale(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                               scale=None, enable_gqa=False):
    """Core-attention module: the softmax scale is resolved once from the head dim or the config."""
    head_dim = query.size(-1)
    softmax_scale = 1.0 / math.sqrt(head_dim)  # BUG: the configured scale is ignored and the default always used
    np_, nk = query.size(1), key.size(1)
    if enable_gqa and nk != np_:
        key = key.repeat_interleave(np_ // nk, dim=1)
        value = value.repeat_interleave(np_ // nk, dim=1)
    scores = torch.baddbmm(
        torch.zeros(query.size(0) * np_, query.size(2), key.size(2), dtype=query.dtype),
        query.reshape(-1, query.size(2), head_dim),
        key.reshape(-1, key.size(2), head_dim).transpose(1, 2),
        beta=0.0, alpha=softmax_scale,
    ).view(query.size(0), np_, query.size(2), key.size(2))
    if is_causal:
        future = torch.ones(query.size(2), key.size(2), dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            scores = scores + attn_mask
    alive = torch.isfinite(scores).any(dim=-1, keepdim=True)
    probs = torch.softmax(torch.where(alive, scores, torch.zeros_like(scores)), dim=-1)
    probs = torch.where(alive, probs, torch.zeros_like(probs))
    return torch.matmul(probs, value)


# --- kernel: sdpa_broadcast_mask_head_index ---
def sdpa_broadcast_mask_head_index(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                   scale=None, enable_gqa=False):
    """Fallback attention that walks the heads and indexes the mask tensor per head."""
    batch, num_heads, seq_q, head_dim = query.shape
    seq_kv = key.shape[-2]
    scale = head_dim ** -0.5 if scale is None else scale
    mask4 = attn_mask
    if mask4 is not None:
        while mask4.dim() < 4:
            mask4 = mask4.unsqueeze(0)
    num_kv = key.shape[1]
    outputs = []
    for h in range(num_heads):
        kv_h = h // (num_heads // num_kv) if enable_gqa else h
        s = torch.matmul(query[:, h], key[:, kv_h].transpose(-1, -2)) * scale
        if is_causal:
            s = s.masked_fill(torch.ones(seq_q, seq_kv, dtype=torch.bool).triu(1), float("-inf"))
        if mask4 is not None:
            mask_h = h  # BUG: not clamped for a size-1 (broadcast) head axis: heads >= 1 skip the mask
            if mask_h < mask4.shape[1]:
                m = mask4[:, mask_h]
                if m.dtype == torch.bool:
                    s = s.masked_fill(~m, float("-inf"))
                else:
                    s = s + m
        mx = s.amax(dim=-1, keepdim=True)
        mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
        e = torch.exp(s - mx)
        denom = e.sum(dim=-1, keepdim=True)
        p = e / torch.where(denom > 0, denom, torch.ones_like(denom))
        outputs.append(torch.matmul(p, value[:, kv_h]))
    return torch.stack(outputs, dim=1)


# --- kernel: sdpa_padding_scores_zeroed ---
def sdpa_padding_scores_zeroed(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                               scale=None, enable_gqa=False):
    """Spectrum-transformer MHA: bool masks become an additive -inf mask, float masks are added as is."""
    bsz, n_heads, tgt_len, d = query.shape
    src_len = key.shape[-2]
    scaling = d ** -0.5 if scale is None else scale
    if enable_gqa:
        key = key.repeat_interleave(n_heads // key.shape[1], dim=1)
        value = value.repeat_interleave(n_heads // value.shape[1], dim=1)
    attn = torch.matmul(query, key.transpose(2, 3)) * scaling
    if is_causal:
        causal = torch.triu(torch.ones(tgt_len, src_len, dtype=torch.bool), diagonal=1)
        attn = attn.masked_fill(causal, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            new_attn_mask = torch.zeros_like(attn_mask, dtype=attn.dtype)
            new_attn_mask.masked_fill_(~attn_mask, float("-inf"))
            attn = attn.masked_fill(~attn_mask, 0.0)  # BUG: masked keys scored 0 instead of adding -inf
        else:
            attn = attn + attn_mask
    finite_row = torch.isfinite(attn).any(dim=-1, keepdim=True)
    attn = torch.where(finite_row, attn, torch.zeros_like(attn))
    attn = torch.softmax(attn, dim=-1) * finite_row
    return torch.matmul(attn, value)


# --- kernel: sdpa_split_kv_lse_merge ---
def sdpa_split_kv_lse_merge(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                            scale=None, enable_gqa=False):
    """Split the keys into 3 chunks, attend to each with its own log-sum-exp, merge the partials."""
    hq, hk = query.size(1), key.size(1)
    if enable_gqa and hq != hk:
        key = key.repeat_interleave(hq // hk, dim=1)
        value = value.repeat_interleave(hq // hk, dim=1)
    sc = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    lq, lk = query.size(-2), key.size(-2)
    bias = torch.zeros(lq, lk, dtype=query.dtype)
    if is_causal:
        bias = bias.masked_fill(torch.ones(lq, lk, dtype=torch.bool).triu(1), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias + torch.zeros(attn_mask.shape, dtype=query.dtype).masked_fill(~attn_mask, float("-inf"))
        else:
            bias = bias + attn_mask
    bounds = [0, lk // 3, (2 * lk) // 3, lk]
    parts, lses = [], []
    for c0, c1 in zip(bounds[:-1], bounds[1:]):
        if c1 <= c0:
            continue
        s = torch.matmul(query, key[..., c0:c1, :].transpose(-1, -2)) * sc + bias[..., c0:c1]
        lse = torch.logsumexp(s, dim=-1, keepdim=True)
        ok = torch.isfinite(lse)
        p = torch.where(ok, torch.exp(s - torch.where(ok, lse, torch.zeros_like(lse))), torch.zeros_like(s))
        parts.append(torch.matmul(p, value[..., c0:c1, :]))
        lses.append(lse)
    lse_all = torch.logsumexp(torch.cat(lses, dim=-1), dim=-1, keepdim=True)
    ok_all = torch.isfinite(lse_all)
    out = torch.zeros_like(parts[0])
    for part, lse in zip(parts, lses):
        w = torch.where(ok_all & torch.isfinite(lse), torch.exp(lse - torch.where(ok_all, lse_all, lse)),
                        torch.zeros_like(lse))
        out = out + w * part
    return out


# --- kernel: sdpa_grouped_einsum_bias ---
def sdpa_grouped_einsum_bias(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                             scale=None, enable_gqa=False):
    """Grouped (B, Hkv, G, L, D) view against unexpanded K/V with a single additive 0 / -inf bias."""
    b, hq, lq, d = query.shape
    hk, lk = key.size(1), key.size(2)
    g = hq // hk if enable_gqa else 1
    if not enable_gqa:
        hk = hq
    sc = 1.0 / math.sqrt(d) if scale is None else scale
    qg = query.reshape(b, hk, g, lq, d)
    s = torch.einsum("bngqd,bnkd->bngqk", qg, key) * sc
    bias = torch.zeros(b, hq, lq, lk, dtype=query.dtype)
    if is_causal:
        bias = bias.masked_fill(torch.ones(lq, lk, dtype=torch.bool).triu(1), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(~attn_mask, float("-inf"))
        else:
            bias = bias + attn_mask
    s = s + bias.reshape(b, hk, g, lq, lk)
    m = s.amax(dim=-1, keepdim=True)
    dead = torch.isneginf(m)
    e = torch.exp(s - torch.where(dead, torch.zeros_like(m), m))
    p = e / torch.where(dead, torch.ones_like(m), e.sum(dim=-1, keepdim=True))
    out = torch.einsum("bngqk,bnkd->bngqd", p, value)
    return out.reshape(b, hq, lq, value.size(-1))


CATALOG = [
    dict(name="sdpa-diengine-masked-fill-discarded", api="torch-sdpa", fn="sdpa_masked_fill_not_inplace",
         correct=False, bug="bool-mask-fill-discarded",
         parameter="a bool attn_mask is applied with the out-of-place masked_fill and its result is thrown away, "
                   "so the bool mask has no effect (float masks and is_causal are right). Triggers: a bool "
                   "attn_mask with at least one False entry",
         source="opendilab/DI-engine#333", report="https://github.com/opendilab/DI-engine/issues/333",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-openvino-causal-paged-only", api="torch-sdpa", fn="sdpa_micro_causal_paged_only",
         correct=False, bug="causal-dropped",
         parameter="the causal mask constant is only enabled together with paged-attention mode, so "
                   "is_causal=True attends every key (masks are right). Triggers: is_causal=True with some key "
                   "j > i",
         source="openvinotoolkit/openvino#31106", report="https://github.com/openvinotoolkit/openvino/pull/31106",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-openvino-bool-mask-nan-rows", api="torch-sdpa", fn="sdpa_decomposed_bool_mask_nan",
         correct=False, bug="fully-masked-row-nan",
         parameter="the decomposition turns the mask into 0 / -inf, adds it and applies a plain softmax: a row "
                   "with no visible key is NaN instead of zeros. Triggers: a query row with no visible key "
                   "(all-False bool row or all -inf float row)",
         source="openvinotoolkit/openvino#35959", report="https://github.com/openvinotoolkit/openvino/issues/35959",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-megatron-config-scale-ignored", api="torch-sdpa", fn="sdpa_default_softmax_scale",
         correct=False, bug="explicit-scale-ignored",
         parameter="the softmax scale is always 1/sqrt(D); an explicit scale argument is ignored. Triggers: "
                   "scale given and different from 1/sqrt(D)",
         source="NVIDIA/Megatron-LM#3698", report="https://github.com/NVIDIA/Megatron-LM/pull/3698",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-burn-broadcast-mask-head0", api="torch-sdpa", fn="sdpa_broadcast_mask_head_index",
         correct=False, bug="broadcast-mask-first-head-only",
         parameter="the per-head loop indexes the mask's head axis with the query head index; a mask with a "
                   "broadcast head axis of size 1 is applied to head 0 only and heads >= 1 run unmasked. "
                   "Triggers: a mask (bool or float) with head axis 1 (or fewer than 3 dims), Hq > 1, and an "
                   "entry that masks or biases something",
         source="tracel-ai/burn#4778", report="https://github.com/tracel-ai/burn/issues/4778",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-diffms-masked-scores-zero", api="torch-sdpa", fn="sdpa_padding_scores_zeroed",
         correct=False, bug="masked-scores-zeroed",
         parameter="for a bool attn_mask the masked keys get the score 0 (masked_fill with 0.0) instead of the "
                   "-inf additive mask, so they still take softmax weight; a fully masked row becomes the mean "
                   "of V. Triggers: a bool attn_mask with at least one False entry",
         source="coleygroup/DiffMS#25", report="https://github.com/coleygroup/DiffMS/issues/25",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-split-kv-lse-merge", api="torch-sdpa", fn="sdpa_split_kv_lse_merge",
         correct=True, bug=None, parameter=None, source=None, report=None,
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-grouped-einsum-bias", api="torch-sdpa", fn="sdpa_grouped_einsum_bias",
         correct=True, bug=None, parameter=None, source=None, report=None,
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
]
