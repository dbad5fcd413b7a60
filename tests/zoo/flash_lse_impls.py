"""Zoo: attention with flash_attn_func's signature that also returns the softmax log-sum-exp (FlashAttention 2).

Independent of refimpl (written from the flash-attn documentation only). Every public function is
    fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
       alibi_slopes=None, deterministic=False, return_attn_probs=False)
with q (B, Sq, Hq, D), k (B, Sk, Hkv, D), v (B, Sk, Hkv, Dv) (sequence before heads) and Hq % Hkv == 0
(GQA/MQA: query head h reads kv head h // (Hq // Hkv)). For query i and key j (0-based):
    s_ij   = (q_i . k_j) * scale,                 scale = softmax_scale or 1/sqrt(D)
    s_ij   = softcap * tanh(s_ij / softcap)        if softcap > 0 (the cap acts on the SCALED score)
    s_ij  += -slope_h * |i + Sk - Sq - j|          if alibi_slopes ((Hq,) or (B, Hq)) is given
    keep   = i + Sk - Sq - left <= j <= i + Sk - Sq + right     (BOTTOM-RIGHT aligned; -1 = unbounded;
             window_size = (left, right); causal means right = 0)
    out_i  = sum_j softmax_j(s_i, over kept j) v_j; a query row with no kept key gives zeros.
    lse_i  = log(sum_{kept j} exp(s_ij))           NATURAL log of the final scores; +inf for a row with
                                                   no kept key (FlashAttention's convention)
return_attn_probs=False returns out (B, Sq, Hq, Dv) in the input dtype; return_attn_probs=True returns
(out, softmax_lse, S_dmask) like FlashAttention 2, softmax_lse float32 of shape (B, Hq, Sq), S_dmask None.
float16/bfloat16 are computed in float32, float32/float64 in their own dtype (unless a kernel says
otherwise); softmax_lse is always float32. dropout_p must be 0; `deterministic` is ignored.
The broken functions contain exactly one realistic mistake each (marked `BUG:`), see CATALOG; in every
one of them the attention output is still correct, only softmax_lse is wrong.
"""
import math

import torch

_HALF = (torch.float16, torch.bfloat16)
_NEG_INF = float("-inf")
_POS_INF = float("inf")
_LOG2E = 1.0 / math.log(2.0)


def _prepare(q, k, v, dropout_p, softmax_scale, window_size, alibi_slopes, compute_dtype=None):
    """Validate; return (q, k, v, scale, out_dtype) with q/k/v as (B, H, S, D) in the compute dtype
    (k/v still with Hkv heads)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() != 4:
            raise TypeError(f"{name} must be a 4-D floating torch.Tensor (B, S, H, D); "
                            f"got {type(t).__name__} {getattr(t, 'dtype', '')} {tuple(getattr(t, 'shape', ()))}")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, k, v must share a dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if not q.shape[0] == k.shape[0] == v.shape[0]:
        raise ValueError(f"q, k, v must share the batch size B; got {q.shape[0]}, {k.shape[0]}, {v.shape[0]}")
    if k.shape[1:3] != v.shape[1:3]:
        raise ValueError(f"k and v must share (Sk, Hkv); got {tuple(k.shape[1:3])} and {tuple(v.shape[1:3])}")
    if q.shape[3] != k.shape[3]:
        raise ValueError(f"q and k must share the head size D; got {q.shape[3]} and {k.shape[3]}")
    hq, hkv = q.shape[2], k.shape[2]
    if hq % hkv != 0:
        raise ValueError(f"number of q heads Hq={hq} must be a multiple of k/v heads Hkv={hkv}")
    if dropout_p != 0.0:
        raise ValueError(f"dropout_p must be 0.0 (deterministic implementation); got {dropout_p}")
    if len(window_size) != 2 or any(int(w) != w or w < -1 for w in window_size):
        raise ValueError(f"window_size must be (left, right) ints >= -1 (-1 = unbounded); got {window_size}")
    if alibi_slopes is not None and tuple(alibi_slopes.shape) not in ((hq,), (q.shape[0], hq)):
        raise ValueError(f"alibi_slopes must have shape (Hq,)=({hq},) or (B, Hq)=({q.shape[0]}, {hq}); "
                         f"got {tuple(alibi_slopes.shape)}")
    ct = compute_dtype or (torch.float32 if q.dtype in _HALF else q.dtype)
    # (B, S, H, D) -> (B, H, S, D)
    qt, kt, vt = (t.to(ct).transpose(1, 2) for t in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[3]) if softmax_scale is None else softmax_scale
    return qt, kt, vt, scale, q.dtype


def _expand_kv(k, v, hq):
    """(B, Hkv, Sk, D) -> (B, Hq, Sk, D): kv head g serves query heads g*G .. g*G + G-1, G = Hq // Hkv."""
    group = hq // k.shape[1]
    return k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)


def _positions(sq, sk):
    """Query index column (Sq, 1) and key index row (1, Sk)."""
    return torch.arange(sq).unsqueeze(1), torch.arange(sk).unsqueeze(0)


def _keep(sq, sk, causal, window_size):
    """(Sq, Sk) bool: i + Sk - Sq - left <= j <= i + Sk - Sq + right, bottom-right aligned."""
    i, j = _positions(sq, sk)
    left, right = window_size[0], (0 if causal else window_size[1])
    diag = i + (sk - sq)
    return ((left < 0) | (j >= diag - left)) & ((right < 0) | (j <= diag + right))


def _alibi(sq, sk, slopes, dtype):
    """(B|1, Hq, Sq, Sk) bias -slope * |i + Sk - Sq - j|, or a 0-dim zero without slopes."""
    if slopes is None:
        return torch.zeros((), dtype=dtype)
    i, j = _positions(sq, sk)
    dist = (i + (sk - sq) - j).abs().to(dtype)
    shape = (1, -1, 1, 1) if slopes.dim() == 1 else (slopes.shape[0], -1, 1, 1)  # -> (B|1, Hq, 1, 1)
    return -slopes.to(dtype).reshape(shape) * dist


def _bias(q, k, causal, window_size, alibi_slopes):
    """(B|1, Hq|1, Sq, Sk) additive bias: ALiBi where kept, -inf outside the causal/window band."""
    sq, sk = q.shape[2], k.shape[2]
    return torch.where(_keep(sq, sk, causal, window_size), _alibi(sq, sk, alibi_slopes, q.dtype), _NEG_INF)


def _scores(q, k, scale, softcap):
    """(B, H, Sq, D) x (B, H, D, Sk) -> (B, H, Sq, Sk) scaled scores, soft-capped when softcap > 0."""
    s = q @ k.transpose(-2, -1) * scale
    return softcap * torch.tanh(s / softcap) if softcap > 0 else s


def _guard(m):
    """Row max usable as an exp reference: -inf (row with no kept key) replaced by 0."""
    return m.masked_fill(m == _NEG_INF, 0.0)


def _lse(m_ref, total):
    """(B, H, Sq, 1) reference max and sum exp(s - m_ref) -> (B, H, Sq) natural LSE, +inf where total == 0."""
    lse = torch.where(total == 0, torch.full_like(total, _POS_INF), m_ref + torch.log(total))
    return lse.squeeze(-1)


def _materialised(qt, kt, vt, scale, causal, window_size, softcap, alibi_slopes):
    """Full scores -> (out (B, H, Sq, Dv), m_ref (B, H, Sq, 1), total (B, H, Sq, 1))."""
    kt, vt = _expand_kv(kt, vt, qt.shape[1])
    s = _scores(qt, kt, scale, softcap) + _bias(qt, kt, causal, window_size, alibi_slopes)
    m_ref = _guard(s.amax(-1, keepdim=True))
    p = torch.exp(s - m_ref)
    total = p.sum(-1, keepdim=True)
    return (p @ vt) / total.masked_fill(total == 0, 1.0), m_ref, total


def _online(qt, kt, vt, scale, causal, window_size, softcap, alibi_slopes, block):
    """FA2 online softmax over key blocks -> (out (B, H, Sq, Dv), m_ref, total)."""
    kt, vt = _expand_kv(kt, vt, qt.shape[1])
    bias, sk = _bias(qt, kt, causal, window_size, alibi_slopes), kt.shape[2]
    m, total, acc = torch.tensor(_NEG_INF, dtype=qt.dtype), 0.0, 0.0
    for j in range(0, sk, block):
        s = _scores(qt, kt[:, :, j:j + block], scale, softcap) + bias[..., j:j + block]  # (B, H, Sq, Bk)
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        m_ref = _guard(m_new)
        alpha = torch.exp(m - m_ref)
        p = torch.exp(s - m_ref)
        total = alpha * total + p.sum(-1, keepdim=True)
        acc = alpha * acc + p @ vt[:, :, j:j + block]
        m = m_new
    return acc / total.masked_fill(total == 0, 1.0), _guard(m), total


def _result(out, lse, out_dtype, return_attn_probs):
    """out (B, H, Sq, Dv) -> (B, Sq, H, Dv) in the input dtype; with return_attn_probs the FA2 triple."""
    out = out.transpose(1, 2).to(out_dtype)
    return (out, lse, None) if return_attn_probs else out


# ------------------------------------------------------------------ correct implementations
def lse_plain(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
              alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Materialised scores (B, H, Sq, Sk); lse = max + log(sum exp(s - max)) in the compute dtype
    (float64 for float64 input), cast to float32."""
    qt, kt, vt, scale, out_dtype = _prepare(q, k, v, dropout_p, softmax_scale, window_size, alibi_slopes)
    out, m_ref, total = _materialised(qt, kt, vt, scale, causal, window_size, softcap, alibi_slopes)
    return _result(out, _lse(m_ref, total).to(torch.float32), out_dtype, return_attn_probs)


def lse_online(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
               alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """FlashAttention-2 online softmax over key blocks of 32: running max m and sum l (rescaled by
    exp(m - m') when the max grows); out = acc / l, lse = m + log(l)."""
    qt, kt, vt, scale, out_dtype = _prepare(q, k, v, dropout_p, softmax_scale, window_size, alibi_slopes)
    out, m_ref, total = _online(qt, kt, vt, scale, causal, window_size, softcap, alibi_slopes, 32)
    return _result(out, _lse(m_ref, total).to(torch.float32), out_dtype, return_attn_probs)


def lse_float32(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Materialised attention and LSE always computed in float32 (also for float64 input)."""
    qt, kt, vt, scale, out_dtype = _prepare(q, k, v, dropout_p, softmax_scale, window_size, alibi_slopes,
                                            compute_dtype=torch.float32)
    out, m_ref, total = _materialised(qt, kt, vt, scale, causal, window_size, softcap, alibi_slopes)
    return _result(out, _lse(m_ref, total), out_dtype, return_attn_probs)


def lse_logsumexp(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                  alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Materialised; lse from torch.logsumexp (-inf for rows with no kept key, mapped to +inf) and
    out = exp(s - lse) @ V."""
    qt, kt, vt, scale, out_dtype = _prepare(q, k, v, dropout_p, softmax_scale, window_size, alibi_slopes)
    kt, vt = _expand_kv(kt, vt, qt.shape[1])
    s = _scores(qt, kt, scale, softcap) + _bias(qt, kt, causal, window_size, alibi_slopes)
    lse = torch.logsumexp(s, dim=-1, keepdim=True)  # (B, H, Sq, 1)
    dead = lse == _NEG_INF
    out = torch.exp(s - lse.masked_fill(dead, 0.0)) @ vt  # dead rows: exp(-inf) = 0 -> zeros
    lse = lse.masked_fill(dead, _POS_INF).squeeze(-1)
    return _result(out, lse.to(torch.float32), out_dtype, return_attn_probs)


# ------------------------------------------------------------------ broken implementations
def lse_log2(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
             alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qt, kt, vt, scale, out_dtype = _prepare(q, k, v, dropout_p, softmax_scale, window_size, alibi_slopes)
    kt, vt = _expand_kv(kt, vt, qt.shape[1])
    bias, sk, block = _bias(qt, kt, causal, window_size, alibi_slopes), kt.shape[2], 32
    m2, total, acc = torch.tensor(_NEG_INF, dtype=qt.dtype), 0.0, 0.0  # running max in base-2 units
    for j in range(0, sk, block):
        s2 = (_scores(qt, kt[:, :, j:j + block], scale, softcap) + bias[..., j:j + block]) * _LOG2E
        m_new = torch.maximum(m2, s2.amax(-1, keepdim=True))
        m_ref = _guard(m_new)
        alpha = torch.exp2(m2 - m_ref)
        p = torch.exp2(s2 - m_ref)
        total = alpha * total + p.sum(-1, keepdim=True)
        acc = alpha * acc + p @ vt[:, :, j:j + block]
        m2 = m_new
    out = acc / total.masked_fill(total == 0, 1.0)
    m_ref = _guard(m2)
    # BUG: base-2 LSE m2 + log2(l) returned as is; flash-attn's lse is natural: (m2 + log2(l)) * ln(2)
    lse = torch.where(total == 0, torch.full_like(total, _POS_INF), m_ref + torch.log2(total)).squeeze(-1)
    return _result(out, lse.to(torch.float32), out_dtype, return_attn_probs)


def lse_no_max(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
               alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qt, kt, vt, scale, out_dtype = _prepare(q, k, v, dropout_p, softmax_scale, window_size, alibi_slopes)
    out, m_ref, total = _online(qt, kt, vt, scale, causal, window_size, softcap, alibi_slopes, 32)
    # BUG: log(l) only: l = sum exp(s - m) is relative to the running max, m is never added back
    lse = torch.where(total == 0, torch.full_like(total, _POS_INF), torch.log(total)).squeeze(-1)
    return _result(out, lse.to(torch.float32), out_dtype, return_attn_probs)


def lse_unscaled_max(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                     softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qt, kt, vt, scale, out_dtype = _prepare(q, k, v, dropout_p, softmax_scale, window_size, alibi_slopes)
    kt, vt = _expand_kv(kt, vt, qt.shape[1])
    bias, sk, block = _bias(qt, kt, causal, window_size, alibi_slopes), kt.shape[2], 32
    # scores kept in raw q.k units (t = s / scale), the scale folded late into the exponent: p = exp(scale*(t-m))
    m, total, acc = torch.tensor(_NEG_INF, dtype=qt.dtype), 0.0, 0.0
    for j in range(0, sk, block):
        t = (_scores(qt, kt[:, :, j:j + block], scale, softcap) + bias[..., j:j + block]) / scale
        m_new = torch.maximum(m, t.amax(-1, keepdim=True))
        m_ref = _guard(m_new)
        alpha = torch.exp(scale * (m - m_ref))
        p = torch.exp(scale * (t - m_ref))
        total = alpha * total + p.sum(-1, keepdim=True)
        acc = alpha * acc + p @ vt[:, :, j:j + block]
        m = m_new
    out = acc / total.masked_fill(total == 0, 1.0)
    lse = _lse(_guard(m), total)  # BUG: m is the raw (unscaled) q.k max; should add scale * m
    return _result(out, lse.to(torch.float32), out_dtype, return_attn_probs)


def lse_dead_rows_nan(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                      softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qt, kt, vt, scale, out_dtype = _prepare(q, k, v, dropout_p, softmax_scale, window_size, alibi_slopes)
    kt, vt = _expand_kv(kt, vt, qt.shape[1])
    s = _scores(qt, kt, scale, softcap) + _bias(qt, kt, causal, window_size, alibi_slopes)
    m = s.amax(-1, keepdim=True)
    p = torch.exp(s - _guard(m))
    total = p.sum(-1, keepdim=True)
    out = (p @ vt) / total.masked_fill(total == 0, 1.0)
    # BUG: LSE uses the unguarded row max: a row with no kept key gives exp(-inf - -inf) = NaN, not +inf
    lse = (m + torch.log(torch.exp(s - m).sum(-1, keepdim=True))).squeeze(-1)
    return _result(out, lse.to(torch.float32), out_dtype, return_attn_probs)


def lse_dead_rows_zero(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                       softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qt, kt, vt, scale, out_dtype = _prepare(q, k, v, dropout_p, softmax_scale, window_size, alibi_slopes)
    out, m_ref, total = _online(qt, kt, vt, scale, causal, window_size, softcap, alibi_slopes, 32)
    # BUG: rows with no kept key get 0.0 (like their zero output); flash-attn's convention is +inf
    lse = torch.where(total == 0, torch.zeros_like(total), m_ref + torch.log(total)).squeeze(-1)
    return _result(out, lse.to(torch.float32), out_dtype, return_attn_probs)


def lse_first_block_only(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                         softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qt, kt, vt, scale, out_dtype = _prepare(q, k, v, dropout_p, softmax_scale, window_size, alibi_slopes)
    kt, vt = _expand_kv(kt, vt, qt.shape[1])
    bias, sk, block = _bias(qt, kt, causal, window_size, alibi_slopes), kt.shape[2], 64
    m, total, acc, lse = torch.tensor(_NEG_INF, dtype=qt.dtype), 0.0, 0.0, None
    for j in range(0, sk, block):
        s = _scores(qt, kt[:, :, j:j + block], scale, softcap) + bias[..., j:j + block]
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        m_ref = _guard(m_new)
        alpha = torch.exp(m - m_ref)
        p = torch.exp(s - m_ref)
        total = alpha * total + p.sum(-1, keepdim=True)
        acc = alpha * acc + p @ vt[:, :, j:j + block]
        m = m_new
        if lse is None:
            lse = _lse(m_ref, total)  # BUG: LSE written inside the loop after the first key block only
    out = acc / total.masked_fill(total == 0, 1.0)
    if lse is None:  # Sk == 0
        lse = torch.full(qt.shape[:3], _POS_INF, dtype=qt.dtype)
    return _result(out, lse.to(torch.float32), out_dtype, return_attn_probs)


def lse_float16(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qt, kt, vt, scale, out_dtype = _prepare(q, k, v, dropout_p, softmax_scale, window_size, alibi_slopes)
    out, m_ref, total = _materialised(qt, kt, vt, scale, causal, window_size, softcap, alibi_slopes)
    lse = _lse(m_ref, total).to(torch.float16)  # BUG: LSE stored in a half buffer; flash-attn's is float32
    return _result(out, lse, out_dtype, return_attn_probs)


def lse_wrong_layout(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                     alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qt, kt, vt, scale, out_dtype = _prepare(q, k, v, dropout_p, softmax_scale, window_size, alibi_slopes)
    out, m_ref, total = _materialised(qt, kt, vt, scale, causal, window_size, softcap, alibi_slopes)
    # BUG: LSE transposed like out to (B, Sq, Hq); flash-attn's softmax_lse is (B, Hq, Sq)
    lse = _lse(m_ref, total).transpose(1, 2).contiguous()
    return _result(out, lse.to(torch.float32), out_dtype, return_attn_probs)


def lse_before_softcap(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                       softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qt, kt, vt, scale, out_dtype = _prepare(q, k, v, dropout_p, softmax_scale, window_size, alibi_slopes)
    out, _, _ = _materialised(qt, kt, vt, scale, causal, window_size, softcap, alibi_slopes)
    kt, vt = _expand_kv(kt, vt, qt.shape[1])
    # BUG: LSE from the scaled scores before the softcap tanh (out uses the soft-capped scores)
    s = _scores(qt, kt, scale, 0.0) + _bias(qt, kt, causal, window_size, alibi_slopes)
    m_ref = _guard(s.amax(-1, keepdim=True))
    lse = _lse(m_ref, torch.exp(s - m_ref).sum(-1, keepdim=True))
    return _result(out, lse.to(torch.float32), out_dtype, return_attn_probs)


_ALL = ["causal", "window", "softcap", "alibi", "gqa"]


def _entry(name, correct, model, note, dtype="float64"):
    return {"name": name, "api": "flash-attn", "fn": name, "correct": correct, "model": model,
            "convention": "zeros" if correct else None, "dtype": dtype, "features": list(_ALL), "note": note}


CATALOG = [
    _entry("lse_plain", True, None, "materialised; lse = max + log(sum exp(s - max)), float64 for float64 input"),
    _entry("lse_online", True, None, "FlashAttention-2 online softmax over key blocks of 32; lse = m + log(l)"),
    _entry("lse_float32", True, None, "materialised, always float32 internally", dtype="float32"),
    _entry("lse_logsumexp", True, None, "materialised torch.logsumexp; out = exp(s - lse) @ V"),
    _entry("lse_log2", False, "lse-base2", "LSE returned in base 2 (m*log2(e) + log2(l)) from an exp2 kernel"),
    _entry("lse_no_max", False, "lse-no-max", "LSE = log(l): the running max m never added back"),
    _entry("lse_unscaled_max", False, "lse-unscaled-max", "max added back in raw q.k units, l from scaled scores"),
    _entry("lse_dead_rows_nan", False, "lse-dead-nan", "rows with no kept key give NaN LSE instead of +inf"),
    _entry("lse_dead_rows_zero", False, "lse-dead-zero", "rows with no kept key give 0.0 LSE instead of +inf"),
    _entry("lse_first_block_only", False, "lse-first-block", "blocked (64) LSE from the first key block only"),
    _entry("lse_float16", False, "lse-dtype", "softmax_lse returned as float16 instead of float32"),
    _entry("lse_wrong_layout", False, "lse-layout", "softmax_lse returned as (B, Sq, Hq) instead of (B, Hq, Sq)"),
    _entry("lse_before_softcap", False, "lse-softcap", "LSE from the scores before softcap (out uses capped)"),
]
