"""Encoder-decoder attention: Bahdanau (additive) and Luong (dot, general, concat) scores, and the
context step that turns any of them into weights and context vectors.

Conventions as in the core: row vectors and ``x @ W`` projections, any leading batch dimensions
(``B...``), ``T`` decoder steps, ``N`` encoder positions; float32 stays float32; NaN/Inf, empty and
mis-shaped inputs are refused with errors that name the argument.

    additive (Bahdanau et al., 2014):  e[t, i] = v_a . tanh(s_t W_a + h_i U_a)
    Luong dot:                         e[t, i] = s_t . h_i
    Luong general:                     e[t, i] = s_t W h_i^T
    Luong concat:                      e[t, i] = v_a . tanh([s_t ; h_i] W_c)
    context step:                      alpha[t] = softmax_i(e[t, i])  (padded positions excluded)
                                       c_t = sum_i alpha[t, i] h_i
"""
from __future__ import annotations

import numpy as np

from ._checks import InputTypeError, ShapeError, as_float_array, broadcast_batch, check_choice, result_dtype
from .attention import masked_softmax_

__all__ = ["additive_scores", "luong_scores", "attention_context"]


def _states(s, h):
    s = as_float_array(s, "s", min_ndim=2, dims="(..., n_steps, d_s)")
    h = as_float_array(h, "h", min_ndim=2, dims="(..., n_positions, d_h)")
    broadcast_batch(("s", "h"), (s.shape[:-2], h.shape[:-2]))
    return s, h


def additive_scores(s, h, w_a, u_a, v_a) -> np.ndarray:
    """Bahdanau's alignment scores ``e[t, i] = v_a . tanh(s_t W_a + h_i U_a)``.

    Args: s (B..., T, d_s) decoder states (s_{t-1} in the paper); h (B..., N, d_h) encoder states;
    w_a (d_s, d_a); u_a (d_h, d_a); v_a (d_a,). Returns e (B..., T, N).
    """
    s, h = _states(s, h)
    w_a = as_float_array(w_a, "w_a", ndim=2, dims="(d_s, d_a)")
    u_a = as_float_array(u_a, "u_a", ndim=2, dims="(d_h, d_a)")
    v_a = as_float_array(v_a, "v_a", ndim=1, dims="(d_a,)")
    if w_a.shape[0] != s.shape[-1]:
        raise ShapeError(f"w_a must have d_s={s.shape[-1]} rows (axis 0), got w_a.shape={w_a.shape}")
    if u_a.shape[0] != h.shape[-1]:
        raise ShapeError(f"u_a must have d_h={h.shape[-1]} rows (axis 0), got u_a.shape={u_a.shape}")
    if not (w_a.shape[1] == u_a.shape[1] == v_a.shape[0]):
        raise ShapeError(f"w_a, u_a and v_a must share d_a, got w_a.shape={w_a.shape}, u_a.shape={u_a.shape}, "
                         f"v_a.shape={v_a.shape}")
    dtype = result_dtype(s, h, w_a, u_a, v_a)
    s, h, w_a, u_a, v_a = (a.astype(dtype, copy=False) for a in (s, h, w_a, u_a, v_a))
    # (B..., T, 1, d_a) + (B..., 1, N, d_a) -> (B..., T, N, d_a)
    a = (s @ w_a)[..., :, None, :] + (h @ u_a)[..., None, :, :]
    return np.tanh(a) @ v_a                                        # (B..., T, N, d_a) x (d_a,) -> (B..., T, N)


def luong_scores(s, h, kind: str = "dot", *, w=None, v_a=None) -> np.ndarray:
    """Luong et al.'s scores: ``kind`` is "dot" (``s_t . h_i``, d_s = d_h), "general" (``s_t W h_i^T``,
    w (d_s, d_h)) or "concat" (``v_a . tanh([s_t ; h_i] W)``, w (d_s + d_h, d_a), v_a (d_a,)).
    Returns e (B..., T, N).
    """
    check_choice(kind, "kind", ("dot", "general", "concat"))
    s, h = _states(s, h)
    if kind == "dot":
        if w is not None or v_a is not None:
            raise InputTypeError("luong_scores(kind='dot') takes no w or v_a")
        if s.shape[-1] != h.shape[-1]:
            raise ShapeError(f"dot scores need d_s == d_h, got s.shape={s.shape}, h.shape={h.shape}")
        dtype = result_dtype(s, h)
        return s.astype(dtype, copy=False) @ np.swapaxes(h.astype(dtype, copy=False), -1, -2)  # (B..., T, N)
    if kind == "general":
        w = as_float_array(w, "w", ndim=2, dims="(d_s, d_h)")
        if w.shape != (s.shape[-1], h.shape[-1]):
            raise ShapeError(f"w must have shape (d_s, d_h) = {(s.shape[-1], h.shape[-1])}, got {w.shape}")
        dtype = result_dtype(s, h, w)
        sw = s.astype(dtype, copy=False) @ w.astype(dtype, copy=False)
        return sw @ np.swapaxes(h.astype(dtype, copy=False), -1, -2)
    w = as_float_array(w, "w", ndim=2, dims="(d_s + d_h, d_a)")
    if w.shape[0] != s.shape[-1] + h.shape[-1]:
        raise ShapeError(f"w must have d_s + d_h = {s.shape[-1] + h.shape[-1]} rows for concat scores, "
                         f"got w.shape={w.shape}")
    d_s = s.shape[-1]
    return additive_scores(s, h, w[:d_s], w[d_s:], v_a)          # [s; h] W = s W_top + h W_bottom


def attention_context(scores, h, *, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """The context step: ``alpha = softmax(e)`` over encoder positions, ``c_t = sum_i alpha[t, i] h_i``.

    Args: scores e (B..., T, N) from any of the score functions; h (B..., N, d_h); mask: optional
    bool keep-mask, True = a real source position, False = padding, of shape (B..., N) (one per
    source sequence) or broadcastable to (B..., T, N) (e.g. (T, N): one per decoder step). A step with
    every position padded gets zero weights and a zero context (the same decision as the core's fully
    masked query). Returns ``(context (B..., T, d_h), weights (B..., T, N))``.

    A mask with one axis more than the batch can be read both ways: as (B..., N), i.e. (B..., 1, N),
    and as itself broadcast to (B..., T, N). Only one reading fitting: that one. Both fitting and
    giving the same array (every axis but N of size 1): taken. Both fitting and differing (e.g. a
    (3, N) mask with B = T = 3): a ShapeError asking for the explicit (B..., 1, N) or (1, T, N).
    """
    e = as_float_array(scores, "scores", min_ndim=2, dims="(..., n_steps, n_positions)")
    h = as_float_array(h, "h", min_ndim=2, dims="(..., n_positions, d_h)")
    if e.shape[-1] != h.shape[-2]:
        raise ShapeError(f"scores and h must have the same number of encoder positions, got scores.shape={e.shape}, "
                         f"h.shape={h.shape}")
    batch = broadcast_batch(("scores", "h"), (e.shape[:-2], h.shape[:-2]))
    keep = None
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != bool:
            raise InputTypeError(f"mask must be a bool keep-mask (True = real position, False = padding), "
                                 f"got dtype {m.dtype}")
        full = batch + e.shape[-2:]                               # (B..., T, N)
        per_step = _fits(m.shape, full)                           # m as is, broadcast
        per_seq = m.ndim == len(batch) + 1 and _fits(m.shape[:-1] + (1,) + m.shape[-1:], full)   # (B..., 1, N)
        if per_seq and per_step and any(d != 1 for d in m.shape[:-1]):
            raise ShapeError(f"mask of shape {m.shape} is ambiguous here (batch {batch}, T={e.shape[-2]}): it reads "
                             f"both as (B..., N), one per source sequence, and as (T, N)-like, one per decoder step; "
                             f"pass mask[..., None, :] for the first or mask[None] for the second")
        if not (per_seq or per_step):
            raise ShapeError(f"mask must have shape (B..., n_positions) or broadcast to {full}, got {m.shape}")
        keep = m[..., None, :] if per_seq and not per_step else m  # (B..., N) -> (B..., 1, N)
    dtype = result_dtype(e, h)
    z = np.array(np.broadcast_to(e, batch + e.shape[-2:]), dtype=dtype)   # a writable copy
    weights = masked_softmax_(z, keep, None)
    return weights @ h.astype(dtype, copy=False), weights     # (B..., T, N) x (B..., N, d_h) -> (B..., T, d_h)


def _fits(shape: tuple, full: tuple) -> bool:
    """Whether an array of ``shape`` broadcasts to exactly ``full``."""
    try:
        return np.broadcast_shapes(shape, full) == full
    except ValueError:
        return False
