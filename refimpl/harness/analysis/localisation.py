"""Where a target's failures are: ``fails only when: X`` when a condition X (a boolean case feature, a size
threshold searched from the cases, or a pair of features) holds on every failing case and on no passing one;
otherwise ``fails mostly when: X`` with the share of the failures it explains (see :func:`localise`)."""
from __future__ import annotations

from itertools import combinations

from ..cases import Status
from ..cases.features import CaseSpec

__all__ = ["localise"]


SIZES = ("Sq", "Sk", "D", "Dv", "B", "Hq")          # searched thresholds: the smallest (largest) size that fails


def _thresholds(failing: list, passing: list) -> dict[str, tuple[list[bool], list[bool]]]:
    """``{"Sk >= 33": (true on each failing case, true on each passing case), ...}``: for each size, the
    smallest value among the failing cases (``>=``) and the largest (``<=``), when that bound excludes some
    case: thresholds searched from the cases, not taken from a fixed list."""
    out = {}
    for size in SIZES:
        f, p = [getattr(s, size) for s in failing], [getattr(s, size) for s in passing]
        lo, hi = min(f), max(f)
        if min(f + p) < lo:
            out[f"{size} >= {lo}"] = ([x >= lo for x in f], [x >= lo for x in p])
        if max(f + p) > hi:
            out[f"{size} <= {hi}"] = ([x <= hi for x in f], [x <= hi for x in p])
    return out


def localise(results: list, specs: dict[str, CaseSpec] | None = None) -> str:
    """Where the failures are. ``fails only when: X`` only when X holds on every failing case and on no passing
    one: a boolean case feature, a searched size threshold (``Sk >= 33``, with ``specs``: id -> spec), then a
    pair of features; otherwise ``fails mostly when: X (true on a/b failing, c/d passing cases)`` for the
    condition with the largest (share of failing) - (share of passing) it is true on. Features true on every
    case are ignored; a case never called (the target stopped by its call policy, "not called: ...") says
    nothing of where the target fails and is not counted. ``fails on every case (N)`` when none passed; ""
    when nothing failed."""
    fail_r = [r for r in results if Status(r.status).failed and r.features and not r.detail.startswith("not called")]
    pass_r = [r for r in results if r.status == Status.PASS and r.features]
    failing, passing = [r.features for r in fail_r], [r.features for r in pass_r]
    if not failing:
        return ""
    everywhere = {n for f in failing + passing for n in f if all(g.get(n) is True for g in failing + passing)}
    names = sorted({n for f in failing + passing for n, x in f.items() if isinstance(x, bool)} - everywhere)
    truth = {n: ([bool(f.get(n, False)) for f in failing], [bool(f.get(n, False)) for f in passing]) for n in names}
    if specs is not None and all(r.id in specs for r in fail_r + pass_r):
        truth.update(_thresholds([specs[r.id] for r in fail_r], [specs[r.id] for r in pass_r]))
    n_fail, n_pass = len(failing), len(passing)
    if not n_pass:
        return f"fails on every case ({n_fail}): nothing passed to compare with"
    exact = [n for n, (f, p) in truth.items() if all(f) and not any(p)]
    if exact:
        return "fails only when: " + exact[0]
    for a, b in combinations(names, 2):
        f = [x and y for x, y in zip(truth[a][0], truth[b][0])]
        p = [x and y for x, y in zip(truth[a][1], truth[b][1])]
        if all(f) and not any(p):
            return f"fails only when: {a} and {b}"
    best = max(truth, key=lambda n: (sum(truth[n][0]) / n_fail - sum(truth[n][1]) / max(n_pass, 1),
                                     sum(truth[n][0])), default=None)
    if best is None or not any(truth[best][0]):
        return f"fails when: no condition separates the {n_fail} failing from the {n_pass} passing cases"
    f, p = truth[best]
    return (f"fails mostly when: {best} (true on {sum(f)}/{n_fail} failing, {sum(p)}/{n_pass} passing cases, "
            f"{sum(f) / n_fail:.0%} of the failures)")
