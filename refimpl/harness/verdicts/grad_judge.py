"""The verdict on one gradient case: a target's (dQ, dK, dV) against the float64 backward oracle, and the
diagnosis of failing gradients by the backward bug models (:mod:`refimpl.bugs_backward`).

A gradient case is a family case (:class:`~.features.CaseSpec`, same inputs) plus a seeded upstream
gradient ``d_out`` (B, Hq, Sq, Dv), standard normal, rounded to the case's dtype; the loss is
``sum(d_out * O)``. Expected: :func:`refimpl.backward.sdpa_backward` in float64 on exactly those numbers.

Each gradient is judged on its own:

* float64: rule 3 for gradients (:func:`refimpl.tolerance_gradients.gradient_for_sdpa`: ``K_FORWARD * eps * n * G``
  per gradient, the additive mask's magnitude counted among the logits);
* float32 / float16 / bfloat16: the FlashAttention rule for gradients
  (:func:`refimpl.tolerance_gradients.gradient_within_budget`): ``max|got - oracle| <= K_GRAD_BUDGET x
  max|naive - oracle| + quantum``, ``naive`` = ``sdpa_backward`` in float32 on the same inputs (rounded to
  the case's dtype for the half types), the quantum's conditioning the gradient's ``n_terms``, and its
  magnitude that of the gradient's terms, ``max`` of ``s |dS|_abs |K|``, ``s |dS|_abs^T |Q|``, ``P^T |dO|``
  with ``|dS|_abs = P (|dP| + |delta|)`` (not of the result: a gradient that cancels to 0, e.g. dQ when
  Sk = 1 where dS = 0 exactly, still carries the rounding of its terms);
* a NaN or inf where the oracle is finite fails (fully masked rows have zero gradients: a NaN there is the
  bwd-masked-nan bug, whatever the forward's masked-rows convention); a wrong shape fails; gradients
  returned in a lower precision than the inputs fail with the ``--dtype`` to use;
* ``FINITE_ONLY`` families (``extreme-logits``: a saturated softmax) in float16 / bfloat16, where the budget is
  vacuous (rounding decides the one-hot weights): only the shapes and the NaN / inf rule above are judged; in
  float64 and float32 they are judged as every case.

Sensitivity: in bfloat16 the rounding quantum (``QUANTUM_ULPS * eps * (1 + n_terms)`` of the gradient's
magnitude, n_terms >= Sk + 2 Dv + D + 6) is about as large as the gradient itself, so a missing delta term
is caught in float64 and float32 only (the scale, GQA and NaN mistakes are caught in bfloat16 too).

Diagnosis (:func:`diagnose_grads`): a model fits when on every failing case (at most ``MAX_FAILING``), for
each gradient, ``d(model, got) <= 2 * allowed`` or it is *closer*, ``d(model, got) <= EXPLAINS * d(oracle, got)``
and finite (``d``: max abs difference, NaN == NaN, NaN on one side = inf; ``allowed``: the judge's allowed
error), it is closer on at least one wrong gradient (``d(oracle, got) > allowed``), and on up to
``MAX_PASSING`` passing cases ``d(model, got) <= 2 * allowed`` for every gradient. Where several models fit,
those that fit with ``d(model, got) <= 2 * allowed`` on every failing case (they reproduce the gradients, not
only come nearer than the oracle) are named alone, if any does.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from ... import bugs_backward, tolerance as tol, tolerance_gradients as tg
from ...backward import expand_gqa, reduce_gqa, sdpa_backward
from ..cases import Status, fitting_models
from ...precision import get as precision
from ..cases.features import CaseData, lower_precision
from .grad_placement import placement_grads_line, unsummed_grads_line
from .grad_scale import scale_grads_line
from .grad_unwritten import unwritten_grads, unwritten_grads_line, unwritten_rows_line

__all__ = ["GradData", "GradReturned", "GradVerdict", "GRADS", "grad_data", "judge_grads", "diagnose_grads"]

GRADS = ("dq", "dk", "dv")
MAX_FAILING, MAX_PASSING, EXPLAINS = 12, 6, 0.5
FINITE_ONLY = ("extreme-logits",)       # families whose 16-bit gradients are judged on shape and finiteness alone


def finite_only(spec) -> bool:
    """A case whose gradients are judged on shape and finiteness alone: a ``FINITE_ONLY`` family in a 16-bit
    dtype, where rounding decides the saturated softmax's one-hot weights (float64 and float32 keep the bounds)."""
    return spec.family in FINITE_ONLY and precision(spec.dtype).rank < precision("float32").rank


@dataclass
class GradData:
    """One gradient case: the forward case, its upstream gradient, the float64 oracle and the bounds' terms."""
    data: CaseData
    d_out: np.ndarray                   # (B, Hq, Sq, Dv), values representable in the case's dtype
    oracle: dict                        # "dq" (B, Hq, Sq, D), "dk" (B, Hkv, Sk, D), "dv" (B, Hkv, Sk, Dv): float64
    additive: np.ndarray | None         # the float mask (ALiBi folded in), for the bound's logit magnitude


@dataclass
class GradReturned:
    """What a target returned for one gradient case, in refimpl's layout and float64."""
    grads: dict                         # "dq" | "dk" | "dv" -> array
    dtype: str                          # the lowest precision among the three
    allowed: dict | None = None         # filled by the judge: name -> allowed max abs error


@dataclass
class GradVerdict:
    """The judge's verdict on one gradient case (the row makes a ``CaseResult`` of it)."""
    status: Status
    ratio: float                        # worst error / what was allowed over dq, dk, dv (<= 1 passes, > 1 fails)
    detail: str = ""


def d_out_for(data: CaseData) -> np.ndarray:
    """The case's upstream gradient: N(0, 1) from a generator seeded by (seed, "grad:" + family, index)."""
    s = data.spec
    rng = np.random.default_rng([s.seed, zlib.crc32(f"grad:{s.family}".encode()), s.index])
    return precision(s.dtype).round(rng.standard_normal(data.expected.shape))       # (B, Hq, Sq, Dv)


def _backward64(data: CaseData, d_out: np.ndarray, dtype=np.float64) -> dict:
    kw = data.reference_kwargs()                        # (sdpa_backward casts an additive mask to dtype itself)
    q, k, v, g = (np.asarray(a).astype(dtype) for a in (data.q, data.k, data.v, d_out))
    with np.errstate(all="ignore"):
        res = sdpa_backward(q, k, v, g, **kw)
    return dict(zip(GRADS, res))                       # (dq, dk, dv); zip drops the rest


def grad_data(data: CaseData, cache: dict) -> GradData:
    """The gradient case of ``data`` (made once per spec and kept in the store's per-case ``cache``)."""
    if "grad" not in cache:
        d_out = d_out_for(data)
        m = data.reference_kwargs()["mask"]
        cache["grad"] = GradData(data, d_out, _backward64(data, d_out),
                                 m if m is not None and m.dtype != bool else None)
    return cache["grad"]


def _naive(gd: GradData, cache: dict) -> dict:
    """The same-precision reference: sdpa_backward in float32, rounded to the case's dtype."""
    if "grad_naive" not in cache:
        g32 = _backward64(gd.data, gd.d_out, np.float32)
        cache["grad_naive"] = {n: precision(gd.data.spec.dtype).round(a) for n, a in g32.items()}
    return cache["grad_naive"]


def _magnitudes(gd: GradData, cache: dict) -> dict:
    """Per gradient, the largest entry of the gradient computed on absolute values (module docstring)."""
    if "grad_mag" not in cache:
        d = gd.data
        s = 1.0 / math.sqrt(d.q.shape[-1]) if d.spec.scale is None else d.spec.scale
        group = d.spec.Hq // d.spec.Hkv
        ke, ve = expand_gqa(np.abs(d.k), group), expand_gqa(d.v, group)    # (B, Hq, Sk, D), (B, Hq, Sk, Dv)
        p = d.weights                                                        # (B, Hq, Sq, Sk)
        assert p is not None            # None only for long cases, which have no gradient rows (GRAD_NA)
        with np.errstate(all="ignore"):
            dp = gd.d_out @ ve.transpose(0, 1, 3, 2)                         # (B, Hq, Sq, Sk)
            delta = np.sum(gd.d_out * d.expected, axis=-1, keepdims=True)    # (B, Hq, Sq, 1)
            ds = p * (np.abs(dp) + np.abs(delta))
            mags = {"dq": s * (ds @ ke), "dk": reduce_gqa(s * (ds.transpose(0, 1, 3, 2) @ np.abs(d.q)), group),
                    "dv": reduce_gqa(p.transpose(0, 1, 3, 2) @ np.abs(gd.d_out), group)}
        cache["grad_mag"] = {n: float(np.nan_to_num(a).max()) for n, a in mags.items()}     # no family is empty
    return cache["grad_mag"]


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b|; NaN == NaN, a NaN or inf on one side only is inf."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return math.inf
    if a.size == 0:
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        d = np.where(same, 0.0, np.abs(a - b))
    return float(np.where(np.isnan(d), np.inf, d).max())


def judge_grads(gd: GradData, got: GradReturned, given_dtype: str, cache: dict | None = None) -> GradVerdict:
    """The verdict on ``got`` (see the module docstring); ``got.allowed`` is filled for the diagnosis."""
    s = gd.data.spec
    lower = lower_precision(got.dtype, given_dtype, "gradients")
    if lower:
        return GradVerdict(Status.FAIL, math.inf, lower)
    problems, ratios, allowed = [], [], {}
    q, k, v = gd.data.q, gd.data.k, gd.data.v
    terms = tg.sdpa_grad_terms(q, k, v, gd.d_out, s.scale, softcap=s.softcap, additive=gd.additive)
    bounds = None if precision(s.dtype).low else tg.gradient_for_sdpa(q, k, v, gd.d_out, s.scale, np.float64,
                                                                      softcap=s.softcap, additive=gd.additive)
    for name in GRADS:
        a, e = got.grads[name], gd.oracle[name]
        if a.shape != e.shape:
            hint = (f" (one kv head serves {a.shape[1]} query heads: {name} is the sum over them)"
                    if name in ("dk", "dv") and a.ndim == 4 and e.ndim == 4 and e.shape[1] == 1 < a.shape[1] else "")
            problems.append(f"{name}: shape {a.shape}, but should be {e.shape}{hint}")
            ratios.append(math.inf)
            continue
        bad = ~np.isfinite(a) & np.isfinite(e)
        if bad.any():
            problems.append(f"{name}: {int(bad.sum())} of {a.size} entries NaN or inf")
            ratios.append(math.inf)
            allowed[name] = 0.0
            continue
        if finite_only(s):                           # a saturated softmax in 16 bits: finiteness is all judged
            allowed[name] = math.inf
            ratios.append(0.0)
            continue
        if bounds is not None:
            c = tol.compare(a, e, bounds[name])
            allowed[name] = float(np.max(bounds[name].atol))
            ratios.append(c.max_ratio)
            if not c.ok:
                problems.append(f"{name}: {c.summary()}")
        else:
            cache = cache if cache is not None else {}
            naive = _naive(gd, cache)[name]
            cond = tol.budget_conditioning(terms[name][0], s.dtype)   # capped: zeros must not fit the budget
            _, err, allow = tg.gradient_within_budget(a, naive, e, s.dtype, conditioning=cond)
            floor = tol.QUANTUM_ULPS * tol.eps(s.dtype) * (1.0 + cond) * _magnitudes(gd, cache)[name]
            allow = max(allow, tg.K_GRAD_BUDGET * _distance(naive, e) + floor)
            if not math.isfinite(allow):     # the same-precision backward overflowed: it bounds nothing; the floor
                allow = floor                # (NaN failed every answer, the exact one too; inf passed any)
            ok = err <= allow
            allowed[name] = allow
            ratios.append(err / allow if allow > 0 else (0.0 if err == 0 else math.inf))
            if not ok:
                problems.append(f"{name}: error {err:.3g} vs the float64 oracle above the {s.dtype} budget {allow:.3g} "
                                f"(K_GRAD_BUDGET x a same-precision backward + quantum)")
    got.allowed = allowed
    ratio = max(ratios)                              # one per gradient; each problem's ratio is above 1
    if math.isnan(ratio):
        ratio = math.inf
    if not problems:
        return GradVerdict(Status.PASS, ratio)
    if gd.data.dead.any() and any("NaN or inf" in p for p in problems):
        problems.append("the case has fully masked query rows: their gradients are zero")
    return GradVerdict(Status.FAIL, ratio, "; ".join(problems))


def _fits(model, gd: GradData, got: GradReturned, failing: bool, strict: bool = False) -> bool:
    """See the module doc; ``strict``: every gradient within 2 x allowed (closer is not enough)."""
    try:
        grads = model(gd.data.q, gd.data.k, gd.data.v, gd.d_out, **gd.data.reference_kwargs())
    except Exception:          # e.g. the transposed-dS models on Sq != Sk
        return False
    explained = False
    for name, m in zip(GRADS, grads):
        allow = (got.allowed or {}).get(name, 0.0)
        d_m, d_o = _distance(m, got.grads[name]), _distance(gd.oracle[name], got.grads[name])
        if not failing:
            if d_m > 2 * allow:
                return False
            continue
        closer = math.isfinite(d_m) and d_m <= EXPLAINS * d_o            # inf vs inf explains nothing
        if d_m > 2 * allow and (strict or not closer):
            return False
        explained = explained or (d_o > allow and closer)
    return explained or not failing


def per_query_head(gd: GradData) -> tuple:
    """(dq, dk, dv) of ``gd`` with K and V expanded to the query heads: each query head's own dK, dV contribution."""
    s = gd.data.spec
    G = s.Hq // s.Hkv
    with np.errstate(all="ignore"):
        return sdpa_backward(gd.data.q, expand_gqa(gd.data.k, G), expand_gqa(gd.data.v, G), gd.d_out,
                             **dict(gd.data.reference_kwargs(), enable_gqa=False))


def diagnose_grads(failing: list[tuple[GradData, GradReturned]], passing: list[tuple[GradData, GradReturned]],
                   target: str) -> list[str]:
    """``diagnosis TARGET: MODEL — explanation`` per fitting backward model (see the module docstring), else
    ``diagnosis TARGET: unknown gradient error``; [] when nothing failed. Where cases judged by value failed too,
    the :func:`finite_only` ones (NaN or inf on a saturated 16-bit softmax, where the kernel's own overflow point
    decides the pattern) are left out of the fit, and the line says how many; so are, where at least as many failing
    cases kept every gradient's shape, the cases that returned another shape (the value models cannot reproduce a
    shape), save for the unsummed dK/dV rule, which reads them."""
    if not failing:
        return []
    by_value = [f for f in failing if not finite_only(f[0].data.spec)]
    left_out = len(failing) - len(by_value) if by_value else 0
    every = by_value or failing
    shaped = [(gd, got) for gd, got in every if all(got.grads[n].shape == gd.oracle[n].shape for n in GRADS)]
    if len(every) - len(shaped) > len(shaped):                  # most failing cases of another shape: a value
        shaped = []                                             # model fitted on the few left is not the bug
    other_shape = len(every) - len(shaped) if shaped else 0     # a mistake that changes the shape on some cases
    failing, passing = (shaped or every)[:MAX_FAILING], passing[:MAX_PASSING]
    zero = unwritten_grads(failing, GRADS, _distance)      # zeros: a model that reproduces them (dS = 0, a tile
    if zero:                                               # never walked) is named, not one nearer 0 by shrinking
        unwritten = unwritten_grads_line(target, zero, GRADS)
        lines = (fitting_models(target, bugs_backward.MODELS, lambda model, variant: all(
            _fits(variant.fn, gd, got, True, True) for gd, got in failing) and all(
            _fits(variant.fn, gd, got, False) for gd, got in passing))) or unwritten
    elif rows := unwritten_rows_line(target, failing, GRADS, _distance):   # some rows of one left at zero
        lines = rows
    else:
        def fit(model, variant, strict=False) -> bool:
            return all(_fits(variant.fn, gd, got, True, strict) for gd, got in failing) and all(
                _fits(variant.fn, gd, got, False) for gd, got in passing)
        lines = fitting_models(target, bugs_backward.MODELS, fit)
        if len(lines) > 1:                   # several models nearer than the oracle: those that reproduce the
            #                                  gradients (within 2 x allowed) are named alone, where any does
            lines = fitting_models(target, bugs_backward.MODELS, lambda m, v: fit(m, v, True)) or lines
        table_scale = [line for line in lines if ": bwd-scale — " in line]
        if not lines or table_scale:         # the scale it used, fitted: printed with its formula and value, in
            fitted = scale_grads_line(target, failing, passing, _fits)   # place of the table's bwd-scale labels
            lines = [line for line in lines if line not in table_scale] + fitted if fitted else lines
        lines = (lines or placement_grads_line(target, failing, passing, per_query_head)  # dK / dV blocks' sources
                 or unsummed_grads_line(target, every[:MAX_FAILING], per_query_head))
    tail = (f" (fitted on the failing cases judged by value; {left_out} 16-bit {'/'.join(FINITE_ONLY)} cases with "
            f"NaN or inf gradients left out)") if left_out else ""
    if other_shape and not any("returned per query head" in line for line in lines):
        tail += (f" (fitted on {len(failing)} failing cases whose gradients have the right shapes; {other_shape} "
                 f"returned another shape, left out)")
    return ([line + tail for line in lines]
            or [f"diagnosis {target}: unknown gradient error (no backward bug model fits)"])
