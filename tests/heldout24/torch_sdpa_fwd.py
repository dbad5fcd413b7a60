"""Held-out set 24, API torch-sdpa: scaled_dot_product_attention semantics on (B, H, S, D) torch tensors."""
import math

import torch


def _scale(query, scale):
    return 1.0 / math.sqrt(query.size(-1)) if scale is None else scale


def _expand_kv(query, key, value, enable_gqa):
    if enable_gqa and key.size(-3) != query.size(-3):
        group = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(group, dim=-3)
        value = value.repeat_interleave(group, dim=-3)
    return key, value


def _masked_softmax(scores):
    m = scores.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(scores - m)
    s = e.sum(dim=-1, keepdim=True)
    return e / torch.where(s == 0, torch.ones_like(s), s)


def _apply_mask(scores, attn_mask):
    if attn_mask is None:
        return scores
    if attn_mask.dtype == torch.bool:
        return scores.masked_fill(attn_mask.logical_not(), float("-inf"))
    return scores + attn_mask


# --- kernel: sdpa_causal_square_only ---
def sdpa_causal_square_only(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """AttentionLayer with causal_mask: the upper-triangular mask is only built for square scores."""
    key, value = _expand_kv(query, key, value, enable_gqa)
    L, S = query.size(-2), key.size(-2)
    scores = torch.matmul(query, key.transpose(-2, -1)) * _scale(query, scale)
    scores = _apply_mask(scores, attn_mask)
    if is_causal and L == S:  # BUG: rectangular (Sq != Sk) scores run unmasked
        causal = torch.ones(L, S, dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(causal.logical_not(), float("-inf"))
    return torch.matmul(_masked_softmax(scores), value)


# --- kernel: sdpa_doc_equivalent_not_mask ---
def sdpa_doc_equivalent_not_mask(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """The documentation's 'efficient implementation equivalent', bool masks turned into a bias."""
    key, value = _expand_kv(query, key, value, enable_gqa)
    L, S = query.size(-2), key.size(-2)
    attn_bias = torch.zeros(L, S, dtype=query.dtype, device=query.device)
    if is_causal:
        temp_mask = torch.ones(L, S, dtype=torch.bool, device=query.device).tril(diagonal=0)
        attn_bias = attn_bias.masked_fill(temp_mask.logical_not(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device).masked_fill(
                not attn_mask, float("-inf"))  # BUG: Python `not` on a tensor instead of logical_not()
        attn_bias = attn_bias + attn_mask
    attn_weight = torch.matmul(query, key.transpose(-2, -1)) * _scale(query, scale) + attn_bias
    return torch.matmul(_masked_softmax(attn_weight), value)


# --- kernel: sdpa_decomposed_no_row_guard ---
def sdpa_decomposed_no_row_guard(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """ScaledDotProductAttention decomposition: MatMul, Add(mask), Softmax, MatMul."""
    key, value = _expand_kv(query, key, value, enable_gqa)
    L, S = query.size(-2), key.size(-2)
    scaled_atten = torch.matmul(query, key.transpose(-2, -1)) * _scale(query, scale)
    if is_causal:
        tri = torch.ones(L, S, dtype=torch.bool, device=query.device).tril()
        scaled_atten = scaled_atten.masked_fill(tri.logical_not(), float("-inf"))
    scaled_atten = _apply_mask(scaled_atten, attn_mask)
    scaled_atten = torch.softmax(scaled_atten, dim=-1)  # BUG: no guard, a fully masked row gives NaN
    return torch.matmul(scaled_atten, value)


# --- kernel: sdpa_fa_discard_mask ---
def _fa_core(query, key, value, discard, scale):
    # fused-attention convention: a mask value of 1 (True) means "discard", 0 means "keep"
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale
    if discard is not None:
        scores = scores.masked_fill(discard, float("-inf"))
    return torch.matmul(_masked_softmax(scores), value)


def sdpa_fa_discard_mask(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    """Routes through a fused core whose bool mask marks the positions to discard."""
    key, value = _expand_kv(query, key, value, enable_gqa)
    L, S = query.size(-2), key.size(-2)
    sc = _scale(query, scale)
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        scores = torch.matmul(query, key.transpose(-2, -1)) * sc + attn_mask
        return torch.matmul(_masked_softmax(scores), value)
    discard = None
    if is_causal:
        discard = torch.ones(L, S, dtype=torch.bool, device=query.device).triu(1)
    if attn_mask is not None:
        discard = attn_mask  # BUG: the keep-mask (True = attend) is passed as is, not flipped with 1 - mask
    return _fa_core(query, key, value, discard, sc)


# --- kernel: sdpa_global_tokens_causal ---
def sdpa_global_tokens_causal(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                              enable_gqa=False):
    """Global-token style: a per-query validity mask [L, 1] is combined with the causal pattern."""
    key, value = _expand_kv(query, key, value, enable_gqa)
    L, S = query.size(-2), key.size(-2)
    scores = torch.matmul(query, key.transpose(-2, -1)) * _scale(query, scale)
    scores = _apply_mask(scores, attn_mask)
    if is_causal:
        attention_query_mask = torch.ones(L, 1, dtype=torch.bool, device=query.device)
        n_q = attention_query_mask.shape[1]  # BUG: the pattern is sized by shape[1] (always 1), not L
        causal = torch.ones(n_q, S, dtype=torch.bool, device=query.device).tril()
        keep = attention_query_mask & causal
        scores = scores.masked_fill(keep.logical_not(), float("-inf"))
    return torch.matmul(_masked_softmax(scores), value)


# --- kernel: sdpa_wrapper_causal_not_forwarded ---
def _dot_product_attention(query, key, value, mask, use_causal_mask, scale):
    L, S = query.size(-2), key.size(-2)
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale
    scores = _apply_mask(scores, mask)
    if use_causal_mask:
        tri = torch.ones(L, S, dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(tri.logical_not(), float("-inf"))
    return torch.matmul(_masked_softmax(scores), value)


def sdpa_wrapper_causal_not_forwarded(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                      scale=None, enable_gqa=False):
    """A thin layer that forwards its arguments to an inner attention call."""
    key, value = _expand_kv(query, key, value, enable_gqa)
    return _dot_product_attention(query, key, value, attn_mask,
                                  use_causal_mask=False,  # BUG: is_causal is not forwarded
                                  scale=_scale(query, scale))


# --- kernel: sdpa_grouped_online_blocks ---
def sdpa_grouped_online_blocks(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                               enable_gqa=False):
    """Grouped (B, Hkv, G, L, D) view against unexpanded K/V, online softmax over key blocks of 20."""
    B, Hq, L, D = query.shape
    Hkv, S = key.size(-3), key.size(-2)
    G = Hq // Hkv
    sc = _scale(query, scale)
    qg = query.reshape(B, Hkv, G, L, D)
    kg = key.unsqueeze(2)
    vg = value.unsqueeze(2)
    bias = torch.zeros(L, S, dtype=query.dtype, device=query.device)
    if is_causal:
        tri = torch.ones(L, S, dtype=torch.bool, device=query.device).tril()
        bias = bias.masked_fill(tri.logical_not(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            add = torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device)
            add = add.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            add = attn_mask
        bias = bias + add
    bias = bias.expand(B, Hq, L, S).reshape(B, Hkv, G, L, S)
    m = torch.full((B, Hkv, G, L, 1), float("-inf"), dtype=query.dtype, device=query.device)
    den = torch.zeros((B, Hkv, G, L, 1), dtype=query.dtype, device=query.device)
    acc = torch.zeros((B, Hkv, G, L, value.size(-1)), dtype=query.dtype, device=query.device)
    for j0 in range(0, S, 20):
        j1 = min(j0 + 20, S)
        s = torch.matmul(qg, kg[..., j0:j1, :].transpose(-2, -1)) * sc + bias[..., j0:j1]
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
        m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        alpha = torch.exp(torch.where(torch.isfinite(m), m, m_safe) - m_safe)
        p = torch.exp(s - m_safe)
        den = den * alpha + p.sum(dim=-1, keepdim=True)
        acc = acc * alpha + torch.matmul(p, vg[..., j0:j1, :])
        m = m_new
    out = acc / torch.where(den == 0, torch.ones_like(den), den)
    return out.reshape(B, Hq, L, value.size(-1))


# --- kernel: sdpa_split_kv_lse_merge ---
def sdpa_split_kv_lse_merge(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """Split-KV: two halves of the keys attended separately, merged by their log-sum-exp."""
    key, value = _expand_kv(query, key, value, enable_gqa)
    L, S = query.size(-2), key.size(-2)
    scores = torch.matmul(query, key.transpose(-2, -1)) * _scale(query, scale)
    if is_causal:
        tri = torch.ones(L, S, dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(tri.logical_not(), float("-inf"))
    scores = _apply_mask(scores, attn_mask)
    half = (S + 1) // 2
    outs, lses = [], []
    for a, b in ((0, half), (half, S)):
        s = scores[..., a:b]
        lse = torch.logsumexp(s, dim=-1, keepdim=True) if b > a else torch.full_like(scores[..., :1], float("-inf"))
        fin = torch.isfinite(lse)
        w = torch.where(fin, torch.exp(s - torch.where(fin, lse, torch.zeros_like(lse))), torch.zeros_like(s))
        outs.append(torch.matmul(w, value[..., a:b, :]))
        lses.append(lse)
    lse_all = torch.logaddexp(lses[0], lses[1])
    fin = torch.isfinite(lse_all)
    ref = torch.where(fin, lse_all, torch.zeros_like(lse_all))
    out = 0
    for o, lse in zip(outs, lses):
        out = out + o * torch.where(fin, torch.exp(lse - ref), torch.zeros_like(lse))
    return out


CATALOG = [
    dict(name="sdpa-nntrainer-causal-square-only", api="torch-sdpa", fn="sdpa_causal_square_only", correct=False,
         bug="causal-dropped-when-rectangular",
         parameter="the causal mask is only applied when the score matrix is square; with is_causal=True and "
                   "Sq != Sk every key is attended. Triggers: is_causal=True with Sq != Sk",
         source="nntrainer/nntrainer#4333", report="https://github.com/nntrainer/nntrainer/issues/4333",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-doc-not-attn-mask", api="torch-sdpa", fn="sdpa_doc_equivalent_not_mask", correct=False,
         bug="bool-mask-python-not",
         parameter="a bool attn_mask is negated with Python `not` instead of logical_not(), which raises "
                   "RuntimeError for any mask of more than one element. Triggers: a bool attn_mask",
         source="pytorch/pytorch#110341", report="https://github.com/pytorch/pytorch/issues/110341",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-openvino-masked-row-nan", api="torch-sdpa", fn="sdpa_decomposed_no_row_guard", correct=False,
         bug="fully-masked-row-nan",
         parameter="the decomposition applies a plain softmax after the mask with no guard: a row with no "
                   "visible key gives NaN instead of zeros. Triggers: a row with no visible key (bool mask or "
                   "additive -inf row)",
         source="openvinotoolkit/openvino#36016",
         report="https://github.com/openvinotoolkit/openvino/pull/36016", dtype="float64",
         features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-mindone-discard-convention", api="torch-sdpa", fn="sdpa_fa_discard_mask", correct=False,
         bug="keep-mask-used-as-discard-mask",
         parameter="a bool attn_mask (True = attend) is handed to a fused core that reads True as discard, "
                   "without flipping it: kept keys are dropped and dropped keys kept (an all-True row becomes "
                   "empty). Triggers: a bool attn_mask",
         source="mindspore-lab/mindone#541", report="https://github.com/mindspore-lab/mindone/pull/541",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-xformers-causal-pattern-size", api="torch-sdpa", fn="sdpa_global_tokens_causal",
         correct=False, bug="causal-pattern-wrong-size",
         parameter="the causal pattern is built with the size of the per-query mask's second axis (always 1), "
                   "so a (1, Sk) lower-triangular row [1, 0, ..., 0] is broadcast to every query: each query "
                   "attends key 0 only. Triggers: is_causal=True with Sq > 1 and Sk > 1",
         source="facebookresearch/xformers#1135",
         report="https://github.com/facebookresearch/xformers/issues/1135", dtype="float64",
         features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-keras-causal-not-forwarded", api="torch-sdpa", fn="sdpa_wrapper_causal_not_forwarded",
         correct=False, bug="causal-flag-not-forwarded",
         parameter="the wrapper calls the inner attention with use_causal_mask=False whatever is_causal is: "
                   "causal attention attends every key. Triggers: is_causal=True with a key j > i",
         source="keras-team/keras#21284", report="https://github.com/keras-team/keras/issues/21284",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-grouped-online-blocks", api="torch-sdpa", fn="sdpa_grouped_online_blocks", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64",
         features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-split-kv-lse-merge", api="torch-sdpa", fn="sdpa_split_kv_lse_merge", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
]
