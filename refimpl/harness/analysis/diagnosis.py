"""Diagnosis of a failing target by bug models (:mod:`refimpl.bugs`), and localisation by case features.

* :func:`diagnose`: a model *fits* when, on every failing family case (at most ``MAX_FAILING``), the model's
  output computed from the case's inputs (``CaseData.q, k, v`` and ``reference_kwargs()``; ALiBi is in the
  additive mask) matches what the target returned,

      |model - got| <= atol + rtol * |got|,   atol = 1e-6 * (1 + max|v|),  rtol = 1e-3,  NaN == NaN,

  and explains it (closer to the target than the expected output is, see :func:`fits`); and it also
  matches on up to ``MAX_PASSING`` passing cases. Lines: ``diagnosis TARGET: MODEL — explanation``
  per fitting model, or ``diagnosis TARGET: unknown``; none when nothing failed.
* :func:`localise`: ``fails only when: <features>``: the smallest conjunction (1 or 2) of boolean case
  features True on every failing case and on no passing case; else the best single feature, with counts.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np

from ... import bugs
from ..cases import Status, fitting_models
from ..cases.features import CaseData, CaseSpec
from ..verdicts.judge import CaseResult

__all__ = ["diagnose", "localise", "fits", "analyse_run"]

MAX_FAILING = 40
MAX_PASSING = 20
EXPLAINS = 0.5
MAX_SCORES = 4_000_000        # skip cases whose B * Hq * Sq * Sk is larger (long sequences)


def _output(r: CaseResult):
    got = getattr(r, "got", None)
    return None if got is None else getattr(got, "output", None)


def _data(store, r: CaseResult, specs: dict[str, CaseSpec] | None) -> CaseData | None:
    if specs is not None and r.id in specs:
        return store.get(specs[r.id])
    return store._data.get(r.id)          # materialised while the target ran


def _small(data: CaseData) -> bool:
    s = data.spec
    return s.B * s.Hq * s.Sq * s.Sk <= MAX_SCORES


def _close(model: np.ndarray, got: np.ndarray, v: np.ndarray, rtol: float, atol: float) -> bool:
    """allclose(model, got) with atol scaled by 1 + max|v| (finite), NaN == NaN, shapes equal."""
    got = np.asarray(got, np.float64)
    model = np.asarray(model, np.float64)
    if model.shape != got.shape:
        return False
    fin = np.abs(v[np.isfinite(v)])
    a = atol * (1.0 + (fin.max() if fin.size else 0.0))
    with np.errstate(invalid="ignore", over="ignore"):
        return bool(np.allclose(model, got, rtol=rtol, atol=a, equal_nan=True))


def _distance(a: np.ndarray, b: np.ndarray, rows: np.ndarray) -> float:
    """max |a - b| over ``rows`` (B, Hq, Sq); a NaN/inf on one side only counts as inf."""
    a, b = a[rows], b[rows]                                                   # (n, Dv)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.where(same, 0.0, np.abs(a - b))
    d = np.where(np.isnan(d), np.inf, d)
    return float(d.max()) if d.size else 0.0


def fits(variant, data: CaseData, got: np.ndarray, rtol: float = 1e-3, atol: float = 1e-6,
         failing: bool = True) -> bool:
    """Whether a bug model's ``variant`` (:class:`refimpl.bugs.Variant`) reproduces ``got`` (B, Hq, Sq, Dv) on
    this case (an exception: no). On a failing case the model must also explain the failure: on the rows that
    have keys, its distance to ``got`` is at most ``EXPLAINS`` times the expected output's (a model equal to the
    reference explains nothing)."""
    kw = data.reference_kwargs()
    if variant.splits_alibi:                    # the model takes the user's mask and the ALiBi slopes apart
        kw = dict(kw, mask=data.mask, slopes=data.slopes)
    try:
        with np.errstate(all="ignore"):
            out = np.asarray(variant.fn(data.q, data.k, data.v, **kw), np.float64)   # (B, Hq, Sq, Dv)
    except Exception:
        return False
    if not _close(out, got, data.v, rtol, atol):
        return False
    if not failing or out.shape != data.expected.shape:
        return True
    live = ~np.broadcast_to(data.dead, out.shape[:-1])
    return _distance(out, got, live) <= EXPLAINS * _distance(data.expected, got, live)


def diagnose(results: list[CaseResult], store, target: str = "target",
             specs: dict[str, CaseSpec] | None = None) -> list[str]:
    """``diagnosis TARGET: MODEL — explanation`` for each bug model that fits (see the module doc), else
    ``diagnosis TARGET: unknown``; [] when no case failed. ``specs`` (id -> spec) materialises cases that the
    store does not hold yet."""
    failing = [r for r in results if r.status == Status.FAIL]
    if not failing:
        return []
    passing = [r for r in results if r.status == Status.PASS]
    fail_cases = _usable(failing, store, specs, MAX_FAILING)
    pass_cases = _usable(passing, store, specs, MAX_PASSING)
    lines = []
    if fail_cases:
        def fit(model, variant) -> bool:
            rtol, atol = model.tolerance
            return (all(fits(variant, d, g, rtol, atol) for d, g in fail_cases)
                    and all(fits(variant, d, g, rtol, atol, failing=False) for d, g in pass_cases))
        lines = fitting_models(target, bugs.MODELS, fit)
    if _weights_transposed([r for r in failing if getattr(r, "got", None) is not None], store, specs):
        lines.append(f"diagnosis {target}: weights-transposed — {bugs.MODELS['weights-transposed'].explanation}")
    return lines or [f"diagnosis {target}: unknown"]


def _weights_transposed(failing: list[CaseResult], store, specs) -> bool:
    """Every failing case (with returned weights) is explained by :func:`refimpl.bugs.weights_transposed`:
    the output agrees with the model's and the weights are its transposed ones."""
    seen = 0
    for r in failing[:MAX_FAILING]:
        data = _data(store, r, specs)
        w = getattr(r.got, "weights", None)
        if data is None or w is None or r.got is None or not _small(data):
            return False
        with np.errstate(all="ignore"):
            out, w_model = bugs.weights_transposed(data.q, data.k, data.v, **data.reference_kwargs())
        if not (_close(out, r.got.output, data.v, 1e-3, 1e-6) and _close(w_model, w, np.ones(1), 1e-3, 1e-6)):
            return False
        seen += 1
    return seen > 0


def _usable(rs: list[CaseResult], store, specs, cap: int) -> list[tuple[CaseData, np.ndarray]]:
    out = []
    for r in rs:
        got = _output(r)
        if got is None:
            continue
        data = _data(store, r, specs)
        if data is None or not _small(data):
            continue
        out.append((data, np.asarray(got, np.float64)))
        if len(out) >= cap:
            break
    return out


def localise(results: list[CaseResult]) -> str:
    """``fails only when: A`` or ``fails only when: A and B`` (boolean features True on every failing case and
    on no passing one, fewest first, then fewest passing cases covered by name order); otherwise the single
    feature with the largest (share of failing cases) - (share of passing cases) it is True on, with counts.
    Features True on every case are ignored. "" when nothing failed."""
    failing = [r.features for r in results if Status(r.status).failed and r.features]
    passing = [r.features for r in results if r.status == Status.PASS and r.features]
    if not failing:
        return ""
    everywhere = {n for f in failing + passing for n in f if all(g.get(n) is True for g in failing + passing)}
    names = sorted({n for f in failing + passing for n, x in f.items() if isinstance(x, bool)} - everywhere)

    def count(group, combo):
        return sum(all(f.get(n, False) for n in combo) for f in group)

    n_fail = len(failing)
    for size in (1, 2):
        cands = [c for c in combinations(names, size) if count(failing, c) == n_fail and count(passing, c) == 0]
        if cands:
            return "fails only when: " + " and ".join(cands[0])
    n_pass = max(len(passing), 1)
    best = max(names, key=lambda n: (count(failing, (n,)) / n_fail - count(passing, (n,)) / n_pass,
                                     count(failing, (n,))), default=None)
    if best is None or count(failing, (best,)) == 0:
        return f"fails only when: (no feature separates {n_fail} failing from {len(passing)} passing cases)"
    return (f"fails only when: {best} (true on {count(failing, (best,))}/{n_fail} failing, "
            f"{count(passing, (best,))}/{len(passing)} passing cases)")


def analyse_run(run) -> None:
    """Fill ``run.diagnoses`` and ``run.localisations`` for every target with a failing family case."""
    for t in run.targets:
        results: list[CaseResult] = []
        specs: dict[str, CaseSpec] = {}
        store = None
        for c in run.cases:
            o = run.results.get((c.id, t))
            if o is None or not c.specs or not o.cases:
                continue
            results += o.cases
            specs.update((sp.id, sp) for sp in c.specs)
            store = c.store
        if store is None or not any(r.status == Status.FAIL for r in results):
            continue
        run.diagnoses[t] = diagnose(results, store, target=t, specs=specs)
        run.localisations[t] = localise(results)
