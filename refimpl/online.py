"""Memory-bounded scaled dot-product attention with the online softmax (the FlashAttention recurrence).

Queries and keys are taken in blocks; for each query block the softmax is accumulated over key blocks
with a running row maximum ``m`` and sum ``l``:

    s     = scale * q_blk @ k_blk^T                     (block_q, block_k)
    m_new = max(m, rowmax(s))
    p     = exp(s - m_new)
    l     = l * exp(m - m_new) + rowsum(p)
    acc   = acc * exp(m - m_new) + p @ v_blk
    out   = acc / l                                     after the last key block

Only (block_q x block_k) scores exist at a time: memory O(S * D + block_q * block_k), no Sq x Sk array.
The result equals :func:`refimpl.scaled_dot_product_attention`'s output within the tolerance model
(tests/test_online.py, tests/test_features.py), with the same conventions, taken from
:mod:`refimpl._kernel`: bool keep-masks and additive float masks, causal and window bands in either
alignment (key blocks entirely outside the band are skipped, blocks entirely inside it are not masked),
softcap, GQA, a query that sees no key gives zeros, and overflowing inputs are rescaled exactly by
powers of two. The weights are not returned (they are the Sq x Sk matrix this variant exists to avoid).
"""
from __future__ import annotations

import numpy as np

from ._checks import InputTypeError, InputValueError
from ._kernel import block_keep, prepare, rescaled, softcap_

__all__ = ["sdpa_online"]


def _check_block(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise InputValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def sdpa_online(q, k, v, *, mask=None, scale=None, is_causal=False, alignment="top-left", window=None,
                softcap=None, enable_gqa=False, block_q: int = 512, block_k: int = 1024):
    """Scaled dot-product attention output, computed blockwise with an online softmax.

    Args as :func:`refimpl.scaled_dot_product_attention`, plus ``block_q`` and ``block_k`` (rows of
    queries and keys per block). Returns ``output`` (B..., Sq, Dv) only.
    """
    block_q, block_k = _check_block("block_q", block_q), _check_block("block_k", block_k)
    p = prepare(q, k, v, mask=mask, scale=scale, is_causal=is_causal, alignment=alignment, window=window,
                softcap=softcap, enable_gqa=enable_gqa, blocks=(block_q, block_k), who="sdpa_online")
    qs, kr, e = rescaled(p)
    batch, (n_q, n_k) = p.scores_shape[:-2], p.scores_shape[-2:]
    dtype = qs.dtype
    out = np.empty(batch + (n_q, p.v.shape[-1]), dtype=dtype)     # (B..., Sq, Dv)
    qb = np.broadcast_to(qs, batch + qs.shape[-2:])
    kb = np.broadcast_to(kr, batch + kr.shape[-2:])
    vb = np.broadcast_to(p.v, batch + p.v.shape[-2:])
    keep = None if p.keep is None else np.broadcast_to(p.keep, p.scores_shape)
    add = None if p.additive is None else np.broadcast_to(p.additive, p.scores_shape)
    neg_inf = np.asarray(-np.inf, dtype)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        for idx in np.ndindex(*batch):
            qi, ki, vi = qb[idx], kb[idx], vb[idx]
            for q0 in range(0, n_q, block_q):
                q1 = min(q0 + block_q, n_q)
                m = np.full((q1 - q0, 1), -np.inf, dtype=dtype)   # running row max
                row_sum = np.zeros((q1 - q0, 1), dtype=dtype)     # running row sum
                acc = np.zeros((q1 - q0, vi.shape[-1]), dtype=dtype)
                k_lo, k_hi = (0, n_k) if p.band is None else p.band.key_range(q0, q1, n_k)
                for k0 in range(k_lo, k_hi, block_k):            # blocks outside the band: skipped
                    k1 = min(k0 + block_k, k_hi)
                    z = qi[q0:q1] @ ki[k0:k1].T                    # (bq, D) x (D, bk) -> (bq, bk)
                    softcap_(z, e, p.softcap)
                    if add is not None:                              # at the true scale: times 2**-e
                        z += np.ldexp(add[idx][q0:q1, k0:k1], -e) if e else add[idx][q0:q1, k0:k1]
                    keep_blk = block_keep(None if keep is None else keep[idx], p.band, q0, q1, k0, k1)
                    if keep_blk is not None:
                        np.copyto(z, neg_inf, where=~keep_blk)
                    m_new = np.maximum(m, z.max(axis=1, keepdims=True))
                    live = m_new > -np.inf                           # rows that have seen an attended key
                    m_safe = np.where(live, m_new, 0)
                    corr = np.where(live, np.exp(np.ldexp(m - m_safe, e)), 1)   # exp(-inf) = 0: first live block
                    z -= m_safe
                    if e:
                        np.ldexp(z, e, out=z)
                    np.exp(z, out=z)                                 # (bq, bk) weights up to the row's scale
                    row_sum = row_sum * corr + z.sum(axis=1, keepdims=True)
                    acc *= corr
                    acc += z @ vi[k0:k1]                             # (bq, bk) x (bk, Dv) -> (bq, Dv)
                    m = m_new
                dead = row_sum == 0                                  # no attended key: zeros by decision
                out[idx][q0:q1] = np.where(dead, 0, acc / np.where(dead, 1, row_sum))
    return out.reshape(p.batch + out.shape[-2:])
