"""``refimpl check``: every conformance case against every target, as a matrix of outcomes.

Rows come from :mod:`.fixture_cases` (every golden fixture) and :mod:`.r_cases` (the vignettes, the R
package's documented examples, a seeded random batch cross-checked against R). Cells are
:class:`~refimpl.harness.cases.Outcome`\\ s; a run interrupted by Ctrl-C keeps the cells it finished.
"""
from __future__ import annotations

import math
import time
from typing import Callable

from ...fixtures.schema import load_all
from ..cases import Case, CheckRun, Outcome, Status
from ..cases.families import select, shard as shard_ids
from .family_cases import CaseStore, family_case
from .fixture_cases import fixture_case
from .r_cases import RANDOM_CASES, r_examples_case, random_case, vignette_case
from ..targets.target import Target

__all__ = ["CheckRun", "collect_cases", "run_check", "close_targets", "CHECKED"]

# A cell checks something when the target's result was compared (or the target failed); skip, n/a,
# reference and unsupported cells check nothing.
R_GROUPS = frozenset({"vignettes", "r-examples", "random-vs-r"})     # rows whose expected values R computes
CHECKED = (Status.PASS, Status.FAIL, Status.KNOWN, Status.ERROR, Status.CRASH, Status.TIMEOUT, Status.OOM,
           Status.NONDETERMINISTIC)


def collect_cases(random_n: int = RANDOM_CASES, sources: list[str] | None = None, *,
                  families: list[str] | None = None, suite: str = "default",
                  dtypes: tuple[str, ...] = ("float64", "float32"), shard: tuple[int, int] | None = None,
                  masked_rows: str | None = None, caller=None, progress=None, grad: bool = False,
                  backward=None, r_rows: bool = True) -> list[Case]:
    """The rows of a check: fixtures, vignettes, R examples, the random batch against R, and the case families
    (``families=[]`` leaves them out; None takes them all). ``shard=(k, n)`` keeps shard k of n of every row's
    family cases (the fixed rows run in shard 1 only). ``r_rows=False`` (a user's check without the ``r`` column):
    the vignettes judged against refimpl's recomputation, R never started, no row of R's documented examples."""
    cases = []
    if shard is None or shard[0] == 1:
        cases += [fixture_case(fx) for fx in load_all(sources=sources)]
        cases += [vignette_case("simple", r_rows), vignette_case("complete", r_rows)]
        cases += [r_examples_case()] if r_rows else []
        if random_n > 0:
            cases.append(random_case(random_n))
    if families == []:
        return cases
    specs = select(families, suite, dtypes)
    if shard is not None:
        keep = shard_ids([s.id for s in specs], *shard)
        specs = [s for s in specs if s.id in keep]
    store = CaseStore()
    for name in dict.fromkeys(s.family for s in specs):
        cases.append(family_case(name, [s for s in specs if s.family == name], store, masked_rows, caller, progress))
    if grad or backward is not None:
        from .grad_cases import grad_case
        for name in dict.fromkeys(s.family for s in specs):
            cases.append(grad_case(name, [s for s in specs if s.family == name], store, backward, progress))
    return cases


def run_check(targets: list[Target], unavailable: dict[str, str], cases: list[Case],
              progress: Callable[[str], None] | None = None, *, deadline: float | None = None,
              deadline_text: str = "") -> CheckRun:
    """Every case against every target. Past ``deadline`` (a ``time.monotonic()``, the run's --deadline, named
    ``deadline_text``) no more rows are run: their cells are ``not run``, no verdict, the run incomplete (a user
    target's worker also stops calling at that time, inside a row: :mod:`..targets.call_policy`)."""
    t0 = time.perf_counter()
    results: dict[tuple[str, str], Outcome] = {}
    total, done, interrupted = len(cases) * len(targets), 0, False
    say = progress or (lambda msg: None)
    tick = getattr(progress, "tick", None)                 # the progress line (reports.progress.Progress)
    units = {c.id: max(1, len(c.specs)) for c in cases}    # a family row counts its cases
    all_units, units_done, failed = sum(units.values()) * len(targets), 0, 0
    if tick is not None:
        tick(0, all_units, 0)
    # rows that need R run last (the report keeps the cases' order): R's probe, started in the background by the
    # check, is answered by then, and a run without R rows never waits for it
    order = sorted(cases, key=lambda c: c.group in R_GROUPS)
    try:
        for case in order:
            for target in targets:
                say(f"[{done + 1}/{total}] {case.id} x {target.name} ...")
                if deadline is not None and time.monotonic() >= deadline:
                    results[(case.id, target.name)] = Outcome(
                        Status.NOT_RUN, detail=f"not run: the run's --deadline of {deadline_text} passed")
                    done += 1
                    continue
                try:
                    results[(case.id, target.name)] = case.run(target)
                except Exception as e:  # a harness bug or an R fault must not lose the other results
                    results[(case.id, target.name)] = Outcome(Status.ERROR, math.inf, math.inf,
                                                              f"harness: {type(e).__name__}: {e}"[:300])
                done += 1
                say(f"[{done}/{total}] {case.id} x {target.name}: {results[(case.id, target.name)].status}")
                if tick is not None:
                    o = results[(case.id, target.name)]
                    units_done += units[case.id]
                    failed += sum(Status(r.status).failed for r in o.cases) if o.cases else int(o.failed)
                    tick(units_done, all_units, failed)
    except KeyboardInterrupt:
        interrupted = True
        cases = [c for c in cases if any((c.id, t.name) in results for t in targets)]
        for c in cases:
            for t in targets:
                results.setdefault((c.id, t.name), Outcome(Status.SKIP, detail="not run: interrupted (Ctrl-C)"))
    for name, reason in unavailable.items():
        for case in cases:
            results[(case.id, name)] = Outcome(Status.SKIP, detail=reason)
    names = [t.name for t in targets] + list(unavailable)
    run = CheckRun(cases, names, results, unavailable, time.perf_counter() - t0, interrupted)
    if not interrupted:
        run.nothing_checked = _nothing_checked(run)
    return run


def _nothing_checked(run: CheckRun) -> str:
    """"" when some cell of ``run`` is in :data:`CHECKED`; otherwise why nothing was (no cases or no targets
    included, the unavailable targets' reasons, then the first distinct cell details): such a run is not a pass."""
    if any(Status(o.status) in CHECKED for o in run.results.values()):
        return ""
    why = [f"target {n}: unavailable — {r}" for n, r in run.unavailable.items()]
    if not run.cases:
        why.append("no cases were selected")
    elif not run.targets:
        why.append("no targets were selected")
    details = dict.fromkeys(f"{o.status}: {o.detail}" for k, o in sorted(run.results.items())
                            if k[1] not in run.unavailable)
    why += list(details)[:3]
    return (f"NOTHING CHECKED: every one of the {len(run.results)} cells of {len(run.cases)} cases x "
            f"{len(run.targets)} targets is skip, n/a, reference or unsupported, so this run is not a "
            f"pass; why: " + "; ".join(why)[:600])


def close_targets(targets: list[Target]) -> None:
    """End what targets hold open (worker processes, the Node process of onnxruntime); never raises."""
    for target in targets:
        close = getattr(target.fn, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # a target that cannot be closed must not lose the report
                pass
