"""Analytic gradients of :func:`refimpl.scaled_dot_product_attention` (the backward oracle).

With ``s`` the scale, ``cap`` the optional softcap, ``A`` the additive terms (a float mask and/or
``bias``) and masked keys at ``-inf``, the forward is

    R = s * Q K^T                                   raw scores              (B..., Sq, Sk)
    Z = cap * tanh(R / cap) + A    (or R + A)       logits
    P = softmax(Z) over keys;  O = P V              weights, output         (B..., Sq, Dv)

and, for an upstream gradient ``dO = dL/dO`` of the output's shape, the gradients are

    dV = P^T dO                                                              (B..., Sk, Dv)
    dP = dO V^T
    dS = P * (dP - rowsum(dO * O))                  = dL/dZ = dL/dA          (B..., Sq, Sk)
                                                    (rowsum(dO * O) is computed as rowsum(P * dP))
    dR = dS * (1 - tanh^2(R / cap))   (or dR = dS without a softcap)
    dQ = s * dR K;   dK = s * dR^T Q                                         (B..., Sq|Sk, Dk)

Decided edge cases (the same conventions as the forward):
  * a fully masked query row has all-zero weights and output, hence zero gradients (its ``dS`` row is 0);
  * a masked key (bool mask, causal, window, or a ``-inf`` additive entry) gets zero ``dS``: the
    weight is 0 on a neighbourhood of the inputs, so 0 is the exact derivative;
  * broadcast inputs get the sum of their gradient over the broadcast axes (the usual adjoint of a
    broadcast); with ``enable_gqa`` the gradient of a key/value head sums over its query-head group;
  * a gradient beyond the dtype's range comes out as +-inf (with NumPy's overflow warning); scores
    beyond it are fine (the forward's power-of-two rescaling gives exact weights);
  * everything is computed in the forward's compute dtype (float32 only if q, k, v are float32);
    ``d_out`` is cast to it. Inputs are validated by calling the forward itself.
"""
from __future__ import annotations

import math

import numpy as np

from ._checks import ShapeError, as_float_array
from ._kernel import split_exponents
from .attention import scaled_dot_product_attention

__all__ = ["sdpa_backward"]

ROW_BLOCK_SCORES = 256 * 1024   # scores per row block (2 MiB in float64): keeps dP/dS in cache


def sum_to_shape(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Adjoint of ``np.broadcast_to(x, g.shape)``: sum ``g`` over the axes that broadcasting added or
    stretched, giving an array of ``shape``."""
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    stretched = tuple(i for i, (n, m) in enumerate(zip(shape, g.shape)) if n == 1 and m != 1)
    if stretched:
        g = g.sum(axis=stretched, keepdims=True)
    return g.reshape(shape)


def gqa_group(q_shape: tuple[int, ...], kv_shape: tuple[int, ...]) -> int:
    """Query heads per key/value head under ``enable_gqa``: ``Hq // Hkv`` (heads on axis -3; the
    forward has checked that Hkv divides Hq)."""
    return q_shape[-3] // kv_shape[-3]


def expand_gqa(x: np.ndarray, group: int) -> np.ndarray:
    """Key/value head ``h`` serves query heads ``h*group .. h*group+group-1`` (torch's repeat_interleave)."""
    return x if group == 1 else np.repeat(x, group, axis=-3)       # (..., Hkv, S, D) -> (..., Hq, S, D)


def reduce_gqa(g: np.ndarray, group: int) -> np.ndarray:
    """Adjoint of :func:`expand_gqa`: sum each key/value head's gradient over its query-head group."""
    if group == 1:
        return g
    sh = g.shape
    return g.reshape(sh[:-3] + (sh[-3] // group, group) + sh[-2:]).sum(axis=-3)  # (.., Hq, S, D) -> (.., Hkv, S, D)


def combine_mask_bias(mask, bias):
    """The single ``mask`` argument the forward takes, and the validated ``bias`` (or None).

    ``bias`` is an additive float term like a float mask (``-inf`` allowed). With a bool keep-mask it
    becomes ``where(mask, bias, -inf)``; with a float mask the two are added.
    """
    if bias is None:
        return mask, None
    b = as_float_array(bias, "bias", min_ndim=1, dims="(..., Sq, Sk)", allow_neg_inf=True)
    if mask is None:
        return b, b
    m = np.asarray(mask)
    try:
        np.broadcast_shapes(m.shape, b.shape)
    except ValueError:
        raise ShapeError(f"bias and mask must broadcast together, got bias.shape={b.shape}, "
                         f"mask.shape={m.shape}") from None
    if m.dtype.kind == "b":
        return np.where(m, b, -np.inf), b
    if m.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            return m + b, b
    return mask, b            # not a valid mask: the forward's validation names the problem


def bias_shape_error(e: ShapeError, b, mask) -> ShapeError:
    """The forward's complaint about its ``mask`` argument, reworded when that argument carried ``bias``."""
    if b is None or "mask" not in str(e):
        return e
    with_mask = f" combined with mask.shape={np.shape(mask)}" if mask is not None else ""
    return ShapeError(f"bias must broadcast to the scores' shape (B..., Sq, Sk), got bias.shape={b.shape}"
                      f"{with_mask} (the forward said: {e})")


def check_d_out(d_out, out_shape: tuple[int, ...], dtype) -> np.ndarray:
    g = as_float_array(d_out, "d_out", min_ndim=2, dims="(..., Sq, Dv), the output's shape")
    if g.shape != tuple(out_shape):
        raise ShapeError(f"d_out must have the output's shape {tuple(out_shape)} (B..., Sq, Dv), got {g.shape}")
    return g.astype(dtype, copy=False)


def sdpa_backward(q, k, v, d_out, *, mask=None, scale=None, is_causal=False, alignment="top-left",
                  window=None, softcap=None, enable_gqa=False, bias=None):
    """Gradients of ``sum(d_out * scaled_dot_product_attention(q, k, v, ...)[0])``.

    Args: as :func:`refimpl.scaled_dot_product_attention`, plus ``d_out`` (B..., Sq, Dv), the gradient
      of the loss with respect to the output, and ``bias``: an additive float term broadcastable to
      (B..., Sq, Sk), added to the logits like a float mask (after the softcap), which one wants the
      gradient of.
    Returns ``(dq, dk, dv)`` with the shapes of q, k, v; ``(dq, dk, dv, dbias)`` when a float mask or
      ``bias`` is given: ``dbias = dS`` summed to ``bias``'s shape (to the float mask's shape when there
      is no ``bias``). Formulas and decided edge cases: see the module docstring.
    """
    fwd_mask, b = combine_mask_bias(mask, bias)
    v = as_float_array(v, "v", min_ndim=2, dims="(..., n_keys, d_v)")
    try:   # the weights are all we need: the forward runs on one value column (its output is unused)
        out1, p = scaled_dot_product_attention(q, k, v[..., :1], mask=fwd_mask, scale=scale, is_causal=is_causal,
                                               alignment=alignment, window=window, softcap=softcap,
                                               enable_gqa=enable_gqa)
    except ShapeError as e:
        raise bias_shape_error(e, b, mask) from None
    dt = p.dtype
    if not p.flags.writeable:
        p = p.copy()                                                    # it is overwritten with dS below
    q, k, v = (np.asarray(a).astype(dt, copy=False) for a in (q, k, v))   # validated by the forward
    d_out = check_d_out(d_out, out1.shape[:-1] + v.shape[-1:], dt)
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    group = gqa_group(q.shape, k.shape) if enable_gqa else 1
    want_bias = b is not None or (mask is not None and np.asarray(mask).dtype.kind == "f")
    cap = None if softcap is None else (float(softcap), split_exponents(q, k, s))
    dq, dk, dv = _grads_from_weights(q, expand_gqa(k, group), expand_gqa(v, group), d_out, p, s, cap)
    # p now holds dS (B..., Sq, Sk)
    grads = (sum_to_shape(dq, q.shape), sum_to_shape(reduce_gqa(dk, group), k.shape),
             sum_to_shape(reduce_gqa(dv, group), v.shape))
    if not want_bias:
        return grads
    target = b.shape if b is not None else np.shape(mask)
    return grads + (sum_to_shape(p, target),)


def _grads_from_weights(q, k, v, d_out, p, s: float, cap):
    """dQ, dK, dV over the scores' batch shape, one (batch index, block of query rows) at a time.

    ``p`` (B..., Sq, Sk), the forward's weights, is overwritten with dS. k and v have q's heads
    (GQA already expanded); q, k, v broadcast to the batch shape of ``p``. ``cap``: None, or the
    softcap and the power-of-two exponents ``(e_q, e_k)`` that keep ``q k^T`` finite.
    """
    batch, (n_q, n_k) = p.shape[:-2], p.shape[-2:]
    d_k, d_v = q.shape[-1], v.shape[-1]
    dt = p.dtype
    qb, kb, vb = (np.broadcast_to(a, batch + a.shape[-2:]) for a in (q, k, v))
    dq = np.empty(batch + (n_q, d_k), dtype=dt)                     # (B..., Sq, Dk)
    dk = np.zeros(batch + (n_k, d_k), dtype=dt)                     # (B..., Sk, Dk)
    dv = np.zeros(batch + (n_k, d_v), dtype=dt)                     # (B..., Sk, Dv)
    rows = min(n_q, max(32, ROW_BLOCK_SCORES // max(n_k, 1)))
    s_dt = dt.type(s)
    if cap is not None:
        cap, (e_q, e_k) = cap
        with np.errstate(under="ignore"):                            # (s q / 2**e_q) (k / 2**e_k)^T = R / 2**e
            qb_c, kb_c = (np.ldexp(a, -e) if e else a for a, e in ((qb * s_dt, e_q), (kb, e_k)))
    for idx in np.ndindex(*batch):
        qi, ki, vi, goi, pi = qb[idx], kb[idx], vb[idx], d_out[idx], p[idx]
        v_t = vi.T                                                   # (Dv, Sk)
        for r0 in range(0, n_q, rows):
            r1 = min(r0 + rows, n_q)
            p_r, go_r = pi[r0:r1], goi[r0:r1]                        # (R, Sk), (R, Dv)
            dv[idx] += p_r.T @ go_r                                  # (Sk, R) x (R, Dv) -> (Sk, Dv)
            dp = go_r @ v_t                                          # (R, Dv) x (Dv, Sk) -> (R, Sk)
            dp -= np.einsum("ij,ij->i", p_r, dp)[:, None]            # - rowsum(P * dP) = - rowsum(dO * O)
            p_r *= dp                                                # dS, in place: (R, Sk)
            dr = p_r if cap is None else _through_softcap(p_r, qb_c[idx][r0:r1], kb_c[idx], cap, e_q + e_k, dp)
            np.matmul(dr, ki, out=dq[idx][r0:r1])                    # (R, Sk) x (Sk, Dk) -> (R, Dk)
            dk[idx] += dr.T @ qi[r0:r1]                              # (Sk, R) x (R, Dk) -> (Sk, Dk)
    dq *= s_dt
    dk *= s_dt
    return dq, dk, dv


def _through_softcap(ds, qs_r, k, cap: float, e: int, out: np.ndarray) -> np.ndarray:
    """``dR = dS * (1 - tanh^2(R / cap))``, written into ``out`` (R, Sk), from ``qs_r @ k^T = R * 2**-e``
    (the scaled queries and the keys divided by powers of two; ``e = 0`` unless R would overflow)."""
    np.matmul(qs_r, k.T, out=out)                                    # (R, Dk) x (Dk, Sk) -> (R, Sk)
    with np.errstate(over="ignore"):
        out /= out.dtype.type(cap)
        if e:
            np.ldexp(out, e, out=out)                                # may overflow to +-inf: tanh -> +-1
    np.tanh(out, out=out)
    np.square(out, out=out)
    np.subtract(1, out, out=out)                                     # tanh' = 1 - tanh^2, in [0, 1]
    out *= ds
    return out
