"""Held-out torch SDPA kernels (API ``torch-sdpa``), written with matmul/softmax for torch 1.13.

Semantics of ``torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=None,
dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False)`` on (B, H, S, D) tensors: ``attn_mask`` bool
(True = attend) or additive float; ``is_causal`` top-left (j <= i); ``enable_gqa``: query head h uses kv head
h // (Hq // Hkv); fully masked rows give zeros; dropout_p is always 0. Returns (B, Hq, Sq, Dv) in the input dtype.
"""
import math

import torch

# --- kernel: sdpa_causal_lower_right ---


def sdpa_causal_lower_right(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """MLX-style fallback: builds the causal mask itself, then a safe softmax."""
    L, S = query.size(-2), key.size(-2)
    scale_factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    if enable_gqa and key.size(-3) != query.size(-3):
        rep = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(rep, -3)
        value = value.repeat_interleave(rep, -3)
    attn_bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        temp_mask = torch.ones(L, S, dtype=torch.bool).tril(diagonal=S - L)  # BUG: lower-right, torch is upper-left
        attn_bias = attn_bias.masked_fill(temp_mask.logical_not(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_bias = attn_bias.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            attn_bias = attn_mask + attn_bias
    attn_weight = query @ key.transpose(-2, -1) * scale_factor + attn_bias
    row_max = attn_weight.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    p = torch.exp(attn_weight - row_max)
    denom = p.sum(dim=-1, keepdim=True)
    p = torch.where(denom > 0, p / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(p))
    return p @ value


# --- kernel: sdpa_bool_mask_as_bias ---


def sdpa_bool_mask_as_bias(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                           enable_gqa=False):
    """ONNX-script style decomposition: the mask is always folded in by addition."""
    q_len, kv_len = query.shape[-2], key.shape[-2]
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        n_rep = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(n_rep, dim=-3)
        value = value.repeat_interleave(n_rep, dim=-3)
    attn = torch.matmul(query, key.transpose(-1, -2)) * scale
    if is_causal:
        causal = torch.ones(q_len, kv_len, dtype=torch.bool).tril()
        attn = attn.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn = attn + attn_mask.to(attn.dtype)  # BUG: bool keep-mask added as a 0/1 bias
        else:
            attn = attn + attn_mask
    m = attn.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w = torch.exp(attn - m)
    s = w.sum(dim=-1, keepdim=True)
    w = torch.where(s > 0, w / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(w))
    return torch.matmul(w, value)


# --- kernel: sdpa_configured_scale ---


def sdpa_configured_scale(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                          enable_gqa=False):
    """Attend-module style wrapper (denoising-diffusion idiom): scale applied to q before the product."""
    b, h, n, d = query.shape
    if enable_gqa and key.shape[1] != h:
        key = key.repeat_interleave(h // key.shape[1], dim=1)
        value = value.repeat_interleave(h // value.shape[1], dim=1)
    default_scale = d ** -0.5
    q_scale = default_scale  # BUG: the explicit `scale` argument is ignored, always 1/sqrt(D)
    q = query * q_scale
    sim = torch.einsum("bhid,bhjd->bhij", q, key)
    if is_causal:
        i, j = sim.shape[-2:]
        causal = torch.ones(i, j, dtype=torch.bool).triu(1)
        sim = sim.masked_fill(causal, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            sim = sim.masked_fill(~attn_mask, float("-inf"))
        else:
            sim = sim + attn_mask
    mx = sim.amax(dim=-1, keepdim=True).detach()
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    e = (sim - mx).exp()
    tot = e.sum(dim=-1, keepdim=True)
    attn = torch.where(tot > 0, e / tot.clamp_min(torch.finfo(e.dtype).tiny), torch.zeros_like(e))
    return torch.einsum("bhij,bhjd->bhid", attn, value)


# --- kernel: sdpa_bias_inside_scale ---


def sdpa_bias_inside_scale(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                           enable_gqa=False):
    """ROCm-attention style: the bias is added to QK' and the sum is scaled in one fused step."""
    sq, sk = query.shape[-2], key.shape[-2]
    alpha = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        g = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(g, dim=-3), value.repeat_interleave(g, dim=-3)
    bias = torch.zeros(sq, sk, dtype=query.dtype)
    if is_causal:
        bias = bias.masked_fill(torch.ones(sq, sk, dtype=torch.bool).tril().logical_not(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            bias = bias + attn_mask
    qk = query @ key.transpose(-2, -1)
    logits = (qk + bias) * alpha  # BUG: the additive bias is scaled too; only QK' should be scaled: qk * alpha + bias
    rmax = logits.amax(-1, keepdim=True)
    rmax = torch.where(torch.isfinite(rmax), rmax, torch.zeros_like(rmax))
    p = (logits - rmax).exp()
    den = p.sum(-1, keepdim=True)
    p = torch.where(den > 0, p / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(p))
    return p @ value


# --- kernel: sdpa_mask_batch_shared ---


def sdpa_mask_batch_shared(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                           enable_gqa=False):
    """Candle-style per-batch loop that avoids materialising the mask over the batch dimension."""
    bsz, n_head, q_len, head_dim = query.shape
    kv_len = key.shape[-2]
    sm = 1.0 / math.sqrt(head_dim) if scale is None else scale
    if enable_gqa and key.shape[1] != n_head:
        key = key.repeat_interleave(n_head // key.shape[1], dim=1)
        value = value.repeat_interleave(n_head // value.shape[1], dim=1)
    outs = []
    for b in range(bsz):
        att = (query[b] @ key[b].transpose(-1, -2)) * sm
        if is_causal:
            att = att.masked_fill(torch.ones(q_len, kv_len, dtype=torch.bool).tril().logical_not(), float("-inf"))
        if attn_mask is not None:
            mb = attn_mask[0] if attn_mask.dim() == 4 else attn_mask  # BUG: batch 0's mask used for every batch
            if mb.dtype == torch.bool:
                att = att.masked_fill(mb.logical_not(), float("-inf"))
            else:
                att = att + mb
        mx = att.amax(-1, keepdim=True)
        mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
        e = torch.exp(att - mx)
        z = e.sum(-1, keepdim=True)
        e = torch.where(z > 0, e / torch.where(z > 0, z, torch.ones_like(z)), torch.zeros_like(e))
        outs.append(e @ value[b])
    return torch.stack(outs, dim=0)


# --- kernel: sdpa_kv_head_index ---


def sdpa_kv_head_index(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                       enable_gqa=False):
    """Simulator-style per-head loop that looks up each query head's kv head by index."""
    B, Hq, Sq, D = query.shape
    Hkv, Sk = key.shape[1], key.shape[2]
    sm = 1.0 / math.sqrt(D) if scale is None else scale
    bias = torch.zeros(B, Hq, Sq, Sk, dtype=query.dtype)
    if is_causal:
        bias = bias.masked_fill(torch.ones(Sq, Sk, dtype=torch.bool).tril().logical_not(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            bias = bias + attn_mask
    out = torch.empty(B, Hq, Sq, value.shape[-1], dtype=query.dtype)
    for head_idx in range(Hq):
        kv_head_idx = head_idx // Hkv if enable_gqa else head_idx  # BUG: divides by Hkv, not by Hq // Hkv
        s = query[:, head_idx] @ key[:, kv_head_idx].transpose(-1, -2) * sm + bias[:, head_idx]
        m = s.amax(-1, keepdim=True)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        p = torch.exp(s - m)
        z = p.sum(-1, keepdim=True)
        p = torch.where(z > 0, p / torch.where(z > 0, z, torch.ones_like(z)), torch.zeros_like(p))
        out[:, head_idx] = p @ value[:, kv_head_idx]
    return out


# --- kernel: sdpa_groups_as_rows ---


def sdpa_groups_as_rows(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                        enable_gqa=False):
    """Correct: GQA without expanding K/V, the group's query heads folded into the query rows
    (B, Hkv, G * Sq, D); causal rebuilt from the row index modulo Sq."""
    B, Hq, Sq, D = query.shape
    Hkv, Sk = key.shape[1], key.shape[2]
    G = Hq // Hkv
    sm = 1.0 / math.sqrt(D) if scale is None else scale
    bias = torch.zeros(B, Hq, Sq, Sk, dtype=query.dtype)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(attn_mask.logical_not().expand(B, Hq, Sq, Sk), float("-inf"))
        else:
            bias = bias + attn_mask
    q_rows = query.reshape(B, Hkv, G * Sq, D)
    b_rows = bias.reshape(B, Hkv, G * Sq, Sk)
    s = torch.matmul(q_rows, key.transpose(-1, -2)) * sm + b_rows
    if is_causal:
        i = (torch.arange(G * Sq) % Sq)[:, None]
        j = torch.arange(Sk)[None, :]
        s = s.masked_fill(j > i, float("-inf"))
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    z = p.sum(-1, keepdim=True)
    p = torch.where(z > 0, p / torch.where(z > 0, z, torch.ones_like(z)), torch.zeros_like(p))
    return torch.matmul(p, value).reshape(B, Hq, Sq, value.shape[-1])


# --- kernel: sdpa_global_max_key_chunks ---


def sdpa_global_max_key_chunks(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                               enable_gqa=False):
    """Correct: a first pass takes each row's max over all keys, a second pass accumulates
    numerator and denominator over key chunks of 20 against that fixed max (no rescaling)."""
    B, Hq, Sq, D = query.shape
    Sk = key.shape[-2]
    if enable_gqa and key.shape[1] != Hq:
        key = key.repeat_interleave(Hq // key.shape[1], dim=1)
        value = value.repeat_interleave(Hq // value.shape[1], dim=1)
    sm = 1.0 / math.sqrt(D) if scale is None else scale
    bias = torch.zeros(B, Hq, Sq, Sk, dtype=torch.float64)
    if is_causal:
        bias = bias.masked_fill(torch.ones(Sq, Sk, dtype=torch.bool).tril().logical_not(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            bias = bias + attn_mask.to(torch.float64)
    q64, k64, v64 = query.double(), key.double(), value.double()
    row_max = torch.full((B, Hq, Sq, 1), float("-inf"), dtype=torch.float64)
    for j0 in range(0, Sk, 20):
        s = q64 @ k64[:, :, j0:j0 + 20].transpose(-1, -2) * sm + bias[..., j0:j0 + 20]
        row_max = torch.maximum(row_max, s.amax(-1, keepdim=True))
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    num = torch.zeros(B, Hq, Sq, value.shape[-1], dtype=torch.float64)
    den = torch.zeros(B, Hq, Sq, 1, dtype=torch.float64)
    for j0 in range(0, Sk, 20):
        s = q64 @ k64[:, :, j0:j0 + 20].transpose(-1, -2) * sm + bias[..., j0:j0 + 20]
        e = torch.exp(s - row_max)
        num = num + e @ v64[:, :, j0:j0 + 20]
        den = den + e.sum(-1, keepdim=True)
    out = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))
    return out.to(query.dtype)


CATALOG = [
    dict(name="sdpa-mlx-causal-lower-right", api="torch-sdpa", fn="sdpa_causal_lower_right", correct=False,
         bug="causal-bottom-right-in-sdpa",
         parameter="is_causal builds a lower-right aligned mask (j <= i + Sk - Sq) instead of torch's upper-left "
                   "one (j <= i). Triggers: is_causal with Sq != Sk",
         source="ml-explore/mlx#2836", report="https://github.com/ml-explore/mlx/pull/2836",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-onnxscript-bool-as-bias", api="torch-sdpa", fn="sdpa_bool_mask_as_bias", correct=False,
         bug="bool-mask-added-as-bias",
         parameter="a bool attn_mask is added to the scores as 0/1 (kept keys +1, dropped keys +0) instead of "
                   "-inf where False, so dropped keys stay attendable. Triggers: bool attn_mask with a False entry",
         source="microsoft/onnxscript#656", report="https://github.com/microsoft/onnxscript/pull/656",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-ddpm-scale-ignored", api="torch-sdpa", fn="sdpa_configured_scale", correct=False,
         bug="explicit-scale-ignored",
         parameter="q is multiplied by the default 1/sqrt(D) whatever the `scale` argument says. "
                   "Triggers: explicit scale != 1/sqrt(D)",
         source="lucidrains/denoising-diffusion-pytorch#314",
         report="https://github.com/lucidrains/denoising-diffusion-pytorch/pull/314",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-ort-bias-scaled", api="torch-sdpa", fn="sdpa_bias_inside_scale", correct=False,
         bug="additive-mask-scaled",
         parameter="logits = (QK' + bias) * scale: the additive mask is multiplied by the scale too "
                   "(-inf stays -inf, finite biases shrink). Triggers: additive float attn_mask with finite "
                   "non-zero entries and scale != 1",
         source="microsoft/onnxruntime#14976", report="https://github.com/microsoft/onnxruntime/pull/14976",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-candle-mask-batch0", api="torch-sdpa", fn="sdpa_mask_batch_shared", correct=False,
         bug="mask-batch-broadcast-first",
         parameter="a 4-D attn_mask is indexed as attn_mask[0] for every batch element (assumed shared over the "
                   "batch): batch b gets batch 0's mask. Triggers: 4-D attn_mask with batch size > 1 whose "
                   "entries differ between batch elements",
         source="huggingface/candle#1920", report="https://github.com/huggingface/candle/pull/1920",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-onnxim-kv-head-div", api="torch-sdpa", fn="sdpa_kv_head_index", correct=False,
         bug="gqa-kv-head-divided-by-kv-heads",
         parameter="with enable_gqa the kv head is head_idx // Hkv instead of head_idx // (Hq // Hkv): query heads "
                   "read the wrong kv head, or one past the last (an index error). Triggers: enable_gqa with "
                   "Hq > Hkv and Hq // Hkv != Hkv (e.g. 8:2, 6:3, MQA 4:1)",
         source="PSAL-POSTECH/ONNXim#34", report="https://github.com/PSAL-POSTECH/ONNXim/pull/34",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-groups-as-rows", api="torch-sdpa", fn="sdpa_groups_as_rows", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64",
         features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-global-max-chunks", api="torch-sdpa", fn="sdpa_global_max_key_chunks", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64",
         features=["mask", "causal", "gqa", "dv-ne-d"]),
]
