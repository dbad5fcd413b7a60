"""Held-out attention kernels, API "torch-sdpa".

Each kernel follows ``torch.nn.functional.scaled_dot_product_attention(query,
key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
enable_gqa=False)`` on (B, H, S, D) tensors (torch 1.13 has no SDPA, so these
are written with matmul/softmax):

* attn_mask: bool (True = attend) or additive float, broadcastable to
  (B, Hq, Sq, Sk);
* is_causal: TOP-LEFT aligned (query i sees keys j <= i);
* enable_gqa: key/value carry Hkv heads, query head h uses kv head
  h // (Hq // Hkv) (repeat_interleave);
* rows with no visible key produce zeros.

Broken kernels carry exactly one mistake, marked ``# BUG:``.
"""
import math

import torch


def _scale_of(query, scale):
    return 1.0 / math.sqrt(query.size(-1)) if scale is None else float(scale)


def _masked_softmax_av(scores, keep, value):
    """Safe softmax over the last axis followed by P @ V."""
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    row_max = scores.amax(dim=-1, keepdim=True)
    has_key = torch.isfinite(row_max)
    row_max = row_max.masked_fill(~has_key, 0.0)
    probs = torch.exp(scores - row_max)
    denom = probs.sum(dim=-1, keepdim=True)
    denom = denom.masked_fill(denom <= 0, 1.0)
    out = torch.matmul(probs, value) / denom
    return out.masked_fill(~has_key, 0.0)


# ---------------------------------------------------------------------------
# correct kernels
# ---------------------------------------------------------------------------

def sdpa_math(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
              scale=None, enable_gqa=False):
    """Reference "math" backend: repeat_interleave GQA, safe softmax."""
    L, S = query.size(-2), key.size(-2)
    sm_scale = _scale_of(query, scale)
    if enable_gqa and key.size(-3) != query.size(-3):
        rep = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    scores = torch.matmul(query, key.transpose(-2, -1)) * sm_scale
    keep = None
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool, device=query.device).tril(diagonal=0)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            keep = attn_mask if keep is None else keep & attn_mask
        else:
            scores = scores + attn_mask
    return _masked_softmax_av(scores, keep, value).to(query.dtype)


def sdpa_grouped_5d(query, key, value, attn_mask=None, dropout_p=0.0,
                    is_causal=False, scale=None, enable_gqa=False):
    """GQA without materialising repeated K/V: queries viewed as
    (B, Hkv, G, L, E); the mask is expanded to (B, Hq, L, S) first."""
    B, Hq, L, E = query.shape
    Hkv, S = key.size(-3), key.size(-2)
    sm_scale = _scale_of(query, scale)
    if not (enable_gqa and Hkv != Hq):
        return sdpa_math(query, key, value, attn_mask, dropout_p, is_causal,
                         scale, enable_gqa)
    G = Hq // Hkv
    q5 = query.reshape(B, Hkv, G, L, E)
    k5 = key.unsqueeze(2)
    v5 = value.unsqueeze(2)
    scores = torch.matmul(q5, k5.transpose(-2, -1)) * sm_scale  # (B,Hkv,G,L,S)
    keep = None
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool, device=query.device).tril()
    if attn_mask is not None:
        m = attn_mask.expand(B, Hq, L, S).reshape(B, Hkv, G, L, S)
        if m.dtype == torch.bool:
            keep = m if keep is None else keep & m
        else:
            scores = scores + m
    out = _masked_softmax_av(scores, keep, v5)
    return out.reshape(B, Hq, L, value.size(-1)).to(query.dtype)


# ---------------------------------------------------------------------------
# broken kernels
# ---------------------------------------------------------------------------

def sdpa_mha_bool_convention(query, key, value, attn_mask=None, dropout_p=0.0,
                             is_causal=False, scale=None, enable_gqa=False):
    L, S = query.size(-2), key.size(-2)
    sm_scale = _scale_of(query, scale)
    if enable_gqa and key.size(-3) != query.size(-3):
        rep = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    scores = torch.matmul(query, key.transpose(-2, -1)) * sm_scale
    keep = None
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool).tril()
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            # BUG: nn.MultiheadAttention convention (True = do NOT attend)
            # applied to the SDPA mask, whose True means "attend".
            keep = ~attn_mask if keep is None else keep & ~attn_mask
        else:
            scores = scores + attn_mask
    return _masked_softmax_av(scores, keep, value).to(query.dtype)


def sdpa_causal_lower_right(query, key, value, attn_mask=None, dropout_p=0.0,
                            is_causal=False, scale=None, enable_gqa=False):
    L, S = query.size(-2), key.size(-2)
    sm_scale = _scale_of(query, scale)
    if enable_gqa and key.size(-3) != query.size(-3):
        rep = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    scores = torch.matmul(query, key.transpose(-2, -1)) * sm_scale
    keep = None
    if is_causal:
        # BUG: causal diagonal anchored bottom-right (KV-cache style offset
        # S - L); SDPA's is_causal is top-left aligned.
        keep = torch.ones(L, S, dtype=torch.bool).tril(diagonal=S - L)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            keep = attn_mask if keep is None else keep & attn_mask
        else:
            scores = scores + attn_mask
    return _masked_softmax_av(scores, keep, value).to(query.dtype)


def sdpa_gqa_tile(query, key, value, attn_mask=None, dropout_p=0.0,
                  is_causal=False, scale=None, enable_gqa=False):
    L, S = query.size(-2), key.size(-2)
    sm_scale = _scale_of(query, scale)
    if enable_gqa and key.size(-3) != query.size(-3):
        rep = query.size(-3) // key.size(-3)
        # BUG: Tensor.repeat tiles the kv heads ([0,1,0,1]) instead of
        # repeat_interleave ([0,0,1,1]).
        key = key.repeat(1, rep, 1, 1)
        value = value.repeat(1, rep, 1, 1)
    scores = torch.matmul(query, key.transpose(-2, -1)) * sm_scale
    keep = None
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool).tril()
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            keep = attn_mask if keep is None else keep & attn_mask
        else:
            scores = scores + attn_mask
    return _masked_softmax_av(scores, keep, value).to(query.dtype)


def sdpa_gqa_5d_mask(query, key, value, attn_mask=None, dropout_p=0.0,
                     is_causal=False, scale=None, enable_gqa=False):
    B, Hq, L, E = query.shape
    Hkv, S = key.size(-3), key.size(-2)
    sm_scale = _scale_of(query, scale)
    if not (enable_gqa and Hkv != Hq):
        return sdpa_math(query, key, value, attn_mask, dropout_p, is_causal,
                         scale, enable_gqa)
    G = Hq // Hkv
    q5 = query.reshape(B, Hkv, G, L, E)
    scores = torch.matmul(q5, key.unsqueeze(2).transpose(-2, -1)) * sm_scale
    keep = None
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool).tril()
    if attn_mask is not None:
        # BUG: the 4-D mask is broadcast against the 5-D (B, Hkv, G, L, S)
        # scores as-is; right alignment puts the mask's batch axis on the
        # kv-head axis (silently wrong when B == Hkv).
        if attn_mask.dtype == torch.bool:
            keep = attn_mask if keep is None else keep & attn_mask
        else:
            scores = scores + attn_mask
    out = _masked_softmax_av(scores, keep, value.unsqueeze(2))
    return out.reshape(B, Hq, L, value.size(-1)).to(query.dtype)


def sdpa_float_mask_as_bool(query, key, value, attn_mask=None, dropout_p=0.0,
                            is_causal=False, scale=None, enable_gqa=False):
    L, S = query.size(-2), key.size(-2)
    sm_scale = _scale_of(query, scale)
    if enable_gqa and key.size(-3) != query.size(-3):
        rep = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    scores = torch.matmul(query, key.transpose(-2, -1)) * sm_scale
    keep = None
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool).tril()
    if attn_mask is not None:
        if attn_mask.dtype != torch.bool:
            # BUG: an additive float mask is cast to bool and used as a keep
            # mask: 0.0 (keep) becomes False, -inf / any bias becomes True.
            attn_mask = attn_mask.to(torch.bool)
        keep = attn_mask if keep is None else keep & attn_mask
    return _masked_softmax_av(scores, keep, value).to(query.dtype)


def sdpa_double_scale(query, key, value, attn_mask=None, dropout_p=0.0,
                      is_causal=False, scale=None, enable_gqa=False):
    L, S = query.size(-2), key.size(-2)
    if enable_gqa and key.size(-3) != query.size(-3):
        rep = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(query.size(-1))
    if scale is not None:
        # BUG: the explicit scale is applied on top of the default
        # 1/sqrt(E) normalisation instead of replacing it.
        scores = scores * scale
    keep = None
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool).tril()
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            keep = attn_mask if keep is None else keep & attn_mask
        else:
            scores = scores + attn_mask
    return _masked_softmax_av(scores, keep, value).to(query.dtype)


def sdpa_bf16_scores(query, key, value, attn_mask=None, dropout_p=0.0,
                     is_causal=False, scale=None, enable_gqa=False):
    L, S = query.size(-2), key.size(-2)
    sm_scale = _scale_of(query, scale)
    if enable_gqa and key.size(-3) != query.size(-3):
        rep = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    scores = torch.matmul(query, key.transpose(-2, -1)) * sm_scale
    # BUG: the attention logits are materialised in bfloat16 (reduced-
    # precision math path) before the mask and softmax.
    scores = scores.to(torch.bfloat16).to(query.dtype)
    keep = None
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool).tril()
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            keep = attn_mask if keep is None else keep & attn_mask
        else:
            scores = scores + attn_mask
    return _masked_softmax_av(scores, keep, value).to(query.dtype)


def sdpa_causal_excludes_diagonal(query, key, value, attn_mask=None, dropout_p=0.0,
                                  is_causal=False, scale=None, enable_gqa=False):
    L, S = query.size(-2), key.size(-2)
    sm_scale = _scale_of(query, scale)
    if enable_gqa and key.size(-3) != query.size(-3):
        rep = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    scores = torch.matmul(query, key.transpose(-2, -1)) * sm_scale
    keep = None
    if is_causal:
        # BUG: triu offset 0 marks the diagonal as "future" too, so a query
        # never sees its own key (and row 0 sees nothing).
        future = torch.ones(L, S, dtype=torch.bool).triu(diagonal=0)
        keep = ~future
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            keep = attn_mask if keep is None else keep & attn_mask
        else:
            scores = scores + attn_mask
    return _masked_softmax_av(scores, keep, value).to(query.dtype)


_ALL = ["mask", "causal", "gqa", "dv-ne-d"]


def _entry(name, fn, correct, bug, parameter, source, report, dtype="float64",
           features=_ALL):
    return dict(name=name, api="torch-sdpa", fn=fn, correct=correct, bug=bug,
                parameter=parameter, source=source, report=report, dtype=dtype,
                features=list(features))


CATALOG = [
    _entry("sdpa_math_reference", "sdpa_math", True, None, None, None, None),
    _entry("sdpa_grouped_5d", "sdpa_grouped_5d", True, None, None, None, None),
    _entry("sdpa_mha_bool_convention", "sdpa_mha_bool_convention", False,
           "bool-mask-polarity-inverted", "True = masked (MHA convention)",
           "pytorch/pytorch#170415",
           "https://github.com/pytorch/pytorch/pull/170415"),
    _entry("sdpa_causal_lower_right", "sdpa_causal_lower_right", False,
           "causal-bottom-right-instead-of-top-left", "tril(diagonal=S-L)",
           "openvinotoolkit/openvino#36680",
           "https://github.com/openvinotoolkit/openvino/pull/36680"),
    _entry("sdpa_gqa_tile", "sdpa_gqa_tile", False,
           "gqa-kv-heads-tiled-not-interleaved", "kv.repeat(1, G, 1, 1)",
           "onnx/onnx#7274", "https://github.com/onnx/onnx/pull/7274"),
    _entry("sdpa_gqa_5d_mask", "sdpa_gqa_5d_mask", False,
           "gqa-5d-scores-mask-batch-on-kv-head-axis",
           "4-D mask right-aligned to (B,Hkv,G,L,S)",
           "ml-explore/mlx-lm#1903",
           "https://github.com/ml-explore/mlx-lm/pull/1903"),
    _entry("sdpa_float_mask_as_bool", "sdpa_float_mask_as_bool", False,
           "additive-mask-cast-to-bool", "attn_mask.to(torch.bool)",
           "huggingface/transformers#38094",
           "https://github.com/huggingface/transformers/pull/38094"),
    _entry("sdpa_double_scale", "sdpa_double_scale", False,
           "explicit-scale-multiplied-with-default", "scale * 1/sqrt(E)",
           "NVIDIA/Megatron-LM#317",
           "https://github.com/NVIDIA/Megatron-LM/pull/317"),
    _entry("sdpa_bf16_scores", "sdpa_bf16_scores", False,
           "bfloat16-attention-logits", "scores rounded to bfloat16",
           "pytorch/pytorch#128922",
           "https://github.com/pytorch/pytorch/pull/128922", dtype="float32"),
    _entry("sdpa_causal_excludes_diagonal", "sdpa_causal_excludes_diagonal", False,
           "causal-mask-excludes-diagonal", "triu(diagonal=0) as future mask",
           "pbloem/former#10", "https://github.com/pbloem/former/issues/10"),
]
