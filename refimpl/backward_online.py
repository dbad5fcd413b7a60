"""Memory-bounded SDPA gradients: the FlashAttention-2 backward recurrence.

For each (batch, head), with ``s`` the scale and blocks of ``block_q`` queries and ``block_k`` keys:

  forward pass, per query block i (over the key blocks the band allows; the online softmax of
  :mod:`refimpl.online`):
      L_i     = m_i + log(l_i)                 per-row log-sum-exp of the logits Z  (bq,)
      O_i     = acc_i / l_i;   D_i = rowsum(dO_i * O_i)                              (bq,)
  backward pass, per key block j (outer) and query block i (inner):
      P    = exp(Z_ij - L_i)                   recomputed weights                    (bq, bk)
      dV_j += P^T dO_i;   dP = dO_i V_j^T;   dS = P * (dP - D_i)
      dR   = dS * (1 - tanh^2(R_ij / cap))     (dR = dS without a softcap)
      dQ_i += s dR K_j;   dK_j += s dR^T Q_i

Only one (block_q x block_k) block of scores exists at a time, and O is never stored whole: memory is
O((Sq + Sk) * (D + Dv) + block_q * block_k), never Sq x Sk (a user mask or ``bias`` is the caller's).
Validation, masks, the band (causal/window/alignment), the softcap and the power-of-two overflow
rescaling are the forward's own (:mod:`refimpl._kernel`); results equal :func:`sdpa_backward`'s
within the gradient tolerance (tests/test_backward.py), with the same decided edge cases.
"""
from __future__ import annotations

import numbers

import numpy as np

from ._checks import InputTypeError, InputValueError, ShapeError
from ._kernel import block_keep, prepare, rescaled, softcap_
from .backward import bias_shape_error, check_d_out, combine_mask_bias

__all__ = ["sdpa_backward_online"]


def _check_block(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise InputTypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise InputValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _source(shape: tuple[int, ...], idx: tuple[int, ...]) -> tuple[int, ...]:
    """Index into an array of batch ``shape`` that broadcasts to the batch index ``idx``."""
    tail = idx[len(idx) - len(shape):] if shape else ()
    return tuple(0 if n == 1 else i for n, i in zip(shape, tail))


def sdpa_backward_online(q, k, v, d_out, *, mask=None, scale=None, is_causal=False, alignment="top-left",
                         window=None, softcap=None, enable_gqa=False, bias=None,
                         block_q: int = 256, block_k: int = 512):
    """:func:`refimpl.backward.sdpa_backward`, computed blockwise without any Sq x Sk array.

    Args and returns as :func:`sdpa_backward`, plus ``block_q`` and ``block_k`` (queries and keys per
    block, ints >= 1).
    """
    block_q, block_k = _check_block("block_q", block_q), _check_block("block_k", block_k)
    fwd_mask, b = combine_mask_bias(mask, bias)
    try:
        p = prepare(q, k, v, mask=fwd_mask, scale=scale, is_causal=is_causal, alignment=alignment, window=window,
                    softcap=softcap, enable_gqa=enable_gqa, blocks=(block_q, block_k), who="sdpa_backward_online")
    except ShapeError as err:
        raise bias_shape_error(err, b, mask) from None
    shapes = [np.shape(a) for a in (q, k, v)]                        # validated by prepare
    inner, n_q = p.scores_shape[:-2], p.scores_shape[-2]
    dt = p.q.dtype
    g_out = check_d_out(d_out, p.batch + (n_q, p.v.shape[-1]), dt).reshape(inner + (n_q, p.v.shape[-1]))
    want_bias = b is not None or (mask is not None and np.asarray(mask).dtype.kind == "f")
    target = None if not want_bias else (b.shape if b is not None else np.shape(mask))
    dq, dk, dv = np.zeros(p.q.shape, dt), np.zeros(p.k.shape, dt), np.zeros(p.v.shape, dt)
    dbias = None if target is None else np.zeros(target, dt)
    qs, kr, e = rescaled(p)                                          # qs kr^T = true scores * 2**-e
    add = None
    if p.additive is not None:
        with np.errstate(under="ignore"):
            add = np.broadcast_to(np.ldexp(p.additive, -e) if e else p.additive, p.scores_shape)
    keep = None if p.keep is None else np.broadcast_to(p.keep, p.scores_shape)
    for idx in np.ndindex(*inner):
        blk = _Blocks(qs[_source(qs.shape[:-2], idx)], kr[_source(kr.shape[:-2], idx)],
                      None if keep is None else keep[idx], None if add is None else add[idx], p.band, p.softcap, e)
        iq, ik, iv = (_source(a.shape[:-2], idx) for a in (p.q, p.k, p.v))
        lse, delta = _forward_pass(blk, p.v[iv], g_out[idx], block_q, block_k)
        bias_blk = None
        if dbias is not None:    # the caller's (un-grouped, row-major) batch index, then the bias's own
            assert target is not None                                # dbias has target's shape
            flat: int | np.integer = np.ravel_multi_index(idx, inner) if inner else 0
            caller = tuple(int(i) for i in np.unravel_index(flat, p.batch)) if p.batch else ()
            bias_blk = dbias[_source(target[:-2], caller)]
        _backward_pass(blk, p.q[iq], p.k[ik], p.v[iv], g_out[idx], lse, delta, dq[iq], dk[ik], dv[iv],
                       bias_blk, target, block_q, block_k)
    dq *= p.scale
    dk *= p.scale
    grads = (dq.reshape(shapes[0]), dk.reshape(shapes[1]), dv.reshape(shapes[2]))
    return grads if dbias is None else grads + (dbias,)


class _Blocks:
    """One (batch, head)'s logits, a block at a time: ``Z = softcap(qs k^T) + additive``, masked, in the
    ``2**-e`` domain of :func:`refimpl._kernel.rescaled` (``e = 0`` in ordinary cases)."""

    def __init__(self, qs, kr, keep, add, band, cap, e):
        self.qs, self.kr, self.keep, self.add, self.band, self.cap, self.e = qs, kr, keep, add, band, cap, e
        self.n_q, self.n_k = qs.shape[-2], kr.shape[-2]

    def key_range(self, q0: int, q1: int) -> tuple[int, int]:
        return (0, self.n_k) if self.band is None else self.band.key_range(q0, q1, self.n_k)

    def logits(self, q0, q1, k0, k1, want_tanh_slope: bool = False):
        """``(Z, slope)``: the block's logits (bq, bk), masked keys at -inf, and, if asked and there is a
        softcap, ``1 - tanh^2(R / cap)`` (bq, bk), the softcap's derivative."""
        z = self.qs[q0:q1] @ self.kr[k0:k1].T                        # (bq, D) x (D, bk) -> (bq, bk)
        softcap_(z, self.e, self.cap)
        slope = None
        if want_tanh_slope and self.cap is not None:
            with np.errstate(under="ignore"):
                th = np.ldexp(z, self.e) if self.e else z.copy()     # cap * tanh(R / cap)
            th /= self.cap
            slope = np.subtract(1, np.square(th, out=th), out=th)    # 1 - tanh^2, in [0, 1]
        if self.add is not None:
            z += self.add[q0:q1, k0:k1]
        kb = block_keep(self.keep, self.band, q0, q1, k0, k1)
        if kb is not None:
            np.copyto(z, -np.inf, where=~kb)
        return z, slope


def _forward_pass(blk: _Blocks, v, g_out, block_q: int, block_k: int):
    """Per-row log-sum-exp ``L`` (in the ``2**-e`` domain, +inf for a fully masked row) and
    ``D = rowsum(dO * O)``, both (Sq,), by the online softmax; O is used a block at a time.

    The blocks are exactly those of :func:`_backward_pass`, so that ``P = exp(Z - L)`` there sees the
    same Z to the last bit: with scores of magnitude 1e144 one ulp of Z is 1e128, and a Z recomputed
    in another block shape (another BLAS kernel) would turn a weight of 1 into 0 or inf."""
    lse = np.empty(blk.n_q, dtype=v.dtype)
    delta = np.empty(blk.n_q, dtype=v.dtype)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        for q0 in range(0, blk.n_q, block_q):
            q1 = min(q0 + block_q, blk.n_q)
            m = np.full((q1 - q0, 1), -np.inf, dtype=v.dtype)          # running row max
            row_sum = np.zeros((q1 - q0, 1), dtype=v.dtype)            # running row sum
            acc = np.zeros((q1 - q0, v.shape[-1]), dtype=v.dtype)      # (bq, Dv)
            lo, hi = blk.key_range(q0, q1)
            for k0 in range(0, blk.n_k, block_k):    # the backward pass's blocks: the same z, bit for bit
                k1 = min(k0 + block_k, blk.n_k)
                if hi <= k0 or lo >= k1:                                 # the band skips this block
                    continue
                z, _ = blk.logits(q0, q1, k0, k1)
                m_new = np.maximum(m, z.max(axis=1, keepdims=True))
                m_safe = np.where(m_new > -np.inf, m_new, 0)
                corr = np.exp(np.ldexp(m - m_safe, blk.e))           # 0 before the first live block
                z -= m_safe
                np.exp(np.ldexp(z, blk.e, out=z) if blk.e else z, out=z)
                row_sum = row_sum * corr + z.sum(axis=1, keepdims=True)
                acc *= corr
                acc += z @ v[k0:k1]                                  # (bq, bk) x (bk, Dv) -> (bq, Dv)
                m = m_new
            dead = row_sum == 0                                      # no attended key
            out = np.where(dead, 0, acc / np.where(dead, 1, row_sum))  # (bq, Dv)
            delta[q0:q1] = np.einsum("id,id->i", g_out[q0:q1], out)
            lse[q0:q1] = np.where(dead, np.inf, m + np.ldexp(np.log(np.where(dead, 1, row_sum)), -blk.e))[:, 0]
    return lse, delta


def _backward_pass(blk: _Blocks, q, k, v, g_out, lse, delta, dq, dk, dv, dbias, target, block_q, block_k):
    """Accumulate this (batch, head)'s ``dq``, ``dk / s``, ``dv`` (and ``dbias``) in place; ``q``, ``k``
    are the true (unscaled) inputs, the scale is applied by the caller."""
    for k0 in range(0, blk.n_k, block_k):
        k1 = min(k0 + block_k, blk.n_k)
        dk_j = np.zeros((k1 - k0, k.shape[-1]), dtype=k.dtype)         # (bk, D)
        dv_j = np.zeros((k1 - k0, v.shape[-1]), dtype=v.dtype)         # (bk, Dv)
        v_t = v[k0:k1].T                                               # (Dv, bk)
        for q0 in range(0, blk.n_q, block_q):
            q1 = min(q0 + block_q, blk.n_q)
            lo, hi = blk.key_range(q0, q1)
            if hi <= k0 or lo >= k1:                                   # the band skips this block
                continue
            z, slope = blk.logits(q0, q1, k0, k1, want_tanh_slope=True)
            with np.errstate(over="ignore", under="ignore", invalid="ignore"):
                z -= lse[q0:q1, None]
                p = np.exp(np.ldexp(z, blk.e, out=z) if blk.e else z, out=z)   # P (bq, bk)
            go = g_out[q0:q1]                                          # (bq, Dv)
            dv_j += p.T @ go                                           # (bk, bq) x (bq, Dv) -> (bk, Dv)
            ds = go @ v_t                                              # (bq, Dv) x (Dv, bk) -> (bq, bk)
            ds -= delta[q0:q1, None]
            ds *= p                                                    # dS = P * (dP - D)
            if dbias is not None:
                _add_bias_block(dbias, target, ds, q0, q1, k0, k1)
            dr = ds if slope is None else np.multiply(ds, slope, out=slope)
            dq[q0:q1] += dr @ k[k0:k1]                                 # (bq, bk) x (bk, D) -> (bq, D)
            dk_j += dr.T @ q[q0:q1]                                    # (bk, bq) x (bq, D) -> (bk, D)
        dk[k0:k1] += dk_j
        dv[k0:k1] += dv_j


def _add_bias_block(dbias, target, ds, q0, q1, k0, k1) -> None:
    """``dbias[..., q0:q1, k0:k1] += dS`` where the bias broadcasts (a length-1 axis sums the block)."""
    if target[-1] == 1:
        ds, cols = ds.sum(axis=1, keepdims=True), slice(0, 1)        # (bq, 1)
    else:
        cols = slice(k0, k1)
    if len(target) == 1:                                               # a (Sk,) or (1,) bias
        dbias[cols] += ds.sum(axis=0)
        return
    if target[-2] == 1:
        ds, rows = ds.sum(axis=0, keepdims=True), slice(0, 1)        # (1, bk)
    else:
        rows = slice(q0, q1)
    dbias[rows, cols] += ds
