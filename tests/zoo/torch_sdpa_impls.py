"""Zoo: attention written against the signature of torch.nn.functional.scaled_dot_product_attention.

Independent of refimpl (written from the PyTorch documentation only). Every public function has the signature
    fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False)
with query (..., Hq, Sq, D), key (..., Hkv, Sk, D), value (..., Hkv, Sk, Dv) and computes
    out = softmax(query @ key^T * scale + bias) @ value                       -> (..., Hq, Sq, Dv)
where scale = 1/sqrt(D) when None; bias = 0 / -inf from a bool attn_mask (True = attend), or the float
attn_mask itself (added to the scaled scores); is_causal is TOP-LEFT aligned (query i sees key j iff j <= i)
and may not be combined with attn_mask (PyTorch raises too); enable_gqa: Hq % Hkv == 0 and query head h
reads kv head h // (Hq // Hkv). float16/bfloat16 inputs are computed in float32, float32/float64 in their
own dtype; the result has the input dtype. dropout_p must be 0 (deterministic).
Fully masked query rows: `sdpa_plain` returns NaN (like PyTorch's math path), every other one zeros.
The broken functions contain exactly one realistic mistake each (marked `BUG:`), see CATALOG.
"""
import math

import torch

_HALF = (torch.float16, torch.bfloat16)
_NEG_INF = float("-inf")


def _prepare(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa, compute_dtype=None):
    """Validate the arguments; return (q, k, v, mask, out_dtype) with q/k/v/float-mask in the compute dtype
    and, when enable_gqa, k/v repeated so that query head h meets kv head h // (Hq // Hkv)."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() < 2:
            raise TypeError(f"{name} must be a floating torch.Tensor with >= 2 dims (..., S, D); "
                            f"got {type(t).__name__} {getattr(t, 'dtype', '')} {tuple(getattr(t, 'shape', ()))}")
    if not query.dtype == key.dtype == value.dtype:
        raise TypeError(f"query, key, value must share a dtype; got {query.dtype}, {key.dtype}, {value.dtype}")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"query and key must have the same D (last dim); got {query.shape[-1]} and {key.shape[-1]}")
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(f"key and value must have the same Sk (dim -2); got {key.shape[-2]} and {value.shape[-2]}")
    if dropout_p != 0.0:
        raise ValueError(f"dropout_p must be 0.0 (deterministic implementation); got {dropout_p}")
    sq, sk = query.shape[-2], key.shape[-2]
    if attn_mask is not None:
        if is_causal:
            raise ValueError("attn_mask and is_causal=True are exclusive (as in PyTorch); pass one of them")
        if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
            raise TypeError(f"attn_mask must be bool (True = attend) or floating (added); got {attn_mask.dtype}")
        if attn_mask.dim() < 2 or any(m not in (1, s) for m, s in zip(attn_mask.shape[-2:], (sq, sk))):
            raise ValueError(f"attn_mask must broadcast to (..., Sq={sq}, Sk={sk}); got {tuple(attn_mask.shape)}")
    ct = compute_dtype or (torch.float32 if query.dtype in _HALF else query.dtype)
    q, k, v = query.to(ct), key.to(ct), value.to(ct)
    mask = attn_mask if attn_mask is None or attn_mask.dtype == torch.bool else attn_mask.to(ct)
    if enable_gqa:
        k, v = _repeat_kv(k, v, q)
    return q, k, v, mask, query.dtype


def _repeat_kv(k, v, q):
    """(..., Hkv, Sk, D) -> (..., Hq, Sk, D): each kv head serves Hq // Hkv consecutive query heads."""
    if q.dim() < 3 or k.dim() < 3:
        raise ValueError(f"enable_gqa needs a head dim (..., H, S, D); got query {tuple(q.shape)}, "
                         f"key {tuple(k.shape)}")
    hq, hkv = q.shape[-3], k.shape[-3]
    if hq % hkv != 0:
        raise ValueError(f"enable_gqa: query heads Hq={hq} must be a multiple of key/value heads Hkv={hkv}")
    return k.repeat_interleave(hq // hkv, dim=-3), v.repeat_interleave(hq // hkv, dim=-3)


def _bias(mask, is_causal, sq, sk, dtype):
    """Additive bias of shape (..., Sq, Sk): 0 where attended, -inf where not; a float mask is added as is."""
    bias = torch.zeros(sq, sk, dtype=dtype)
    if is_causal:  # top-left: query i sees keys 0..i
        bias = bias.masked_fill(~torch.ones(sq, sk, dtype=torch.bool).tril(), _NEG_INF)
    if mask is not None:
        bias = torch.where(mask, bias, _NEG_INF) if mask.dtype == torch.bool else bias + mask
    return bias


def _safe_softmax(s, dim=-1):
    """softmax(s) along dim with the max subtracted; a slice that is entirely -inf gives zeros, not NaN."""
    m = s.amax(dim, keepdim=True)
    m = m.masked_fill(m == _NEG_INF, 0.0)
    e = torch.exp(s - m)
    total = e.sum(dim, keepdim=True)
    return e / total.masked_fill(total == 0, 1.0)


def _scores(q, k, scale):
    # (..., Sq, D) x (..., D, Sk) -> (..., Sq, Sk)
    return q @ k.transpose(-2, -1) * scale


# ------------------------------------------------------------------ correct implementations
def sdpa_plain(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """Materialised softmax(QK^T*scale + bias) V with torch.softmax: fully masked rows give NaN (0/0)."""
    q, k, v, mask, out_dtype = _prepare(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = _scores(q, k, scale) + _bias(mask, is_causal, q.shape[-2], k.shape[-2], q.dtype)
    return (torch.softmax(s, dim=-1) @ v).to(out_dtype)  # (..., Sq, Sk) x (..., Sk, Dv) -> (..., Sq, Dv)


def sdpa_float32(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """Materialised attention always computed in float32 (also for float64 input); fully masked rows give 0."""
    q, k, v, mask, out_dtype = _prepare(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa,
                                        compute_dtype=torch.float32)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = _scores(q, k, scale) + _bias(mask, is_causal, q.shape[-2], k.shape[-2], q.dtype)
    return (_safe_softmax(s) @ v).to(out_dtype)


def sdpa_per_row(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """One query row at a time: out[i] = softmax(q_i K^T*scale + bias_i) V; fully masked rows give 0."""
    q, k, v, mask, out_dtype = _prepare(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    bias = _bias(mask, is_causal, q.shape[-2], k.shape[-2], q.dtype)
    rows = []
    for i in range(q.shape[-2]):
        s_i = _scores(q[..., i:i + 1, :], k, scale) + bias[..., i:i + 1, :]  # (..., 1, Sk)
        rows.append(_safe_softmax(s_i) @ v)                                  # (..., 1, Dv)
    return torch.cat(rows, dim=-2).to(out_dtype)


def sdpa_blocked(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """Two passes over key blocks of 64: pass 1 the row max m, pass 2 l = sum exp(s - m) and
    acc = sum exp(s - m) V; out = acc / l (rows with l = 0, i.e. fully masked, give 0)."""
    q, k, v, mask, out_dtype = _prepare(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    sk, block = k.shape[-2], 64
    bias = _bias(mask, is_causal, q.shape[-2], sk, q.dtype)
    m = torch.tensor(_NEG_INF, dtype=q.dtype)
    for j in range(0, sk, block):
        s = _scores(q, k[..., j:j + block, :], scale) + bias[..., j:j + block]  # (..., Sq, Bk)
        m = torch.maximum(m, s.amax(-1, keepdim=True))
    m = m.masked_fill(m == _NEG_INF, 0.0)  # (..., Sq, 1)
    total, acc = 0.0, 0.0
    for j in range(0, sk, block):
        p = torch.exp(_scores(q, k[..., j:j + block, :], scale) + bias[..., j:j + block] - m)  # (..., Sq, Bk)
        total = total + p.sum(-1, keepdim=True)
        acc = acc + p @ v[..., j:j + block, :]  # (..., Sq, Bk) x (..., Bk, Dv) -> (..., Sq, Dv)
    return (acc / total.masked_fill(total == 0, 1.0)).to(out_dtype)


def sdpa_online(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """Online softmax over key blocks of 32: running max m, running sum l, accumulator acc; when m grows
    to m', l and acc are rescaled by exp(m - m'). out = acc / l (fully masked rows give 0)."""
    q, k, v, mask, out_dtype = _prepare(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    sk, block = k.shape[-2], 32
    bias = _bias(mask, is_causal, q.shape[-2], sk, q.dtype)
    m, total, acc = torch.tensor(_NEG_INF, dtype=q.dtype), 0.0, 0.0
    for j in range(0, sk, block):
        s = _scores(q, k[..., j:j + block, :], scale) + bias[..., j:j + block]  # (..., Sq, Bk)
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        m_ref = m_new.masked_fill(m_new == _NEG_INF, 0.0)  # nothing attended yet: any finite reference
        alpha = torch.exp(m - m_ref)                        # (..., Sq, 1) rescale factor of the old state
        p = torch.exp(s - m_ref)
        total = alpha * total + p.sum(-1, keepdim=True)
        acc = alpha * acc + p @ v[..., j:j + block, :]      # (..., Sq, Dv)
        m = m_new
    return (acc / total.masked_fill(total == 0, 1.0)).to(out_dtype)


# ------------------------------------------------------------------ broken implementations
def sdpa_scale_sk(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    q, k, v, mask, out_dtype = _prepare(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    scale = 1.0 / math.sqrt(k.shape[-2]) if scale is None else scale  # BUG: sqrt of Sk, not of D
    s = _scores(q, k, scale) + _bias(mask, is_causal, q.shape[-2], k.shape[-2], q.dtype)
    return (_safe_softmax(s) @ v).to(out_dtype)


def sdpa_mask_polarity(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                       enable_gqa=False):
    q, k, v, mask, out_dtype = _prepare(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = _scores(q, k, scale)
    if mask is not None and mask.dtype == torch.bool:
        s = torch.where(mask, _NEG_INF, s)  # BUG: True taken as "masked out" (key_padding_mask habit)
    else:
        s = s + _bias(mask, is_causal, q.shape[-2], k.shape[-2], q.dtype)
    return (_safe_softmax(s) @ v).to(out_dtype)


def sdpa_additive_sign(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                       enable_gqa=False):
    q, k, v, mask, out_dtype = _prepare(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = _scores(q, k, scale)
    if mask is not None and mask.is_floating_point():
        s = s - mask  # BUG: float mask read as a penalty and subtracted; SDPA adds it
    else:
        s = s + _bias(mask, is_causal, q.shape[-2], k.shape[-2], q.dtype)
    return (_safe_softmax(s) @ v).to(out_dtype)


def sdpa_causal_bottom_right(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                             enable_gqa=False):
    q, k, v, mask, out_dtype = _prepare(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    sq, sk = q.shape[-2], k.shape[-2]
    s = _scores(q, k, scale) + _bias(mask, False, sq, sk, q.dtype)
    if is_causal:  # BUG: diagonal shifted by Sk - Sq (KV-cache / bottom-right habit); torch is top-left
        s = s.masked_fill(~torch.ones(sq, sk, dtype=torch.bool).tril(diagonal=sk - sq), _NEG_INF)
    return (_safe_softmax(s) @ v).to(out_dtype)


def sdpa_gqa_modulo(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    q, k, v, mask, out_dtype = _prepare(query, key, value, attn_mask, dropout_p, is_causal, False)
    if enable_gqa:
        _repeat_kv(k, v, q)  # validation only
        heads = torch.arange(q.shape[-3]) % k.shape[-3]  # BUG: h % Hkv (interleaved) instead of h // (Hq//Hkv)
        k, v = k.index_select(-3, heads), v.index_select(-3, heads)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = _scores(q, k, scale) + _bias(mask, is_causal, q.shape[-2], k.shape[-2], q.dtype)
    return (_safe_softmax(s) @ v).to(out_dtype)


def sdpa_softmax_queries(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    q, k, v, mask, out_dtype = _prepare(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = _scores(q, k, scale) + _bias(mask, is_causal, q.shape[-2], k.shape[-2], q.dtype)
    return (_safe_softmax(s, dim=-2) @ v).to(out_dtype)  # BUG: normalised over queries (dim -2), not keys


def sdpa_no_max(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    q, k, v, mask, out_dtype = _prepare(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = _scores(q, k, scale) + _bias(mask, is_causal, q.shape[-2], k.shape[-2], q.dtype)
    e = torch.exp(s)  # BUG: no row max subtracted: exp overflows to inf for logits above ~709 (~88 in float32)
    total = e.sum(-1, keepdim=True)
    return (e / total.masked_fill(total == 0, 1.0) @ v).to(out_dtype)


def sdpa_finite_fill(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                     enable_gqa=False):
    q, k, v, mask, out_dtype = _prepare(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    sq, sk = q.shape[-2], k.shape[-2]
    s = _scores(q, k, scale)
    fill = -1e4  # BUG: "fp16-safe" large negative instead of -inf: masked keys keep a tiny weight, and a
    if is_causal:  # fully masked row becomes a uniform average
        s = s.masked_fill(~torch.ones(sq, sk, dtype=torch.bool).tril(), fill)
    if mask is not None:
        s = torch.where(mask, s, fill) if mask.dtype == torch.bool else s + mask
    return (_safe_softmax(s) @ v).to(out_dtype)


def sdpa_half_softmax(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                      enable_gqa=False):
    q, k, v, mask, out_dtype = _prepare(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = _scores(q, k, scale) + _bias(mask, is_causal, q.shape[-2], k.shape[-2], q.dtype)
    # BUG: logits and probabilities held in float16 whatever the input dtype ("mixed precision"); the CPU
    # has no float16 exp, so each float16 value is widened for the op and rounded back, as storage would
    p = _safe_softmax(s.to(torch.float16).to(q.dtype)).to(torch.float16)
    return (p.to(q.dtype) @ v).to(out_dtype)


def sdpa_eps_denominator(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    q, k, v, mask, out_dtype = _prepare(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = _scores(q, k, scale) + _bias(mask, is_causal, q.shape[-2], k.shape[-2], q.dtype)
    m = s.amax(-1, keepdim=True)
    e = torch.exp(s - m.masked_fill(m == _NEG_INF, 0.0))
    p = e / (e.sum(-1, keepdim=True) + 1e-6)  # BUG: epsilon "against 0/0" biases every row by ~1e-6
    return (p @ v).to(out_dtype)


def sdpa_blocked_tail(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                      enable_gqa=False):
    q, k, v, mask, out_dtype = _prepare(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    sk, block = k.shape[-2], 64
    bias = _bias(mask, is_causal, q.shape[-2], sk, q.dtype)
    starts = [b * block for b in range(sk // block)]  # BUG: floor division drops a partial last key block
    m = torch.tensor(_NEG_INF, dtype=q.dtype)
    for j in starts:
        s = _scores(q, k[..., j:j + block, :], scale) + bias[..., j:j + block]  # (..., Sq, Bk)
        m = torch.maximum(m, s.amax(-1, keepdim=True))
    m = m.masked_fill(m == _NEG_INF, 0.0)
    total, acc = torch.zeros((), dtype=q.dtype), torch.zeros((), dtype=q.dtype)
    for j in starts:
        p = torch.exp(_scores(q, k[..., j:j + block, :], scale) + bias[..., j:j + block] - m)
        total = total + p.sum(-1, keepdim=True)
        acc = acc + p @ v[..., j:j + block, :]
    out = acc / total.masked_fill(total == 0, 1.0)
    return out.expand(*q.shape[:-1], v.shape[-1]).to(out_dtype)  # (..., Sq, Dv) even when no block ran


def sdpa_online_no_rescale(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                           enable_gqa=False):
    q, k, v, mask, out_dtype = _prepare(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    sk, block = k.shape[-2], 32
    bias = _bias(mask, is_causal, q.shape[-2], sk, q.dtype)
    m, total, acc = torch.tensor(_NEG_INF, dtype=q.dtype), 0.0, 0.0
    for j in range(0, sk, block):
        s = _scores(q, k[..., j:j + block, :], scale) + bias[..., j:j + block]
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        m_ref = m_new.masked_fill(m_new == _NEG_INF, 0.0)
        alpha = torch.exp(m - m_ref)
        p = torch.exp(s - m_ref)
        total = alpha * total + p.sum(-1, keepdim=True)
        acc = acc + p @ v[..., j:j + block, :]  # BUG: acc not multiplied by alpha when the running max grows
        m = m_new
    return (acc / total.masked_fill(total == 0, 1.0)).to(out_dtype)


_ALL = ["mask", "additive-mask", "causal", "gqa"]


def _entry(name, correct, model, convention, note, dtype="float64", features=_ALL):
    return {"name": name, "api": "torch-sdpa", "fn": name, "correct": correct, "model": model,
            "convention": convention, "dtype": dtype, "features": list(features), "note": note}


CATALOG = [
    _entry("sdpa_plain", True, None, "nan", "materialised scores, torch.softmax over keys, P @ V"),
    _entry("sdpa_float32", True, None, "zeros", "materialised, always float32 internally", dtype="float32"),
    _entry("sdpa_per_row", True, None, "zeros", "loop over query rows, max-subtracted softmax per row"),
    _entry("sdpa_blocked", True, None, "zeros", "two passes over key blocks of 64 (row max, then sum and P@V)"),
    _entry("sdpa_online", True, None, "zeros", "online softmax over key blocks of 32 with rescaling"),
    _entry("sdpa_scale_sk", False, "scale", None, "default scale 1/sqrt(Sk) instead of 1/sqrt(D)"),
    _entry("sdpa_mask_polarity", False, "mask-polarity", None, "bool mask True treated as 'masked out'"),
    _entry("sdpa_additive_sign", False, "additive-mask-sign", None, "float attn_mask subtracted from the scores"),
    _entry("sdpa_causal_bottom_right", False, "causal-alignment", None,
           "is_causal diagonal aligned bottom-right (tril(Sk - Sq)) instead of top-left"),
    _entry("sdpa_gqa_modulo", False, "gqa-grouping", None, "query head h reads kv head h % Hkv"),
    _entry("sdpa_softmax_queries", False, "softmax-axis", None, "softmax normalised over queries (dim -2)"),
    _entry("sdpa_no_max", False, "no-max-subtraction", None, "exp(scores) without the row max: overflow"),
    _entry("sdpa_finite_fill", False, "finite-mask-fill", None, "masked scores filled with -1e4, not -inf"),
    _entry("sdpa_half_softmax", False, "low-precision", None, "logits and probabilities kept in float16"),
    _entry("sdpa_eps_denominator", False, "denominator-epsilon", None, "softmax denominator sum + 1e-6"),
    _entry("sdpa_blocked_tail", False, "blocked-tail", None, "key blocks of 64, partial last block dropped"),
    _entry("sdpa_online_no_rescale", False, "online-rescale", None,
           "online softmax rescales l but not the accumulator when the max grows"),
]
