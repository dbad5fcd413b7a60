"""Diagnosis of a failing target by bug models (:mod:`refimpl.bugs`), and localisation by case features.

* :func:`diagnose`: a model *fits* when, on every failing family case (at most ``MAX_FAILING``), the model's
  output computed from the case's inputs (``CaseData.q, k, v`` and ``reference_kwargs()``; ALiBi is in the
  additive mask) matches what the target returned,

      |model - got| <= atol + rtol * |got|,   atol = 1e-6 * (1 + max|v|),  rtol = 1e-3,  NaN == NaN,

  and explains it (closer to the target than the expected output is, see :func:`fits`); and it also
  matches on the ``MAX_PASSING`` passing cases of the sample, then on every other passing case of the run.
  Lines: ``diagnosis TARGET: MODEL — explanation`` per fitting model, or ``diagnosis TARGET: unknown``; none
  when nothing failed. A KV cache's models
  (:mod:`.diagnosis_kvcache`: its writes and index errors too), a log-sum-exp's (:mod:`.diagnosis_lse`) and
  dropout's (:mod:`.diagnosis_dropout`) add theirs. The fitted scale (:mod:`.fitting`) prints the value the
  kernel used; when no model fits, dropout active at dropout_p = 0 (:mod:`.fitting_dropout`) is looked for,
  then the noise fingerprints (:mod:`.precision_fingerprint`) name float32 arithmetic in a float64 check or a
  16-bit intermediate by the size of the errors, read on an even sample of at most ``MAX_NOISE`` failing cases.
* :func:`localise` (:mod:`.localisation`): ``fails only when: <features>``: the smallest conjunction (1 or 2)
  of boolean case features True on every failing case and on no passing case; else the best single feature.
  Failing cases whose output has another shape give no values to fit: the lines say how many were left out.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ... import bugs
from ..apis import flash_attn_kvcache
from ..apis.base import keep_mask
from ..cases import Status, fitting_models
from ..cases.features import CaseData, CaseSpec
from ..verdicts.judge import DEAD_ROWS_FAILED, CaseResult
from .conditions import Seen, condition
from .diagnosis_dropout import dropout_lines
from .diagnosis_kvcache import kvcache_lines
from .diagnosis_lse import lse_lines
from .diagnosis_sample import EXPLAINS, MAX_FAILING, MAX_PASSING, case_data as _data, small
from .fitting import fit_scale, scale_line
from .fitting_dropout import dropout_at_zero_line
from .fitted_forms import fitted_form_lines
from .fitting_shape import shape_line
from .judged_rows import unjudged_from
from .localisation import localise
from .precision_fingerprint import narrower_arithmetic, null32

__all__ = ["diagnose", "localise", "fits", "analyse_run"]

MAX_NOISE = 400              # the most failing cases a precision fingerprint reads (an even sample beyond)


def _output(r: CaseResult):
    got = getattr(r, "got", None)
    return None if got is None else getattr(got, "output", None)


def _small(data: CaseData) -> bool:
    return small(data.spec)


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


def variant_kwargs(variant, data: CaseData) -> dict | None:
    """The keywords a bug model's ``variant`` is called with on this case (None: it does not apply here)."""
    kw = data.reference_kwargs()
    fold = variant.flags and not data.band_flags        # the target got the band in its mask: no flag to mishandle
    band = keep_mask(data.spec, None) if fold else None
    as_float = data.slopes is not None or (data.mask is not None and data.mask.dtype != bool)   # its mask is float

    def folded(m):                                      # the band folded as the API folds it: -inf in a float mask
        if band is None:
            return m
        if m is None:
            return np.where(band, 0.0, -np.inf) if as_float else band
        if m.dtype == bool:
            return np.where(m & band, 0.0, -np.inf) if as_float else m & band
        return np.where(band, m, -np.inf)
    if fold:
        kw = dict(kw, mask=folded(kw["mask"]), is_causal=False, window=None)
    if variant.splits_alibi and data.spec.seqlens is None:      # the model takes the user's mask and the ALiBi
        #                                       slopes apart (a packed batch's per-sequence ALiBi stays in its mask)
        kw = dict(kw, mask=folded(data.mask), slopes=data.slopes)
    if variant.tiled:                           # the tile size the case's block mask reached the target in
        if data.block is None:                  # no block mask (no API but flex-attention hands one): no tiles
            return None
        kw = dict(kw, block=data.block)
    if variant.packed:                          # a packed batch's model: its lengths and per-sequence bands
        s = data.spec
        if s.seqlens is not None:
            kw = dict(kw, mask=None, seqlens=s.seqlens, seq_causal=s.seq_causal, seq_window=s.seq_window,
                      slopes=data.slopes)
        elif s.mask == "none" and (s.Sq == s.Sk or not (s.is_causal or s.window) or s.alignment == "bottom-right"):
            # a dense case a packed kernel runs as B sequences of (Sq, Sk), causal and windows bottom-right
            kw = dict(kw, mask=None, seqlens=((s.Sq, s.Sk),) * s.B, seq_causal=s.is_causal, seq_window=s.window,
                      slopes=data.slopes)
        else:
            return None
    return kw


def fits(variant, data: CaseData, got: np.ndarray, rtol: float = 1e-3, atol: float = 1e-6,
         failing: bool = True) -> bool:
    """Whether a bug model's ``variant`` (:class:`refimpl.bugs.Variant`) reproduces ``got`` (B, Hq, Sq, Dv) on
    this case (an exception: no). On a failing case the model must also explain the failure: on the rows that
    have keys, its distance to ``got`` is at most ``EXPLAINS`` times the expected output's (a model equal to the
    reference explains nothing)."""
    kw = variant_kwargs(variant, data)
    if kw is None:
        return False
    try:
        with np.errstate(all="ignore"):
            out = np.asarray(variant.fn(data.q, data.k, data.v, **kw), np.float64)   # (B, Hq, Sq, Dv)
    except Exception:
        return False
    if not _close(unjudged_from(got, out, data), got, data.v, rtol, atol):
        return False
    if not failing or out.shape != data.expected.shape:
        return True
    return _explains(out, data, got)


def _beyond_float32(variant, data: CaseData, null: np.ndarray | None) -> bool:
    """A variant that computes in float32 names its mistake only on a case where it differs from float32
    arithmetic done right (``null``) by more than float32 rounding; else it would name float32 itself."""
    kw = data.reference_kwargs()
    try:
        with np.errstate(all="ignore"):
            out = np.asarray(variant.fn(data.q, data.k, data.v, **kw), np.float64)
    except Exception:
        return False
    every = np.ones(out.shape[:-1], bool)          # rows with no key count too: zeros and uniform differ there
    return null is not None and _distance(out, null, every) > 1e-4 * (1.0 + float(np.abs(data.v).max()))


def _model_out(variant, data: CaseData) -> np.ndarray:
    kw = variant_kwargs(variant, data)
    try:                                       # a variant that raises here does not apply: the expected output
        with np.errstate(all="ignore"):
            return np.asarray(variant.fn(data.q, data.k, data.v, **kw), np.float64) if kw is not None else data.expected
    except Exception:
        return data.expected


def _explains(out: np.ndarray, data: CaseData, got: np.ndarray) -> bool:
    """``out`` is nearer the target's output than the expected output is, by ``EXPLAINS`` (see :func:`fits`), on
    the rows the judge held against it: those with a key, and those with none when the judge failed them
    (:func:`_usable`). Where those rows are right the failure is not the output's (its LSE, its cache)."""
    live = np.broadcast_to(data.live, out.shape[:-1])
    far = _distance(data.expected, got, live)
    return far > 0 and _distance(out, got, live) <= EXPLAINS * far


def diagnose(results: list[CaseResult], store, target: str = "target",
             specs: dict[str, CaseSpec] | None = None) -> list[str]:
    """``diagnosis TARGET: MODEL — explanation`` for each bug model that fits (see the module doc), else
    ``diagnosis TARGET: unknown``; [] when no case failed. ``specs`` (id -> spec) materialises cases that the
    store does not hold yet."""
    failing = [r for r in results if r.status == Status.FAIL]
    extra = (kvcache_lines(results, store, target, specs, flash_attn_kvcache) + lse_lines(results, store, target, specs)
             + dropout_lines(results, store, target, specs))
    if not failing:                         # (a KV-cache model may explain errors: an index out of range)
        return extra
    passing = [r for r in results if r.status == Status.PASS]
    fail_cases = _usable(_spread(failing), store, specs, MAX_FAILING)
    pass_cases = _usable(_spread(passing), store, specs, MAX_PASSING)
    lines = list(extra)
    whole: dict[str, bool] = {}         # model -> its fitted variant also returns the other-shaped outputs, values too
    other = _usable(failing, store, specs, MAX_FAILING, shaped=False)    # the failing outputs of another shape

    def gives_other(variant, rtol: float, atol: float) -> bool:     # the model returns those shapes, values and all
        return all(_close(_model_out(variant, d), g, d.v, rtol, atol) for d, g in other)
    if fail_cases:
        every_pass = _usable(passing, store, specs, len(passing))   # what a condition of some calls is fitted on
        fitted = fit_scale(fail_cases, pass_cases, _explains, every_pass)    # the scale and its fitted value
        models = {n: m for n, m in bugs.MODELS.items() if not (fitted and n == "scale")}

        def shows_beyond_float32(variant) -> bool:       # on any failing case, not only the sample
            return any(fits(variant, d, g) and _beyond_float32(variant, d, null32(d))
                       for d, g in _usable(failing, store, specs, MAX_NOISE))

        def fit(model, variant) -> bool:
            rtol, atol = model.tolerance
            ok = (all(fits(variant, d, g, rtol, atol) for d, g in fail_cases)
                  and all(fits(variant, d, g, rtol, atol, failing=False) for d, g in pass_cases)
                  and all(fits(variant, d, g, rtol, atol, failing=False) for d, g in every_pass)   # the sample
                  #         first (it covers the run's kinds of case), then every passing case: one the sample
                  #         left out may refute the model (a window's left edge realigned, refuted only by a
                  #         passing window case with more than one query)
                  and (not variant.in_float32 or shows_beyond_float32(variant)))
            if ok and model.name not in whole:           # the first fitting variant: does it give the other shapes?
                whole[model.name] = bool(other) and gives_other(variant, rtol, atol)
            return ok

        def same(a, b) -> bool:           # the failing cases cannot tell them apart (a model fitted within its
            #                               tolerance may differ from the other on passing cases: that is no evidence)
            return all(_close(_model_out(a, d), _model_out(b, d), d.v, 1e-9, 1e-12) for d, _ in fail_cases)
        lines += ([scale_line(target, *fitted)] if fitted else []) + fitting_models(target, models, fit, same)
    if _weights_transposed([r for r in failing if getattr(r, "got", None) is not None], store, specs):
        lines.append(f"diagnosis {target}: weights-transposed — {bugs.MODELS['weights-transposed'].explanation}")
    if not lines and fail_cases:             # right rows in the wrong place, an argument ignored in some cases
        lines = fitted_form_lines(target, fail_cases, every_pass,
                                  lambda a, b, v: _close(a, b, v, 1e-3, 1e-6), _explains, _model_out, models)
    if not lines and fail_cases and all(getattr(r.got, "dropout_keep", None) is None for r in failing):
        lines = dropout_at_zero_line(target, _usable(failing, store, specs, MAX_FAILING))   # drops without dropout
        #                                 (the run's first cases: solving a row for its weights needs small ones)
    if not lines and fail_cases:                        # the noise's size: on every failing case, or an even sample
        sample = failing[::-(-len(failing) // MAX_NOISE)]
        every = _usable(sample, store, specs, len(sample))
        dts = {d.spec.dtype for d, _ in every}
        n_fail, n_pass = (sum(CaseSpec.dtype_of(r.id) in dts for r in rs) for rs in (failing, passing))
        held = -(-n_pass * len(every) // max(n_fail, 1))                  # the passing ones, scaled to the sample
        lines = narrower_arithmetic(target, every, held) if len(every) >= 0.9 * len(sample) else []
    shapes = [np.shape(o) == d.expected.shape for r in failing          # every failing case counted, as said
              if (o := _output(r)) is not None and (d := _data(store, r, specs)) is not None]
    shaped = shapes.count(False)                                       # no values to fit: said, not hidden
    if not lines and other and not fail_cases:          # every failing output of another shape: a table model
        every_pass = _usable(passing, store, specs, len(passing))     # that returns it, values and all, first

        def fit_other(model, variant) -> bool:
            rtol, atol = model.tolerance
            ok = gives_other(variant, rtol, atol) and all(
                fits(variant, d, g, rtol, atol, failing=False) for d, g in every_pass)
            whole[model.name] = whole.get(model.name, False) or ok        # (a later variant that fails keeps it)
            return ok
        lines = fitting_models(target, bugs.MODELS, fit_other)
    if not lines and shapes and not any(shapes):          # every failing output of another shape: its formula
        lines = shape_line(target, [(replace(d, mask_given=getattr(r.got, "mask_given", None)), np.shape(o))
                                    for r in failing if (o := _output(r)) is not None
                                    and (d := _data(store, r, specs)) is not None],
                           [d for d, _ in _usable(passing, store, specs, len(passing))], condition, Seen,
                           raised=sum(r.status == Status.ERROR for r in results))
        return extra + (lines or [f"diagnosis {target}: unknown"])
    output_fits = lines[len(extra):]              # the output's fits (the KV-cache, LSE, dropout lines read more)
    names = [line[len(f"diagnosis {target}: "):].split(" — ")[0] for line in output_fits]
    if shaped and names and all(whole.get(n) for n in names):     # the model returns those shapes too: it is said
        tail = (f" (the model returns the other output shape too, values and all, on the {len(other)} of the {shaped} "
                f"failing cases of another shape read)"
                if any(shapes) else f" (every failing case returned another shape; the model returns it, values and "
                                    f"all, on the {len(other)} read)")
        return extra + [line + tail for line in output_fits]
    if output_fits and shaped > shapes.count(True):   # a fit of the fewer failing cases explains no run: unknown
        said = "; ".join(names)
        return extra + [f"diagnosis {target}: unknown — {shaped} of {len(shapes)} failing cases returned an output of "
                        f"another shape; the {shapes.count(True)} of the right shape fit {said}"]
    tail = f" (fitted on the failing cases of the right shape; {shaped} returned an output of another shape)"
    return [line + tail if shaped else line for line in lines] or [f"diagnosis {target}: unknown"]


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


def _spread(rs: list[CaseResult]) -> list[CaseResult]:
    """``rs`` reordered so that a capped sample of its head covers the run: first, in run order, each case that
    brings a case feature (``CaseResult.features``: a bool mask, an explicit scale, ...) no earlier pick had,
    then the rest. A model fitted on the first cases only could be refuted by a kind of case it never saw (a
    float mask passing where "the mask skipped" is fitted on bool ones, an explicit scale on a scale formula)."""
    seen: set[str] = set()
    first: list[CaseResult] = []
    rest: list[CaseResult] = []
    for r in rs:
        new = {n for n, x in (r.features or {}).items() if x is True} - seen
        (first if new else rest).append(r)
        seen |= new
    return first + rest


def _usable(rs: list[CaseResult], store, specs, cap: int, shaped: bool = True) -> list[tuple[CaseData, np.ndarray]]:
    """(case data as the target got it, its output) for the results of ``rs`` with an output of the expected shape
    (``shaped`` False: of another shape), at most ``cap``."""
    out = []
    for r in rs:
        got = _output(r)
        if got is None:
            continue
        data = _data(store, r, specs)
        if data is None or not _small(data) or (np.shape(got) == data.expected.shape) != shaped:
            continue
        if DEAD_ROWS_FAILED in (r.detail or ""):     # the judge failed the rows with no key: a model explains them
            data = replace(data, dead=np.zeros_like(data.dead))
        data = replace(data, band_flags=getattr(r.got, "band_flags", True),
                       mask_given=getattr(r.got, "mask_given", None), block=getattr(r.got, "block", None))
        out.append((data, np.asarray(got, np.float64)))
        if len(out) >= cap:
            break
    return out


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
        if store is None or not any(Status(r.status).failed for r in results):
            continue
        run.diagnoses[t] = diagnose(results, store, target=t, specs=specs)     # errors alone: a model or nothing
        if any(r.status == Status.FAIL for r in results):
            run.localisations[t] = localise(results, specs)
