"""Held-out attention kernels for the `torch-sdpa` API, written with matmul/softmax (torch 1.13).

fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False) on
(B, H, S, D) tensors: `attn_mask` bool (True = attend) or additive float; `is_causal` top-left (j <= i);
`enable_gqa`: query head h uses kv head h // (Hq // Hkv); rows with no visible key give zeros;
dropout_p is always 0. Returns (B, Hq, Sq, Dv) in the input dtype. Broken kernels carry one mistake each,
adapted from the public report named in CATALOG.
"""
import math

import torch


def _default_scale(query, scale):
    return 1.0 / math.sqrt(query.size(-1)) if scale is None else float(scale)


def _as_bias(attn_mask, is_causal, L, S, dtype, device):
    """Additive bias (0 / -inf, or the user's float values) of shape broadcastable to (..., L, S)."""
    bias = torch.zeros(L, S, dtype=dtype, device=device)
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool, device=device).tril(diagonal=0)
        bias = bias.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = torch.where(attn_mask, bias, torch.full_like(bias, float("-inf")))
        else:
            bias = bias + attn_mask.to(dtype)
    return bias


def _expand_kv(key, value, query, enable_gqa):
    if enable_gqa and key.size(-3) != query.size(-3):
        rep = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    return key, value


def _safe_softmax(scores):
    row_max = scores.amax(dim=-1, keepdim=True)
    dead = torch.isneginf(row_max)
    p = torch.exp(scores - torch.where(dead, torch.zeros_like(row_max), row_max))
    denom = p.sum(dim=-1, keepdim=True)
    return p / torch.where(denom == 0, torch.ones_like(denom), denom)


# -------------------------------------------------------------------------------------------------------
# GPT-SoVITS-style causal mask built with triu (RVC-Boss/GPT-SoVITS#965)
def sdpa_triu_causal(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                     enable_gqa=False):
    key, value = _expand_kv(key, value, query, enable_gqa)
    L, S = query.size(-2), key.size(-2)
    attn = torch.matmul(query, key.transpose(-2, -1)) * _default_scale(query, scale)
    if is_causal:
        future = torch.triu(torch.ones(L, S, dtype=torch.bool, device=query.device), diagonal=0)  # BUG: drops j == i
        attn = attn.masked_fill(future, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn = attn.masked_fill(~attn_mask, float("-inf"))
        else:
            attn = attn + attn_mask
    return torch.matmul(_safe_softmax(attn), value).to(query.dtype)


# -------------------------------------------------------------------------------------------------------
# transformer-from-scratch style: heads concatenated and split again around the attention core
# (jsbaan/transformer-from-scratch#6)
def sdpa_head_concat(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                     enable_gqa=False):
    key, value = _expand_kv(key, value, query, enable_gqa)
    batch, heads, seq_len, _ = query.shape
    qkv_dim = value.size(-1)
    bias = _as_bias(attn_mask, is_causal, seq_len, key.size(-2), query.dtype, query.device)
    scores = torch.matmul(query, key.transpose(-2, -1)) * _default_scale(query, scale) + bias
    values = torch.matmul(_safe_softmax(scores), value)  # (batch, heads, seq_len, qkv_dim)
    values = values.reshape(batch, seq_len, heads * qkv_dim)  # BUG: no permute(0, 2, 1, 3) before the reshape
    values = values.reshape(batch, seq_len, heads, qkv_dim).permute(0, 2, 1, 3)
    return values.contiguous().to(query.dtype)


# -------------------------------------------------------------------------------------------------------
# math-backend style: probabilities moved to the low-precision value path before P @ V
# (pytorch/pytorch#172947)
PV_DTYPE = torch.bfloat16


def sdpa_low_precision_pv(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                          enable_gqa=False):
    key, value = _expand_kv(key, value, query, enable_gqa)
    bias = _as_bias(attn_mask, is_causal, query.size(-2), key.size(-2), query.dtype, query.device)
    scores = query @ key.transpose(-2, -1) * _default_scale(query, scale) + bias
    post_mod_scores = _safe_softmax(scores)
    post_mod_scores = post_mod_scores.to(PV_DTYPE).to(value.dtype)  # BUG: weights rounded to bf16 before P @ V
    return (post_mod_scores @ value).to(query.dtype)


# -------------------------------------------------------------------------------------------------------
# nn.MultiheadAttention-era reading of attn_mask as multiplicative (pytorch/pytorch#21518)
def sdpa_multiplicative_mask(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                             enable_gqa=False):
    key, value = _expand_kv(key, value, query, enable_gqa)
    L, S = query.size(-2), key.size(-2)
    attn_weight = query @ key.transpose(-2, -1) * _default_scale(query, scale)
    if is_causal:
        causal = torch.ones(L, S, dtype=torch.bool, device=query.device).tril()
        attn_weight = attn_weight.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_weight = attn_weight.masked_fill(~attn_mask, float("-inf"))
        else:
            attn_weight = attn_weight.masked_fill(attn_mask == 0, float("-inf"))  # BUG: float mask read as 0/1 keep
    return (_safe_softmax(attn_weight) @ value).to(query.dtype)


# -------------------------------------------------------------------------------------------------------
# grouped-query einsum without duplicating kv heads (fkodom/grouped-query-attention-pytorch#5)
def sdpa_grouped_einsum(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                        enable_gqa=False):
    b, hq, n, _ = query.shape
    hk, s = key.size(-3), key.size(-2)
    g = hq // hk if enable_gqa else 1
    bias = _as_bias(attn_mask, is_causal, n, s, query.dtype, query.device)
    bias = bias.expand(b, hq, n, s).reshape(b, hk, g, n, s)
    q = query.reshape(b, hk, g, n, query.size(-1))
    sim = torch.einsum("bhgnd,bhsd->bhgns", q, key) * _default_scale(query, scale) + bias
    out = torch.einsum("bhgns,bhsd->bhgnd", _safe_softmax(sim), value)
    out = out.transpose(1, 2).reshape(b, hq, n, value.size(-1))  # BUG: heads regrouped as (g, hk), not (hk, g)
    return out.to(query.dtype)


# -------------------------------------------------------------------------------------------------------
# guided-diffusion QKVAttention: the scale split as sqrt(scale) over q and k (openai/guided-diffusion#38)
def sdpa_split_scale(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                     enable_gqa=False):
    key, value = _expand_kv(key, value, query, enable_gqa)
    ch = query.size(-1)
    sc = 1 / math.sqrt(math.sqrt(ch)) if scale is None else math.sqrt(float(scale))
    weight = torch.einsum("bhtc,bhsc->bhts", query * sc, key)  # BUG: sqrt(scale) on q only, k left unscaled
    weight = weight + _as_bias(attn_mask, is_causal, query.size(-2), key.size(-2), query.dtype, query.device)
    return torch.einsum("bhts,bhsc->bhtc", _safe_softmax(weight), value).to(query.dtype)


# -------------------------------------------------------------------------------------------------------
# lm-engine style: causal flag only forwarded when the lengths agree (open-lm-engine/lm-engine#498)
def sdpa_causal_equal_lengths(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                              enable_gqa=False):
    key, value = _expand_kv(key, value, query, enable_gqa)
    causal = is_causal and query.size(-2) == key.size(-2)  # BUG: causal masking dropped when Sq != Sk
    bias = _as_bias(attn_mask, causal, query.size(-2), key.size(-2), query.dtype, query.device)
    logits = torch.matmul(query, key.transpose(-1, -2)) * _default_scale(query, scale) + bias
    return torch.matmul(_safe_softmax(logits), value).to(query.dtype)


# -------------------------------------------------------------------------------------------------------
# xpu safe-softmax style: masked rows found through a lowest() sentinel (intel/torch-xpu-ops#5022)
def sdpa_lowest_sentinel(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    key, value = _expand_kv(key, value, query, enable_gqa)
    lowest = torch.finfo(query.dtype).min
    L, S = query.size(-2), key.size(-2)
    scores = torch.matmul(query, key.transpose(-2, -1)) * _default_scale(query, scale)
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(~keep, lowest)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, lowest)
        else:
            scores = scores + attn_mask
    max_value = scores.amax(dim=-1, keepdim=True)
    probs = torch.softmax(scores, dim=-1)
    fully_masked = max_value == lowest  # BUG: a row of additive -inf has max -inf, not lowest(), and stays NaN
    probs = probs.masked_fill(fully_masked, 0.0)
    return torch.matmul(probs, value).to(query.dtype)


# -------------------------------------------------------------------------------------------------------
# tilelang flash-decoding style: split-KV partials and a combine step (tile-ai/tilelang#328)
def _split_partials(query, key, value, bias, sm_scale, split):
    outs, lses = [], []
    for s0 in range(0, key.size(-2), split):
        sc = query @ key[..., s0:s0 + split, :].transpose(-2, -1) * sm_scale + bias[..., s0:s0 + split]
        m = sc.amax(dim=-1, keepdim=True)
        m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
        p = torch.exp(sc - m)
        l_ = p.sum(dim=-1, keepdim=True)
        outs.append(p @ value[..., s0:s0 + split, :] / torch.where(l_ == 0, torch.ones_like(l_), l_))
        lses.append(torch.log(l_) + m)  # -inf for an empty split
    return outs, lses


def sdpa_split_kv_combine(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                          enable_gqa=False):
    num_split_len = 64
    key, value = _expand_kv(key, value, query, enable_gqa)
    bias = _as_bias(attn_mask, is_causal, query.size(-2), key.size(-2), query.dtype, query.device)
    bias = bias.expand(query.shape[:-2] + (query.size(-2), key.size(-2)))
    outs, lses = _split_partials(query, key, value, bias, _default_scale(query, scale), num_split_len)
    lse_max_local = torch.zeros_like(lses[0])  # BUG: combine max cleared to 0 instead of the max split lse
    lse_logsum_local = torch.zeros_like(lses[0])
    o_accum_local = torch.zeros_like(outs[0])
    for po, lse in zip(outs, lses):
        scale_local = torch.exp(lse - lse_max_local)
        lse_logsum_local = lse_logsum_local + scale_local
        o_accum_local = o_accum_local + scale_local * po
    out = o_accum_local / torch.where(lse_logsum_local == 0, torch.ones_like(lse_logsum_local), lse_logsum_local)
    return out.to(query.dtype)


# -------------------------------------------------------------------------------------------------------
# correct: grouped-query attention without materialising repeated kv heads, safe softmax
def sdpa_grouped_safe(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                      enable_gqa=False):
    b, hq, n, d = query.shape
    hk, s = key.size(-3), key.size(-2)
    g = hq // hk if enable_gqa else 1
    bias = _as_bias(attn_mask, is_causal, n, s, query.dtype, query.device)
    bias = bias.expand(b, hq, n, s).reshape(b, hk, g, n, s)
    q = query.reshape(b, hk, g, n, d)
    sim = torch.matmul(q, key.unsqueeze(2).transpose(-2, -1)) * _default_scale(query, scale) + bias
    out = torch.matmul(_safe_softmax(sim), value.unsqueeze(2))
    return out.reshape(b, hq, n, value.size(-1)).to(query.dtype)


# -------------------------------------------------------------------------------------------------------
# correct: split-KV partials of 48 keys merged through their log-sum-exp
def sdpa_split_kv_lse(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                      enable_gqa=False):
    key, value = _expand_kv(key, value, query, enable_gqa)
    bias = _as_bias(attn_mask, is_causal, query.size(-2), key.size(-2), query.dtype, query.device)
    bias = bias.expand(query.shape[:-2] + (query.size(-2), key.size(-2)))
    outs, lses = _split_partials(query, key, value, bias, _default_scale(query, scale), 48)
    lse = torch.stack(lses, dim=0)
    top = lse.amax(dim=0)
    top = torch.where(torch.isneginf(top), torch.zeros_like(top), top)
    w = torch.exp(lse - top)
    total = w.sum(dim=0)
    out = sum(w[i] * outs[i] for i in range(len(outs)))
    return (out / torch.where(total == 0, torch.ones_like(total), total)).to(query.dtype)


def _entry(name, fn, bug=None, parameter=None, source=None, kind="issues", dtype="float64",
           features=("mask", "causal", "gqa", "dv-ne-d")):
    report = None
    if source is not None:
        repo, num = source.split("#")
        report = "https://github.com/{}/{}/{}".format(repo, kind, num)
    return {
        "name": name,
        "api": "torch-sdpa",
        "fn": fn,
        "correct": bug is None,
        "bug": bug,
        "parameter": parameter,
        "source": source,
        "report": report,
        "dtype": dtype,
        "features": list(features),
    }


CATALOG = [
    _entry("sdpa-sovits-triu-diagonal", "sdpa_triu_causal", "causal-mask-excludes-diagonal",
           "is_causal mask built with triu(diagonal=0): key j == i is dropped too",
           "RVC-Boss/GPT-SoVITS#965"),
    _entry("sdpa-scratch-concat-no-permute", "sdpa_head_concat", "head-merge-without-permute",
           "heads concatenated with reshape(B, S, H*Dv) without moving the head axis first",
           "jsbaan/transformer-from-scratch#6", "pull"),
    _entry("sdpa-math-bf16-weights", "sdpa_low_precision_pv", "weights-rounded-to-bf16-before-pv",
           "attention weights cast to bfloat16 before the P @ V matmul",
           "pytorch/pytorch#172947", "pull", dtype="float32"),
    _entry("sdpa-mha-multiplicative-float-mask", "sdpa_multiplicative_mask", "float-mask-read-as-multiplicative",
           "additive float attn_mask treated as a 0/1 keep-mask (zeros dropped, values not added)",
           "pytorch/pytorch#21518"),
    _entry("sdpa-gqa-einsum-regroup", "sdpa_grouped_einsum", "gqa-output-heads-regrouped",
           "grouped output (B, Hkv, G, ...) transposed to (B, G, Hkv, ...) before flattening the heads",
           "fkodom/grouped-query-attention-pytorch#5"),
    _entry("sdpa-guided-diffusion-q-only-scale", "sdpa_split_scale", "split-scale-on-query-only",
           "sqrt(scale) meant for both q and k applied to q only (logits scaled by sqrt(scale))",
           "openai/guided-diffusion#38"),
    _entry("sdpa-lmengine-causal-equal-lengths", "sdpa_causal_equal_lengths", "causal-dropped-when-lengths-differ",
           "is_causal only honoured when Sq == Sk",
           "open-lm-engine/lm-engine#498", "pull"),
    _entry("sdpa-xpu-lowest-sentinel", "sdpa_lowest_sentinel", "dead-row-sentinel-misses-additive-inf",
           "fully masked rows detected by max == finfo.min; additive -inf rows are not caught (NaN)",
           "intel/torch-xpu-ops#5022", "pull"),
    _entry("sdpa-tilelang-combine-max-zero", "sdpa_split_kv_combine", "split-combine-max-initialised-zero",
           "split-KV combine subtracts 0 instead of the max split log-sum-exp (overflow for large logits)",
           "tile-ai/tilelang#328"),
    _entry("sdpa-grouped-safe", "sdpa_grouped_safe"),
    _entry("sdpa-split-kv-lse", "sdpa_split_kv_lse"),
]
