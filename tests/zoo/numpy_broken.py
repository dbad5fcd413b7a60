"""Deliberately broken NumPy attention implementations with the "refimpl" target API.

Same API and intended semantics as numpy_impls.py (``fn(q, k, v, mask=None, scale=None)``; q (..., Sq, D),
k (..., Sk, D), v (..., Sk, Dv); bool keep-mask, True = attend; scale None -> 1/sqrt(D);
O = softmax_keys(scale q k^T masked to -inf) v; a fully masked row -> 0; output in the inputs' dtype).

Each function is a correct implementation except for exactly ONE realistic mistake, marked ``# BUG:`` in the code
and named by the "model" (bug-model id) of its CATALOG entry. Mistakes that only show in some cases are left that
way on purpose (e.g. a wrong *default* scale still honours an explicit `scale`; a blocked-tail kernel is right
whenever Sk <= 64 or Sk is a multiple of 64). Standalone (NumPy only); the module ends with `CATALOG`.
"""
import math

import numpy as np

BLOCK_K = 64
ONLINE_BLOCK_K = 32


def _prepare(q, k, v, mask):
    """(q, k, v, keep): arrays of the common float dtype (no copy when they already have it); keep None or bool."""
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"expected q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); got q {q.shape}, "
                         f"k {k.shape}, v {v.shape}")
    keep = None
    if mask is not None:
        keep = np.asarray(mask)
        if keep.dtype != np.bool_:
            raise TypeError(f"mask must be a bool keep-mask (True = attend), got dtype {keep.dtype}")
        keep = np.broadcast_to(keep, keep.shape[:-2] + (q.shape[-2], k.shape[-2]))
    dtype = np.result_type(q, k, v)
    return q.astype(dtype, copy=False), k.astype(dtype, copy=False), v.astype(dtype, copy=False), keep


def _default_scale(q, scale):
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def _scores(q, k, keep, scale):
    s = (q @ np.swapaxes(k, -1, -2)) * scale        # (..., Sq, D) x (..., D, Sk) -> (..., Sq, Sk)
    return s if keep is None else np.where(keep, s, -np.inf)


def _softmax(s, axis=-1):
    """Max-subtracted softmax along `axis`; a line that is all -inf gives zeros."""
    m = s.max(axis=axis, keepdims=True)
    e = np.exp(s - np.where(m == -np.inf, 0.0, m))
    z = e.sum(axis=axis, keepdims=True)
    return e / np.where(z == 0, 1.0, z)


def _dead_rows(keep):
    """(..., Sq, 1) True where a query row keeps no key."""
    return ~keep.any(axis=-1, keepdims=True)


def scale_sqrt_sk(q, k, v, mask=None, scale=None):
    """Default scale 1/sqrt(Sk): the feature size read from the wrong axis of k. An explicit scale is honoured."""
    q, k, v, keep = _prepare(q, k, v, mask)
    if scale is None:
        scale = 1.0 / math.sqrt(k.shape[-2])   # BUG: k is (..., Sk, D); D is k.shape[-1]
    return _softmax(_scores(q, k, keep, scale)) @ v


def scale_sqrt_dv(q, k, v, mask=None, scale=None):
    """Default scale 1/sqrt(Dv): the head size taken from v (equal to D in most models)."""
    q, k, v, keep = _prepare(q, k, v, mask)
    if scale is None:
        scale = 1.0 / math.sqrt(v.shape[-1])   # BUG: the value head size Dv instead of the key size D
    return _softmax(_scores(q, k, keep, scale)) @ v


def scale_inv_d(q, k, v, mask=None, scale=None):
    """Default scale 1/D: the square root forgotten."""
    q, k, v, keep = _prepare(q, k, v, mask)
    if scale is None:
        scale = 1.0 / q.shape[-1]              # BUG: 1/D instead of 1/sqrt(D)
    return _softmax(_scores(q, k, keep, scale)) @ v


def no_scale(q, k, v, mask=None, scale=None):
    """Scores never scaled: the `scale` argument is accepted and ignored."""
    q, k, v, keep = _prepare(q, k, v, mask)
    s = q @ np.swapaxes(k, -1, -2)              # BUG: missing "* scale"
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    return _softmax(s) @ v


def mask_polarity(q, k, v, mask=None, scale=None):
    """Treats True in the mask as "masked out" (the key-padding-mask convention of some libraries)."""
    q, k, v, keep = _prepare(q, k, v, mask)
    s = (q @ np.swapaxes(k, -1, -2)) * _default_scale(q, scale)
    if keep is not None:
        s = np.where(keep, -np.inf, s)          # BUG: polarity inverted, True should mean attend
    return _softmax(s) @ v


def softmax_axis(q, k, v, mask=None, scale=None):
    """Softmax taken over the queries (axis -2) instead of the keys."""
    q, k, v, keep = _prepare(q, k, v, mask)
    p = _softmax(_scores(q, k, keep, _default_scale(q, scale)), axis=-2)   # BUG: axis=-1 normalises over keys
    return p @ v


def weights_transposed(q, k, v, mask=None, scale=None):
    """Returns (O, P^T): the output is right, the weights come back in (..., Sk, Sq) layout."""
    q, k, v, keep = _prepare(q, k, v, mask)
    p = _softmax(_scores(q, k, keep, _default_scale(q, scale)))
    return p @ v, np.swapaxes(p, -1, -2)        # BUG: weights should be returned as (..., Sq, Sk)


def no_max_subtraction(q, k, v, mask=None, scale=None):
    """exp(s) / sum exp(s) without subtracting the row max: overflows (inf / inf = NaN) once a score passes
    ~709 in float64 (~88 in float32)."""
    q, k, v, keep = _prepare(q, k, v, mask)
    e = np.exp(_scores(q, k, keep, _default_scale(q, scale)))   # BUG: exp(s - max s) is what is safe
    z = e.sum(axis=-1, keepdims=True)
    return (e / np.where(z == 0, 1.0, z)) @ v


def finite_mask_fill(q, k, v, mask=None, scale=None):
    """Masked scores set to -1e9 instead of -inf: masked keys win when the kept scores are below -1e9, and a
    fully masked row becomes uniform."""
    q, k, v, keep = _prepare(q, k, v, mask)
    s = (q @ np.swapaxes(k, -1, -2)) * _default_scale(q, scale)
    if keep is not None:
        s = np.where(keep, s, -1e9)             # BUG: a finite "minus infinity"
    return _softmax(s) @ v


def finite_mask_fill_float32(q, k, v, mask=None, scale=None):
    """A float32 kernel that fills masked scores with -1e4 (the habit of float16 code): masked keys get weight
    as soon as the kept scores are near or below -1e4."""
    q, k, v, keep = _prepare(q, k, v, mask)
    dtype = q.dtype
    q32, k32, v32 = (a.astype(np.float32) for a in (q, k, v))
    s = (q32 @ np.swapaxes(k32, -1, -2)) * _default_scale(q, scale)   # (..., Sq, Sk) float32
    if keep is not None:
        s = np.where(keep, s, np.float32(-1e4))   # BUG: -1e4 is not small enough to exclude a key
    return (_softmax(s) @ v32).astype(dtype)


def low_precision(q, k, v, mask=None, scale=None):
    """The exponentials and their row sum are computed in float16 (an 11-bit significand), whatever the input."""
    q, k, v, keep = _prepare(q, k, v, mask)
    s = _scores(q, k, keep, _default_scale(q, scale))
    m = s.max(axis=-1, keepdims=True)
    e = np.exp((s - np.where(m == -np.inf, 0.0, m)).astype(np.float16))   # BUG: softmax in float16
    z = e.sum(axis=-1, keepdims=True, dtype=np.float16)
    p = (e / np.where(z == 0, np.float16(1), z)).astype(q.dtype)
    return p @ v


def denominator_epsilon(q, k, v, mask=None, scale=None):
    """Divides by sum + 1e-6 (to dodge 0/0 on fully masked rows), which biases every row low by ~1e-6 / sum."""
    q, k, v, keep = _prepare(q, k, v, mask)
    s = _scores(q, k, keep, _default_scale(q, scale))
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(m == -np.inf, 0.0, m))
    return (e / (e.sum(axis=-1, keepdims=True) + 1e-6)) @ v   # BUG: the epsilon is added on every row


def blocked_tail(q, k, v, mask=None, scale=None):
    """Two-pass softmax over key blocks of 64 that counts blocks with floor division: when Sk > 64 and
    Sk % 64 != 0 the partial last block (keys 64 * (Sk // 64) onwards) is never visited."""
    q, k, v, keep = _prepare(q, k, v, mask)
    scale = _default_scale(q, scale)
    Sk = k.shape[-2]
    bk = min(BLOCK_K, Sk)
    blocks = [(b * bk, (b + 1) * bk) for b in range(Sk // bk)]   # BUG: needs ceil(Sk / bk) blocks

    def block_scores(j0, j1):
        s = (q @ np.swapaxes(k[..., j0:j1, :], -1, -2)) * scale  # (..., Sq, D) x (..., D, Bk) -> (..., Sq, Bk)
        return s if keep is None else np.where(keep[..., j0:j1], s, -np.inf)

    m = np.array(-np.inf, dtype=q.dtype)
    for j0, j1 in blocks:
        m = np.maximum(m, block_scores(j0, j1).max(axis=-1, keepdims=True))
    m = np.where(m == -np.inf, 0.0, m)
    row_sum, acc = 0.0, 0.0
    for j0, j1 in blocks:
        p = np.exp(block_scores(j0, j1) - m)
        row_sum = row_sum + p.sum(axis=-1, keepdims=True)
        acc = acc + p @ v[..., j0:j1, :]                          # (..., Sq, Bk) x (..., Bk, Dv) -> (..., Sq, Dv)
    return (acc / np.where(row_sum == 0, 1.0, row_sum)).astype(q.dtype)


def online_rescale(q, k, v, mask=None, scale=None):
    """Online softmax over key blocks of 32 that rescales the running sum but not the output accumulator when
    the running max grows: right when Sk <= 32 or when the first block holds each row's max."""
    q, k, v, keep = _prepare(q, k, v, mask)
    scale = _default_scale(q, scale)
    m = np.array(-np.inf, dtype=q.dtype)
    row_sum = np.zeros((), q.dtype)
    acc = np.zeros((), q.dtype)
    for j0 in range(0, k.shape[-2], ONLINE_BLOCK_K):
        j1 = min(j0 + ONLINE_BLOCK_K, k.shape[-2])
        s = (q @ np.swapaxes(k[..., j0:j1, :], -1, -2)) * scale  # (..., Sq, D) x (..., D, Bk) -> (..., Sq, Bk)
        if keep is not None:
            s = np.where(keep[..., j0:j1], s, -np.inf)
        m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
        base = np.where(m_new == -np.inf, 0.0, m_new)
        alpha = np.exp(m - base)
        p = np.exp(s - base)
        row_sum = alpha * row_sum + p.sum(axis=-1, keepdims=True)
        acc = acc + p @ v[..., j0:j1, :]                          # BUG: must be alpha * acc + p @ v_blk
        m = m_new
    return acc / np.where(row_sum == 0, 1.0, row_sum)


def masked_rows_42(q, k, v, mask=None, scale=None):
    """Writes a sentinel 42 (left over from debugging) into the output of every fully masked row."""
    q, k, v, keep = _prepare(q, k, v, mask)
    out = _softmax(_scores(q, k, keep, _default_scale(q, scale))) @ v
    if keep is not None:
        out = np.where(_dead_rows(keep), q.dtype.type(42), out)   # BUG: should stay 0
    return out


def masked_rows_mean_v(q, k, v, mask=None, scale=None):
    """Meant to give a fully masked row the mean of v over the keys, but takes v.mean() over ALL of v (every
    batch entry, key and feature): one scalar, matching neither 0 nor the uniform-attention convention."""
    q, k, v, keep = _prepare(q, k, v, mask)
    out = _softmax(_scores(q, k, keep, _default_scale(q, scale))) @ v
    if keep is not None:
        out = np.where(_dead_rows(keep), v.mean(), out)           # BUG: v.mean(axis=-2, keepdims=True) intended
    return out


def mutates_input(q, k, v, mask=None, scale=None):
    """Right output, but pre-scales the caller's q in place (q *= scale) to save a temporary."""
    q, k, v, keep = _prepare(q, k, v, mask)      # no copy when q already has the common dtype
    q *= _default_scale(q, scale)                # BUG: writes into the caller's array
    s = q @ np.swapaxes(k, -1, -2)
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    return _softmax(s) @ v


def _entry(fn, model, note, convention="zeros", dtype="float64"):
    return {"name": fn, "api": "refimpl", "fn": fn, "correct": False, "model": model, "convention": convention,
            "dtype": dtype, "features": ["mask", "causal", "window"], "note": note}


# "convention": what it actually returns on a fully masked row (None: none of zeros/nan/uniform).
# "dtype": what it computes in; "float64" means the inputs' own dtype.
CATALOG = [
    _entry("scale_sqrt_sk", "scale", "default scale 1/sqrt(Sk) (k.shape[-2] instead of k.shape[-1])"),
    _entry("scale_sqrt_dv", "scale", "default scale 1/sqrt(Dv) (head size taken from v)"),
    _entry("scale_inv_d", "scale", "default scale 1/D (square root forgotten)"),
    _entry("no_scale", "scale", "scores never scaled; the scale argument is ignored"),
    _entry("mask_polarity", "mask-polarity", "True in the mask treated as masked out", convention=None),
    _entry("softmax_axis", "softmax-axis", "softmax over the queries (axis -2) instead of the keys"),
    _entry("weights_transposed", "weights-transposed", "returns (output, weights) with weights (..., Sk, Sq)"),
    _entry("no_max_subtraction", "no-max-subtraction", "exp(s) without subtracting the row max: overflow"),
    _entry("finite_mask_fill", "finite-mask-fill", "masked scores set to -1e9 instead of -inf",
           convention="uniform"),
    _entry("finite_mask_fill_float32", "finite-mask-fill", "float32 kernel filling masked scores with -1e4",
           convention="uniform", dtype="float32"),
    _entry("low_precision", "low-precision", "exponentials and row sums computed in float16", dtype="float16"),
    _entry("denominator_epsilon", "denominator-epsilon", "divides by sum + 1e-6"),
    _entry("blocked_tail", "blocked-tail", "key blocks of 64 counted with Sk // 64: partial last block dropped"),
    _entry("online_rescale", "online-rescale", "online softmax (blocks of 32) never rescales the accumulator"),
    _entry("masked_rows_42", None, "fully masked rows output a debugging sentinel 42", convention=None),
    _entry("masked_rows_mean_v", None, "fully masked rows output v.mean() over all of v (missing axis)",
           convention=None),
    _entry("mutates_input", None, "right output but scales the caller's q in place (q *= scale)"),
]
