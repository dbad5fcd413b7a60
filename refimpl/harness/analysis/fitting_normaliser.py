"""The softmax's denominator wrong, fitted from the output alone (``softmax-denominator``).

A kernel whose numerators are right but whose denominator is not their sum (summed without the scale, over keys
the mask drops, with a term counted twice, from another precision) returns rows that are each the reference's
row times a factor: out[b, h, i] = c[b, h, i] * E[b, h, i], c = (the sum of the numerators) / (the denominator
used), the factor the row's weights sum to. No model of the table need have that denominator; the factor is read
per row by least squares (c = <out, E> / <E, E>).

The fit holds when, on every failing case of the sample, every row the judge holds is such a multiple with c > 0
or comes back zero (a factor that underflowed: a dropped key's exp(fill - m) swamping the row; a row of the
reference that is zero must come back zero), some row has c away from 1, and on some failing case with Dv >= 2 a
row whose reference is not constant over its channels has c away from 1 and from 0 (a row of one channel is a
multiple of anything; zeroed rows beside right ones are no factor). The line gives the range of c over the
failing rows and, when one of these reproduces every failing row's factor, what the denominator was: the sum
without the scale (exp(s - m) for exp(scale * (s - m))), or over every key (the mask, band or padding not applied
to the denominator).
"""
from __future__ import annotations

import numpy as np

from ...attention import scaled_dot_product_attention
from .fitting_placement import output_atol

__all__ = ["denominator_line"]

RTOL = 1e-3
AWAY = 1e-3                    # |c - 1| above which a row's factor is not 1


def _factors(data, got) -> np.ndarray | None:
    """(B, Hq, Sq) the factor of each judged row (NaN elsewhere and where the reference row is 0), or None when
    some judged row is not a positive multiple of the reference's."""
    e = np.asarray(data.expected, np.float64)
    got = np.asarray(got, np.float64)
    if got.shape != e.shape or e.ndim != 4:
        return None
    live = np.broadcast_to(data.live, e.shape[:-1])
    if not np.isfinite(got[live]).all():
        return None
    atol = output_atol(data.v)
    norm2 = (e * e).sum(axis=-1)
    nonzero = norm2 > 0
    with np.errstate(all="ignore"):
        c = np.where(nonzero, (got * e).sum(axis=-1) / np.where(nonzero, norm2, 1.0), np.nan)
        ok = np.all(np.abs(got - c[..., None] * e) <= atol + RTOL * np.abs(c[..., None] * e), axis=-1)
    zero = np.all(np.abs(got) <= atol, axis=-1)                          # a factor that underflowed to 0
    ok = np.where(nonzero, ok & ((c > 0) | zero), zero)
    if not np.all(ok[live]):
        return None
    return np.where(live & nonzero, c, np.nan)


def _evidence(data, c: np.ndarray) -> bool:
    """A row of Dv >= 2 channels, not constant over them, with its factor away from 1 and from 0 (a row zeroed is no
    factor: zeroed rows beside right ones are not this form)."""
    e = np.asarray(data.expected, np.float64)
    varied = (np.ptp(e, axis=-1) > 1e-9 * (1.0 + np.abs(e).max(axis=-1))) & (e.shape[-1] >= 2)
    c = np.nan_to_num(c, nan=1.0)
    return bool(np.any(varied & (np.abs(c - 1.0) > AWAY) & (c > AWAY)))


def _weights(data, **change) -> np.ndarray:
    kw = dict(data.reference_kwargs(), **change)
    with np.errstate(all="ignore"):
        return np.asarray(scaled_dot_product_attention(data.q, data.k, data.v, **kw)[1], np.float64)


def _unscaled(data) -> np.ndarray | None:
    """c when the denominator is the sum of exp(s - m) and the numerators exp(scale * (s - m)) (s the raw scores)."""
    s = data.spec
    if s.softcap or s.alibi or (data.mask is not None and data.mask.dtype != bool):
        return None
    scale = s.scale if s.scale is not None else 1.0 / np.sqrt(data.q.shape[-1])
    w1 = _weights(data, scale=1.0)                      # exp(s - m) / Z1: exp(s - m) = w1 / max(w1)
    top = w1.max(axis=-1, keepdims=True)
    with np.errstate(all="ignore"):
        return np.where(top[..., 0] > 0, top[..., 0] * ((w1 / np.where(top > 0, top, 1.0)) ** scale).sum(-1), np.nan)


def _every_key(data) -> np.ndarray | None:
    """c when the denominator sums the exponentials of every key, those the mask or band drops too."""
    s = data.spec
    if s.alibi or s.seqlens is not None or (data.mask is not None and data.mask.dtype != bool):
        return None
    if data.mask is None and not s.is_causal and s.window is None:
        return None                                     # nothing dropped: the same denominator
    kept = _weights(data) > 0
    return (_weights(data, mask=None, is_causal=False, window=None) * kept).sum(axis=-1)


FORMS = (("the sum of exp(s - m) without the scale, for numerators exp(scale * (s - m))", _unscaled),
         ("the sum over every key, those the mask or band drops too", _every_key))


def denominator_line(target: str, fail_cases: list) -> list[str]:
    """``diagnosis TARGET: softmax-denominator — ...`` when the fit above holds on every failing case; []
    otherwise. ``fail_cases``: the failing sample, (CaseData, output) pairs."""
    fitted = []
    for d, g in fail_cases:
        c = _factors(d, g)
        if c is None or not np.any(np.abs(np.nan_to_num(c, nan=1.0) - 1.0) > AWAY):
            return []
        fitted.append(c)
    if not fail_cases or not any(_evidence(d, c) for (d, _), c in zip(fail_cases, fitted)):
        return []
    off = np.concatenate([c[np.abs(np.nan_to_num(c, nan=1.0) - 1.0) > AWAY] for c in fitted])
    said = ""
    for label, form in FORMS:
        preds = [form(d) for d, _ in fail_cases]
        if all(p is not None and np.allclose(np.where(np.isnan(c), 1.0, p), np.nan_to_num(c, nan=1.0), rtol=1e-3,
                                             atol=1e-9) for p, c in zip(preds, fitted)):
            said = f"; fitted, the denominator was {label}"
            break
    every = np.concatenate([c[~np.isnan(c)] for c in fitted])
    one = (f"; one factor on every row: the output scaled by {off.min():.4g}, or the denominator by its inverse"
           if np.ptp(every) <= 1e-6 * abs(float(every.mean())) else "")
    return [f"diagnosis {target}: softmax-denominator — the softmax's denominator is not the sum of its numerators: "
            f"each judged row is the right row times a factor (its weights sum to {off.min():.4g} .. "
            f"{off.max():.4g} instead of 1 on the rows that fail){said}{one}"]
