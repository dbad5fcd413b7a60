"""Zoo: attention with hand-written backward passes (torch.autograd.Function), FlashAttention style.

Independent of refimpl. Signature of torch.nn.functional.scaled_dot_product_attention, restricted to
attn_mask None or bool (True = attend), is_causal (TOP-LEFT: query i sees key j iff j <= i; exclusive with
attn_mask), scale (None = 1/sqrt(D)), enable_gqa (query head h reads kv head h // (Hq // Hkv)):
    fn(query (..., Hq, Sq, D), key (..., Hkv, Sk, D), value (..., Hkv, Sk, Dv), attn_mask=None,
       dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False) -> out (..., Hq, Sq, Dv)
Leading dims broadcast like torch.matmul. float16/bfloat16 are computed in float32 (forward and backward),
float32/float64 in their own dtype; output and gradients have the input dtype.

Forward (every function, correct): S = Q K^T * scale + bias (bias 0 / -inf), lse = log sum_j exp(S_ij),
P = exp(S - lse), O = P V. A fully masked row has lse = +inf by decision, so P = 0, O = 0.
Backward (correct, recomputing P from lse as FlashAttention does):
    dV = P^T dO,  dP = dO V^T,  delta = rowsum(dO * O) (= rowsum(P * dP)),  dS = P * (dP - delta),
    dQ = scale * dS K,  dK = scale * dS^T Q;  with GQA, dK and dV of a kv head are the SUM over the
    Hq // Hkv query heads that read it; gradients of fully masked rows are 0.
Each `autograd_bwd_*` function has exactly one realistic mistake in its backward (marked `BUG:`), see CATALOG.
"""
import math

import torch

_HALF = (torch.float16, torch.bfloat16)
_NEG_INF = float("-inf")


def _prepare(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    """Validate; return (bias (..., Sq, Sk) in the compute dtype, scale, group = Hq // Hkv or 1)."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() < 2:
            raise TypeError(f"{name} must be a floating torch.Tensor with >= 2 dims (..., S, D); "
                            f"got {type(t).__name__} {getattr(t, 'dtype', '')} {tuple(getattr(t, 'shape', ()))}")
    if not query.dtype == key.dtype == value.dtype:
        raise TypeError(f"query, key, value must share a dtype; got {query.dtype}, {key.dtype}, {value.dtype}")
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"need query (..., Sq, D), key (..., Sk, D), value (..., Sk, Dv); got "
                         f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
    if dropout_p != 0.0:
        raise ValueError(f"dropout_p must be 0.0 (deterministic implementation); got {dropout_p}")
    sq, sk = query.shape[-2], key.shape[-2]
    if attn_mask is not None:
        if is_causal:
            raise ValueError("attn_mask and is_causal=True are exclusive (as in PyTorch); pass one of them")
        if attn_mask.dtype != torch.bool:
            raise TypeError(f"attn_mask must be a bool keep-mask (True = attend) here; got {attn_mask.dtype}")
        if attn_mask.dim() < 2 or any(m not in (1, s) for m, s in zip(attn_mask.shape[-2:], (sq, sk))):
            raise ValueError(f"attn_mask must broadcast to (..., Sq={sq}, Sk={sk}); got {tuple(attn_mask.shape)}")
    group = 1
    if enable_gqa:
        if query.dim() < 3 or key.dim() < 3 or query.shape[-3] % key.shape[-3] != 0:
            raise ValueError(f"enable_gqa needs query (..., Hq, Sq, D) and key (..., Hkv, Sk, D) with Hq a multiple "
                             f"of Hkv; got Hq={query.shape[-3] if query.dim() > 2 else None}, "
                             f"Hkv={key.shape[-3] if key.dim() > 2 else None}")
        group = query.shape[-3] // key.shape[-3]
    ct = torch.float32 if query.dtype in _HALF else query.dtype
    bias = torch.zeros(sq, sk, dtype=ct)
    if is_causal:
        bias = bias.masked_fill(~torch.ones(sq, sk, dtype=torch.bool).tril(), _NEG_INF)
    if attn_mask is not None:
        bias = torch.where(attn_mask, bias, _NEG_INF)
    return bias, (1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)), group


def _expand(t, group):
    """(..., Hkv, Sk, X) -> (..., Hkv * group, Sk, X): kv head g serves query heads g*G .. g*G + G - 1."""
    return t if group == 1 else t.repeat_interleave(group, dim=-3)


def _group_sum(t, group):
    """(..., Hkv * G, Sk, X) -> (..., Hkv, Sk, X): sum of the gradients of the G query heads of a kv head."""
    return t if group == 1 else t.unflatten(-3, (t.shape[-3] // group, group)).sum(-3)


def _compute(*ts):
    return tuple(t.to(torch.float32) if t.dtype in _HALF else t for t in ts)


class _Attention(torch.autograd.Function):
    """Correct forward (shared by all) and correct hand-written backward."""

    @staticmethod
    def forward(ctx, query, key, value, bias, scale, group):
        q, k, v = _compute(query, key, value)
        k, v = _expand(k, group), _expand(v, group)
        s = q @ k.transpose(-2, -1) * scale + bias  # (..., Sq, D) x (..., D, Sk) -> (..., Sq, Sk)
        m = s.amax(-1, keepdim=True)
        m = m.masked_fill(m == _NEG_INF, 0.0)
        total = torch.exp(s - m).sum(-1, keepdim=True)             # (..., Sq, 1)
        lse = (m + torch.log(total)).masked_fill(total == 0, float("inf"))  # +inf: fully masked row
        out = torch.exp(s - lse) @ v                                # (..., Sq, Sk) x (..., Sk, Dv) -> (..., Sq, Dv)
        ctx.save_for_backward(query, key, value)
        ctx.bias, ctx.scale, ctx.group, ctx.out, ctx.lse = bias, scale, group, out, lse
        return out.to(query.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, o, do, s, lse = _recompute(ctx, grad_out)
        p = torch.exp(s - lse)                                # (..., Sq, Sk), 0 on masked entries and rows
        dv = p.transpose(-2, -1) @ do                         # (..., Sk, Sq) x (..., Sq, Dv) -> (..., Sk, Dv)
        dp = do @ v.transpose(-2, -1)                         # (..., Sq, Dv) x (..., Dv, Sk) -> (..., Sq, Sk)
        ds = p * (dp - (do * o).sum(-1, keepdim=True))        # softmax Jacobian with delta = rowsum(dO * O)
        dq = ds @ k * ctx.scale                               # (..., Sq, Sk) x (..., Sk, D) -> (..., Sq, D)
        dk = ds.transpose(-2, -1) @ q * ctx.scale             # (..., Sk, Sq) x (..., Sq, D) -> (..., Sk, D)
        return _finish(ctx, dq, _group_sum(dk, ctx.group), _group_sum(dv, ctx.group))


def _recompute(ctx, grad_out):
    """Compute-dtype (q, k, v expanded to Hq heads, O, dO, S = QK^T*scale + bias, lse)."""
    query, key, value = ctx.saved_tensors
    q, k, v, do = _compute(query, key, value, grad_out)
    k, v = _expand(k, ctx.group), _expand(v, ctx.group)
    s = q @ k.transpose(-2, -1) * ctx.scale + ctx.bias     # (..., Sq, Sk)
    return q, k, v, ctx.out, do, s, ctx.lse


def _finish(ctx, dq, dk, dv):
    """Reduce broadcast leading dims and cast: gradients in the shapes and dtypes of query, key, value."""
    query, key, value = ctx.saved_tensors
    grads = [g.sum_to_size(t.shape).to(t.dtype) for g, t in ((dq, query), (dk, key), (dv, value))]
    return (*grads, None, None, None)


class _BwdNoDelta(_Attention):
    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, o, do, s, lse = _recompute(ctx, grad_out)
        p = torch.exp(s - lse)
        dv = p.transpose(-2, -1) @ do
        dp = do @ v.transpose(-2, -1)
        ds = p * dp  # BUG: the "- rowsum(dO * O)" term of the softmax Jacobian is missing
        dq = ds @ k * ctx.scale
        dk = ds.transpose(-2, -1) @ q * ctx.scale
        return _finish(ctx, dq, _group_sum(dk, ctx.group), _group_sum(dv, ctx.group))


class _BwdNoScaleDq(_Attention):
    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, o, do, s, lse = _recompute(ctx, grad_out)
        p = torch.exp(s - lse)
        dv = p.transpose(-2, -1) @ do
        dp = do @ v.transpose(-2, -1)
        ds = p * (dp - (do * o).sum(-1, keepdim=True))
        dq = ds @ k  # BUG: softmax scale not applied to dQ
        dk = ds.transpose(-2, -1) @ q * ctx.scale
        return _finish(ctx, dq, _group_sum(dk, ctx.group), _group_sum(dv, ctx.group))


class _BwdNoScaleDk(_Attention):
    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, o, do, s, lse = _recompute(ctx, grad_out)
        p = torch.exp(s - lse)
        dv = p.transpose(-2, -1) @ do
        dp = do @ v.transpose(-2, -1)
        ds = p * (dp - (do * o).sum(-1, keepdim=True))
        dq = ds @ k * ctx.scale
        dk = ds.transpose(-2, -1) @ q  # BUG: softmax scale not applied to dK
        return _finish(ctx, dq, _group_sum(dk, ctx.group), _group_sum(dv, ctx.group))


class _BwdDsTransposed(_Attention):
    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, o, do, s, lse = _recompute(ctx, grad_out)
        p = torch.exp(s - lse)
        dv = p.transpose(-2, -1) @ do
        dp = do @ v.transpose(-2, -1)
        ds = p * (dp - (do * o).sum(-1, keepdim=True))
        dq = ds @ k * ctx.scale
        dk = ds @ q * ctx.scale  # BUG: dS used where dS^T belongs (shapes only agree when Sq == Sk)
        return _finish(ctx, dq, _group_sum(dk, ctx.group), _group_sum(dv, ctx.group))


class _BwdGqaFirstHead(_Attention):
    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, o, do, s, lse = _recompute(ctx, grad_out)
        p = torch.exp(s - lse)
        dv = p.transpose(-2, -1) @ do
        dp = do @ v.transpose(-2, -1)
        ds = p * (dp - (do * o).sum(-1, keepdim=True))
        dq = ds @ k * ctx.scale
        dk = ds.transpose(-2, -1) @ q * ctx.scale
        g = ctx.group  # BUG: kv gradient taken from the first query head of each group instead of the sum
        return _finish(ctx, dq, dk[..., ::g, :, :], dv[..., ::g, :, :])


class _BwdMaskedNan(_Attention):
    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, o, do, s, lse = _recompute(ctx, grad_out)
        p = torch.softmax(s, dim=-1)  # BUG: P recomputed by softmax, not from lse: 0/0 = NaN on masked rows
        dv = p.transpose(-2, -1) @ do
        dp = do @ v.transpose(-2, -1)
        ds = p * (dp - (do * o).sum(-1, keepdim=True))
        dq = ds @ k * ctx.scale
        dk = ds.transpose(-2, -1) @ q * ctx.scale
        return _finish(ctx, dq, _group_sum(dk, ctx.group), _group_sum(dv, ctx.group))


def _run(fn_class, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    bias, scale, group = _prepare(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    return fn_class.apply(query, key, value, bias, scale, group)


def autograd_correct(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                     enable_gqa=False):
    """Forward with saved lse; hand-written backward dQ, dK, dV (see the module docstring)."""
    return _run(_Attention, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


def autograd_reference(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                       enable_gqa=False):
    """Plain differentiable torch ops, autograd derives the backward. The row max is detached (the softmax
    is invariant to it) and an empty row's zero denominator is replaced by 1, so masked rows give 0 and
    0 gradients instead of NaN."""
    bias, scale, group = _prepare(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    q, k, v = _compute(query, key, value)
    k, v = _expand(k, group), _expand(v, group)
    s = q @ k.transpose(-2, -1) * scale + bias               # (..., Sq, Sk)
    m = s.detach().amax(-1, keepdim=True)
    e = torch.exp(s - m.masked_fill(m == _NEG_INF, 0.0))
    total = e.sum(-1, keepdim=True)
    out = e / total.masked_fill(total == 0, 1.0) @ v          # (..., Sq, Sk) x (..., Sk, Dv) -> (..., Sq, Dv)
    return out.to(query.dtype)


def autograd_bwd_no_delta(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                          enable_gqa=False):
    return _run(_BwdNoDelta, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


def autograd_bwd_no_scale_dq(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                             enable_gqa=False):
    return _run(_BwdNoScaleDq, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


def autograd_bwd_no_scale_dk(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                             enable_gqa=False):
    return _run(_BwdNoScaleDk, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


def autograd_bwd_ds_transposed(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                               enable_gqa=False):
    return _run(_BwdDsTransposed, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


def autograd_bwd_gqa_first_head(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                enable_gqa=False):
    return _run(_BwdGqaFirstHead, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


def autograd_bwd_masked_nan(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    return _run(_BwdMaskedNan, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


def _entry(name, correct, model, note):
    return {"name": name, "api": "torch-autograd", "fn": name, "correct": correct, "model": model,
            "convention": "zeros" if correct else None, "dtype": "float64",
            "features": ["mask", "causal", "gqa"], "note": note}


CATALOG = [
    _entry("autograd_correct", True, None, "saved lse, FlashAttention-style hand-written backward"),
    _entry("autograd_reference", True, None, "plain torch ops with a NaN-free masked softmax; autograd backward"),
    _entry("autograd_bwd_no_delta", False, "bwd-delta-term", "dS = P * dP, rowsum(dO * O) not subtracted"),
    _entry("autograd_bwd_no_scale_dq", False, "bwd-scale-dq", "softmax scale forgotten in dQ"),
    _entry("autograd_bwd_no_scale_dk", False, "bwd-scale-dk", "softmax scale forgotten in dK"),
    _entry("autograd_bwd_ds_transposed", False, "bwd-ds-transposed",
           "dK = scale * dS Q instead of dS^T Q (self-attention habit; shape error when Sq != Sk)"),
    _entry("autograd_bwd_gqa_first_head", False, "bwd-gqa-sum",
           "GQA dK/dV taken from the first query head of each group, not summed"),
    _entry("autograd_bwd_masked_nan", False, "bwd-masked-nan",
           "backward recomputes P with torch.softmax: NaN gradients for fully masked rows"),
]
