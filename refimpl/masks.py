"""Masks: the causal, sliding-window and ALiBi helpers (the band they share and user-mask validation live in
:mod:`refimpl._kernel`, next to the softmax that applies them).

Alignment (``alignment=``) places query ``i`` of ``Sq`` against key ``j`` of ``Sk`` with an offset:

    offset = 0          "top-left"      (torch's is_causal, np.tril: query 0 sees key 0)
    offset = Sk - Sq    "bottom-right"  (FlashAttention, KV caches: the last query sees the last key)

and every band rule compares ``j`` with ``i + offset``:

    causal:           j <= i + offset
    window (l, r):    i + offset - l  <=  j  <=  i + offset + r        (-1 = unbounded on that side)
    ALiBi:            bias[h, i, j] = -slope[h] * |i + offset - j|
"""
from __future__ import annotations

import numbers
import numpy as np

from ._checks import InputTypeError, InputValueError, ShapeError, as_float_array, check_choice, check_memory
from ._kernel import ALIGNMENTS, make_band

__all__ = ["causal_mask", "window_mask", "alibi_bias", "band_mask"]


def _check_sizes(**sizes) -> None:
    for name, n in sizes.items():
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (numbers.Integral, np.integer)):
            raise InputTypeError(f"{name} must be an int, got {type(n).__name__} {n!r}")
        if n < 1:
            raise InputValueError(f"{name} must be >= 1, got {n}")


def causal_mask(n_queries: int, n_keys: int | None = None, *, alignment: str = "top-left") -> np.ndarray:
    """Boolean keep-mask (n_queries, n_keys): query ``i`` attends key ``j`` iff ``j <= i + offset``.

    ``alignment="top-left"`` (offset 0) is ``np.tril`` and torch's ``is_causal=True``;
    ``"bottom-right"`` (offset ``n_keys - n_queries``) is FlashAttention's. ``n_keys`` defaults to
    ``n_queries``. With bottom-right and ``n_queries > n_keys`` the first rows are all False (a query
    that sees no key: zero weights in sdpa).
    """
    n_keys = n_queries if n_keys is None else n_keys
    return window_mask(n_queries, n_keys, (-1, 0), alignment=alignment)


def window_mask(n_queries: int, n_keys: int, window, *, alignment: str = "top-left") -> np.ndarray:
    """Boolean keep-mask (n_queries, n_keys) of a sliding window ``(left, right)``:
    query ``i`` attends key ``j`` iff ``i + offset - left <= j <= i + offset + right``, -1 = unbounded
    on that side (FlashAttention's ``window_size``); offset as in :func:`causal_mask`.
    """
    _check_sizes(n_queries=n_queries, n_keys=n_keys)
    check_memory(int(n_queries) * int(n_keys), f"a ({n_queries}, {n_keys}) bool mask")
    band = make_band(int(n_queries), int(n_keys), window=window, alignment=alignment)
    if band is None:
        raise InputTypeError("window must be a pair (left, right) of ints >= -1, got None")
    return band.keep(0, int(n_queries), 0, int(n_keys))                          # (Sq, Sk)


def alibi_bias(slopes, n_queries: int, n_keys: int, *, alignment: str = "bottom-right") -> np.ndarray:
    """ALiBi's additive bias ``-slope * |i + offset - j|`` of shape ``slopes.shape + (n_queries, n_keys)``.

    ``slopes``: (H,) or (B, H), finite and >= 0 (ALiBi penalises distance). Default alignment
    bottom-right, FlashAttention's ``alibi_slopes`` convention. float32 slopes give a float32 bias;
    a product beyond the dtype's range becomes ``-inf`` (that key is masked, which is what it means).
    Pass the result as ``mask=`` (it broadcasts to (B, H, Sq, Sk)).
    """
    s = as_float_array(slopes, "slopes", min_ndim=1, dims="(H,) or (B, H)")
    if s.ndim > 2:
        raise ShapeError(f"slopes must have shape (H,) or (B, H), got shape {s.shape}")
    if (s < 0).any():
        raise InputValueError(f"slopes must be >= 0 (ALiBi penalises distance), got min {s.min()!r}")
    _check_sizes(n_queries=n_queries, n_keys=n_keys)
    check_choice(alignment, "alignment", ALIGNMENTS)
    n_q, n_k = int(n_queries), int(n_keys)
    check_memory(s.size * n_q * n_k * s.itemsize, f"an ALiBi bias of shape {s.shape + (n_q, n_k)}")
    offset = 0 if alignment == "top-left" else n_k - n_q
    dist = np.abs(np.arange(n_q)[:, None] + offset - np.arange(n_k)[None, :]).astype(s.dtype)   # (Sq, Sk)
    with np.errstate(over="ignore"):
        return -(s[..., None, None] * dist)                  # (..., H, 1, 1) * (Sq, Sk) -> (..., H, Sq, Sk)


def band_mask(n_queries: int, n_keys: int, *, is_causal: bool = False, window=None, alignment: str = "top-left",
              mask=None) -> np.ndarray | None:
    """The bool keep-mask (n_queries, n_keys) of ``is_causal`` and ``window`` together (causal caps the window's
    right side at 0, as in :func:`refimpl.scaled_dot_product_attention`), and-ed with a bool keep-``mask``
    (broadcast); None when nothing is masked. How a mask-only API receives causal and sliding-window cases."""
    _check_sizes(n_queries=n_queries, n_keys=n_keys)
    band = make_band(n_queries, n_keys, is_causal=is_causal, window=window, alignment=alignment)
    keep = None if band is None else band.keep(0, n_queries, 0, n_keys)       # (Sq, Sk)
    if mask is None:
        return keep
    return mask if keep is None else (np.asarray(mask, dtype=bool) & keep)
