"""50-digit decimal arithmetic for expected values of examples that published no numbers.

Inputs are converted from their binary floats exactly (``Decimal(float)`` is exact); every operation
runs at 50 significant digits, so the results are correct far beyond float64's 16-17 digits.
"""
from __future__ import annotations

from decimal import Context, Decimal

import numpy as np

CTX = Context(prec=50)


def to_dec(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return np.vectorize(lambda x: Decimal(float(x)), otypes=[object])(a) if a.size else a.astype(object)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) x (m, p) over Decimal objects (sums at 50 digits)."""
    n, m = a.shape
    p = b.shape[1]
    out = np.empty((n, p), dtype=object)
    for i in range(n):
        for j in range(p):
            acc = Decimal(0)
            for t in range(m):
                acc = CTX.add(acc, CTX.multiply(a[i, t], b[t, j]))
            out[i, j] = acc
    return out


def softmax_rows(s: np.ndarray) -> np.ndarray:
    out = np.empty(s.shape, dtype=object)
    for i in range(s.shape[0]):
        m = max(s[i])
        e = [CTX.exp(CTX.subtract(x, m)) for x in s[i]]
        tot = Decimal(0)
        for x in e:
            tot = CTX.add(tot, x)
        out[i] = [CTX.divide(x, tot) for x in e]
    return out


def scale_of(d_k: int) -> Decimal:
    return CTX.divide(Decimal(1), CTX.sqrt(Decimal(d_k)))


def sdpa(q, k, v, scale: Decimal | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(output, weights, scaled scores)`` of 2-D attention, in Decimal."""
    q, k, v = (x if np.asarray(x).dtype == object else to_dec(x) for x in (q, k, v))
    s = scale_of(q.shape[1]) if scale is None else scale
    scores = matmul(q, k.T)
    z = np.vectorize(lambda x: CTX.multiply(x, s), otypes=[object])(scores)
    w = softmax_rows(z)
    return matmul(w, v), w, z


def to_float(a: np.ndarray) -> np.ndarray:
    return np.vectorize(float, otypes=[np.float64])(a)
