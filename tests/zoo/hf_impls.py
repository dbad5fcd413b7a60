"""Zoo: attention written against the Hugging Face transformers attention interface (AttentionInterface).

Independent of refimpl (written from the transformers documentation / eager_attention_forward only). Every
public function is
    fn(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs) -> (out, weights)
with query (B, Hq, Sq, D), key (B, Hkv, Sk, D), value (B, Hkv, Sk, Dv) (heads before sequence), Hq % Hkv == 0
and module.num_key_value_groups == Hq // Hkv (repeat_kv: query head h reads kv head h // groups).
module.is_causal and kwargs["sliding_window"] are informational: the caller has folded causality, the window
and padding into attention_mask, an additive float tensor broadcastable as (B, 1, Sq, >= Sk) in the query's
dtype (0 = attend, finfo(dtype).min = masked), sliced to [..., :Sk]. For query i and key j (0-based):
    s_ij  = (q_i . k_j) * scaling,                 scaling = scaling or D ** -0.5
    s_ij  = softcap * tanh(s_ij / softcap)          if kwargs["softcap"] (Gemma-2: on the SCALED score)
    s_ij += mask_ij                                 (after the softcap)
    w_ij  = softmax_j(s_i) in float32, cast to the query dtype; out_i = sum_j w_ij v_j.
A query row whose every key carries finfo.min gives UNIFORM weights over all Sk keys (as eager does: the
min fill absorbs the scores). out is returned as (B, Sq, Hq, Dv) contiguous, weights as (B, Hq, Sq, Sk),
both in the query dtype; the inputs are never modified. Dropout is applied only when module.training.
The broken functions contain exactly one realistic mistake each (marked `BUG:`), see CATALOG.
"""
import torch

_HALF = (torch.float16, torch.bfloat16)
_BLOCK = 32


def _check(module, query, key, value):
    """Validate shapes; return groups = Hq // Hkv (must match module.num_key_value_groups)."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() != 4:
            raise TypeError(f"{name} must be a 4-D floating torch.Tensor (B, H, S, D); "
                            f"got {type(t).__name__} {getattr(t, 'dtype', '')} {tuple(getattr(t, 'shape', ()))}")
    if not query.dtype == key.dtype == value.dtype:
        raise TypeError(f"query, key, value must share a dtype; got {query.dtype}, {key.dtype}, {value.dtype}")
    if not query.shape[0] == key.shape[0] == value.shape[0] or key.shape[1:3] != value.shape[1:3]:
        raise ValueError(f"incompatible shapes query {tuple(query.shape)}, key {tuple(key.shape)}, "
                         f"value {tuple(value.shape)}")
    if query.shape[3] != key.shape[3]:
        raise ValueError(f"query and key must share the head size D; got {query.shape[3]} and {key.shape[3]}")
    hq, hkv = query.shape[1], key.shape[1]
    if hq % hkv != 0:
        raise ValueError(f"Hq={hq} query heads must be a multiple of Hkv={hkv} kv heads")
    groups = getattr(module, "num_key_value_groups", hq // hkv)
    if groups != hq // hkv:
        raise ValueError(f"module.num_key_value_groups={groups} but Hq // Hkv = {hq} // {hkv} = {hq // hkv}")
    return groups


def _scaling(query, scaling):
    return query.shape[-1] ** -0.5 if scaling is None else scaling


def _mask(attention_mask, sk):
    """The additive mask sliced to the key length (a static cache may make it wider), or None."""
    return None if attention_mask is None else attention_mask[..., :sk]


def _cap(scores, softcap):
    """Gemma-2 logit soft-capping of the scaled scores; None or 0 means off."""
    return softcap * torch.tanh(scores / softcap) if softcap else scores


def _softmax(scores, dtype):
    """Softmax over keys in at least float32 (float64 stays float64), cast back to the query dtype."""
    return torch.softmax(scores, dim=-1, dtype=torch.promote_types(dtype, torch.float32)).to(dtype)


def _dropout(weights, dropout, module):
    return torch.nn.functional.dropout(weights, p=dropout, training=bool(getattr(module, "training", False)))


def repeat_kv(hidden_states, n_rep):
    """(B, Hkv, S, D) -> (B, Hkv * n_rep, S, D): each kv head repeated n_rep times in place (expand + reshape)."""
    b, hkv, s, d = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    return hidden_states[:, :, None, :, :].expand(b, hkv, n_rep, s, d).reshape(b, hkv * n_rep, s, d)


# ----------------------------------------------------------------------------------------------- correct


def _eager(module, query, key, value, attention_mask, scaling, dropout, kwargs, softmax_dtype):
    groups = _check(module, query, key, value)
    key_states = repeat_kv(key, groups)
    value_states = repeat_kv(value, groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * _scaling(query, scaling)
    attn_weights = _cap(attn_weights, kwargs.get("softcap"))
    if attention_mask is not None:
        causal_mask = attention_mask[:, :, :, : key_states.shape[-2]]
        attn_weights = attn_weights + causal_mask
    attn_weights = torch.nn.functional.softmax(attn_weights, dim=-1, dtype=softmax_dtype).to(query.dtype)
    attn_weights = _dropout(attn_weights, dropout, module)
    attn_output = torch.matmul(attn_weights, value_states)
    attn_output = attn_output.transpose(1, 2).contiguous()
    return attn_output, attn_weights


def hf_eager(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """eager_attention_forward; its float32 softmax upcast made "at least float32" so float64 stays float64."""
    softmax_dtype = torch.promote_types(query.dtype, torch.float32)
    return _eager(module, query, key, value, attention_mask, scaling, dropout, kwargs, softmax_dtype)


def hf_grouped(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """GQA without copying kv: query viewed as (B, Hkv, G, Sq, D), kv broadcast over the G axis."""
    groups = _check(module, query, key, value)
    b, hq, sq, d = query.shape
    hkv, sk, dv = key.shape[1], key.shape[2], value.shape[3]
    qg = query.reshape(b, hkv, groups, sq, d)  # query head h = kv * G + g
    scores = torch.matmul(qg, key.unsqueeze(2).transpose(-1, -2)) * _scaling(query, scaling)
    scores = _cap(scores, kwargs.get("softcap"))
    mask = _mask(attention_mask, sk)
    if mask is not None:
        scores = scores + (mask.unsqueeze(2) if mask.dim() == 4 else mask)  # (B, 1, 1, Sq, Sk)
    weights = _softmax(scores, query.dtype)
    weights = _dropout(weights, dropout, module)
    out = torch.matmul(weights, value.unsqueeze(2))  # (B, Hkv, G, Sq, Dv)
    out = out.reshape(b, hq, sq, dv).transpose(1, 2).contiguous()
    return out, weights.reshape(b, hq, sq, sk)


def _online(module, query, key, value, mask, scaling, softcap, dropout):
    """FlashAttention-2 style: one pass over key blocks of 32 with a running max m and sum row_sum (float32 for
    half inputs, the input dtype otherwise), then a second pass writing weights = exp(s - m) / row_sum.
    With the finite min fill a fully masked row has all scores equal to min, so it comes out uniform, as in
    eager. The running max is guarded so a -inf mask leaves no NaN in partly masked rows; a row of -inf only
    gives row_sum = 0 and is returned as zeros."""
    groups = _check(module, query, key, value)
    ct = torch.float32 if query.dtype in _HALF else query.dtype
    q = query.to(ct)
    k, v = (t.to(ct).repeat_interleave(groups, dim=1) for t in (key, value))
    mask = None if mask is None else _mask(mask, k.shape[2]).to(ct)
    scale = _scaling(query, scaling)
    b, hq, sq, sk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    m = torch.full((b, hq, sq, 1), float("-inf"), dtype=ct)
    row_sum = torch.zeros((b, hq, sq, 1), dtype=ct)
    acc = torch.zeros((b, hq, sq, v.shape[3]), dtype=ct)

    def block(j0):
        s = _cap(torch.matmul(q, k[:, :, j0:j0 + _BLOCK].transpose(-1, -2)) * scale, softcap)
        return s if mask is None else s + mask[..., j0:j0 + _BLOCK]

    for j0 in range(0, sk, _BLOCK):
        s = block(j0)
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        m_safe = m_new.masked_fill(torch.isinf(m_new), 0.0)
        p = torch.exp(s - m_safe)
        alpha = torch.exp(m - m_safe)
        row_sum = row_sum * alpha + p.sum(-1, keepdim=True)
        acc = acc * alpha + torch.matmul(p, v[:, :, j0:j0 + _BLOCK])
        m = m_new
    m_safe = m.masked_fill(torch.isinf(m), 0.0)
    l_safe = row_sum.masked_fill(row_sum == 0, 1.0)
    weights = torch.cat([torch.exp(block(j0) - m_safe) / l_safe for j0 in range(0, sk, _BLOCK)], dim=-1)
    if dropout and getattr(module, "training", False):  # dropout needs the weights: recompute out from them
        weights = _dropout(weights, dropout, module)
        acc, l_safe = torch.matmul(weights, v), torch.ones_like(l_safe)
    out = (acc / l_safe).to(query.dtype).transpose(1, 2).contiguous()
    return out, weights.to(query.dtype)


def hf_online(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    return _online(module, query, key, value, attention_mask, scaling, kwargs.get("softcap"), dropout)


# ------------------------------------------------------------------------------------------------ broken


def hf_no_transpose(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    groups = _check(module, query, key, value)
    k, v = repeat_kv(key, groups), repeat_kv(value, groups)
    w = _cap(torch.matmul(query, k.transpose(2, 3)) * _scaling(query, scaling), kwargs.get("softcap"))
    mask = _mask(attention_mask, k.shape[2])
    w = w if mask is None else w + mask
    w = _dropout(_softmax(w, query.dtype), dropout, module)
    out = torch.matmul(w, v).contiguous()  # BUG: left as (B, Hq, Sq, Dv); the interface wants (B, Sq, Hq, Dv)
    return out, w


def hf_gqa_tile(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    groups = _check(module, query, key, value)
    k, v = key.repeat(1, groups, 1, 1), value.repeat(1, groups, 1, 1)  # BUG: tiles heads: h reads h % Hkv
    w = _cap(torch.matmul(query, k.transpose(2, 3)) * _scaling(query, scaling), kwargs.get("softcap"))
    mask = _mask(attention_mask, k.shape[2])
    w = w if mask is None else w + mask
    w = _dropout(_softmax(w, query.dtype), dropout, module)
    return torch.matmul(w, v).transpose(1, 2).contiguous(), w


def hf_softcap_after_mask(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    groups = _check(module, query, key, value)
    k, v = repeat_kv(key, groups), repeat_kv(value, groups)
    w = torch.matmul(query, k.transpose(2, 3)) * _scaling(query, scaling)
    mask = _mask(attention_mask, k.shape[2])
    w = w if mask is None else w + mask
    w = _cap(w, kwargs.get("softcap"))  # BUG: capped after the mask: a masked logit becomes -softcap, not min
    w = _dropout(_softmax(w, query.dtype), dropout, module)
    return torch.matmul(w, v).transpose(1, 2).contiguous(), w


def hf_scaling_ignored(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    groups = _check(module, query, key, value)
    k, v = repeat_kv(key, groups), repeat_kv(value, groups)
    w = torch.matmul(query, k.transpose(2, 3)) * query.shape[-1] ** -0.5  # BUG: the scaling argument is ignored
    w = _cap(w, kwargs.get("softcap"))
    mask = _mask(attention_mask, k.shape[2])
    w = w if mask is None else w + mask
    w = _dropout(_softmax(w, query.dtype), dropout, module)
    return torch.matmul(w, v).transpose(1, 2).contiguous(), w


def hf_mask_as_bool(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    groups = _check(module, query, key, value)
    k, v = repeat_kv(key, groups), repeat_kv(value, groups)
    w = _cap(torch.matmul(query, k.transpose(2, 3)) * _scaling(query, scaling), kwargs.get("softcap"))
    mask = _mask(attention_mask, k.shape[2])
    if mask is not None:  # BUG: additive mask read as an SDPA bool keep-mask: 0 (attend) -> dropped, min -> kept
        w = w.masked_fill(~mask.bool(), torch.finfo(w.dtype).min)
    w = _dropout(_softmax(w, query.dtype), dropout, module)
    return torch.matmul(w, v).transpose(1, 2).contiguous(), w


def hf_weights_logits(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    groups = _check(module, query, key, value)
    k, v = repeat_kv(key, groups), repeat_kv(value, groups)
    scores = _cap(torch.matmul(query, k.transpose(2, 3)) * _scaling(query, scaling), kwargs.get("softcap"))
    mask = _mask(attention_mask, k.shape[2])
    probs = _dropout(_softmax(scores if mask is None else scores + mask, query.dtype), dropout, module)
    return torch.matmul(probs, v).transpose(1, 2).contiguous(), scores  # BUG: returns pre-softmax logits


def hf_causal_top_left(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    groups = _check(module, query, key, value)
    k, v = repeat_kv(key, groups), repeat_kv(value, groups)
    w = _cap(torch.matmul(query, k.transpose(2, 3)) * _scaling(query, scaling), kwargs.get("softcap"))
    mask = _mask(attention_mask, k.shape[2])
    w = w if mask is None else w + mask
    if getattr(module, "is_causal", False):  # BUG: re-applies causality top-left (j <= i) on top of the mask
        sq, sk = w.shape[-2], w.shape[-1]
        w = w.masked_fill(torch.ones(sq, sk, dtype=torch.bool).triu(1), torch.finfo(w.dtype).min)
    w = _dropout(_softmax(w, query.dtype), dropout, module)
    return torch.matmul(w, v).transpose(1, 2).contiguous(), w


def hf_softmax_fp32(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """eager_attention_forward verbatim, including its hard-coded float32 softmax."""
    softmax_dtype = torch.float32  # BUG: float64 is downcast: ~1e-7 error, and a float64 min mask becomes -inf
    return _eager(module, query, key, value, attention_mask, scaling, dropout, kwargs, softmax_dtype)


def hf_online_masked_zero(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    mask = attention_mask
    if mask is not None:  # BUG: min fill turned into -inf: fully masked rows give zeros, not eager's uniform
        mask = mask.masked_fill(mask == torch.finfo(mask.dtype).min, float("-inf"))
    return _online(module, query, key, value, mask, scaling, kwargs.get("softcap"), dropout)


_ALL = ["causal", "window", "padding", "masked_rows", "softcap", "scaling", "gqa", "weights"]


def _entry(name, correct, model, note, dtype="float64"):
    return {"name": name, "api": "hf", "fn": name, "correct": correct, "model": model,
            "convention": "uniform" if correct else None, "dtype": dtype, "features": list(_ALL), "note": note}


CATALOG = [
    _entry("hf_eager", True, None, "eager_attention_forward: repeat_kv, matmul, mask slice, >= fp32 softmax"),
    _entry("hf_grouped", True, None, "query viewed as (B, Hkv, G, Sq, D), kv broadcast over G: no kv copies"),
    _entry("hf_online", True, None, "FlashAttention-2 online softmax over key blocks of 32, weights in a 2nd pass"),
    _entry("hf_no_transpose", False, "layout",
           "attn_output left (B, Hq, Sq, Dv): missing transpose(1, 2) (common custom-kernel port bug)"),
    _entry("hf_gqa_tile", False, "gqa-grouping",
           "repeat_kv via Tensor.repeat: query head h reads kv head h % Hkv (GQA head-mapping bug reports)"),
    _entry("hf_softcap_after_mask", False, "softcap",
           "Gemma-2 softcap applied after adding the mask: masked logits capped to -softcap (softcap reports)"),
    _entry("hf_scaling_ignored", False, "scale",
           "scaling argument ignored, head_dim ** -0.5 always (models with query_pre_attn_scalar reports)"),
    _entry("hf_mask_as_bool", False, "mask-polarity",
           "additive float mask read as a bool keep-mask (eager vs SDPA bool mask confusion reports)"),
    _entry("hf_weights_logits", False, "weights",
           "output right but returns the pre-softmax scores as attn_weights (output_attentions reports)"),
    _entry("hf_causal_top_left", False, "causal-alignment",
           "module.is_causal re-applied as top-left tril over the mask (flash-attn < 2.1 / is_causal with cache)"),
    _entry("hf_softmax_fp32", False, "low-precision",
           "HF's softmax(dtype=torch.float32) kept for float64: ~1e-7 error, NaN on fully masked rows"),
    # zeros on a row with no key is one of refimpl's accepted conventions (FlashAttention's): this one is a bug
    # only when the run pins eager's, --masked-rows uniform (refimpl's note, not the zoo author's)
    dict(_entry("hf_online_masked_zero", False, "masked-row-convention",
                "-inf fill with a flash-style guard: fully masked rows give zeros instead of eager's uniform"),
         masked_rows="uniform"),
]
