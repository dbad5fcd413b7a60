"""Cases whose expected values come from R, live through the bridge.

* ``vignette:<name>`` — both vignettes run in embedded R; refimpl against every variable they create,
  other targets against their weights and attention.
* ``r-examples:documented`` — SoftMax, RowMax, ComputeWeights on their documented examples.
* ``random-vs-r:<n>`` — a seeded batch of random cases evaluated by the R package in one bridge call;
  each target must agree within the tolerance model (catalogued divergences are "known").

:func:`compare_with_r` is the one refimpl-vs-R verdict of a single case; the cross-language tests use it too.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np

from ... import tolerance as tol
from ...errors import Unavailable
from ...r import bridge, compat as r_compat
from ...softmax import softmax
from ...sources import vignettes
from ...precision import get as precision
from ..cases import Case, Outcome, Status, TargetDied, error_outcome, summarise
from ..targets.target import Target

__all__ = ["vignette_case", "r_examples_case", "random_case", "random_cases", "compare_with_r",
           "RANDOM_CASES", "RANDOM_SEED"]

RANDOM_CASES = 200
RANDOM_SEED = 20261122


def _skip(e: Unavailable) -> Outcome:
    return Outcome(Status.SKIP, detail=f"R unavailable: {e}")


def _r_failure(e: Exception) -> str:
    """Why R's run failed, the cause first (R's own message, one line)."""
    msg = " ".join((e.r_message if isinstance(e, bridge.RError) else f"{type(e).__name__}: {e}").split())
    hint = ("; the vignette's setup chunk calls knitr::opts_chunk$set: install knitr (Debian r-cran-knitr)"
            if "knitr" in msg else "")
    return f"R could not run the vignette: {msg[:240]}{hint}"


def vignette_case(name: str, with_r: bool = True) -> Case:
    """refimpl's cell: refimpl against the vignette recomputed in Python, and that recomputation against every
    variable of R's run where R ran (refimpl's verdict never depends on R). Other targets: against R's run;
    skip, with the cause, where R is unavailable or could not run the vignette (e.g. knitr missing).
    ``with_r=False`` (a user's check without the ``r`` column): every target against the recomputation (the
    one R's run is compared with wherever R runs), and R is not started."""
    runs = f"{name}_attention"
    recompute = vignettes.simple_vignette if name == "simple" else vignettes.complete_vignette
    scale = 0.5 if name == "simple" else None
    cache: dict = {}

    def r_run() -> tuple:
        """(R's VignetteRun or None, why not); once per case."""
        if "run" not in cache and not with_r:
            cache["run"] = (None, "R not asked: the R column and R's run join with --with r")
        if "run" not in cache:
            try:
                cache["run"] = (bridge.require_r().run_vignette(runs), "")
            except Unavailable as e:
                cache["run"] = (None, f"R unavailable: {e}")
            except Exception as e:  # an R error, or R's answer unusable: the reason, not a harness error
                cache["run"] = (None, _r_failure(e))
        return cache["run"]

    def attend(target: Target, x: dict):
        q, k, v = x["Q"], x["K"], x["V"]
        out, w = target.attend(q, k, v, scale=scale)
        comps = [("attention", tol.compare(out, x["attention"], tol.forward_for_sdpa(q, k, v, scale)))]
        if w is not None:
            comps.append(("weights", tol.compare(w, x["weights"], tol.forward_for_sdpa(q, k, v, scale, weights=True))))
        return comps, ({"weights": (x["weights"], w)} if w is not None else {})

    def run(target: Target) -> Outcome:
        r, why = r_run()
        if target.is_reference:
            py = recompute()
            try:
                comps, heat = attend(target, py)
            except Exception as e:
                return error_outcome(e)
            if r is not None:
                f = tol.forward(np.float64, 16, 10)
                comps += [(f"R {n}", tol.compare(py[n], r.vars[n], f)) for n in sorted(r.vars)]
            o = summarise(comps, [], heat)
            o.detail += (f"; R's run: its {len(r.vars)} variables compared" if r is not None
                         else f"; R not compared ({why})")
            return o
        if r is None and with_r:
            return Outcome(Status.SKIP, detail=why)
        if precision(target.precision).low:
            return Outcome(Status.NA, detail=f"computes in {target.precision}; the vignette's values are float64")
        try:
            comps, heat = attend(target, r.vars if r is not None else recompute())
        except Unavailable as e:
            return Outcome(Status.SKIP, detail=str(e))
        except Exception as e:
            return error_outcome(e)
        return summarise(comps, [], heat)

    title = "Simple" if name == "simple" else "Complete"
    return Case(f"vignette:{runs}", "vignettes", f"vignette '{title} Self-Attention from Scratch', run in R", run)


def r_examples_case() -> Case:
    def run(target: Target) -> Outcome:
        if not target.is_reference:
            return Outcome(Status.SKIP,
                           detail="softmax-level examples (SoftMax, RowMax, ComputeWeights) check refimpl only")
        try:
            rb = bridge.require_r()
        except Unavailable as e:
            return _skip(e)
        x, m = vignettes.softmax_example_input(), vignettes.rowmax_example_input()
        s = vignettes.simple_vignette()["scores"]
        f = tol.forward(np.float64, 12, 1)
        comps = [("SoftMax", tol.compare(softmax(x), rb.call("SoftMax", x).unwrap()[0], f)),
                 ("RowMax", tol.compare(m.max(axis=1, keepdims=True), rb.call("RowMax", m).unwrap()[0], tol.EXACT)),
                 ("ComputeWeights", tol.compare(softmax(s / 2.0), rb.call("ComputeWeights", s).unwrap()[0], f))]
        return summarise(comps, [], {})
    return Case("r-examples:documented", "r-examples",
                "documented examples of SoftMax, RowMax, ComputeWeights, live in R", run)


def random_cases(n: int = RANDOM_CASES, seed: int = RANDOM_SEED) -> list[tuple]:
    """Seeded random (Q, K, V, mask) with 1-6 queries, 2-6 keys, 1-5 features; a 0/1 mask in 30%."""
    rng = np.random.RandomState(seed)
    cases: list[tuple] = []
    for _ in range(n):
        nq, nk, d, dv = rng.randint(1, 7), rng.randint(2, 7), rng.randint(1, 6), rng.randint(1, 6)
        mag = [1.0, 3.0, 10.0][rng.randint(3)]
        q, k, v = (rng.uniform(-mag, mag, size=s) for s in ((nq, d), (nk, d), (nk, dv)))
        mask = (rng.uniform(size=(nq, nk)) < 0.8).astype(np.float64) if rng.uniform() < 0.3 else None
        cases.append((q, k, v, mask))
    return cases


def compare_with_r(q, k, v, out, w, out_r, w_r) -> list[tuple[str, tol.Comparison]]:
    """A target's (out, weights or None) against R's on one case, under the forward bound."""
    comps = [("output", tol.compare(out, out_r, tol.forward_for_sdpa(q, k, v)))]
    if w is not None:
        comps.append(("weights", tol.compare(w, w_r, tol.forward_for_sdpa(q, k, v, weights=True))))
    return comps


def _excused_rows(q, k, v, keep, out, w, r_value, comps) -> list:
    """Where R diverges from refimpl (a catalogued divergence), the target is judged against refimpl there (a
    query with no key: any accepted convention, zeros, NaN or uniform) and against R on every other row."""
    from ...attention import scaled_dot_product_attention
    out_r, w_r = r_value
    ref, ref_w = scaled_dot_product_attention(q, k, v, mask=keep)
    with np.errstate(invalid="ignore"):
        diverged = ~np.isclose(out_r, ref, rtol=1e-9, atol=1e-12).all(axis=-1) | np.isnan(out_r).any(axis=-1)
    if not diverged.any():
        return comps
    dead = ~(ref_w > 0).any(axis=-1)
    out = np.asarray(out, np.float64)
    mean_v = np.broadcast_to(v.mean(axis=-2, keepdims=True), out.shape)
    conv_ok = np.all(out == 0, axis=-1) | np.all(np.isnan(out), axis=-1) | np.isclose(out, mean_v).all(axis=-1)
    t_out = tol.forward_for_sdpa(q, k, v)
    new = [("output [rows R agrees on]", tol.compare(out[~diverged], out_r[~diverged], t_out)),
           ("output [rows R diverges on, vs refimpl]", tol.compare(np.where(dead[:, None] & conv_ok[:, None], ref, out)
                                                                   [diverged], ref[diverged], t_out))]
    if w is not None:
        t_w = tol.forward_for_sdpa(q, k, v, weights=True)
        new.append(("weights [rows R agrees on]", tol.compare(w[~diverged], w_r[~diverged], t_w)))
        rows = diverged & ~dead
        new.append(("weights [rows R diverges on, vs refimpl]", tol.compare(w[rows], ref_w[rows], t_w)))
    return new


def _one_random(target: Target, i: int, case: tuple, r) -> Outcome:
    q, k, v, m = case
    keep = None if m is None else m.astype(bool)
    known = r_compat.attention_divergences(q, k, v, m)
    if r.error is not None and not known:
        return Outcome(Status.FAIL, detail=f"case {i}: R error outside the catalogue: {r.error}")
    try:
        out, w = target.attend(q, k, v, mask=keep)
    except Unavailable as e:
        return Outcome(Status.NA, detail=f"case {i}: {e}")
    except TargetDied as e:                     # crash, timeout, oom: that verdict, not a FAIL
        return error_outcome(e, prefix=f"case {i}: ")
    except Exception as e:
        return Outcome(Status.FAIL, math.inf, math.inf, f"case {i}: {type(e).__name__}: {e}"[:200])
    if r.error is not None:                     # R fails here as catalogued: the target is judged against refimpl
        from ...attention import scaled_dot_product_attention
        ref, ref_w = scaled_dot_product_attention(q, k, v, mask=keep)
        o = summarise(compare_with_r(q, k, v, out, w, ref, ref_w), [], {})
        o.detail = f"case {i} (R fails: {', '.join(known)}; judged against refimpl): {o.detail}"
        return o
    known = sorted(set(known) | set(target.known(q, k, v, keep)))
    comps = compare_with_r(q, k, v, out, w, *r.value)
    if known:                                   # excuse only the rows the catalogue explains, and only if right there
        comps = _excused_rows(q, k, v, keep, out, w, r.value, comps)
        known = []
    o = summarise(comps, known, {})
    if o.status == Status.FAIL:
        o.detail = (f"case {i} (q {q.shape}, k {k.shape}, mask {'yes' if m is not None else 'no'}): "
                    f"{comps[0][1].summary()}")
    return o


def random_case(n: int) -> Case:
    cache: dict = {}

    def run(target: Target) -> Outcome:
        if target.name == "r":
            return Outcome(Status.REFERENCE, detail="the R package is where this batch's expected values come from")
        if precision(target.precision).low:
            return Outcome(Status.NA, detail=f"computes in {target.precision}; the batch is judged in float64")
        try:
            rb = bridge.require_r()
        except Unavailable as e:
            return _skip(e)
        cases = random_cases(n)
        if "r" not in cache:
            cache["r"] = rb.batch("attention", cases, ("Q", "K", "V", "mask"))
        outcomes = [_one_random(target, i, c, r) for i, (c, r) in enumerate(zip(cases, cache["r"]))]
        counts = Counter(o.status for o in outcomes)
        died = [o for o in outcomes if o.status in (Status.CRASH, Status.TIMEOUT, Status.OOM)]
        if died and not counts[Status.FAIL]:    # the worker's verdict for the row, as in the family rows; a FAIL
            return Outcome(died[0].status, math.inf, math.inf,      # found before or after a death comes first
                           f"{n} cases: {len(died)} {', '.join(sorted(set(o.status for o in died)))}; "
                           f"{died[0].detail}"[:300])
        if counts[Status.NA] == len(outcomes):
            return Outcome(Status.NA, detail=f"no case expressible: {outcomes[0].detail}")
        judged = [o for o in outcomes if o.status in (Status.PASS, Status.FAIL)]
        known_all = sorted({d for o in outcomes if o.status == Status.KNOWN for d in o.divergences})
        details = [o.detail for o in outcomes if o.status == Status.FAIL]
        summary = (f"{n} cases: {counts[Status.PASS]} pass, {counts[Status.KNOWN]} known "
                   f"({', '.join(known_all) or '-'}), {counts[Status.FAIL]} FAIL"
                   + (f", {counts[Status.NA]} n/a" if counts[Status.NA] else "")
                   + "".join(f", {counts[s]} {s}" for s in (Status.CRASH, Status.TIMEOUT, Status.OOM, Status.NOT_RUN)
                             if counts[s]))
        status = (Status.FAIL if counts[Status.FAIL] else Status.NOT_RUN if counts[Status.NOT_RUN] else Status.PASS)
        return Outcome(status,
                       max((o.max_ratio for o in judged), default=0.0), max((o.max_abs for o in judged), default=0.0),
                       summary + ("; " + "; ".join(details[:3]) if details else ""), known_all, n_arrays=n)

    return Case(f"random-vs-r:{n}", "random-vs-r", f"{n} seeded random cases cross-checked against the R package", run)
