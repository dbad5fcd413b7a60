"""Masks: the causal helper and the validation/combination of user masks."""
from __future__ import annotations

import numpy as np

from ._checks import InputTypeError, InputValueError, ShapeError, as_float_array

__all__ = ["causal_mask"]


def causal_mask(n_queries: int, n_keys: int | None = None) -> np.ndarray:
    """Boolean keep-mask of shape (n_queries, n_keys): query ``i`` attends key ``j`` iff ``j <= i``.

    Top-left aligned, as ``torch.nn.functional.scaled_dot_product_attention(is_causal=True)`` and
    ``np.tril``. ``n_keys`` defaults to ``n_queries``.
    """
    n_keys = n_queries if n_keys is None else n_keys
    for name, n in (("n_queries", n_queries), ("n_keys", n_keys)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise InputTypeError(f"{name} must be an int, got {type(n).__name__} {n!r}")
        if n < 1:
            raise InputValueError(f"{name} must be >= 1, got {n}")
    return np.tri(int(n_queries), int(n_keys), dtype=bool)  # (n_queries, n_keys)


def prepare_mask(mask, scores_shape: tuple[int, ...], dtype: np.dtype, is_causal: bool):
    """Split ``mask`` and ``is_causal`` into a boolean keep-mask and an additive float mask.

    * bool mask: True = attend, False = masked out.
    * float mask: added to the scaled scores; ``-inf`` masks a key; NaN and ``+inf`` are refused.
      It is cast to the compute dtype (a float64 mask does not promote float32 work; values beyond
      float32's range become -inf there, which is what they mean).
    Both must broadcast to ``scores_shape`` = (..., n_queries, n_keys).
    Returns ``(keep or None, additive or None)``.
    """
    if not isinstance(is_causal, (bool, np.bool_)):
        raise InputTypeError(f"is_causal must be a bool, got {type(is_causal).__name__} {is_causal!r}")
    keep = additive = None
    if mask is not None:
        m = np.asarray(mask) if not isinstance(mask, (str, bytes)) else None
        if m is None or m.dtype.kind not in "bf":
            what = type(mask).__name__ if m is None else f"dtype {m.dtype}"
            raise InputTypeError(f"mask must be a bool keep-mask (True = attend) or a float additive mask, got {what}")
        if m.ndim < 1 or m.ndim > len(scores_shape):
            raise ShapeError(f"mask must broadcast to the scores' shape {scores_shape} (..., n_queries, n_keys), "
                             f"got shape {m.shape}")
        try:
            np.broadcast_shapes(m.shape, scores_shape)
            ok = np.broadcast_shapes(m.shape, scores_shape) == tuple(scores_shape)
        except ValueError:
            ok = False
        if not ok:
            raise ShapeError(f"mask must broadcast to the scores' shape {scores_shape} (..., n_queries, n_keys), "
                             f"got shape {m.shape}")
        if m.dtype.kind == "b":
            keep = m
        else:
            m = as_float_array(m, "mask", allow_neg_inf=True)
            with np.errstate(over="ignore"):
                additive = m.astype(dtype, copy=False)
    if is_causal:
        causal = causal_mask(scores_shape[-2], scores_shape[-1])
        keep = causal if keep is None else (keep & causal)
    return keep, additive
