"""NumPy attention backward passes with the "numpy-backward" target API, correct and deliberately broken.

Signature ``fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv)``: q (..., Sq, D), k (..., Sk, D),
v (..., Sk, Dv), d_out (..., Sq, Dv) the gradient of a loss with respect to O; leading dims broadcast like
np.matmul; mask None or a bool keep-mask (True = attend) broadcastable to (..., Sq, Sk); scale None -> 1/sqrt(D).
Forward:  S = scale q k^T (-inf where masked),  P = softmax over keys (a fully masked row: P = 0),  O = P v.
Backward (the softmax Jacobian written out):
    dV = P^T dO                       (..., Sk, Sq) x (..., Sq, Dv) -> (..., Sk, Dv)
    dP = dO V^T                       (..., Sq, Dv) x (..., Dv, Sk) -> (..., Sq, Sk)
    delta_i = sum_c dO_ic O_ic        (= sum_j P_ij dP_ij)  (..., Sq, 1)
    dS = P * (dP - delta)
    dQ = scale dS K,   dK = scale dS^T Q
Each gradient is summed over the dims broadcasting added, so it has its input's shape; a fully masked query row
contributes zero to every gradient. Results come back in the inputs' dtype. Broken functions contain exactly one
mistake, marked ``# BUG:``. Standalone (NumPy only); the module ends with `CATALOG`.
"""
import math

import numpy as np

BLOCK_K = 32   # key block of `grad_blocked`


def _prepare(q, k, v, d_out, mask, scale):
    """Validate; return (q, k, v, d_out, keep, scale): arrays of the common dtype, keep None or bool, float scale."""
    q, k, v, d_out = (np.asarray(a) for a in (q, k, v, d_out))
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"expected q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); got q {q.shape}, "
                         f"k {k.shape}, v {v.shape}")
    if d_out.shape[-2:] != (q.shape[-2], v.shape[-1]):
        raise ValueError(f"d_out must have shape (..., Sq, Dv) = (..., {q.shape[-2]}, {v.shape[-1]}), "
                         f"got {d_out.shape}")
    keep = None
    if mask is not None:
        keep = np.asarray(mask)
        if keep.dtype != np.bool_:
            raise TypeError(f"mask must be a bool keep-mask (True = attend), got dtype {keep.dtype}")
        keep = np.broadcast_to(keep, keep.shape[:-2] + (q.shape[-2], k.shape[-2]))
    dtype = np.result_type(q, k, v, d_out)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return (*(a.astype(dtype, copy=False) for a in (q, k, v, d_out)), keep, scale)


def _unbroadcast(g, shape):
    """Sum the gradient g over the dims that broadcasting added to (or stretched in) an input of `shape`."""
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    stretched = tuple(i for i, (n, m) in enumerate(zip(shape, g.shape)) if n == 1 and m != 1)
    return g.sum(axis=stretched, keepdims=True) if stretched else g


def _scores(q, k, keep, scale):
    s = (q @ np.swapaxes(k, -1, -2)) * scale        # (..., Sq, D) x (..., D, Sk) -> (..., Sq, Sk)
    return s if keep is None else np.where(keep, s, -np.inf)


def _probs(s):
    """Row softmax over the keys; an all -inf (fully masked) row gives zeros."""
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(m == -np.inf, 0.0, m))
    z = e.sum(axis=-1, keepdims=True)
    return e / np.where(z == 0, 1.0, z)


def _dense_grads(q, k, v, d_out, keep, scale):
    p = _probs(_scores(q, k, keep, scale))          # (..., Sq, Sk)
    o = p @ v                                        # (..., Sq, Sk) x (..., Sk, Dv) -> (..., Sq, Dv)
    dv = np.swapaxes(p, -1, -2) @ d_out              # (..., Sk, Sq) x (..., Sq, Dv) -> (..., Sk, Dv)
    dp = d_out @ np.swapaxes(v, -1, -2)              # (..., Sq, Dv) x (..., Dv, Sk) -> (..., Sq, Sk)
    delta = np.sum(d_out * o, axis=-1, keepdims=True)          # (..., Sq, 1)
    ds = p * (dp - delta)
    dq = (ds @ k) * scale                            # (..., Sq, Sk) x (..., Sk, D) -> (..., Sq, D)
    dk = (np.swapaxes(ds, -1, -2) @ q) * scale       # (..., Sk, Sq) x (..., Sq, D) -> (..., Sk, D)
    return dq, dk, dv


def grad_plain(q, k, v, d_out, mask=None, scale=None):
    """Dense backward in the inputs' dtype: materialises P (..., Sq, Sk) once."""
    q, k, v, d_out, keep, scale = _prepare(q, k, v, d_out, mask, scale)
    dq, dk, dv = _dense_grads(q, k, v, d_out, keep, scale)
    return _unbroadcast(dq, q.shape), _unbroadcast(dk, k.shape), _unbroadcast(dv, v.shape)


def grad_float32(q, k, v, d_out, mask=None, scale=None):
    """The dense backward computed in float32 whatever the inputs, cast back to the inputs' dtype."""
    q, k, v, d_out, keep, scale = _prepare(q, k, v, d_out, mask, scale)
    dtype = q.dtype
    grads = _dense_grads(*(a.astype(np.float32) for a in (q, k, v, d_out)), keep, scale)
    return tuple(_unbroadcast(g, a.shape).astype(dtype) for g, a in zip(grads, (q, k, v)))


def grad_blocked(q, k, v, d_out, mask=None, scale=None):
    """Memory-blocked backward (FlashAttention style) over key blocks of BLOCK_K = 32; never holds more than
    (..., Sq, 32) of S or P.

    Pass 1 (online softmax): per-row log-sum-exp L = m + log(sum_j exp(s_j - m)) and O.  delta = rowsum(dO * O).
    Pass 2, per key block: P_blk = exp(S_blk - L) recomputed, then dV_blk = P_blk^T dO, dP_blk = dO V_blk^T,
    dS_blk = P_blk (dP_blk - delta), dQ += scale dS_blk K_blk, dK_blk = scale dS_blk^T Q.
    A fully masked row has L = +inf by decision here, so its recomputed P is exp(-inf) = 0.
    """
    q, k, v, d_out, keep, scale = _prepare(q, k, v, d_out, mask, scale)
    Sk = k.shape[-2]
    blocks = [(j0, min(j0 + BLOCK_K, Sk)) for j0 in range(0, Sk, BLOCK_K)]

    def block_scores(j0, j1):
        s = (q @ np.swapaxes(k[..., j0:j1, :], -1, -2)) * scale  # (..., Sq, D) x (..., D, Bk) -> (..., Sq, Bk)
        return s if keep is None else np.where(keep[..., j0:j1], s, -np.inf)

    m = np.array(-np.inf, q.dtype)
    row_sum = np.zeros((), q.dtype)
    acc = np.zeros((), q.dtype)
    for j0, j1 in blocks:                                         # pass 1: online softmax
        s = block_scores(j0, j1)
        m_new = np.maximum(m, s.max(axis=-1, keepdims=True))     # (..., Sq, 1)
        base = np.where(m_new == -np.inf, 0.0, m_new)
        alpha = np.exp(m - base)
        p = np.exp(s - base)
        row_sum = alpha * row_sum + p.sum(axis=-1, keepdims=True)
        acc = alpha * acc + p @ v[..., j0:j1, :]                  # (..., Sq, Bk) x (..., Bk, Dv) -> (..., Sq, Dv)
        m = m_new
    live = row_sum > 0
    o = acc / np.where(live, row_sum, 1.0)                        # (..., Sq, Dv)
    lse = np.where(live, m + np.log(np.where(live, row_sum, 1.0)), np.inf)  # (..., Sq, 1)
    delta = np.sum(d_out * o, axis=-1, keepdims=True)             # (..., Sq, 1)

    dq = np.zeros((), q.dtype)
    dk_blocks, dv_blocks = [], []
    for j0, j1 in blocks:                                         # pass 2: recompute P per block
        p = np.exp(block_scores(j0, j1) - lse)                    # (..., Sq, Bk)
        dv_blocks.append(np.swapaxes(p, -1, -2) @ d_out)          # (..., Bk, Sq) x (..., Sq, Dv) -> (..., Bk, Dv)
        dp = d_out @ np.swapaxes(v[..., j0:j1, :], -1, -2)        # (..., Sq, Dv) x (..., Dv, Bk) -> (..., Sq, Bk)
        ds = p * (dp - delta)
        dq = dq + (ds @ k[..., j0:j1, :]) * scale                 # (..., Sq, Bk) x (..., Bk, D) -> (..., Sq, D)
        dk_blocks.append((np.swapaxes(ds, -1, -2) @ q) * scale)   # (..., Bk, Sq) x (..., Sq, D) -> (..., Bk, D)
    dk = np.concatenate(dk_blocks, axis=-2)                      # (..., Sk, D)
    dv = np.concatenate(dv_blocks, axis=-2)                      # (..., Sk, Dv)
    return _unbroadcast(dq, q.shape), _unbroadcast(dk, k.shape), _unbroadcast(dv, v.shape)


def grad_no_delta(q, k, v, d_out, mask=None, scale=None):
    """dS = P * dP: the rowsum(dO * O) term of the softmax Jacobian is dropped."""
    q, k, v, d_out, keep, scale = _prepare(q, k, v, d_out, mask, scale)
    p = _probs(_scores(q, k, keep, scale))
    dv = np.swapaxes(p, -1, -2) @ d_out
    dp = d_out @ np.swapaxes(v, -1, -2)
    ds = p * dp                                      # BUG: must be p * (dp - rowsum(d_out * out))
    dq = (ds @ k) * scale
    dk = (np.swapaxes(ds, -1, -2) @ q) * scale
    return _unbroadcast(dq, q.shape), _unbroadcast(dk, k.shape), _unbroadcast(dv, v.shape)


def grad_dq_unscaled(q, k, v, d_out, mask=None, scale=None):
    """dQ = dS K: the softmax scale is forgotten in dQ only."""
    q, k, v, d_out, keep, scale = _prepare(q, k, v, d_out, mask, scale)
    p = _probs(_scores(q, k, keep, scale))
    o = p @ v
    dv = np.swapaxes(p, -1, -2) @ d_out
    ds = p * (d_out @ np.swapaxes(v, -1, -2) - np.sum(d_out * o, axis=-1, keepdims=True))
    dq = ds @ k                                      # BUG: missing "* scale"
    dk = (np.swapaxes(ds, -1, -2) @ q) * scale
    return _unbroadcast(dq, q.shape), _unbroadcast(dk, k.shape), _unbroadcast(dv, v.shape)


def grad_dk_unscaled(q, k, v, d_out, mask=None, scale=None):
    """dK = dS^T Q: the softmax scale is forgotten in dK only."""
    q, k, v, d_out, keep, scale = _prepare(q, k, v, d_out, mask, scale)
    p = _probs(_scores(q, k, keep, scale))
    o = p @ v
    dv = np.swapaxes(p, -1, -2) @ d_out
    ds = p * (d_out @ np.swapaxes(v, -1, -2) - np.sum(d_out * o, axis=-1, keepdims=True))
    dq = (ds @ k) * scale
    dk = np.swapaxes(ds, -1, -2) @ q                 # BUG: missing "* scale"
    return _unbroadcast(dq, q.shape), _unbroadcast(dk, k.shape), _unbroadcast(dv, v.shape)


def grad_ds_transposed(q, k, v, d_out, mask=None, scale=None):
    """dQ computed from dS^T instead of dS: silently wrong when Sq == Sk, a matmul shape error otherwise."""
    q, k, v, d_out, keep, scale = _prepare(q, k, v, d_out, mask, scale)
    p = _probs(_scores(q, k, keep, scale))
    o = p @ v
    dv = np.swapaxes(p, -1, -2) @ d_out
    ds = p * (d_out @ np.swapaxes(v, -1, -2) - np.sum(d_out * o, axis=-1, keepdims=True))
    dq = (np.swapaxes(ds, -1, -2) @ k) * scale       # BUG: dQ = scale dS K, not dS^T K
    dk = (np.swapaxes(ds, -1, -2) @ q) * scale
    return _unbroadcast(dq, q.shape), _unbroadcast(dk, k.shape), _unbroadcast(dv, v.shape)


def grad_masked_nan(q, k, v, d_out, mask=None, scale=None):
    """Textbook softmax exp(s - max s) / sum in the recomputation: a fully masked row gets P = NaN, which flows
    into dQ of that row and into every dK and dV entry of its batch element."""
    q, k, v, d_out, keep, scale = _prepare(q, k, v, d_out, mask, scale)
    s = _scores(q, k, keep, scale)
    e = np.exp(s - s.max(axis=-1, keepdims=True))   # BUG: -inf - (-inf) = NaN on a fully masked row
    p = e / e.sum(axis=-1, keepdims=True)
    o = p @ v
    dv = np.swapaxes(p, -1, -2) @ d_out
    ds = p * (d_out @ np.swapaxes(v, -1, -2) - np.sum(d_out * o, axis=-1, keepdims=True))
    dq = (ds @ k) * scale
    dk = (np.swapaxes(ds, -1, -2) @ q) * scale
    return _unbroadcast(dq, q.shape), _unbroadcast(dk, k.shape), _unbroadcast(dv, v.shape)


def _entry(fn, correct, model, note, convention="zeros", dtype="float64"):
    return {"name": fn, "api": "numpy-backward", "fn": fn, "correct": correct, "model": model,
            "convention": convention, "dtype": dtype, "features": ["mask", "causal", "window"], "note": note}


# "convention": gradients of a fully masked query row; "dtype": what it computes in ("float64" = the inputs' own).
CATALOG = [
    _entry("grad_plain", True, None, "dense softmax-Jacobian backward, P materialised"),
    _entry("grad_blocked", True, None, "key blocks of 32, P recomputed per block from the row log-sum-exp"),
    _entry("grad_float32", True, None, "dense backward computed in float32", dtype="float32"),
    _entry("grad_no_delta", False, "bwd-delta-term", "dS = P * dP without subtracting rowsum(dO * O)"),
    _entry("grad_dq_unscaled", False, "bwd-scale-dq", "scale forgotten in dQ"),
    _entry("grad_dk_unscaled", False, "bwd-scale-dk", "scale forgotten in dK"),
    _entry("grad_ds_transposed", False, "bwd-ds-transposed", "dQ = scale dS^T K (errors when Sq != Sk)"),
    _entry("grad_masked_nan", False, "bwd-masked-nan", "textbook softmax: NaN gradients for fully masked rows",
           convention="nan"),
]
