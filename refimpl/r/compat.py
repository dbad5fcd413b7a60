"""The R package ``attention`` (CRAN 0.4.0) re-implemented with its exact semantics, quirks included.

These functions reproduce what the R code computes, not what attention should compute; refimpl's own
functions are the mathematical definition. Every quirk is documented where it is implemented, named
``D<n>`` after its entry in docs/divergences.md, and asserted against the real package through the
bridge by tests/test_divergences.py (which fails if a new package version changes one).

Inputs are 2-D float64 arrays as R holds them (numeric matrices); no validation beyond what R itself
does: R's errors are raised as :class:`RCompatError` with R's message. NaN and Inf propagate as in R.
"""
from __future__ import annotations

import numpy as np

from .._checks import RefimplError

__all__ = ["SoftMax", "RowMax", "ComputeWeights", "attention", "RCompatError", "R_MASK_FILL"]

R_MASK_FILL = -1e10   # attention(): masked scores become scores*mask + (1-mask)*(-1e10)


class RCompatError(RefimplError, ValueError):
    """The R function would signal this error (``r_message`` is R's text)."""

    def __init__(self, r_message: str):
        self.r_message = r_message
        super().__init__(f"R would fail: {r_message}")


def _r_seterr():
    return np.errstate(all="ignore")  # R computes silently through NaN/Inf


def SoftMax(x) -> np.ndarray:
    """``exp(x - max(x)) / sum(exp(x - max(x)))`` over *all* elements of ``x``.

    D9: given a matrix, R's SoftMax normalises over the whole matrix, not per row.
    D8: any NaN gives an all-NaN result (max is NaN); +Inf gives NaN (Inf - Inf).
    """
    x = np.asarray(x, dtype=np.float64)
    with _r_seterr():
        m = np.nan if np.isnan(x).any() else x.max()
        e = np.exp(x - m)
        return e / e.sum()


def RowMax(x) -> np.ndarray:
    """``as.matrix(apply(x, 1, max))``: a column matrix (n_rows, 1) of row maxima (D12: shape).

    A vector (no dim) fails in R: "dim(X) must have a positive length".
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise RCompatError("dim(X) must have a positive length")
    with _r_seterr():
        m = np.where(np.isnan(x).any(axis=1), np.nan, np.max(x, axis=1))
    return m.reshape(-1, 1)


def ComputeWeights(scores) -> np.ndarray:
    """The package's ComputeWeights: row softmax of ``(scores - rowmax) / sqrt(nrow(scores))``.

    D1: the scale is ``1/sqrt(nrow(scores))`` (the number of queries), not ``1/sqrt(d_k)``.
    D2: the result is always allocated as ``matrix(0, 4, 4)``:
        * fewer than 4 rows leave the remaining rows 0;
        * more than 4 rows fail ("subscript out of bounds");
        * a row of length n_k is assigned into a row of length 4: n_k in {1, 2} is recycled
          (``[a, b, a, b]``; n_k = 1 gives all ones), any other n_k != 4 fails
          ("number of items to replace is not a multiple of replacement length").
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise RCompatError("dim(X) must have a positive length")
    size, n_k = s.shape
    maxs = RowMax(s)
    weights = np.zeros((4, 4))
    for i in (range(size) if size >= 1 else (0, -1)):  # R: 1:0 is c(1, 0)
        if i < 0 or i >= size or i >= 4:
            raise RCompatError("subscript out of bounds")
        row = SoftMax((s[i, :] - maxs[i, 0]) / size ** 0.5)
        if 4 % n_k:
            raise RCompatError("number of items to replace is not a multiple of replacement length")
        weights[i, :] = np.tile(row, 4 // n_k)
    return weights


def _recycle(mask, shape) -> np.ndarray:
    """R's arithmetic recycling of ``mask`` against a matrix of ``shape`` (column-major, D5)."""
    m = np.asarray(mask, dtype=np.float64)
    if m.ndim == 2:
        if m.shape != shape:
            raise RCompatError("non-conformable arrays")
        return m
    flat = m.reshape(-1)
    n = shape[0] * shape[1]
    if flat.size == 0:
        raise RCompatError("mask of length zero")
    return np.resize(flat, n).reshape(shape, order="F")


def attention(Q, K, V, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """The package's ``attention(Q, K, V, mask = NULL)``; returns ``(output, weights)`` (R: an unnamed list, D7).

        scores  = Q %*% t(K) / sqrt(ncol(K))
        scores  = scores * mask + (1 - mask) * (-1e10)          if a mask is given
        weights = t(apply(scores, 1, SoftMax))                  row softmax
        output  = weights %*% V

    D3: a fully masked row has every score -1e10, so it gets *uniform* weights.
    D4: masking is by the finite fill -1e10, not -Inf: when the attended scores of a row are below about
        -1e10 - 745, the masked keys win; with ordinary scores masked weights underflow to exactly 0.
    D5: a mask that is not a matrix is recycled column-major (R arithmetic), i.e. down the query axis.
    D6: with a single key (ncol(scores) = 1) ``apply`` returns a vector and ``t()`` makes it a
        1 x n_q row: more than one query then fails with "non-conformable arguments".
    D8: Inf * 0 for a masked infinite score is NaN; any NaN score makes its row NaN.
    D10: a mask value m in (0, 1) blends: ``score*m - (1-m)*1e10``.
    The package's ``is.infinite`` clean-up never fires (SoftMax yields values in [0, 1] or NaN).
    """
    Q, K, V = (np.asarray(a, dtype=np.float64) for a in (Q, K, V))
    if Q.ndim != 2 or K.ndim != 2 or V.ndim != 2:
        raise RCompatError("r_compat.attention takes numeric matrices (2-D arrays)")
    if Q.shape[1] != K.shape[1]:
        raise RCompatError("non-conformable arguments")
    with _r_seterr():
        scores = (Q @ K.T) / np.sqrt(K.shape[1])                # (n_q, d) x (d, n_k) -> (n_q, n_k)
        if mask is not None:
            m = _recycle(mask, scores.shape)
            scores = scores * m + (1 - m) * R_MASK_FILL
        rows = np.stack([SoftMax(r) for r in scores])          # (n_q, n_k)
    n_q, n_k = scores.shape
    if n_k == 1:                                                # D6: apply() drops to a vector
        weights = rows.reshape(1, n_q)
    else:
        weights = rows
    if weights.shape[1] != V.shape[0]:
        raise RCompatError("non-conformable arguments")
    with _r_seterr():
        output = weights @ V
    return output, weights


def attention_or_error(Q, K, V, mask=None):
    """``((output, weights), None)``, or ``(None, R's error message)`` where the package would fail."""
    try:
        return attention(Q, K, V, mask), None
    except RCompatError as e:
        return None, e.r_message


# --- the divergence catalogue (docs/divergences.md) ------------------------------------------------

DIVERGENCES = {
    "D1": "ComputeWeights scales by 1/sqrt(nrow(scores)), not 1/sqrt(d_k)",
    "D2": "ComputeWeights always returns a 4x4 matrix (zero rows, recycling, or an error otherwise)",
    "D3": "attention(): a fully masked query gets uniform weights (refimpl: zeros)",
    "D4": "attention(): masking by the finite fill -1e10 fails when attended scores are below about -1e10",
    "D5": "attention(): a mask that is not a matrix is recycled column-major (down the queries)",
    "D6": "attention(): a single key with more than one query fails ('non-conformable arguments')",
    "D7": "attention() returns an unnamed list(output, weights)",
    "D8": "NaN/Inf propagate (NaN rows; Inf*0 = NaN for a masked infinite score); refimpl refuses them",
    "D9": "SoftMax of a matrix normalises over all elements, not per row",
    "D10": "attention(): mask values strictly between 0 and 1 blend score and fill",
    "D11": "attention(): scores beyond the float64 range overflow to Inf and give NaN; refimpl stays finite",
    "D12": "RowMax returns a column matrix (n, 1)",
}


def attention_divergences(Q, K, V, mask=None) -> list[str]:
    """The catalogue entries that make ``attention(Q, K, V, mask)`` differ from refimpl's sdpa.

    refimpl's counterpart: ``scaled_dot_product_attention(Q, K, V, mask=mask.astype(bool))`` for a
    0/1 matrix mask. An empty list means R and refimpl must agree within the tolerance model.
    """
    Q, K, V = (np.asarray(a, dtype=np.float64) for a in (Q, K, V))
    codes = []
    if not (np.isfinite(Q).all() and np.isfinite(K).all() and np.isfinite(V).all()):
        codes.append("D8")
    with _r_seterr():
        s = (Q @ K.T) / np.sqrt(K.shape[1])
    if not np.isfinite(s).all() and "D8" not in codes:
        codes.append("D11")
    if K.shape[0] == 1 and Q.shape[0] > 1:
        codes.append("D6")
    if mask is not None:
        m = np.asarray(mask, dtype=np.float64)
        if m.ndim != 2:
            codes.append("D5")
        try:
            full = _recycle(m, s.shape)
        except RCompatError:
            return codes
        if ((full != 0) & (full != 1)).any():
            codes.append("D10")
        if (full == 0).all(axis=1).any():
            codes.append("D3")
        with _r_seterr():
            best = np.where(full == 1, s, -np.inf).max(axis=1)   # highest attended score per row
        live = (full == 1).any(axis=1)
        if (live & (best < R_MASK_FILL + 746.0)).any():        # exp(-746) underflows to 0 in float64
            codes.append("D4")
    return codes
