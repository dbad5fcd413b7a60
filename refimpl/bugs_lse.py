"""Bug models of a returned log-sum-exp (``--lse``): the LSE a kernel returns beside its output, with one mistake each.

Every model takes refimpl's inputs and keywords (as :mod:`refimpl.bugs`) and the precision the kernel computes in,
and returns the LSE it gives and the precision it returns it in::

    fn(q, k, v, *, mask=None, scale=None, is_causal=False, alignment="top-left", window=None, softcap=None,
       enable_gqa=False, dtype="float64") -> (lse (B, Hq, Sq) float64 values, returned precision or None)

(None: float32 or wider, as FlashAttention's softmax_lse is). The right LSE is :func:`refimpl.lse.sdpa_lse`, the
natural log of each row's sum of exp(score) over its kept keys; a row with no key is -inf (its sign is a
convention the judge leaves open, and so does the diagnosis). The mistakes: base 2, the row max missing (never
added back to log(sum exp(S - max)), or never subtracted so that exp overflows), the max added back in unscaled
q.k units, NaN or 0 on a row with no key, the first key block only, a half-precision buffer, the layout (B, Sq, Hq),
the scores before the softcap.
"""
from __future__ import annotations

import math
from functools import partial

import numpy as np

from .bug_model import BugModel, Variant
from .lse import sdpa_lse
from .masks import band_mask
from .precision import get as precision

__all__ = ["MODELS"]


NAMES = ("mask", "scale", "is_causal", "alignment", "window", "softcap", "enable_gqa")


def _kw(kw: dict) -> dict:
    return {n: kw[n] for n in NAMES if n in kw}


def _scores(q, k, v, *, mask=None, scale=None, is_causal=False, alignment="top-left", window=None, softcap=None,
            **_) -> np.ndarray:
    """(B, Hq, Sq, Sk): the final scores (scaled, soft-capped, plus the additive mask), -inf where no key is kept;
    under GQA query head h reads kv head h // (Hq // Hkv)."""
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    k = np.repeat(k, q.shape[-3] // k.shape[-3], axis=-3)
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    with np.errstate(over="ignore", invalid="ignore"):
        s = q @ np.swapaxes(k, -1, -2) * sc                                          # (B, Hq, Sq, Sk)
        if softcap is not None:
            s = softcap * np.tanh(s / softcap)
    boolean = mask is not None and np.asarray(mask).dtype == bool
    band = band_mask(s.shape[-2], s.shape[-1], is_causal=is_causal, window=window, alignment=alignment,
                     mask=np.asarray(mask) if boolean else None)
    keep = np.ones(s.shape, bool) if band is None else np.broadcast_to(band, s.shape)
    if mask is not None and not boolean:
        add = np.asarray(mask, np.float64)
        keep = keep & (add != -np.inf)
        s = s + np.where(np.isneginf(add), 0.0, add)
    return np.where(keep, s, -np.inf)


def _row_max(s: np.ndarray) -> np.ndarray:
    return np.max(s, axis=-1, initial=-np.inf)


def _lse(q, k, v, **kw) -> np.ndarray:
    return sdpa_lse(q, k, v, **_kw(kw))


def base2(q, k, v, **kw):
    """log2 of the row's sum (an exp2 kernel's m2 + log2(l)): the natural LSE / ln 2."""
    return _lse(q, k, v, **kw) / math.log(2.0), None


def max_not_added(q, k, v, **kw):
    """log(sum exp(S - max)): the max subtracted for the exponentials and never added back."""
    lse = _lse(q, k, v, **kw)
    with np.errstate(invalid="ignore"):
        return np.where(np.isinf(lse), lse, lse - _row_max(_scores(q, k, v, **kw))), None


def no_max_subtraction(q, k, v, dtype="float64", **kw):
    """log(sum exp(S)) computed in ``dtype`` (float64, or float32 for the lower precisions): +inf where exp
    overflows (a score above ~709, or ~88.7 in float32)."""
    dt = np.dtype(precision(dtype).carrier).type
    s = _scores(q, k, v, **kw).astype(dt)
    with np.errstate(over="ignore", divide="ignore"):
        return np.log(np.exp(s).sum(axis=-1, dtype=dt)).astype(np.float64), None


def unscaled_max(q, k, v, scale=None, **kw):
    """m + log(sum exp(S - scale * m)) with m = max(S) / scale, the max in raw q.k units: LSE + max(S) (1/scale - 1)."""
    sc = 1.0 / math.sqrt(np.shape(q)[-1]) if scale is None else scale
    lse = _lse(q, k, v, scale=scale, **kw)
    with np.errstate(invalid="ignore"):
        top = _row_max(_scores(q, k, v, scale=scale, **kw))
        return np.where(np.isinf(lse), lse, lse + top * (1.0 / sc - 1.0)), None


def dead_rows(q, k, v, fill=np.nan, **kw):
    """Right, except a row with no key: ``fill`` (NaN: the unguarded max, exp(-inf - -inf); 0.0) instead of +-inf."""
    lse = _lse(q, k, v, **kw)
    return np.where(lse == -np.inf, fill, lse), None


def first_block(q, k, v, block=64, **kw):
    """The LSE written after the first key block of ``block`` keys: only keys j < block counted."""
    s = _scores(q, k, v, **kw)
    s[..., block:] = -np.inf
    m = _row_max(s)
    base = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m == -np.inf, -np.inf, base + np.log(np.exp(s - base[..., None]).sum(axis=-1))), None


def half_buffer(q, k, v, to="float16", **kw):
    """The right LSE stored in a ``to`` (float16, bfloat16) buffer."""
    return precision(to).round(_lse(q, k, v, **kw)), to


def layout(q, k, v, **kw):
    """The right LSE transposed like the output, (B, Sq, Hq) instead of (B, Hq, Sq)."""
    return np.swapaxes(_lse(q, k, v, **kw), -1, -2), None


def before_softcap(q, k, v, **kw):
    """The LSE of the scaled scores before the softcap (the output is of the capped ones)."""
    return _lse(q, k, v, **dict(kw, softcap=None)), None


def _v(label: str, fn, **param) -> Variant:
    if not param:
        return Variant(label, fn)
    named = partial(fn, **param)
    named.__doc__ = fn.__doc__
    return Variant(label, named)


TOLERANCE = (1e-4, 1e-5)        # (rtol, atol relative to 1 + max|LSE|): float32 rounding of a float64 LSE is far less


# the names are those of tests/zoo/flash_lse_impls.py's catalogue, where each has its kernel
MODELS: dict[str, BugModel] = {m.name: m for m in (
    BugModel("lse-base2", "the log-sum-exp is in base 2 (log2 of the row's sum: the natural one / ln 2)",
             (_v("log2", base2),), TOLERANCE),
    BugModel("lse-no-max", "the row max is missing from the log-sum-exp",
             (_v("log(sum exp(S - max)): the max never added back", max_not_added),
              _v("log(sum exp(S)) without subtracting the max: +inf where exp overflows", no_max_subtraction)),
             TOLERANCE),
    BugModel("lse-unscaled-max", "the row max is added back in unscaled q.k units (max / scale)",
             (_v("max / scale", unscaled_max),), TOLERANCE),
    BugModel("lse-dead-nan", "a row with no key gets NaN as its log-sum-exp (+inf or -inf required)",
             (_v("NaN", dead_rows),), TOLERANCE),
    BugModel("lse-dead-zero", "a row with no key gets 0 as its log-sum-exp (+inf or -inf required)",
             (_v("0", dead_rows, fill=0.0),), TOLERANCE),
    BugModel("lse-first-block", "the log-sum-exp counts the first key block only",
             tuple(_v(f"blocks of {n}", first_block, block=n) for n in (16, 32, 64, 128, 256)), TOLERANCE),
    BugModel("lse-dtype", "the log-sum-exp is returned in a half-precision buffer (float32 required)",
             tuple(_v(t, half_buffer, to=t) for t in ("float16", "bfloat16")), (1e-2, 1e-3)),
    BugModel("lse-layout", "the log-sum-exp is returned (B, Sq, Hq), transposed like the output, instead of "
             "(B, Hq, Sq)", (_v("(B, Sq, Hq)", layout),), TOLERANCE),
    BugModel("lse-softcap", "the log-sum-exp is of the scores before the softcap (the output's are capped)",
             (_v("before tanh", before_softcap),), TOLERANCE),
)}
