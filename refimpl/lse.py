"""The log-sum-exp of attention's scores: what FlashAttention-style kernels return beside the output
(``softmax_lse``) so that a backward pass or a split-KV merge can rebuild the softmax.

    lse_i = log sum_j exp(s_ij)     over the keys j query i attends (natural log)

with ``s_ij`` the final score: ``scale * q_i . k_j``, soft-capped, plus the additive mask, exactly as
:func:`refimpl.scaled_dot_product_attention` forms it before its softmax (same keywords, same decided cases).
A query with no attended key has ``lse = -inf`` (the log of an empty sum); FlashAttention returns ``+inf``
there, which refimpl's judge accepts as the other convention.
"""
from __future__ import annotations

import numpy as np

from ._kernel import block_keep, prepare, rescaled, softcap_

__all__ = ["sdpa_lse"]

ROWS_PER_BLOCK_SCORES = 256 * 1024      # scores per block of query rows: memory stays O(block), not O(Sq x Sk)


def sdpa_lse(q, k, v, *, mask=None, scale=None, is_causal=False, alignment="top-left", window=None, softcap=None,
             enable_gqa=False) -> np.ndarray:
    """(B..., Sq): the natural log of each query row's sum of exp(score) over its attended keys (-inf: none).

    Arguments as :func:`refimpl.scaled_dot_product_attention` (``v`` is validated with them, not used).
    Scores beyond the dtype's range are exact through the same power-of-two rescaling: the result is
    ``2**e * max + log(sum exp(2**e * (z - max)))`` in the rescaled domain ``z``.
    """
    p = prepare(q, k, v, mask=mask, scale=scale, is_causal=is_causal, alignment=alignment, window=window,
                softcap=softcap, enable_gqa=enable_gqa, who="sdpa_lse")
    qs, kr, e = rescaled(p)
    batch, (n_q, n_k) = p.scores_shape[:-2], p.scores_shape[-2:]
    out = np.empty(batch + (n_q,), dtype=qs.dtype)                   # (B..., Sq)
    qb = np.broadcast_to(qs, batch + qs.shape[-2:])
    kb = np.broadcast_to(kr, batch + kr.shape[-2:])
    kp = None if p.keep is None else np.broadcast_to(p.keep, p.scores_shape)
    ad = None if p.additive is None else np.broadcast_to(p.additive, p.scores_shape)
    rows = min(max(n_q, 1), max(64, ROWS_PER_BLOCK_SCORES // max(n_k, 1)))
    for idx in np.ndindex(*batch):
        for r0 in range(0, n_q, rows):
            r1 = min(r0 + rows, n_q)
            z = qb[idx][r0:r1] @ kb[idx].T                           # (rows, D) x (D, Sk) -> (rows, Sk)
            softcap_(z, e, p.softcap)
            if ad is not None:
                with np.errstate(over="ignore", under="ignore"):
                    z += np.ldexp(ad[idx][r0:r1], -e) if e else ad[idx][r0:r1]
            keep = block_keep(None if kp is None else kp[idx], p.band, r0, r1, 0, n_k)
            if keep is not None:
                z[~np.broadcast_to(keep, z.shape)] = -np.inf
            m = z.max(axis=-1, keepdims=True) if n_k else np.full((r1 - r0, 1), -np.inf, z.dtype)   # (rows, 1)
            dead = m == -np.inf
            m = np.where(dead, 0.0, m)
            with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
                d = z - m
                if e:
                    d = np.ldexp(d, e)
                total = np.exp(d).sum(axis=-1, keepdims=True)                               # >= 1 when alive
                lse = (np.ldexp(m, e) if e else m) + np.log(total)
            out[idx][r0:r1] = np.where(dead, -np.inf, lse)[:, 0]
    return out.reshape(p.batch + (n_q,))
