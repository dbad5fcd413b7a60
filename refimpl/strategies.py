"""Public Hypothesis strategies for attention inputs.

Required arguments are positional, options keyword-only; every argument is validated up front with a
message that says how to fix the call. Each strategy draws plain NumPy arrays, so the same strategies
drive refimpl's own properties, the cross-language checks against R and a user's target.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ._checks import InputTypeError, InputValueError

__all__ = ["AttentionInputs", "attention_inputs", "float_arrays", "r_attention_inputs", "score_matrices",
           "MASK_KINDS"]

MASK_KINDS = ("none", "bool", "additive", "causal")


@dataclass(frozen=True)
class AttentionInputs:
    """One drawn case: the arguments of ``scaled_dot_product_attention(q, k, v, mask=, is_causal=)``."""
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    mask: np.ndarray | None
    is_causal: bool

    def kwargs(self) -> dict[str, Any]:
        return {"mask": self.mask, "is_causal": self.is_causal}

    def reproduction(self) -> str:
        """Copy-paste Python that rebuilds this case exactly (float.hex keeps every bit)."""
        def arr(a):
            if a is None:
                return "None"
            flat = ", ".join(repr(x) if a.dtype == bool else f"float.fromhex({float(x).hex()!r})"
                             for x in a.reshape(-1))
            return f"np.array([{flat}], dtype={a.dtype.name!r}).reshape({a.shape})"
        return (f"import numpy as np, refimpl\nq = {arr(self.q)}\nk = {arr(self.k)}\nv = {arr(self.v)}\n"
                f"mask = {arr(self.mask)}\n"
                f"out, w = refimpl.scaled_dot_product_attention(q, k, v, mask=mask, is_causal={self.is_causal})")


def _check_size(name: str, value, lo: int = 1) -> st.SearchStrategy[int]:
    if isinstance(value, st.SearchStrategy):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise InputValueError(f"{name} must be an int >= {lo} or a strategy of ints, got {value!r}")
    return st.just(int(value))


def _check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise InputTypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.float32, np.float64):
        raise InputTypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def float_arrays(shape, *, dtype=np.float64, magnitude: float = 10.0) -> st.SearchStrategy[np.ndarray]:
    """Finite arrays of ``shape`` with elements in [-magnitude, magnitude].

    >>> float_arrays((2, 3), magnitude=1.0).example().shape
    (2, 3)
    """
    dt = _check_dtype(dtype)
    if not (isinstance(magnitude, (int, float)) and 0 < magnitude <= np.finfo(dt).max):
        raise InputValueError(f"magnitude must be in (0, {np.finfo(dt).max:g}] for {dt}, got {magnitude!r}")
    width = 32 if dt == np.float32 else 64
    elements = st.floats(-magnitude, magnitude, allow_nan=False, allow_infinity=False, width=width,
                         allow_subnormal=False)
    return hnp.arrays(dt, shape, elements=elements)


@st.composite
def _attention_inputs(draw, batch_shape, n_queries, n_keys, d_k, d_v, dtype, mask, magnitude):
    b = draw(batch_shape)
    nq, nk, dk, dv = draw(n_queries), draw(n_keys), draw(d_k), draw(d_v)
    dt = np.dtype(draw(dtype))
    mag = draw(magnitude)
    q = draw(float_arrays(b + (nq, dk), dtype=dt, magnitude=mag))
    k = draw(float_arrays(b + (nk, dk), dtype=dt, magnitude=mag))
    v = draw(float_arrays(b + (nk, dv), dtype=dt, magnitude=mag))
    kind = draw(mask)
    m, causal = None, False
    if kind == "bool":
        m = draw(hnp.arrays(np.bool_, (nq, nk)))
    elif kind == "additive":
        m = draw(hnp.arrays(dt, (nq, nk), elements=st.sampled_from([0.0, -1.0, -np.inf, 2.0, -0.5])))
    elif kind == "causal":
        causal = True
    return AttentionInputs(q, k, v, m, causal)


def attention_inputs(*, batch_shape=st.just(()), n_queries=st.integers(1, 6), n_keys=st.integers(1, 6),
                     d_k=st.integers(1, 5), d_v=st.integers(1, 5), dtype=st.sampled_from([np.float64]),
                     mask: str | st.SearchStrategy[str] = "none",
                     magnitude: float | st.SearchStrategy[float] = 10.0) -> st.SearchStrategy[AttentionInputs]:
    """Inputs of scaled dot-product attention.

    ``batch_shape``: a strategy of tuples (leading batch/head dims), e.g.
    ``hnp.array_shapes(min_dims=0, max_dims=2, max_side=3)``.
    ``n_queries``, ``n_keys``, ``d_k``, ``d_v``: ints or strategies of ints (>= 1).
    ``dtype``: a dtype or a strategy of dtypes (float32/float64).
    ``mask``: one of ``MASK_KINDS`` or a strategy of them; "causal" sets ``is_causal``.
    ``magnitude``: bound of the values (up to 1e300 in float64), or a strategy of bounds.

    >>> case = attention_inputs(n_queries=2, n_keys=3, d_k=4, d_v=1).example()
    >>> case.q.shape, case.k.shape, case.v.shape
    ((2, 4), (3, 4), (3, 1))
    """
    if not isinstance(batch_shape, st.SearchStrategy):
        if isinstance(batch_shape, tuple) and all(isinstance(x, int) and x >= 1 for x in batch_shape):
            batch_shape = st.just(batch_shape)
        else:
            raise InputValueError(f"batch_shape must be a tuple of ints >= 1 or a strategy of them, "
                                  f"got {batch_shape!r}")
    sizes = [_check_size(n, v) for n, v in (("n_queries", n_queries), ("n_keys", n_keys), ("d_k", d_k), ("d_v", d_v))]
    if not isinstance(dtype, st.SearchStrategy):
        dtype = st.just(_check_dtype(dtype))
    if not isinstance(mask, st.SearchStrategy):
        if mask not in MASK_KINDS:
            raise InputValueError(f"mask must be one of {MASK_KINDS} or a strategy of them, got {mask!r}")
        mask = st.just(mask)
    if not isinstance(magnitude, st.SearchStrategy):
        if not (isinstance(magnitude, (int, float)) and magnitude > 0):
            raise InputValueError(f"magnitude must be a positive number or a strategy of them, got {magnitude!r}")
        magnitude = st.just(float(magnitude))
    return _attention_inputs(batch_shape, *sizes, dtype, mask, magnitude)


def r_attention_inputs(*, n_queries=st.integers(1, 6), n_keys=st.integers(2, 6), d_k=st.integers(1, 5),
                       d_v=st.integers(1, 5), magnitude: float = 10.0) -> st.SearchStrategy[tuple]:
    """``(Q, K, V)`` as the R package takes them: 2-D float64 matrices (n_keys >= 2 by default: see D6).

    >>> Q, K, V = r_attention_inputs(n_queries=4, n_keys=4, d_k=3, d_v=3).example()
    >>> Q.shape, V.shape
    ((4, 3), (4, 3))
    """
    return attention_inputs(n_queries=n_queries, n_keys=n_keys, d_k=d_k, d_v=d_v, magnitude=magnitude).map(
        lambda c: (c.q, c.k, c.v))


def score_matrices(*, n_rows=st.integers(1, 6), n_cols=st.integers(1, 6), magnitude: float = 30.0):
    """2-D float64 score matrices (inputs of softmax, RowMax, ComputeWeights).

    >>> score_matrices(n_rows=4, n_cols=4).example().shape
    (4, 4)
    """
    rows, cols = _check_size("n_rows", n_rows), _check_size("n_cols", n_cols)
    return st.tuples(rows, cols).flatmap(lambda rc: float_arrays(rc, magnitude=magnitude))
