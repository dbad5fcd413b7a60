"""``refimpl check``: every conformance case against every target, as a matrix of outcomes.

Cases (rows):
  * ``fixture:<id>`` — every golden fixture. refimpl is checked on every expectation; another target
    replaces the attention steps of the fixture's computation (sdpa, general/self/multi-head attention)
    and is checked on their outputs.
  * ``vignette:<name>`` — both vignettes run in embedded R; refimpl against every variable they create,
    other targets against their weights and attention.
  * ``r-examples:documented`` — SoftMax, RowMax, ComputeWeights on their documented examples, live in R.
  * ``random-vs-r:<n>`` — a seeded batch of random cases evaluated by the R package in one bridge call;
    each target must agree within the tolerance model (catalogued divergences are "known").

Outcome statuses: pass, FAIL, error (the target raised), known (differs only where a catalogued
divergence applies), skip (with the reason), reference (the target is where the expected values come from).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import r_compat, rbridge, tolerance as tol
from .fixtures import STEP_FUNCTIONS, Fixture, evaluate, load_all, tolerance_of
from .multihead import multi_head_with
from .attention import self_attention_with
from .regen import verify_fixture
from .sources import r_attention as r_src
from .targets import TARGET_DIVERGENCES, Target, TargetUnavailable

__all__ = ["Outcome", "Case", "CheckRun", "collect_cases", "run_check", "ATTENTION_STEPS"]

ATTENTION_STEPS = ("sdpa", "general_attention", "general_attention_matrix", "self_attention", "multi_head_attention")
RANDOM_CASES = 200
RANDOM_SEED = 20261122


@dataclass
class Outcome:
    status: str                        # pass | FAIL | error | known | skip | reference
    max_ratio: float = 0.0             # worst |error| / tolerance over the case's arrays (<= 1 passes)
    max_abs: float = 0.0
    detail: str = ""
    divergences: list[str] = field(default_factory=list)
    heat: dict = field(default_factory=dict)   # name -> (expected, actual) 2-D weights, for the HTML report
    n_arrays: int = 0

    @property
    def failed(self) -> bool:
        return self.status in ("FAIL", "error")


@dataclass
class Case:
    id: str
    group: str
    description: str
    run: Callable[[Target], Outcome]


@dataclass
class CheckRun:
    cases: list[Case]
    targets: list[str]
    results: dict[tuple[str, str], Outcome]
    unavailable: dict[str, str]
    seconds: float

    @property
    def ok(self) -> bool:
        return not any(o.failed for o in self.results.values())


def _summarise(comps: list[tuple[str, tol.Comparison]], known: list[str], heat: dict) -> Outcome:
    if not comps:
        return Outcome("skip", detail="nothing this target returns is checked by this case", divergences=known, heat=heat)
    worst_name, worst = max(comps, key=lambda nc: nc[1].max_ratio)
    bad = [(n, c) for n, c in comps if not c.ok]
    max_abs = max(c.max_abs for _, c in comps)
    if not bad:
        return Outcome("pass", worst.max_ratio, max_abs, f"{len(comps)} arrays; worst {worst_name}: {worst.summary()}",
                       known, heat, len(comps))
    detail = "; ".join(f"{n}: {c.summary()}" for n, c in bad[:4]) + (f"; +{len(bad) - 4} more" if len(bad) > 4 else "")
    if known:
        return Outcome("known", worst.max_ratio, max_abs, f"known divergence {', '.join(known)}: {detail}", known, heat, len(comps))
    return Outcome("FAIL", worst.max_ratio, max_abs, detail, known, heat, len(comps))


def _weights_2d(a):
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        return a[None, :]
    while a.ndim > 2:
        a = a[0]
    return a


# --- fixtures ------------------------------------------------------------------------------------

def _target_functions(target: Target, calls: list):
    def attend(q, k, v, mask=None, scale=None, is_causal=False):
        calls.append((q, k, v, mask))
        return target.attend(q, k, v, mask=mask, scale=scale, is_causal=is_causal)

    def general(query, keys, values, scale=None):
        out, w = attend(np.asarray(query)[None, :], keys, values, scale=scale)
        return out[0], (None if w is None else w[0])

    fns = dict(STEP_FUNCTIONS)
    fns["sdpa"] = attend
    fns["general_attention"] = general
    fns["general_attention_matrix"] = lambda words, w_q, w_k, w_v, scale=None: self_attention_with(
        attend, words, w_q, w_k, w_v, scale=scale)
    fns["self_attention"] = lambda x, w_q, w_k, w_v, **kw: self_attention_with(attend, x, w_q, w_k, w_v, **kw)
    fns["multi_head_attention"] = lambda x, w_q, w_k, w_v, w_o=None, **kw: multi_head_with(
        attend, x, w_q, w_k, w_v, w_o, **kw)
    return fns


def _fixture_case(fx: Fixture) -> Case:
    att_outputs = [n for st in fx.steps if st["fn"] in ATTENTION_STEPS for n in st["out"]]

    def heat_of(env_or_none):
        heat = {}
        for name in att_outputs:
            for e in fx.expected.get(name, []):
                if e["array"] is not None and ("weight" in name or name in ("a1",)) and env_or_none is not None \
                        and env_or_none.get(name) is not None:
                    heat[name] = (_weights_2d(e["array"]), _weights_2d(env_or_none[name]))
                    break
        return heat

    def run(target: Target) -> Outcome:
        if target.is_reference:
            comps = [(f"{n} [{by}]", c) for n, by, c in verify_fixture(fx)]
            return _summarise(comps, [], heat_of(evaluate(fx)))
        calls: list = []
        try:
            env = evaluate(fx, _target_functions(target, calls))
        except TargetUnavailable as e:
            return Outcome("skip", detail=str(e))
        except Exception as e:  # the target raised
            known = sorted({c for q, k, v, m in calls for c in target.known(q, k, v, m)})
            return Outcome("known" if known else "error", math.inf, math.inf,
                           f"{type(e).__name__}: {e}"[:300], known)
        known = sorted({c for q, k, v, m in calls for c in target.known(q, k, v, m)})
        comps = []
        for name in att_outputs:
            if env.get(name) is None:
                continue                                       # the target returns no weights
            for e in fx.expected.get(name, []):
                if e["by"] == "shape":
                    continue
                comps.append((f"{name} [{e['by']}]", tol.compare(env[name], e["array"], tolerance_of(e["tolerance"], e["array"]))))
        return _summarise(comps, known, heat_of(env))

    return Case(f"fixture:{fx.id}", "fixtures", fx.source["part"], run)


# --- R-side cases ---------------------------------------------------------------------------------

def _needs_r():
    a = rbridge.availability()
    if not a.ok:
        raise TargetUnavailable(f"R unavailable: {a.reason}")
    return rbridge.get_bridge()


def _vignette_case(name: str) -> Case:
    runs = f"{name}_attention"
    recompute = r_src.simple_vignette if name == "simple" else r_src.complete_vignette
    scale = 0.5 if name == "simple" else None
    cache: dict = {}

    def run(target: Target) -> Outcome:
        try:
            rb = _needs_r()
        except TargetUnavailable as e:
            return Outcome("skip", detail=str(e))
        if "run" not in cache:
            cache["run"] = rb.run_vignette(runs)
        v = cache["run"].vars
        f = tol.forward(np.float64, 16, 10)
        if target.is_reference:
            py = recompute()
            comps = [(n, tol.compare(py[n], v[n], f)) for n in sorted(v)]
            return _summarise(comps, [], {"weights": (v["weights"], py["weights"])})
        try:
            out, w = target.attend(v["Q"], v["K"], v["V"], scale=scale)
        except TargetUnavailable as e:
            return Outcome("skip", detail=str(e))
        except Exception as e:
            return Outcome("error", math.inf, math.inf, f"{type(e).__name__}: {e}"[:300])
        comps = [("attention", tol.compare(out, v["attention"], tol.forward_for_sdpa(v["Q"], v["K"], v["V"], scale)))]
        heat = {}
        if w is not None:
            comps.append(("weights", tol.compare(w, v["weights"], tol.forward_for_sdpa(v["Q"], v["K"], v["V"], scale, weights=True))))
            heat = {"weights": (v["weights"], w)}
        return _summarise(comps, [], heat)

    title = "Simple" if name == "simple" else "Complete"
    return Case(f"vignette:{runs}", "vignettes", f"vignette '{title} Self-Attention from Scratch', run in R", run)


def _r_examples_case() -> Case:
    def run(target: Target) -> Outcome:
        if not target.is_reference:
            return Outcome("skip", detail="softmax-level examples (SoftMax, RowMax, ComputeWeights) check refimpl only")
        try:
            rb = _needs_r()
        except TargetUnavailable as e:
            return Outcome("skip", detail=str(e))
        from .softmax import softmax
        x = r_src.softmax_example_input()
        m = r_src.rowmax_example_input()
        s = r_src.simple_vignette()["scores"]
        comps = [("SoftMax", tol.compare(softmax(x), rb.call("SoftMax", x).unwrap()[0], tol.forward(np.float64, 12, 1))),
                 ("RowMax", tol.compare(m.max(axis=1, keepdims=True), rb.call("RowMax", m).unwrap()[0], tol.EXACT)),
                 ("ComputeWeights", tol.compare(softmax(s / 2.0), rb.call("ComputeWeights", s).unwrap()[0],
                                                tol.forward(np.float64, 12, 1)))]
        return _summarise(comps, [], {})
    return Case("r-examples:documented", "r-examples", "documented examples of SoftMax, RowMax, ComputeWeights, live in R", run)


def random_cases(n: int = RANDOM_CASES, seed: int = RANDOM_SEED) -> list[tuple]:
    """Seeded random (Q, K, V, mask) with 1-6 queries, 2-6 keys, 1-5 features; a 0/1 mask in 30%."""
    rng = np.random.RandomState(seed)
    cases = []
    for _ in range(n):
        nq, nk, d, dv = rng.randint(1, 7), rng.randint(2, 7), rng.randint(1, 6), rng.randint(1, 6)
        mag = [1.0, 3.0, 10.0][rng.randint(3)]
        q, k, v = (rng.uniform(-mag, mag, size=s) for s in ((nq, d), (nk, d), (nk, dv)))
        mask = (rng.uniform(size=(nq, nk)) < 0.8).astype(np.float64) if rng.uniform() < 0.3 else None
        cases.append((q, k, v, mask))
    return cases


def _random_case(n: int) -> Case:
    cache: dict = {}

    def run(target: Target) -> Outcome:
        if target.name == "r":
            return Outcome("reference", detail="the R package is where this batch's expected values come from")
        try:
            rb = _needs_r()
        except TargetUnavailable as e:
            return Outcome("skip", detail=str(e))
        cases = random_cases(n)
        if "r" not in cache:
            cache["r"] = rb.batch("attention", cases, ("Q", "K", "V", "mask"))
        counts = {"pass": 0, "known": 0, "FAIL": 0}
        worst, worst_abs, details, known_all = 0.0, 0.0, [], set()
        for i, ((q, k, v, m), r) in enumerate(zip(cases, cache["r"])):
            known = r_compat.attention_divergences(q, k, v, m)
            if r.error is not None:
                counts["known" if known else "FAIL"] += 1
                continue
            out_r, w_r = r.value
            try:
                out, w = target.attend(q, k, v, mask=None if m is None else m.astype(bool))
            except TargetUnavailable as e:
                return Outcome("skip", detail=str(e))
            except Exception as e:
                counts["FAIL"] += 1
                details.append(f"case {i}: {type(e).__name__}: {e}"[:200])
                continue
            known = sorted(set(known) | set(target.known(q, k, v, None if m is None else m.astype(bool))))
            comps = [tol.compare(out, out_r, tol.forward_for_sdpa(q, k, v))]
            if w is not None:
                comps.append(tol.compare(w, w_r, tol.forward_for_sdpa(q, k, v, weights=True)))
            ok = all(c.ok for c in comps)
            ratio = max(c.max_ratio for c in comps)
            if ok:
                counts["pass"] += 1
                worst = max(worst, ratio)
                worst_abs = max(worst_abs, max(c.max_abs for c in comps))
            elif known:
                counts["known"] += 1
                known_all.update(known)
            else:
                counts["FAIL"] += 1
                worst = max(worst, ratio)
                worst_abs = max(worst_abs, max(c.max_abs for c in comps))
                details.append(f"case {i} (q {q.shape}, k {k.shape}, mask {'yes' if m is not None else 'no'}): "
                               f"{comps[0].summary()}")
        summary = f"{n} cases: {counts['pass']} pass, {counts['known']} known ({', '.join(sorted(known_all)) or '-'}), {counts['FAIL']} FAIL"
        status = "FAIL" if counts["FAIL"] else "pass"
        return Outcome(status, worst, worst_abs, summary + ("; " + "; ".join(details[:3]) if details else ""),
                       sorted(known_all), n_arrays=n)

    return Case(f"random-vs-r:{n}", "random-vs-r", f"{n} seeded random cases cross-checked against the R package", run)


# --- running ---------------------------------------------------------------------------------------

def collect_cases(random_n: int = RANDOM_CASES, sources: list[str] | None = None) -> list[Case]:
    cases = [_fixture_case(fx) for fx in load_all(sources=sources)]
    cases += [_vignette_case("simple"), _vignette_case("complete"), _r_examples_case()]
    if random_n > 0:
        cases.append(_random_case(random_n))
    return cases


def run_check(targets: list[Target], unavailable: dict[str, str], cases: list[Case],
              progress: Callable[[str], None] | None = None) -> CheckRun:
    t0 = time.perf_counter()
    results = {}
    total = len(cases) * len(targets)
    done = 0
    for case in cases:
        for target in targets:
            if progress is not None:
                progress(f"[{done + 1}/{total}] {case.id} x {target.name} ...")
            try:
                results[(case.id, target.name)] = case.run(target)
            except Exception as e:  # a harness bug or an R fault must not lose the other results
                results[(case.id, target.name)] = Outcome("error", math.inf, math.inf,
                                                          f"harness: {type(e).__name__}: {e}"[:300])
            done += 1
            if progress is not None:
                progress(f"[{done}/{total}] {case.id} x {target.name}: {results[(case.id, target.name)].status}")
    for name, reason in unavailable.items():
        for case in cases:
            results[(case.id, name)] = Outcome("skip", detail=reason)
    names = [t.name for t in targets] + list(unavailable)
    return CheckRun(cases, names, results, unavailable, time.perf_counter() - t0)


DIVERGENCE_TITLES = {**r_compat.DIVERGENCES, **TARGET_DIVERGENCES}
