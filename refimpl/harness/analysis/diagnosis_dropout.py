"""Diagnosis of a target run with dropout (``--dropout P``) by the models of :mod:`refimpl.bugs_dropout`.

A model is named when, on every failed case of the sample (at most ``MAX_FAILING``), the target returned its output
with a keep pattern of the case's shape (its own ``S_dmask``, or refimpl's given mask) and the model, fed the
case's float64 weights and that very pattern, reproduces the output on the rows with a key (``|model - got| <= atol
+ rtol * |got|``, atol relative to 1 + max|V| / (1 - p)) and explains it (its distance to the output is at most
``EXPLAINS`` times the right replay's); and it reproduces the passing cases of the sample (at most ``MAX_PASSING``)
too. The keep rate, pooled over the sample's returned patterns, tells models apart: ``dropout-rate-swapped`` needs
a rate that rejects 1 - p and not p; every other model needs the pattern it applies (the returned one, or its
inverse for ``dropout-inverted``) kept at a rate of 1 - p, not rejected. A failure that is not the dropout's (no
pattern returned, a pattern of another shape) is explained by none.
"""
from __future__ import annotations

import numpy as np

from ...bugs_dropout import MODELS, right
from ..cases import Status, fitting_models
from ..verdicts.dropout_judge import count_rejected, keep_rate
from .diagnosis_sample import EXPLAINS, MAX_FAILING, MAX_PASSING, case_data as _data

__all__ = ["dropout_lines"]

SWAPPED, INVERTED = "dropout-rate-swapped", "dropout-inverted"


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(a - b)
    return float(np.where(np.isnan(d), np.inf, d).max(initial=0.0))


def _fits(variant, data, got, failing: bool) -> bool:
    s, keep, p = data.spec, got.dropout_keep, got.dropout_p
    v = np.repeat(data.v, s.Hq // s.Hkv, axis=1)                             # (B, Hq, Sk, Dv)
    with np.errstate(all="ignore"):
        out = np.asarray(variant.fn(data.weights, v, keep, p), np.float64)
    live = data.live
    o, g = out[live], np.asarray(got.output, np.float64)[live]
    fin = np.abs(data.v[np.isfinite(data.v)])
    atol = 1e-6 * (1.0 + (fin.max(initial=0.0)) / (1.0 - p))
    with np.errstate(invalid="ignore", over="ignore"):
        if not np.allclose(o, g, rtol=1e-3, atol=atol, equal_nan=True):
            return False
    if not failing:
        return True
    far = _distance(right(data.weights, v, keep, p)[live], g)
    return far > 0 and _distance(o, g) <= EXPLAINS * far


def _rate_fits(model: str, sample: list) -> bool:
    """The pattern's keep rate over the whole sample (returned patterns only; a given one is refimpl's draw) agrees
    with the model: the pattern the model applies (``keep``, or ``~keep`` for an inverted reading) kept with
    probability 1 - p, or, for ``dropout-rate-swapped``, with p (and not 1 - p)."""
    counts = [keep_rate(d, g.dropout_keep, g.dropout_p)[:2] for d, g, _ in sample if not g.dropout_given]
    if not counts:
        return model != SWAPPED
    p = sample[0][1].dropout_p
    k, n = sum(c[0] for c in counts), sum(c[1] for c in counts)
    if model == INVERTED:
        k = n - k                                                      # the weights it kept: those marked dropped
    if model == SWAPPED:
        return count_rejected(k, n, p)[0] and not count_rejected(k, n, 1.0 - p)[0]
    return not count_rejected(k, n, p)[0]


def dropout_lines(results: list, store, target: str, specs: dict | None) -> list[str]:
    """``diagnosis TARGET: MODEL — explanation (variant)`` for each dropout model that explains every failed case of
    the sample and agrees with the passing ones (see the module doc); [] when none does or no case had dropout."""
    failed = [r for r in results if Status(r.status).failed]
    if not failed:
        return []
    sample: list[tuple] = []
    for group, cap, failing in ((failed, MAX_FAILING, True),
                                ([r for r in results if r.status == Status.PASS], MAX_PASSING, False)):
        for r in group:
            if sum(1 for x in sample if x[2] == failing) >= cap:
                break
            got = getattr(r, "got", None)
            keep = getattr(got, "dropout_keep", None)
            data = _data(store, r, specs) if keep is not None else None
            usable = (keep is not None and data is not None and data.weights is not None
                      and keep.shape == data.weights.shape and 0.0 < getattr(got, "dropout_p", 0.0) < 1.0)
            if not usable:
                if failing:
                    return []                         # a failure the dropout models do not account for
                continue
            sample.append((data, got, failing))
    if not any(f for _, _, f in sample):
        return []
    return fitting_models(target, MODELS, lambda model, variant: _rate_fits(model.name, sample) and all(
        _fits(variant, d, g, f) for d, g, f in sample))
