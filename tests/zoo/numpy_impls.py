"""Correct NumPy attention implementations with the "refimpl" target API, written independently of refimpl.

Every function has the signature ``fn(q, k, v, mask=None, scale=None)``:

    q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv)   leading (batch/head) dims broadcast like np.matmul
    mask   None, or a bool keep-mask (True = attend) broadcastable to (..., Sq, Sk)
    scale  None means 1/sqrt(D)

    S = scale * q @ k^T            (..., Sq, Sk), with S[i, j] = -inf where mask[i, j] is False
    P = exp(S - max_j S) / sum_j exp(S - max_j S)      softmax over the keys, max-subtracted
    O = P @ v                      (..., Sq, Dv)

and returns O in the inputs' dtype (float32 in, float32 out), except `with_weights`, which returns (O, P).

Decided edge cases: a fully masked query row gives O = 0 and P = 0 (convention "zeros"), except in
`nan_masked_rows` (NaN, what a textbook softmax over an all -inf row gives) and `uniform_masked_rows`
(P = 1/Sk, so O = the mean of v over the keys). Sk >= 1 and D >= 1 are required; Sq = 0 gives an empty result.
No function writes to its inputs. The module is standalone (NumPy only) and ends with `CATALOG`.
"""
import math

import numpy as np

BLOCK_K = 64          # key block of `blocked`
ONLINE_BLOCK_K = 32   # key block of `online`


def _prepare(q, k, v, mask, scale):
    """Validate the arguments; return (q, k, v, keep, scale, dtype).

    q, k, v come back as arrays of their common float dtype (no copy when they already have it); keep is None or
    a bool array of shape (..., Sq, Sk); scale is a Python float (1/sqrt(D) when None).
    """
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    for name, a, dims in (("q", q, "(..., Sq, D)"), ("k", k, "(..., Sk, D)"), ("v", v, "(..., Sk, Dv)")):
        if a.ndim < 2:
            raise ValueError(f"{name} must have shape {dims} (at least 2 dims), got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.floating):
            raise TypeError(f"{name} must be a floating-point array, got dtype {a.dtype}")
    (Sq, D), (Sk, Dk), Sv = q.shape[-2:], k.shape[-2:], v.shape[-2]
    if D < 1 or Sk < 1:
        raise ValueError(f"need D >= 1 and Sk >= 1, got q.shape {q.shape} and k.shape {k.shape}")
    if Dk != D:
        raise ValueError(f"k must have the feature size D = {D} of q, got k.shape {k.shape}")
    if Sv != Sk:
        raise ValueError(f"v must have Sk = {Sk} rows like k, got v.shape {v.shape}")
    keep = None
    if mask is not None:
        keep = np.asarray(mask)
        if keep.dtype != np.bool_:
            raise TypeError(f"mask must be a bool keep-mask (True = attend), got dtype {keep.dtype}")
        keep = keep.reshape((1,) * max(0, 2 - keep.ndim) + keep.shape)
        try:
            keep = np.broadcast_to(keep, keep.shape[:-2] + (Sq, Sk))
        except ValueError:
            raise ValueError(f"mask of shape {np.shape(mask)} does not broadcast to (..., Sq, Sk) = "
                             f"(..., {Sq}, {Sk})") from None
    dtype = np.result_type(q, k, v)
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    return q.astype(dtype, copy=False), k.astype(dtype, copy=False), v.astype(dtype, copy=False), keep, scale, dtype


def _scores(q, k, keep, scale):
    """S = scale * q k^T with -inf where keep is False."""
    s = (q @ np.swapaxes(k, -1, -2)) * scale        # (..., Sq, D) x (..., D, Sk) -> (..., Sq, Sk)
    return s if keep is None else np.where(keep, s, -np.inf)


def _softmax_zeros(s):
    """Row softmax over the last axis with max subtraction; an all -inf row gives all zeros (no NaN, no warning)."""
    m = s.max(axis=-1, keepdims=True)               # (..., Sq, 1), -inf on a fully masked row
    m = np.where(m == -np.inf, 0.0, m)              # such a row: exp(-inf - 0) = 0 instead of exp(NaN)
    e = np.exp(s - m)
    z = e.sum(axis=-1, keepdims=True)               # >= 1 on a live row (its max term is exp(0)), 0 on a dead one
    return e / np.where(z == 0, 1.0, z)


def plain(q, k, v, mask=None, scale=None):
    """Vectorised O = softmax(scale q k^T, masked to -inf) v in the inputs' dtype; fully masked row -> 0."""
    q, k, v, keep, scale, _ = _prepare(q, k, v, mask, scale)
    return _softmax_zeros(_scores(q, k, keep, scale)) @ v      # (..., Sq, Sk) x (..., Sk, Dv) -> (..., Sq, Dv)


def with_weights(q, k, v, mask=None, scale=None):
    """Like `plain` but returns (O, P): P (..., Sq, Sk) has rows summing to 1, or all zeros on a fully masked row."""
    q, k, v, keep, scale, _ = _prepare(q, k, v, mask, scale)
    p = _softmax_zeros(_scores(q, k, keep, scale))
    return p @ v, p


def float32(q, k, v, mask=None, scale=None):
    """Computes in float32 whatever it is given, then casts O back to the inputs' dtype (float64 in, float64 out)."""
    q, k, v, keep, scale, dtype = _prepare(q, k, v, mask, scale)
    q32, k32, v32 = (a.astype(np.float32) for a in (q, k, v))
    out = _softmax_zeros(_scores(q32, k32, keep, scale)) @ v32  # float32 throughout (scale is a Python float)
    return out.astype(dtype)


def blocked(q, k, v, mask=None, scale=None):
    """Two passes over key blocks of BLOCK_K = 64, holding at most (..., Sq, 64) scores at a time.

    Pass 1: m = max over all blocks of the block row maxima. Pass 2: l = sum_j exp(s_j - m) and
    acc = sum_j exp(s_j - m) v_j, block by block. O = acc / l; a fully masked row (m = -inf) has l = 0 and gives 0.
    The last block is partial when Sk is not a multiple of 64.
    """
    q, k, v, keep, scale, dtype = _prepare(q, k, v, mask, scale)
    Sk = k.shape[-2]
    blocks = [(j0, min(j0 + BLOCK_K, Sk)) for j0 in range(0, Sk, BLOCK_K)]

    def block_scores(j0, j1):
        s = (q @ np.swapaxes(k[..., j0:j1, :], -1, -2)) * scale  # (..., Sq, D) x (..., D, Bk) -> (..., Sq, Bk)
        return s if keep is None else np.where(keep[..., j0:j1], s, -np.inf)

    m = np.array(-np.inf, dtype=dtype)
    for j0, j1 in blocks:
        m = np.maximum(m, block_scores(j0, j1).max(axis=-1, keepdims=True))   # (..., Sq, 1)
    m = np.where(m == -np.inf, 0.0, m)
    row_sum = np.zeros((), dtype)
    acc = np.zeros((), dtype)
    for j0, j1 in blocks:
        p = np.exp(block_scores(j0, j1) - m)                      # (..., Sq, Bk), 0 where masked
        row_sum = row_sum + p.sum(axis=-1, keepdims=True)
        acc = acc + p @ v[..., j0:j1, :]                          # (..., Sq, Bk) x (..., Bk, Dv) -> (..., Sq, Dv)
    return (acc / np.where(row_sum == 0, 1.0, row_sum)).astype(dtype, copy=False)


def online(q, k, v, mask=None, scale=None):
    """One pass over key blocks of ONLINE_BLOCK_K = 32 with an online (FlashAttention-style) softmax.

    State per query row: running max m (starts at -inf), running sum l, unnormalised accumulator acc. For a block
    with scores s:  m' = max(m, max_j s_j);  alpha = exp(m - m');  p = exp(s - m');
    l <- alpha l + sum_j p_j;  acc <- alpha acc + p v_blk;  m <- m'.   Finally O = acc / l (0 where l = 0).
    While every key seen so far is masked, m' = -inf; the exponent base is then 0 so no -inf - (-inf) arises.
    """
    q, k, v, keep, scale, dtype = _prepare(q, k, v, mask, scale)
    Sk = k.shape[-2]
    m = np.array(-np.inf, dtype=dtype)
    row_sum = np.zeros((), dtype)
    acc = np.zeros((), dtype)
    for j0 in range(0, Sk, ONLINE_BLOCK_K):
        j1 = min(j0 + ONLINE_BLOCK_K, Sk)
        s = (q @ np.swapaxes(k[..., j0:j1, :], -1, -2)) * scale  # (..., Sq, D) x (..., D, Bk) -> (..., Sq, Bk)
        if keep is not None:
            s = np.where(keep[..., j0:j1], s, -np.inf)
        m_new = np.maximum(m, s.max(axis=-1, keepdims=True))    # (..., Sq, 1)
        base = np.where(m_new == -np.inf, 0.0, m_new)
        alpha = np.exp(m - base)                                 # rescales what was summed under the old max
        p = np.exp(s - base)                                     # (..., Sq, Bk)
        row_sum = alpha * row_sum + p.sum(axis=-1, keepdims=True)
        acc = alpha * acc + p @ v[..., j0:j1, :]                 # (..., Sq, Bk) x (..., Bk, Dv) -> (..., Sq, Dv)
        m = m_new
    return (acc / np.where(row_sum == 0, 1.0, row_sum)).astype(dtype, copy=False)


def per_row(q, k, v, mask=None, scale=None):
    """A Python loop over query rows i: s = scale q_i k^T (over Sk keys), w = exp(s - max s) / sum, O_i = w v."""
    q, k, v, keep, scale, dtype = _prepare(q, k, v, mask, scale)
    Sq, Dv = q.shape[-2], v.shape[-1]
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2], () if keep is None else keep.shape[:-2])
    out = np.zeros(batch + (Sq, Dv), dtype)
    kt = np.swapaxes(k, -1, -2)                                  # (..., D, Sk)
    for i in range(Sq):
        s = (q[..., i:i + 1, :] @ kt) * scale                    # (..., 1, D) x (..., D, Sk) -> (..., 1, Sk)
        if keep is not None:
            s = np.where(keep[..., i:i + 1, :], s, -np.inf)
        top = s.max(axis=-1, keepdims=True)                      # (..., 1, 1)
        live = top > -np.inf
        e = np.exp(s - np.where(live, top, 0.0))
        w = e / np.where(live, e.sum(axis=-1, keepdims=True), 1.0)
        out[..., i:i + 1, :] = w @ v                             # (..., 1, Sk) x (..., Sk, Dv) -> (..., 1, Dv)
    return out


def nan_masked_rows(q, k, v, mask=None, scale=None):
    """The textbook softmax exp(s - max s) / sum applied as is: correct on every row that attends to at least
    one key; on a fully masked row max s = -inf, s - max s = NaN, so that output row is NaN (as in PyTorch)."""
    q, k, v, keep, scale, _ = _prepare(q, k, v, mask, scale)
    s = _scores(q, k, keep, scale)
    with np.errstate(invalid="ignore"):                          # the NaN of a fully masked row is the convention
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        return (e / e.sum(axis=-1, keepdims=True)) @ v


def uniform_masked_rows(q, k, v, mask=None, scale=None):
    """Correct on every row that attends to a key; a fully masked row attends to every key equally
    (P = 1/Sk, O = mean of v over the keys), the result of e.g. a finite fill on a row with nothing to keep."""
    q, k, v, keep, scale, _ = _prepare(q, k, v, mask, scale)
    s = _scores(q, k, keep, scale)
    if keep is not None:
        dead = ~keep.any(axis=-1, keepdims=True)                 # (..., Sq, 1)
        s = np.where(dead, 0.0, s)                               # equal scores -> uniform weights
    return _softmax_zeros(s) @ v


_FEATURES = ["mask", "causal", "window"]   # causal and window reach this API as bool keep-masks


def _entry(fn, convention, dtype, note):
    return {"name": fn, "api": "refimpl", "fn": fn, "correct": True, "model": None, "convention": convention,
            "dtype": dtype, "features": list(_FEATURES), "note": note}


# "dtype": what it computes in; "float64" means the inputs' own dtype (float64 for float64 inputs).
CATALOG = [
    _entry("plain", "zeros", "float64", "vectorised max-subtracted softmax, -inf masking, dead rows -> 0"),
    _entry("with_weights", "zeros", "float64", "as plain, returns (output, weights)"),
    _entry("float32", "zeros", "float32", "computes in float32, returns the input dtype"),
    _entry("blocked", "zeros", "float64", "two-pass softmax over key blocks of 64 (global max, then sums)"),
    _entry("online", "zeros", "float64", "one-pass online softmax over key blocks of 32 with rescaling"),
    _entry("per_row", "zeros", "float64", "Python loop over query rows"),
    _entry("nan_masked_rows", "nan", "float64", "textbook softmax: NaN on a fully masked row (PyTorch-like)"),
    _entry("uniform_masked_rows", "uniform", "float64", "fully masked row attends uniformly (mean of v)"),
]
