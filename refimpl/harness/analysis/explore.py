"""``--explore N``: a Hypothesis search for a minimal counterexample over the families' input space.

Each example is a :class:`~.features.CaseSpec` drawn field by field (family ``explore``): B, Hq, Hkv
(GQA only where the API has it), Sq in 1..80, Sk in 1..140, D in 1..80, Dv in 1..40, a mask kind the API
takes (with or without fully masked rows), causal, window and alignment (bottom-right for flash-attn),
softcap, ALiBi, an explicit scale, the magnitude of q and k (1 to 1e5), the far-below-fill pattern, a
dtype of ``dtypes`` and a seed. :func:`~.features.materialise` makes the inputs from the seed, the case
runs through :func:`~.family_cases.run_one`, and an example fails when the verdict is a failing status
(FAIL, error, crash, timeout, oom). Hypothesis shrinks towards the first choice of every field
(the smallest sizes, no feature, magnitude 1, seed 0); the search is derandomised (the same target gives
the same counterexample) and stops generating after ``BUDGET_SECONDS``. ALiBi is drawn only when Hq is a
power of two, as in the ``alibi`` family: flash-attn targets get float32 slopes while the expected values use
float64 ones, which differ (by ~1e-9 relative) exactly when 2**(-8 (h+1) / Hq) is not a power of two.

Lines (``CheckRun.explored``): ``counterexample TARGET: ...`` (the shrunk case, its arrays when small,
refimpl's and the target's output, the verdict and the diagnosis of :func:`.diagnosis.diagnose` on that
one case), or ``explore TARGET: no counterexample in N examples``. Given the run's own diagnosis (``run_lines``,
as ``refimpl check`` does), the counterexample names a model only when the run names it too, and then prints the
run's line (the parameter fitted on every failing case): one case can fit a model, or a parameter, the whole run
does not (a 1 x 1 case fits many), so otherwise the line says the case alone does not tell and repeats the run's
names.
``db``: a JSON list of ``{"target", "api", "spec"}`` (the shrunk specs), written atomically; its specs
that the API can express are replayed first, and a failing one is reported without a new search.
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from ...errors import Unavailable, UsageError
from ...io import write_atomic
from ...precision import PRECISIONS
from .. import apis
from ..cases import Status
from .diagnosis import diagnose
from ..cases.families import check_dtypes
from ..rows.family_cases import CaseStore, run_one
from ..cases.features import CASE_MASKS, CaseSpec
from ..verdicts.judge import CaseResult
from ..targets.target import Target

__all__ = ["explore", "spec_strategy", "search", "load_db", "BUDGET_SECONDS"]

BUDGET_SECONDS = 45.0        # generation stops here; shrinking what was found goes on
SMALL = 48                   # arrays with at most this many numbers are printed in full
_MAGNITUDES = (1.0, 4.0, 30.0, 1e3, 1e5)
_SCALES = (None, 0.5, 0.01, 1.0, 3.0)
_WINDOW_EDGES = (-1, 0, 1, 2, 4, 16)


def spec_strategy(api: str, dtypes: tuple[str, ...]):
    """A Hypothesis strategy of CaseSpecs that ``api`` can express (see the module doc for the fields)."""
    from hypothesis import strategies as st

    a = apis.get(api)
    gqa = a.can("gqa")
    masks = tuple(m for m in CASE_MASKS if m == "none" or a.can(f"{m}-mask"))     # what the API expresses
    fixed = a.can("bottom-right-band") and not a.can("top-left-band")      # only one alignment expressible

    @st.composite
    def draw(draw):
        Sq, Sk = draw(st.integers(1, 80)), draw(st.integers(1, 140))
        D, Dv = draw(st.integers(1, 80)), draw(st.integers(1, 40))
        B, Hkv = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        Hq = Hkv * (draw(st.integers(1, 3)) if gqa else 1)
        mask = draw(st.sampled_from(masks))
        dead = mask != "none" and draw(st.booleans())
        causal = draw(st.booleans())
        window = None
        if draw(st.booleans()):
            window = (draw(st.sampled_from(_WINDOW_EDGES)), draw(st.sampled_from(_WINDOW_EDGES)))
            window = None if window == (-1, -1) else window
        alignment = "bottom-right" if fixed else draw(st.sampled_from(("top-left", "bottom-right")))
        softcap = draw(st.sampled_from((None, 5.0, 1.0, 30.0))) if a.can("softcap") else None
        alibi = draw(st.booleans()) if gqa and Hq & (Hq - 1) == 0 else False     # see the module doc
        far = draw(st.booleans())
        return CaseSpec(family="explore", index=0, Sq=Sq, Sk=Sk, D=D, Dv=Dv, B=B, Hq=Hq, Hkv=Hkv, mask=mask,
                        is_causal=causal, alignment=alignment, window=window, softcap=softcap, alibi=alibi,
                        scale=draw(st.sampled_from(_SCALES)), magnitude=draw(st.sampled_from(_MAGNITUDES)),
                        pattern="far-below-fill" if far else "random", dead_rows=dead,
                        dtype=draw(st.sampled_from(dtypes)), seed=draw(st.integers(0, 2**16)))
    return draw()


def _judge(target: Target, spec: CaseSpec) -> CaseResult | None:
    """The verdict on one spec (a fresh store: every explored spec shares the id ``explore/0000-DTYPE``);
    None when the reference itself refuses the spec (not a point of the input space)."""
    store = CaseStore()
    try:
        store.get(spec)
    except (ArithmeticError, ValueError):
        return None
    with warnings.catch_warnings(), np.errstate(all="ignore"):     # the target's overflow warnings are its own
        warnings.simplefilter("ignore")
        return run_one(target, spec, store)


def search(target: Target, n: int, dtypes: tuple[str, ...], budget: float = BUDGET_SECONDS) -> tuple[
        CaseSpec | None, CaseResult | None, int]:
    """Hypothesis over :func:`spec_strategy`: ``(shrunk spec, its result, examples tried)``, or Nones."""
    try:
        from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    except ImportError as e:
        raise Unavailable(f"--explore needs the hypothesis package, which is not importable here ({e})") from None

    found: dict = {}
    tried = [0]
    t0 = time.perf_counter()

    @settings(max_examples=n, deadline=None, database=None, derandomize=True, verbosity=Verbosity.quiet,
              suppress_health_check=list(HealthCheck), phases=(Phase.generate, Phase.shrink))
    @given(spec_strategy(target.api, dtypes))
    def prop(spec):
        if "spec" not in found and time.perf_counter() - t0 > budget:
            return                                        # out of time, nothing found: the rest pass
        tried[0] += 1
        res = _judge(target, spec)
        if res is not None and Status(res.status).failed:
            found["spec"], found["res"] = spec, res       # the last failing call is the smallest so far
            raise AssertionError(f"{spec.describe()}: {res.status}: {res.detail}")

    try:
        prop()
    except Exception:                                     # the falsifying example (or Flaky): found holds it
        pass
    return found.get("spec"), found.get("res"), tried[0]


def _array_lines(name: str, a) -> list[str]:
    a = np.asarray(a)
    if a.size <= SMALL:
        body = np.array2string(a, precision=6, max_line_width=10**6, threshold=10**6).replace("\n", "")
        return [f"{name} {a.shape} = {body}"]
    return [f"{name} {a.shape}: {a.size} values (printed up to {SMALL})"]


def _named(lines: list[str]) -> list[str]:
    """The models a diagnosis's lines name (``diagnosis T: MODEL — ...``), in order; unknown ones left out."""
    names = (line.split(": ", 1)[1].split(" — ", 1)[0] for line in lines if " — " in line)
    return list(dict.fromkeys(names))


def _agreeing(lines: list[str], run_lines: list[str] | None) -> list[str]:
    """Where the counterexample's diagnosis names a model the run names, the run's line for it (its parameter
    fitted on every failing case, not on this one); all of the case's lines when no run's lines are given;
    otherwise one line that says the case alone does not tell and repeats the run's names."""
    if run_lines is None:
        return lines
    run = _named(run_lines)
    both = set(_named(lines)) & set(run)
    kept = ["diagnosis: " + line.split(": ", 1)[1] for line in run_lines
            if _named([line]) and _named([line])[0] in both]
    if kept:
        return kept
    said = f"; the run's diagnosis: {', '.join(run)}" if run else "; the run's diagnosis: unknown"
    return [f"diagnosis: unknown on this case alone{said}"]


def _describe(target: Target, spec: CaseSpec, res: CaseResult, source: str,
              run_lines: list[str] | None = None) -> list[str]:
    store = CaseStore()
    data = store.get(spec)
    out = [f"{source}: {spec.describe()} (seed {spec.seed})", f"verdict: {res.status}: {res.detail}"]
    for name, a in (("q", data.q), ("k", data.k), ("v", data.v), ("mask", data.mask)):
        if a is not None:
            out += _array_lines(name, a)
    out += _array_lines("refimpl", data.expected)
    got = getattr(res.got, "output", None)
    if got is not None:
        out += _array_lines("target", got)
        if got.shape == data.expected.shape:
            with np.errstate(invalid="ignore"):
                d = np.abs(np.asarray(got, np.float64) - data.expected)
            d = np.where(np.isnan(d) & data.live[..., None], np.inf, np.nan_to_num(d, nan=0.0))
            d[~data.live] = 0.0
            if d.size and d.max() > 0:
                at = tuple(int(i) for i in np.unravel_index(int(np.argmax(d)), d.shape))
                out.append(f"largest difference at {at} (B, Hq, Sq, Dv): refimpl {data.expected[at]!r}, "
                           f"target {float(got[at])!r}")
    store._data[spec.id] = data
    # Loaded at run time, not imported: diagnosis (layer 7, it imports family_cases for CaseStore) under this
    # module would put cli at 9 and __main__ at 10 layers (tests/test_house.py allows 9).
    if res.status == Status.FAIL and "output:" in res.detail:        # the bug models explain output values only
        lines = diagnose([res], store, target=target.name, specs={spec.id: spec})
        out += _agreeing([line.replace(f"diagnosis {target.name}: ", "diagnosis: ") for line in lines], run_lines)
    return [f"counterexample {target.name}: {x}" for x in out]


def load_db(db) -> list[dict]:
    """The explored specs kept in ``db`` ([] when there is none yet); a UsageError naming it when it is junk."""
    if db is None or not Path(db).is_file():
        return []
    try:
        entries = json.loads(Path(db).read_text(encoding="utf-8"))
        if not isinstance(entries, list):
            raise ValueError("not a JSON list")
        return entries
    except ValueError as e:
        raise UsageError(f"--explore-db {db}: expected a JSON list of explored specs, cannot read it ({e})") from None


def _spec_of(entry: dict) -> CaseSpec | None:
    try:
        fields = dict(entry["spec"])
        fields["window"] = tuple(fields["window"]) if fields.get("window") is not None else None
        fields["tags"] = tuple(fields.get("tags", ()))
        spec = CaseSpec(**fields)
    except (KeyError, TypeError):
        return None
    return spec if spec.dtype in PRECISIONS else None


def _save(db, entries: list[dict], target: Target, spec: CaseSpec) -> None:
    entry = {"target": target.name, "api": target.api, "spec": asdict(spec)}
    if any(e.get("spec") == entry["spec"] and e.get("api") == target.api for e in entries):
        return
    write_atomic(db, "[\n" + ",\n".join(json.dumps(e) for e in entries + [entry]) + "\n]\n")   # one spec a line


def explore(target: Target, n: int, db=None, dtypes: tuple[str, ...] = ("float64", "float32"),
            say: Callable[[str], None] | None = None, run_lines: list[str] | None = None) -> list[str]:
    """Replay ``db``, then search ``n`` examples; the lines of the module doc. ``n`` must be positive;
    ``run_lines``: the run's diagnosis of this target (the counterexample's then agrees with it); None when the
    run diagnosed none (no failing family case): the counterexample's own lines, the only evidence there is."""
    if not isinstance(n, int) or n < 1:
        raise UsageError(f"--explore takes a positive number of examples, got {n!r}")
    check_dtypes(dtypes)
    say = say or (lambda msg: None)
    t0 = time.perf_counter()
    entries = load_db(db)
    for entry in entries:
        spec = _spec_of(entry)
        if spec is None:
            continue
        res = _judge(target, spec)
        if res is not None and Status(res.status).failed:
            return _describe(target, spec, res, f"replayed from {db}", run_lines) + [
                f"counterexample {target.name}: found in {time.perf_counter() - t0:.1f} s (database replay)"]
    say(f"explore {target.name}: searching {n} examples ...")
    spec, res, tried = search(target, n, tuple(dtypes))
    seconds = time.perf_counter() - t0
    if spec is None:
        stop = f" (stopped after {tried}: {BUDGET_SECONDS:g} s budget)" if tried < n else ""
        return [f"explore {target.name}: no counterexample in {n} examples{stop} ({seconds:.1f} s)"]
    assert res is not None                                # search returns the spec and its result together
    if db is not None:
        _save(db, entries, target, spec)
    return _describe(target, spec, res, "shrunk", run_lines) + [
        f"counterexample {target.name}: found and shrunk in {seconds:.1f} s ({tried} calls)"]
