"""Held-out attention kernels for the ``torch-sdpa`` API (PyTorch, written with matmul/softmax).

Contract: the semantics of ``torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=None,
dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False)`` on (B, H, S, D) tensors. ``attn_mask`` is a bool
keep-mask (True = attend) or an additive float mask; ``is_causal`` is top-left aligned; with ``enable_gqa`` query
head h uses kv head h // (Hq // Hkv). Rows with no visible key give zeros. Output in the input dtype.

Each broken kernel carries exactly one mistake, marked ``# BUG:``; see CATALOG at the end.
"""
import math

import torch


# ----------------------------------------------------------------------------------------------------------------
# shared helpers (correct)
# ----------------------------------------------------------------------------------------------------------------

def _no_dropout(dropout_p):
    if dropout_p:
        raise NotImplementedError("dropout is not supported by this kernel")


def _scale(query, scale):
    return 1.0 / math.sqrt(query.size(-1)) if scale is None else scale


def _causal_bias(L, S, dtype):
    keep = torch.ones(L, S, dtype=torch.bool).tril(diagonal=0)
    return torch.zeros(L, S, dtype=dtype).masked_fill(keep.logical_not(), float("-inf"))


def _mask_bias(attn_mask, dtype):
    """bool keep-mask -> 0 / -inf; float mask is taken as it is."""
    if attn_mask.dtype == torch.bool:
        return torch.zeros(attn_mask.shape, dtype=dtype).masked_fill(attn_mask.logical_not(), float("-inf"))
    return attn_mask.to(dtype)


def _safe_softmax(x):
    """softmax over the last axis; an all -inf row gives zeros (torch._safe_softmax)."""
    m = x.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    e = torch.exp(x - m)
    s = e.sum(dim=-1, keepdim=True)
    return e / torch.where(s == 0, torch.ones_like(s), s)


def _expand_kv(query, key, value, enable_gqa):
    if enable_gqa and key.size(-3) != query.size(-3):
        rep = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    return key, value


# ----------------------------------------------------------------------------------------------------------------
# correct kernels
# ----------------------------------------------------------------------------------------------------------------

def sdpa_math(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """The documented math reference of scaled_dot_product_attention, with the safe softmax."""
    _no_dropout(dropout_p)
    L, S = query.size(-2), key.size(-2)
    scale_factor = _scale(query, scale)
    attn_bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        attn_bias = attn_bias + _causal_bias(L, S, query.dtype)
    if attn_mask is not None:
        attn_bias = attn_bias + _mask_bias(attn_mask, query.dtype)
    key, value = _expand_kv(query, key, value, enable_gqa)
    attn_weight = query @ key.transpose(-2, -1) * scale_factor + attn_bias
    return _safe_softmax(attn_weight) @ value


def sdpa_grouped_fold(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                      enable_gqa=False):
    """GQA without materialising repeated K/V: the query heads of a group are folded into the sequence axis."""
    _no_dropout(dropout_p)
    L, S = query.size(-2), key.size(-2)
    rep = query.size(-3) // key.size(-3) if enable_gqa and query.dim() >= 3 else 1
    scale_factor = _scale(query, scale)
    bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        bias = bias + _causal_bias(L, S, query.dtype)
    if attn_mask is not None:
        bias = bias + _mask_bias(attn_mask, query.dtype)
    if rep == 1:
        w = query @ key.transpose(-2, -1) * scale_factor + bias
        return _safe_softmax(w) @ value
    lead, (Hq, _, D), Hkv = query.shape[:-3], query.shape[-3:], key.size(-3)
    bias = bias.expand(*lead, Hq, L, S).reshape(*lead, Hkv, rep * L, S)
    q = query.reshape(*lead, Hkv, rep * L, D)
    w = q @ key.transpose(-2, -1) * scale_factor + bias
    out = _safe_softmax(w) @ value
    return out.reshape(*lead, Hq, L, value.size(-1))


def sdpa_chunked_keys(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                      enable_gqa=False, chunk=32):
    """Memory-efficient (xformers-like) attention: key chunks merged with their log-sum-exp."""
    _no_dropout(dropout_p)
    L, S = query.size(-2), key.size(-2)
    scale_factor = _scale(query, scale)
    key, value = _expand_kv(query, key, value, enable_gqa)
    bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        bias = bias + _causal_bias(L, S, query.dtype)
    if attn_mask is not None:
        bias = bias + _mask_bias(attn_mask, query.dtype)
    outs, lses = [], []
    for start in range(0, S, chunk):
        end = min(start + chunk, S)
        w = query @ key[..., start:end, :].transpose(-2, -1) * scale_factor + bias[..., start:end]
        outs.append(_safe_softmax(w) @ value[..., start:end, :])
        lses.append(torch.logsumexp(w, dim=-1, keepdim=True))
    shape = torch.broadcast_shapes(*[o.shape for o in outs])
    lse = torch.stack([x.expand(shape[:-1] + (1,)) for x in lses])
    total = torch.logsumexp(lse, dim=0)
    total = torch.where(torch.isinf(total), torch.zeros_like(total), total)
    weights = torch.exp(lse - total)
    return (weights * torch.stack([o.expand(shape) for o in outs])).sum(dim=0)


# ----------------------------------------------------------------------------------------------------------------
# broken kernels
# ----------------------------------------------------------------------------------------------------------------

def sdpa_bool_mask_inverted(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    _no_dropout(dropout_p)
    L, S = query.size(-2), key.size(-2)
    scale_factor = _scale(query, scale)
    attn_bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        attn_bias = attn_bias + _causal_bias(L, S, query.dtype)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            # BUG: fills where the mask is True; for SDPA a True entry means "take part in attention"
            attn_bias = attn_bias + torch.zeros(attn_mask.shape, dtype=query.dtype).masked_fill(attn_mask,
                                                                                                float("-inf"))
        else:
            attn_bias = attn_bias + attn_mask.to(query.dtype)
    key, value = _expand_kv(query, key, value, enable_gqa)
    attn_weight = query @ key.transpose(-2, -1) * scale_factor + attn_bias
    return _safe_softmax(attn_weight) @ value


def sdpa_causal_bottom_right(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                             enable_gqa=False):
    _no_dropout(dropout_p)
    L, S = query.size(-2), key.size(-2)
    scale_factor = _scale(query, scale)
    attn_bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool).tril(diagonal=S - L)  # BUG: bottom-right; SDPA is top-left aligned
        attn_bias = attn_bias.masked_fill(keep.logical_not(), float("-inf"))
    if attn_mask is not None:
        attn_bias = attn_bias + _mask_bias(attn_mask, query.dtype)
    key, value = _expand_kv(query, key, value, enable_gqa)
    attn_weight = query @ key.transpose(-2, -1) * scale_factor + attn_bias
    return _safe_softmax(attn_weight) @ value


def sdpa_gqa_tiled_heads(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    _no_dropout(dropout_p)
    L, S = query.size(-2), key.size(-2)
    scale_factor = _scale(query, scale)
    attn_bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        attn_bias = attn_bias + _causal_bias(L, S, query.dtype)
    if attn_mask is not None:
        attn_bias = attn_bias + _mask_bias(attn_mask, query.dtype)
    if enable_gqa and key.size(-3) != query.size(-3):
        rep = query.size(-3) // key.size(-3)
        tile = [1] * (key.dim() - 3) + [rep, 1, 1]
        key = key.repeat(*tile)  # BUG: tiles the kv heads [0,1,0,1]; GQA needs repeat_interleave [0,0,1,1]
        value = value.repeat(*tile)
    attn_weight = query @ key.transpose(-2, -1) * scale_factor + attn_bias
    return _safe_softmax(attn_weight) @ value


def sdpa_scale_not_forwarded(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                             enable_gqa=False):
    _no_dropout(dropout_p)
    L, S = query.size(-2), key.size(-2)
    scale_factor = 1.0 / math.sqrt(query.size(-1))  # BUG: the caller's `scale` is never used
    attn_bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        attn_bias = attn_bias + _causal_bias(L, S, query.dtype)
    if attn_mask is not None:
        attn_bias = attn_bias + _mask_bias(attn_mask, query.dtype)
    key, value = _expand_kv(query, key, value, enable_gqa)
    attn_weight = query @ key.transpose(-2, -1) * scale_factor + attn_bias
    return _safe_softmax(attn_weight) @ value


def sdpa_plain_softmax(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                       enable_gqa=False):
    _no_dropout(dropout_p)
    L, S = query.size(-2), key.size(-2)
    scale_factor = _scale(query, scale)
    attn_bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        attn_bias = attn_bias + _causal_bias(L, S, query.dtype)
    if attn_mask is not None:
        attn_bias = attn_bias + _mask_bias(attn_mask, query.dtype)
    key, value = _expand_kv(query, key, value, enable_gqa)
    attn_weight = query @ key.transpose(-2, -1) * scale_factor + attn_bias
    attn_weight = torch.softmax(attn_weight, dim=-1)  # BUG: plain softmax: a fully masked row becomes NaN, not zeros
    return attn_weight @ value


def sdpa_bool_mask_unused(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                          enable_gqa=False):
    _no_dropout(dropout_p)
    L, S = query.size(-2), key.size(-2)
    scale_factor = _scale(query, scale)
    attn_bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        attn_bias = attn_bias + _causal_bias(L, S, query.dtype)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            # BUG: fills the bool mask itself (-inf becomes True) and never adds it to attn_bias: bool masks are ignored
            attn_mask = attn_mask.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            attn_bias = attn_bias + attn_mask.to(query.dtype)
    key, value = _expand_kv(query, key, value, enable_gqa)
    attn_weight = query @ key.transpose(-2, -1) * scale_factor + attn_bias
    return _safe_softmax(attn_weight) @ value


def sdpa_grouped_fold_head_mask(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                enable_gqa=False):
    """GQA by folding the query heads of each group into the sequence axis (no repeated K/V)."""
    _no_dropout(dropout_p)
    L, S = query.size(-2), key.size(-2)
    rep = query.size(-3) // key.size(-3) if enable_gqa and query.dim() >= 3 else 1
    scale_factor = _scale(query, scale)
    bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        bias = bias + _causal_bias(L, S, query.dtype)
    if attn_mask is not None:
        bias = bias + _mask_bias(attn_mask, query.dtype)
    if rep == 1:
        w = query @ key.transpose(-2, -1) * scale_factor + bias
        return _safe_softmax(w) @ value
    lead, (Hq, _, D), Hkv = query.shape[:-3], query.shape[-3:], key.size(-3)
    bias = bias.expand(*lead, Hq, L, S)
    group_bias = bias[..., ::rep, :, :]  # BUG: one mask per kv group (its first query head) used for all its heads
    bias = group_bias.repeat(*([1] * (group_bias.dim() - 2)), rep, 1)
    q = query.reshape(*lead, Hkv, rep * L, D)
    w = q @ key.transpose(-2, -1) * scale_factor + bias
    out = _safe_softmax(w) @ value
    return out.reshape(*lead, Hq, L, value.size(-1))


def sdpa_bf16_softmax(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                      enable_gqa=False):
    _no_dropout(dropout_p)
    L, S = query.size(-2), key.size(-2)
    scale_factor = _scale(query, scale)
    attn_bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        attn_bias = attn_bias + _causal_bias(L, S, query.dtype)
    if attn_mask is not None:
        attn_bias = attn_bias + _mask_bias(attn_mask, query.dtype)
    key, value = _expand_kv(query, key, value, enable_gqa)
    attn_weight = query @ key.transpose(-2, -1) * scale_factor + attn_bias
    probs = _safe_softmax(attn_weight.to(torch.bfloat16))  # BUG: softmax run in bfloat16 (no upcast to float32)
    return probs.to(query.dtype) @ value


# ----------------------------------------------------------------------------------------------------------------

_ALL = ["mask", "causal", "window", "alibi", "gqa", "dv-ne-d"]


def _entry(name, fn, bug=None, parameter=None, source=None, report=None, dtype="float64"):
    return {
        "name": name, "api": "torch-sdpa", "fn": fn, "correct": bug is None, "bug": bug, "parameter": parameter,
        "source": source, "report": report, "dtype": dtype, "features": list(_ALL),
    }


CATALOG = [
    _entry("sdpa-math", "sdpa_math"),
    _entry("sdpa-grouped-fold", "sdpa_grouped_fold"),
    _entry("sdpa-chunked-keys", "sdpa_chunked_keys"),
    _entry("sdpa-bool-inverted", "sdpa_bool_mask_inverted", "bool-mask-inverted", "masked_fill(attn_mask, -inf)",
           "rasbt/LLMs-from-scratch#1061", "https://github.com/rasbt/LLMs-from-scratch/issues/1061"),
    _entry("sdpa-causal-bottom-right", "sdpa_causal_bottom_right", "causal-bottom-right", "tril(diagonal=S-L)",
           "pytorch/pytorch#108108", "https://github.com/pytorch/pytorch/issues/108108"),
    _entry("sdpa-gqa-tile", "sdpa_gqa_tiled_heads", "gqa-repeat-not-interleave", "kv head = h % Hkv",
           "onnx/onnx#7274", "https://github.com/onnx/onnx/pull/7274"),
    _entry("sdpa-scale-dropped", "sdpa_scale_not_forwarded", "explicit-scale-ignored", "scale=1/sqrt(D) always",
           "lucidrains/x-transformers#244", "https://github.com/lucidrains/x-transformers/pull/244"),
    _entry("sdpa-plain-softmax", "sdpa_plain_softmax", "masked-row-nan", "torch.softmax on all -inf row",
           "pytorch/pytorch#103963", "https://github.com/pytorch/pytorch/issues/103963"),
    _entry("sdpa-bool-unused", "sdpa_bool_mask_unused", "bool-mask-ignored", "attn_bias not updated",
           "pytorch/pytorch#109072", "https://github.com/pytorch/pytorch/issues/109072"),
    _entry("sdpa-fold-head-mask", "sdpa_grouped_fold_head_mask", "gqa-mask-per-group", "mask[:, ::rep]",
           "AI-Hypercomputer/jetstream-pytorch#171", "https://github.com/AI-Hypercomputer/jetstream-pytorch/pull/171"),
    _entry("sdpa-bf16-softmax", "sdpa_bf16_softmax", "bf16-softmax", "softmax in bfloat16",
           "huggingface/diffusers#3483", "https://github.com/huggingface/diffusers/issues/3483", dtype="float32"),
]
