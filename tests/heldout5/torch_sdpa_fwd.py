"""torch.nn.functional.scaled_dot_product_attention ports for the `torch-sdpa` API (torch 1.13 has no SDPA).

fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False) on
(B, H, S, D) tensors. attn_mask is bool (True = attend) or additive float; is_causal is top-left aligned; with
enable_gqa query head h uses kv head h // (Hq // Hkv); fully masked rows give zeros. Two kernels are correct
alternatives, the others carry one mistake each adapted from a public report (marked with a BUG comment).
"""
import math

import torch


def _check_dropout(dropout_p):
    if dropout_p:
        raise NotImplementedError("dropout is not supported by these kernels")


def _gqa_repeat(key, value, hq, enable_gqa):
    hkv = key.size(-3)
    if enable_gqa and hkv != hq:
        rep = hq // hkv
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    return key, value


def _split_mask(attn_mask, L, S, is_causal, dtype, device):
    """(keep, bias): keep bool broadcastable to (..., L, S), bias additive of the query dtype or None."""
    keep = torch.ones(L, S, dtype=torch.bool, device=device)
    if is_causal:
        keep = keep.tril(diagonal=0)
    bias = None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            keep = keep & attn_mask
        else:
            bias = attn_mask.to(dtype)
    return keep, bias


def _softmax_zero_dead(scores):
    dead = torch.isneginf(scores).all(dim=-1, keepdim=True)
    attn = torch.softmax(scores.masked_fill(dead, 0.0), dim=-1)
    return attn.masked_fill(dead, 0.0)


# ----------------------------------------------------------------------------------------------------------------
# correct: GQA without materialising repeated K/V: query heads folded into (Hkv, G)
# ----------------------------------------------------------------------------------------------------------------
def sdpa_grouped_gqa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                     enable_gqa=False):
    _check_dropout(dropout_p)
    B, Hq, L, E = query.shape
    Hkv, S, Ev = key.size(-3), key.size(-2), value.size(-1)
    G = Hq // Hkv
    scale_factor = 1.0 / math.sqrt(E) if scale is None else scale
    q = query.reshape(B, Hkv, G, L, E)
    k = key.unsqueeze(2)
    v = value.unsqueeze(2)
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale_factor
    keep, bias = _split_mask(attn_mask, L, S, is_causal, query.dtype, query.device)
    keep = torch.broadcast_to(keep, (B, Hq, L, S)).reshape(B, Hkv, G, L, S)
    if bias is not None:
        scores = scores + torch.broadcast_to(bias, (B, Hq, L, S)).reshape(B, Hkv, G, L, S)
    scores = scores.masked_fill(~keep, float("-inf"))
    attn = _softmax_zero_dead(scores)
    out = torch.matmul(attn, v)
    return out.reshape(B, Hq, L, Ev).to(query.dtype)


# ----------------------------------------------------------------------------------------------------------------
# correct: key-blocked online softmax (memory-efficient style) in torch
# ----------------------------------------------------------------------------------------------------------------
def sdpa_tiled_online(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                      enable_gqa=False):
    _check_dropout(dropout_p)
    block = 40
    B, Hq, L, E = query.shape
    key, value = _gqa_repeat(key, value, Hq, enable_gqa)
    S, Ev = key.size(-2), value.size(-1)
    scale_factor = 1.0 / math.sqrt(E) if scale is None else scale
    keep, bias = _split_mask(attn_mask, L, S, is_causal, query.dtype, query.device)
    keep = torch.broadcast_to(keep, (B, Hq, L, S))
    if bias is not None:
        bias = torch.broadcast_to(bias, (B, Hq, L, S))
    m_i = torch.full((B, Hq, L, 1), float("-inf"), dtype=query.dtype)
    l_i = torch.zeros((B, Hq, L, 1), dtype=query.dtype)
    acc = torch.zeros((B, Hq, L, Ev), dtype=query.dtype)
    for s0 in range(0, S, block):
        s1 = min(s0 + block, S)
        s = torch.matmul(query, key[..., s0:s1, :].transpose(-2, -1)) * scale_factor
        if bias is not None:
            s = s + bias[..., s0:s1]
        s = s.masked_fill(~keep[..., s0:s1], float("-inf"))
        m_new = torch.maximum(m_i, s.amax(dim=-1, keepdim=True))
        m_safe = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
        p = torch.exp(s - m_safe)
        alpha = torch.exp(m_i - m_safe)
        l_i = l_i * alpha + p.sum(dim=-1, keepdim=True)
        acc = acc * alpha + torch.matmul(p, value[..., s0:s1, :])
        m_i = m_new
    alive = l_i > 0
    out = acc / torch.where(alive, l_i, torch.ones_like(l_i))
    return out.masked_fill(~alive, 0.0).to(query.dtype)


# ----------------------------------------------------------------------------------------------------------------
# broken kernels
# ----------------------------------------------------------------------------------------------------------------
def sdpa_bool_mask_inverted(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    # nn.MultiheadAttention habits carried into an SDPA port
    _check_dropout(dropout_p)
    L, S = query.size(-2), key.size(-2)
    key, value = _gqa_repeat(key, value, query.size(-3), enable_gqa)
    scale_factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    attn_weight = query @ key.transpose(-2, -1) * scale_factor
    if is_causal:
        causal = torch.ones(L, S, dtype=torch.bool).triu(diagonal=1)
        attn_weight = attn_weight.masked_fill(causal, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            # BUG: the bool mask is read with key_padding_mask semantics (True = ignore) instead of True = attend
            attn_weight = attn_weight.masked_fill(attn_mask, float("-inf"))
        else:
            attn_weight = attn_weight + attn_mask.to(query.dtype)
    attn_weight = _softmax_zero_dead(attn_weight)
    return (attn_weight @ value).to(query.dtype)


def sdpa_causal_bottom_right(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                             enable_gqa=False):
    # MLX fast.scaled_dot_product_attention(mask="causal") convention used for a torch-compatible op
    _check_dropout(dropout_p)
    qL, kL = query.size(-2), key.size(-2)
    key, value = _gqa_repeat(key, value, query.size(-3), enable_gqa)
    scale_ = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    scores = torch.matmul(query * scale_, key.transpose(-1, -2))
    if is_causal:
        q_idx = torch.arange(qL).view(-1, 1)
        k_idx = torch.arange(kL).view(1, -1)
        # BUG: causal mask aligned bottom-right (offset kL - qL) while torch's is_causal is top-left (j <= i)
        causal_keep = k_idx <= q_idx + (kL - qL)
        scores = scores.masked_fill(~causal_keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask.to(query.dtype)
    return torch.matmul(_softmax_zero_dead(scores), value).to(query.dtype)


def sdpa_gqa_tile(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                  enable_gqa=False):
    # ONNX Attention function-body style: KV heads expanded with Tile to match the query heads
    _check_dropout(dropout_p)
    L, S = query.size(-2), key.size(-2)
    q_num_heads, kv_num_heads = query.size(-3), key.size(-3)
    if enable_gqa and q_num_heads != kv_num_heads:
        reps = q_num_heads // kv_num_heads
        # BUG: Tile gives kv heads [0, 1, 0, 1, ...]; query head h must use kv head h // reps (repeat_interleave)
        key = key.repeat(1, reps, 1, 1)
        value = value.repeat(1, reps, 1, 1)
    scale_ = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    keep, bias = _split_mask(attn_mask, L, S, is_causal, query.dtype, query.device)
    qk = torch.matmul(query, key.transpose(-1, -2)) * scale_
    if bias is not None:
        qk = qk + bias
    qk = qk.masked_fill(~keep, float("-inf"))
    return torch.matmul(_softmax_zero_dead(qk), value).to(query.dtype)


def sdpa_float_mask_dead_rows(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                              enable_gqa=False):
    # SDPA math path: bool masks get the fully-masked-row fix, float masks are added as they are
    _check_dropout(dropout_p)
    L, S = query.size(-2), key.size(-2)
    key, value = _gqa_repeat(key, value, query.size(-3), enable_gqa)
    scale_factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    keep, bias = _split_mask(attn_mask, L, S, is_causal, query.dtype, query.device)
    attn_weight = query @ key.transpose(-2, -1) * scale_factor
    if bias is not None:
        attn_weight = attn_weight + bias
    # BUG: rows are treated as dead only from the bool keep-mask, so a float mask of all -inf gives NaN rows
    dead = (~keep).all(dim=-1, keepdim=True)
    attn_weight = attn_weight.masked_fill(~keep, float("-inf")).masked_fill(dead, 0.0)
    attn_weight = torch.softmax(attn_weight, dim=-1).masked_fill(dead, 0.0)
    return (attn_weight @ value).to(query.dtype)


def sdpa_unmask_unattended(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                           enable_gqa=False):
    # transformers AttentionMaskConverter._unmask_unattended applied inside the kernel
    _check_dropout(dropout_p)
    B, Hq, L, E = query.shape
    S = key.size(-2)
    key, value = _gqa_repeat(key, value, Hq, enable_gqa)
    scaling = E ** -0.5 if scale is None else scale
    keep, bias = _split_mask(attn_mask, L, S, is_causal, query.dtype, query.device)
    keep = torch.broadcast_to(keep, (B, Hq, L, S))
    # BUG: fully masked rows are un-masked (attend to every key) instead of producing zeros
    keep = keep | ~keep.any(dim=-1, keepdim=True)
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if bias is not None:
        attn_weights = attn_weights + bias
    attn_weights = attn_weights.masked_fill(~keep, torch.finfo(attn_weights.dtype).min)
    attn_weights = _softmax_zero_dead(attn_weights)
    return torch.matmul(attn_weights, value).to(query.dtype)


def sdpa_mask_scaled(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                     enable_gqa=False):
    # tt-metal sdpa_decode style: mask fused before the single multiply by the softmax scale
    _check_dropout(dropout_p)
    L, S = query.size(-2), key.size(-2)
    key, value = _gqa_repeat(key, value, query.size(-3), enable_gqa)
    scale_ = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    keep, bias = _split_mask(attn_mask, L, S, is_causal, query.dtype, query.device)
    qk = torch.matmul(query, key.transpose(-1, -2))
    if bias is not None:
        qk = qk + bias
    # BUG: the additive mask is multiplied by the scale together with QK^T, attenuating biases by 1/sqrt(D)
    qk = qk * scale_
    qk = qk.masked_fill(~keep, float("-inf"))
    return torch.matmul(_softmax_zero_dead(qk), value).to(query.dtype)


def sdpa_fp32_softmax(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                      enable_gqa=False):
    # GPT-NeoX eager attention style: softmax pinned to float32 for stability
    _check_dropout(dropout_p)
    L, S = query.size(-2), key.size(-2)
    key, value = _gqa_repeat(key, value, query.size(-3), enable_gqa)
    norm_factor = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    keep, bias = _split_mask(attn_mask, L, S, is_causal, query.dtype, query.device)
    attn_scores = torch.matmul(query, key.transpose(-1, -2)) * norm_factor
    if bias is not None:
        attn_scores = attn_scores + bias
    attn_scores = attn_scores.masked_fill(~keep, float("-inf"))
    dead = torch.isneginf(attn_scores).all(dim=-1, keepdim=True)
    attn_scores = attn_scores.masked_fill(dead, 0.0)
    # BUG: softmax hard-coded to float32, silently capping float64 inputs at float32 resolution
    attn_weights = torch.softmax(attn_scores, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = attn_weights.masked_fill(dead, 0.0)
    return torch.matmul(attn_weights, value).to(query.dtype)


def sdpa_half_probs(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    enable_gqa=False):
    # eager attention that keeps the probabilities in half precision to save memory before P @ V
    _check_dropout(dropout_p)
    L, S = query.size(-2), key.size(-2)
    key, value = _gqa_repeat(key, value, query.size(-3), enable_gqa)
    scale_factor = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    keep, bias = _split_mask(attn_mask, L, S, is_causal, query.dtype, query.device)
    s = torch.matmul(query, key.transpose(-1, -2)) * scale_factor
    if bias is not None:
        s = s + bias
    s = s.masked_fill(~keep, float("-inf"))
    probs = _softmax_zero_dead(s)
    # BUG: probabilities rounded to float16 before the product with V (an fp16 cast of the softmax output)
    probs = probs.to(torch.float16).to(query.dtype)
    return torch.matmul(probs, value).to(query.dtype)


def sdpa_causal_diagonal_masked(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                enable_gqa=False):
    # TransformerLens-style causal mask built with torch.triu over the scores
    _check_dropout(dropout_p)
    L, S = query.size(-2), key.size(-2)
    key, value = _gqa_repeat(key, value, query.size(-3), enable_gqa)
    scale_factor = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    attn_scores = torch.matmul(query, key.transpose(-1, -2)) * scale_factor
    if is_causal:
        # BUG: triu(diagonal=0) also masks the diagonal, so query i cannot attend to key i (needs diagonal=1)
        mask = torch.triu(torch.ones(L, S), diagonal=0).bool()
        attn_scores = attn_scores.masked_fill(mask, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_scores = attn_scores.masked_fill(~attn_mask, float("-inf"))
        else:
            attn_scores = attn_scores + attn_mask.to(query.dtype)
    return torch.matmul(_softmax_zero_dead(attn_scores), value).to(query.dtype)


_F = ["mask", "causal", "alibi", "gqa", "dv-ne-d"]

CATALOG = [
    dict(name="sdpa-grouped-gqa", api="torch-sdpa", fn="sdpa_grouped_gqa", correct=True, bug=None, parameter=None,
         source=None, report=None, dtype="float64", features=list(_F)),
    dict(name="sdpa-tiled-online", api="torch-sdpa", fn="sdpa_tiled_online", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=list(_F)),
    dict(name="sdpa-bool-mask-inverted", api="torch-sdpa", fn="sdpa_bool_mask_inverted", correct=False,
         bug="bool-mask-inverted", parameter="bool attn_mask read as True = masked",
         source="pytorch/pytorch#27968", report="https://github.com/pytorch/pytorch/issues/27968",
         dtype="float64", features=list(_F)),
    dict(name="sdpa-causal-bottom-right", api="torch-sdpa", fn="sdpa_causal_bottom_right", correct=False,
         bug="causal-alignment-bottom-right", parameter="is_causal aligned bottom-right instead of top-left",
         source="ml-explore/mlx#2835", report="https://github.com/ml-explore/mlx/issues/2835",
         dtype="float64", features=list(_F)),
    dict(name="sdpa-gqa-tile", api="torch-sdpa", fn="sdpa_gqa_tile", correct=False,
         bug="gqa-tile-instead-of-interleave", parameter="query head h mapped to kv head h % Hkv",
         source="onnx/onnx#7274", report="https://github.com/onnx/onnx/pull/7274",
         dtype="float64", features=list(_F)),
    dict(name="sdpa-float-mask-nan-rows", api="torch-sdpa", fn="sdpa_float_mask_dead_rows", correct=False,
         bug="additive-mask-dead-row-nan", parameter="rows fully masked by an additive -inf mask",
         source="pytorch/pytorch#103749", report="https://github.com/pytorch/pytorch/issues/103749",
         dtype="float64", features=list(_F)),
    dict(name="sdpa-unmask-unattended", api="torch-sdpa", fn="sdpa_unmask_unattended", correct=False,
         bug="dead-rows-attend-everything", parameter="fully masked rows un-masked instead of zero output",
         source="huggingface/transformers#29318", report="https://github.com/huggingface/transformers/pull/29318",
         dtype="float64", features=list(_F)),
    dict(name="sdpa-mask-scaled", api="torch-sdpa", fn="sdpa_mask_scaled", correct=False,
         bug="additive-mask-scaled", parameter="additive attn_mask multiplied by the softmax scale",
         source="tenstorrent/tt-metal#55337", report="https://github.com/tenstorrent/tt-metal/issues/55337",
         dtype="float64", features=list(_F)),
    dict(name="sdpa-fp32-softmax", api="torch-sdpa", fn="sdpa_fp32_softmax", correct=False,
         bug="softmax-forced-float32", parameter="softmax computed in float32 for float64 inputs",
         source="huggingface/transformers#48459", report="https://github.com/huggingface/transformers/issues/48459",
         dtype="float64", features=list(_F)),
    dict(name="sdpa-half-probs", api="torch-sdpa", fn="sdpa_half_probs", correct=False,
         bug="probabilities-in-float16", parameter="attention probabilities rounded to float16 before P @ V",
         source="pytorch/pytorch#123911", report="https://github.com/pytorch/pytorch/issues/123911",
         dtype="float32", features=list(_F)),
    dict(name="sdpa-causal-diagonal", api="torch-sdpa", fn="sdpa_causal_diagonal_masked", correct=False,
         bug="causal-mask-excludes-diagonal", parameter="causal triu diagonal=0 masks key i for query i",
         source="TransformerLensOrg/TransformerLens#284",
         report="https://github.com/TransformerLensOrg/TransformerLens/issues/284",
         dtype="float64", features=list(_F)),
]
