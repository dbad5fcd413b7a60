"""Targets used by the tests of `refimpl check` and the pytest plugin (importable with PYTHONPATH=tests/support)."""
import math

import numpy as np


def _softmax(s):
    with np.errstate(invalid="ignore"):       # a fully masked row: -inf - -inf -> NaN -> zeros below
        s = s - s.max(axis=-1, keepdims=True)
        e = np.exp(s)
        return e / e.sum(axis=-1, keepdims=True)


def _attend(q, k, v, mask, scale):
    s = (q @ np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    w = _softmax(s)
    w = np.nan_to_num(w)
    return w @ v, w


def good(q, k, v, mask=None, scale=None):
    return _attend(q, k, v, mask, 1 / math.sqrt(q.shape[-1]) if scale is None else scale)


def wrong_scale(q, k, v, mask=None, scale=None):
    """Deliberately wrong: scales by 1/sqrt(n_keys) whatever it is asked."""
    return _attend(q, k, v, mask, 1 / math.sqrt(k.shape[-2]))


def output_only(q, k, v, mask=None, scale=None):
    return good(q, k, v, mask, scale)[0]


def bshd(q, k, v, mask=None, scale=None):
    """Takes (B, S, H, D) like FlashAttention; fails loudly on anything else."""
    if q.ndim != 4:
        raise ValueError(f"bshd target needs 4-D (B, S, H, D) input, got {q.shape}")
    qt, kt, vt = (np.swapaxes(a, 1, 2) for a in (q, k, v))
    out, w = good(qt, kt, vt, mask, scale)
    return np.swapaxes(out, 1, 2), w
