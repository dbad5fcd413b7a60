"""Scaled dot-product attention, the tutorials' per-query "general attention", and self-attention.

Shapes use ``B...`` for any number of leading batch/head dimensions (broadcast as in ``np.matmul``),
``Sq`` queries, ``Sk`` keys, ``Dk`` query/key features and ``Dv`` value features.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ._checks import (ShapeError, as_float_array, broadcast_batch, check_choice, check_scale,
                      result_dtype)
from .masks import prepare_mask

__all__ = ["scaled_dot_product_attention", "general_attention", "general_attention_matrix",
           "self_attention", "self_attention_with", "project"]


class _SDPAInputs(NamedTuple):
    q: np.ndarray          # (B..., Sq, Dk)
    k: np.ndarray          # (B..., Sk, Dk)
    v: np.ndarray          # (B..., Sk, Dv)
    scale: np.ndarray      # 0-d, compute dtype
    keep: np.ndarray | None       # bool, broadcasts to (B..., Sq, Sk)
    additive: np.ndarray | None   # compute dtype, broadcasts to (B..., Sq, Sk)
    scores_shape: tuple[int, ...]


def prepare_sdpa(q, k, v, mask=None, scale=None, is_causal=False) -> _SDPAInputs:
    """Validate and convert the arguments of an SDPA call (shared by the plain and online variants)."""
    q = as_float_array(q, "q", min_ndim=2, dims="(..., n_queries, d_k)")
    k = as_float_array(k, "k", min_ndim=2, dims="(..., n_keys, d_k)")
    v = as_float_array(v, "v", min_ndim=2, dims="(..., n_keys, d_v)")
    if q.shape[-1] != k.shape[-1]:
        raise ShapeError(f"q and k must have the same last dimension d_k, got q.shape={q.shape}, k.shape={k.shape}")
    if k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"k and v must have the same number of keys (axis -2), got k.shape={k.shape}, v.shape={v.shape}")
    batch = broadcast_batch(("q", "k", "v"), (q.shape[:-2], k.shape[:-2], v.shape[:-2]))
    dtype = result_dtype(q, k, v)
    q, k, v = (a.astype(dtype, copy=False) for a in (q, k, v))
    s = check_scale(scale, 1.0 / math.sqrt(q.shape[-1]), dtype)
    scores_shape = batch + (q.shape[-2], k.shape[-2])
    keep, additive = prepare_mask(mask, scores_shape, dtype, is_causal)
    return _SDPAInputs(q, k, v, s, keep, additive, scores_shape)


def _log2_max_abs(a: np.ndarray) -> float:
    m = float(np.abs(a).max())
    return math.log2(m) if m > 0 else -math.inf


def overflow_split(q: np.ndarray, k: np.ndarray, s: np.ndarray) -> tuple[int, int]:
    """Powers of two ``(e_q, e_k)`` to divide q and k by so that ``(q*s) @ k^T`` cannot overflow.

    ``(0, 0)`` in every ordinary case. Scaling by powers of two is exact (short of underflow), so the
    rescaled scores are the true scores times ``2**-(e_q+e_k)`` to the last bit, and the softmax can
    undo it exactly: ``exp((z - max z) * 2**(e_q+e_k))``.
    """
    fmax = np.finfo(q.dtype).max
    bound = _log2_max_abs(q) + _log2_max_abs(k) + math.log2(float(s)) + math.log2(q.shape[-1])
    excess = bound - (math.log2(float(fmax)) - 4)
    if excess <= 0:
        return 0, 0
    e = math.ceil(excess)
    return e // 2, e - e // 2


def masked_softmax_(z: np.ndarray, keep, additive, t: float = 1.0) -> np.ndarray:
    """In place: ``z <- softmax(t*z + additive, where keep)`` along the last axis.

    ``t`` is the power-of-two temperature of :func:`overflow_split` (1 in ordinary cases); ``additive``
    is divided by it so that it is added at the true scale. A row with no attended key (all masked,
    or all ``-inf``) gets all-zero weights.
    """
    if additive is not None:
        with np.errstate(over="ignore", under="ignore"):
            np.add(z, additive if t == 1.0 else additive / np.asarray(t, z.dtype), out=z)
    if keep is not None:
        np.copyto(z, -np.inf, where=~keep)
    m = z.max(axis=-1, keepdims=True)                    # (B..., Sq, 1)
    dead = m == -np.inf
    any_dead = bool(dead.any())
    if any_dead:
        m[dead] = 0
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        np.subtract(z, m, out=z)                         # <= 0
        if t != 1.0:
            np.multiply(z, np.asarray(t, z.dtype), out=z)  # exact or -> -inf (weight 0)
        np.exp(z, out=z)
    denom = z.sum(axis=-1, keepdims=True)                # (B..., Sq, 1), >= 1 for live rows
    if any_dead:
        denom[dead] = 1
    np.multiply(z, np.reciprocal(denom), out=z)          # one division per row, then a multiply per weight
    return z


def scaled_dot_product_attention(q, k, v, *, mask=None, scale=None, is_causal=False):
    """Scaled dot-product attention.

        weights = softmax(scale * q @ k^T + additive_mask, masked where keep_mask is False)
        output  = weights @ v

    Args:
      q: (B..., Sq, Dk) queries.  k: (B..., Sk, Dk) keys.  v: (B..., Sk, Dv) values.
        Leading dimensions broadcast as in ``np.matmul``.
      mask: optional, broadcastable to (B..., Sq, Sk). A bool mask is a keep-mask (True = attend);
        a float mask is added to the scaled scores (``-inf`` masks a key).
      scale: positive finite real; default ``1/sqrt(Dk)``.
      is_causal: also apply :func:`refimpl.causal_mask` (query i attends key j iff j <= i).

    Returns:
      ``(output, weights)``: (B..., Sq, Dv) and (B..., Sq, Sk), in the compute dtype (float32 only
      if q, k and v are all float32).

    Decided edge cases:
      * A query whose keys are all masked gets all-zero weights and an all-zero output (the
        empty sum). PyTorch gives NaN there; the R package gives uniform weights.
      * Inputs whose scores would overflow (values up to 1e300 in float64, 1e36 in float32) are
        computed exactly via power-of-two rescaling (see :func:`overflow_split`): results stay finite.
    """
    p = prepare_sdpa(q, k, v, mask, scale, is_causal)
    q, k, v, s = p.q, p.k, p.v, p.scale
    e_q, e_k = overflow_split(q, k, s)
    if e_q or e_k:
        q, k = np.ldexp(q, -e_q), np.ldexp(k, -e_k)
    t = float(2.0 ** (e_q + e_k))
    n_q, n_k = p.scores_shape[-2], p.scores_shape[-1]
    if n_q * n_k >= BLOCKED_MIN_SCORES:
        return _sdpa_blocked(q * s, k, v, p.keep, p.additive, t, p.scores_shape)
    z = (q * s) @ np.swapaxes(k, -1, -2)                   # (B..., Sq, Dk) x (B..., Dk, Sk) -> (B..., Sq, Sk)
    weights = masked_softmax_(z, p.keep, p.additive, t)
    out = weights @ v                                     # (B..., Sq, Sk) x (B..., Sk, Dv) -> (B..., Sq, Dv)
    return out, weights


BLOCKED_MIN_SCORES = 128 * 128   # from this many scores per (batch, head), work in cache-sized row blocks
BLOCK_SCORES = 256 * 1024        # scores per block (1 MiB in float32): rows per block = this // n_keys


def _sdpa_blocked(qs, k, v, keep, additive, t, scores_shape, block_rows: int | None = None):
    """The same computation, one (batch index, block of query rows) at a time.

    Each block's scores are written straight into the weights array and softmaxed while they are in
    cache, then multiplied by V: the S x S matrix is traversed once instead of once per pass.
    """
    batch, (n_q, n_k) = scores_shape[:-2], scores_shape[-2:]
    d_v = v.shape[-1]
    rows = block_rows or min(n_q, max(64, BLOCK_SCORES // max(n_k, 1)))
    weights = np.empty(scores_shape, dtype=qs.dtype)                # (B..., Sq, Sk)
    out = np.empty(batch + (n_q, d_v), dtype=qs.dtype)              # (B..., Sq, Dv)
    qb = np.broadcast_to(qs, batch + qs.shape[-2:])
    kb = np.broadcast_to(k, batch + k.shape[-2:])
    vb = np.broadcast_to(v, batch + v.shape[-2:])
    kp = None if keep is None else np.broadcast_to(keep, scores_shape)
    ad = None if additive is None else np.broadcast_to(additive, scores_shape)
    for idx in np.ndindex(*batch):
        k_t = kb[idx].T                                             # (Dk, Sk)
        for r0 in range(0, n_q, rows):
            r1 = min(r0 + rows, n_q)
            z = weights[idx][r0:r1]                                 # (rows, Sk) view
            np.matmul(qb[idx][r0:r1], k_t, out=z)                   # (rows, Dk) x (Dk, Sk) -> (rows, Sk)
            masked_softmax_(z, None if kp is None else kp[idx][r0:r1], None if ad is None else ad[idx][r0:r1], t)
            np.matmul(z, vb[idx], out=out[idx][r0:r1])              # (rows, Sk) x (Sk, Dv) -> (rows, Dv)
    return out, weights


def general_attention(query, keys, values, *, scale=None):
    """The per-query "general attention" of the tutorials: one query against every key.

        scores_j = query . keys_j                   (n_keys,)
        weights  = softmax(scale * scores)          default scale 1/sqrt(d_k)
        context  = sum_j weights_j * values_j       (d_v,)

    Args: query (d_k,), keys (n_keys, d_k), values (n_keys, d_v).
    Returns ``(context, weights)``.
    """
    query = as_float_array(query, "query", ndim=1, dims="(d_k,)")
    keys = as_float_array(keys, "keys", ndim=2, dims="(n_keys, d_k)")
    values = as_float_array(values, "values", ndim=2, dims="(n_keys, d_v)")
    out, w = scaled_dot_product_attention(query[None, :], keys, values, scale=scale)
    return out[0], w[0]                                   # (d_v,), (n_keys,)


def project(x: np.ndarray, w: np.ndarray, layout: str) -> np.ndarray:
    """``x @ w`` for layout "in_out" (w: (..., d_in, d_out)); ``x @ w^T`` for "out_in" (w: (..., d_out, d_in))."""
    return x @ (w if layout == "in_out" else np.swapaxes(w, -1, -2))


def _check_projection(x: np.ndarray, w: np.ndarray, name: str, layout: str) -> None:
    d_in = w.shape[-2] if layout == "in_out" else w.shape[-1]
    if d_in != x.shape[-1]:
        axis = "-2" if layout == "in_out" else "-1"
        raise ShapeError(f"{name} must have d_model={x.shape[-1]} along axis {axis} (weights_layout={layout!r}), "
                         f"got {name}.shape={w.shape}")


def self_attention(x, w_q, w_k, w_v, *, mask=None, scale=None, is_causal=False, weights_layout="in_out"):
    """Self-attention of a sequence with itself: ``sdpa(x W_q, x W_k, x W_v)``.

    Args:
      x: (B..., S, d_model) embeddings, one row per token.
      w_q, w_k: (d_model, d_k); w_v: (d_model, d_v) for ``weights_layout="in_out"`` (``Q = x @ W_q``,
        the Cristina/Codefinity/R-vignette convention); (d_k, d_model) and (d_v, d_model) for
        ``"out_in"`` (``q = W_q @ x_i``, the Raschka/PyTorch ``nn.Linear`` convention).
    Returns ``(output (B..., S, d_v), weights (B..., S, S))``.
    """
    return self_attention_with(scaled_dot_product_attention, x, w_q, w_k, w_v, mask=mask, scale=scale,
                               is_causal=is_causal, weights_layout=weights_layout)


def self_attention_with(attend, x, w_q, w_k, w_v, *, mask=None, scale=None, is_causal=False, weights_layout="in_out"):
    """:func:`self_attention` with the attention done by ``attend(q, k, v, mask=, scale=, is_causal=)``."""
    check_choice(weights_layout, "weights_layout", ("in_out", "out_in"))
    x = as_float_array(x, "x", min_ndim=2, dims="(..., seq_len, d_model)")
    ws = {n: as_float_array(w, n, ndim=2, dims="(d_model, d_out)" if weights_layout == "in_out" else "(d_out, d_model)")
          for n, w in (("w_q", w_q), ("w_k", w_k), ("w_v", w_v))}
    for n, w in ws.items():
        _check_projection(x, w, n, weights_layout)
    q, k, v = (project(x, ws[n], weights_layout) for n in ("w_q", "w_k", "w_v"))  # (B..., S, d_*)
    return attend(q, k, v, mask=mask, scale=scale, is_causal=is_causal)


def general_attention_matrix(words, w_q, w_k, w_v, *, scale=None):
    """The tutorials' matrix form: ``Q = words @ W_Q`` (likewise K, V), then
    ``weights = softmax(Q K^T * scale)`` row by row and ``attention = weights @ V``.

    Args: words (n_words, d_model); w_q, w_k (d_model, d_k); w_v (d_model, d_v).
    Returns ``(attention (n_words, d_v), weights (n_words, n_words))``.
    """
    words = as_float_array(words, "words", ndim=2, dims="(n_words, d_model)")
    return self_attention(words, w_q, w_k, w_v, scale=scale)

