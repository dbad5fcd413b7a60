"""``family:<name>`` rows: a case family (refimpl.harness.cases.families) run on a target, one verdict per case.

The row's cell aggregates its cases: FAIL when any case fails (the detail names the first failing cases
with their shapes and features), pass otherwise; n/a cases (features the target's API cannot express)
and unsupported ones (the target raised NotImplementedError) are counted, not failed. Each case's
result is kept in ``Outcome.cases`` for the JSON report, diagnosis and localisation.
"""
from __future__ import annotations

import math
import os
import re
import traceback as tb_mod
from collections import Counter
from typing import Callable

import numpy as np

from ...errors import Unavailable
from .. import apis
from ..apis import keep_mask, call, expressible
from ..cases import Case, Outcome, Status, TargetDied
from ..verdicts.determinism import repeat_calls
from ..cases.features import CaseData, CaseSpec, materialise
from ..cases.families import FAMILIES
from ..verdicts.judge import CaseResult, judge
from ..targets.target import Target

__all__ = ["CaseStore", "family_case", "run_one", "target_traceback"]


class CaseStore:
    """Materialised cases, shared by every target of a run (inputs and expected values made once)."""

    def __init__(self) -> None:
        self._data: dict[str, CaseData] = {}
        self._lowp: dict[str, dict] = {}

    CACHE_BYTES = 2 * 2**20      # larger cases (decode's long key sequences) are made again when needed

    def get(self, spec: CaseSpec) -> CaseData:
        if spec.id in self._data:
            return self._data[spec.id]
        data = materialise(spec)
        if spec.long or data.k.nbytes + data.v.nbytes <= self.CACHE_BYTES:   # long ones are slow to make: kept
            self._data[spec.id] = data
        return data

    def cache(self, spec: CaseSpec) -> dict:
        return self._lowp.setdefault(spec.id, {})


def _catalogued(target: Target, data: CaseData, res: CaseResult, raised: Exception | None,
                masked_rows: str | None, given: str, cache: dict) -> CaseResult:
    """A catalogued divergence excuses only the rows it explains, and only where the target reproduces the
    catalogued behaviour there (``target.predict``); everything else is judged as usual, the weights of the other
    rows too."""
    keep = keep_mask(data.spec, data.mask)
    keep = None if keep is None else np.broadcast_to(keep, data.expected.shape[:-1] + (data.spec.Sk,))
    codes = target.known(data.q, data.k, data.v, keep)
    if not codes or target.predict is None:
        return res
    try:
        predicted = target.predict(data.q, data.k, data.v, keep)
    except Exception as e:  # the catalogue says the package fails here
        if raised is not None:
            what = f"known {', '.join(codes)}: {type(e).__name__}: {e}"
            return CaseResult(res.id, Status.KNOWN, math.inf, what[:300], features=res.features)
        return res
    if raised is not None or res.got is None:
        return res
    with np.errstate(invalid="ignore"):
        differs = ~np.isclose(predicted, data.expected, rtol=1e-9, atol=1e-12).all(axis=-1)   # (B, Hq, Sq)
    if not differs.any():
        return res
    weights, got_w = data.weights, getattr(res.got, "weights", None)
    if weights is not None and got_w is not None and np.shape(got_w) == weights.shape:
        weights = np.where(differs[..., None], got_w, weights)   # the explained rows' weights diverge with them
    alt = CaseData(data.spec, data.q, data.k, data.v, data.mask, data.slopes,
                   np.where(differs[..., None], predicted, data.expected), data.dead & ~differs, weights=weights,
                   absent=data.absent)
    again = judge(alt, res.got, given, masked_rows=masked_rows, cache={})
    if again.status != Status.PASS:
        return res
    again.status, again.detail = Status.KNOWN, f"known {', '.join(codes)} on {int(differs.sum())} rows"
    return again


def target_traceback(e: BaseException) -> str:
    """The target's own traceback: the worker's (``e.target_traceback``, set by the isolation proxy), else this
    exception's frames from the first one outside refimpl/harness ("" when it was raised by the harness)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # refimpl/harness
    given = getattr(e, "target_traceback", None)
    if given is not None:                         # drop the worker's frames in this package (isolation.py's call)
        return re.sub(r'  File "' + re.escape(here) + r'/[^\n]*\n(    [^\n]*\n)*', "", given)
    tb = e.__traceback__
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(here + os.sep):
        tb = tb.tb_next
    return "" if tb is None else "".join(tb_mod.format_exception(type(e), e, tb))


def run_one(target: Target, spec: CaseSpec, store: CaseStore, masked_rows: str | None = None,
            caller: Callable | None = None, pre=None) -> CaseResult:
    """One case on one target: n/a, unsupported, error, or the judge's verdict. ``caller(target, data)``
    replaces the in-process call (the isolated worker); ``pre`` is what a batched call already returned (or raised)."""
    why = expressible(target.api, spec) or (target.expressible(spec) if target.expressible else None)
    if why is None and target.dropout and spec.long:
        why = "--dropout: a long case has no oracle weights to replay a dropout pattern on"
    if why is not None:
        return CaseResult(spec.id, Status.NA, detail=why, features=spec.features())
    masked_rows = masked_rows or apis.get(target.api).dead_rows     # an API that documents its rows pins them
    try:
        data = store.get(spec)
    except Exception as e:  # the harness could not build this case: its verdict, not the row's
        return CaseResult(spec.id, Status.ERROR, math.inf, f"harness: inputs not built: {type(e).__name__}: {e}"[:300],
                          features=spec.features())
    try:
        def once():
            if caller:
                return caller(target, data)
            return call(target.fn, target.api, data, layout=target.layout, torch=target.torch, lse=target.lse,
                        trusted=target.is_reference, dropout=target.dropout)
        if isinstance(pre, BaseException):
            raise pre
        got = pre if pre is not None else once()
        repeated = None
        if target.repeat > 1 and not isinstance(got, CaseResult):     # --repeat N: bitwise the same N times
            repeated = repeat_calls(once, got, target.repeat)
    except TargetDied as e:
        return CaseResult(spec.id, Status(e.status), math.inf, str(e)[:300], features=spec.features(),
                          traceback=target_traceback(e))
    except NotImplementedError as e:
        return CaseResult(spec.id, Status.UNSUPPORTED, detail=f"NotImplementedError: {e}"[:200],
                          features=spec.features())
    except Unavailable:
        raise
    except Exception as e:  # the target raised, or returned something unusable
        res = CaseResult(spec.id, Status.ERROR, math.inf, f"{type(e).__name__}: {e}"[:300], features=spec.features(),
                         traceback=target_traceback(e))
        return _catalogued(target, data, res, e, masked_rows, "", {}) if target.predict else res
    if isinstance(got, CaseResult):                     # the worker's crash/timeout/oom verdict
        got.features = spec.features()
        return got
    given = target.given_dtype(spec.dtype)
    res = judge(data, got, given, masked_rows=masked_rows, cache=store.cache(spec))
    if repeated is not None:
        if res.status == Status.PASS:
            res.status, res.detail = Status.NONDETERMINISTIC, repeated
        else:
            res.detail = f"{res.detail}; {repeated}"
    if getattr(got, "warnings", None):                  # R functions' warnings, per case
        res.detail = (res.detail + "; " if res.detail else "") + "R warnings: " + " | ".join(got.warnings)[:200]
    if res.status == Status.FAIL and target.predict is not None:
        res = _catalogued(target, data, res, None, masked_rows, given, store.cache(spec))
    return res


KEEP_PASSING_OUTPUTS = 20   # per family and target: what diagnosis compares on the passing side


def _aggregate(results: list[CaseResult], specs: dict[str, CaseSpec]) -> Outcome:
    passing = [r for r in results if r.status == Status.PASS]
    for r in passing[KEEP_PASSING_OUTPUTS:]:
        r.got = None                                     # memory: a target's outputs are kept only where needed
    counts = Counter(r.status for r in results)
    bad = [r for r in results if Status(r.status).failed]
    judged = [r for r in results if r.status in (Status.PASS, Status.FAIL)]
    worst = max((r.ratio for r in judged), default=0.0)
    ordered = sorted(counts.items(), key=lambda x: x[0].value)
    summary = f"{len(results)} cases: " + ", ".join(f"{n} {s}" for s, n in ordered)
    conventions: dict = {}
    for key, conv in (("masked-rows", Counter(r.convention for r in results if r.convention)),
                      ("lse-dead", Counter(r.lse_convention for r in results if r.lse_convention))):
        if conv:                                         # the policy, and how many cases showed each (a mix)
            conventions[key] = conv.most_common(1)[0][0]
            conventions[f"{key}-counts"] = dict(conv)
    if any(r.returned_weights for r in results):
        conventions["returns"] = "output+weights"
    elif judged:
        conventions["returns"] = "output"
    if bad:
        details = [f"{r.id} ({specs[r.id].describe()}): {r.status}: {r.detail}" for r in bad[:3]]
        status = Status.FAIL if any(r.status == Status.FAIL for r in bad) else Status(bad[0].status)
        return Outcome(status, worst, 0.0, summary + "; " + "; ".join(details), n_arrays=len(results), cases=results,
                       conventions=conventions)
    if counts[Status.NOT_RUN]:                           # the deadline passed inside the row: no verdict on it
        first = next(r for r in results if r.status == Status.NOT_RUN)
        return Outcome(Status.NOT_RUN, worst, 0.0, f"{summary}; {first.detail}", n_arrays=len(results),
                       cases=results, conventions=conventions)
    if not judged:
        return Outcome(Status.NA if counts[Status.NA] else Status.SKIP, detail=summary, cases=results,
                       conventions=conventions)
    return Outcome(Status.PASS, worst, 0.0, summary, n_arrays=len(results), cases=results, conventions=conventions)


def _batched(target: Target, specs: list[CaseSpec], store: CaseStore) -> dict:
    """A target whose ``fn`` has ``batch`` (R functions: refimpl.harness.targets.r_targets) gets the row's expressible
    cases in one call: case id -> what it returned or raised."""
    batch, more = getattr(target.fn, "batch", None), getattr(target, "expressible", None)
    if not callable(batch):
        return {}
    todo = [s for s in specs if expressible(target.api, s) is None and not (more and more(s))]
    try:
        got = batch([store.get(s) for s in todo])
    except Exception as e:  # the whole batch died (a crash or hang in the worker): every case of it says so
        got = [e] * len(todo)
    return dict(zip((s.id for s in todo), got))


def family_case(name: str, specs: list[CaseSpec], store: CaseStore, masked_rows: str | None = None,
                caller: Callable | None = None, progress: Callable[[str], None] | None = None) -> Case:
    by_id = {s.id: s for s in specs}

    def run(target: Target) -> Outcome:
        results, pre = [], _batched(target, specs, store)
        partial = getattr(progress, "partial", None)            # the progress line's count inside the row
        failed = 0
        for i, spec in enumerate(specs):
            if progress is not None and i % 100 == 99:
                progress(f"family:{name} x {target.name}: {i + 1}/{len(specs)} cases ...")
            results.append(run_one(target, spec, store, masked_rows, caller, pre.get(spec.id)))
            failed += Status(results[-1].status).failed
            if partial is not None and i % 10 == 9:
                partial(i + 1, failed)
        out = _aggregate(results, by_id)
        warned = [r for r in results if "R warnings: " in r.detail]
        if warned:
            first = warned[0].detail.split('R warnings: ')[1]
            out.detail += f"; R warnings in {len(warned)} cases ({warned[0].id}: {first})"
        return out

    return Case(f"family:{name}", "families", FAMILIES[name].doc, run, specs=specs, store=store)
