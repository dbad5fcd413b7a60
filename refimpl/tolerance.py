"""The one tolerance model of refimpl: tests, ``refimpl regen`` and ``refimpl check`` all use it.

Four kinds of expected value, four rules (every constant of the model is named here, nowhere else):

1. **exact** — integers, RNG draws, values exactly representable: ``|a - e| == 0`` (0 ulp).
2. **printed** — a number a source published with N printed digits: the truth lies within half a unit
   of the last printed digit, ``|a - e| <= 0.5 * 10**-decimals``. The decimals are the larger of what
   the source's printer shows (R: 7 significant digits; numpy: 8 decimals; torch: 4 decimals) and the
   digits of the quoted text (R pads a matrix column to a common number of decimals).
3. **forward bound** — two float evaluations of attention in the same precision, different orders
   (refimpl vs R, refimpl vs torch, float32 vs a float64 oracle). The standard forward error bound of
   ``softmax(s * q k^T) v`` gives, per output element,

       |out - out_ref| <= K_FORWARD * eps * (2 * s * d_k * max|q| * max|k| + n_keys + d_v + 2) * max|v|

   and for the weights the same with ``max|v| = 1``. ``eps`` is the unit roundoff of the *lower* of the
   two precisions; K_FORWARD = 4 covers the difference of two evaluations (each within the bound).
4. **error budget** (the FlashAttention rule) — an implementation under test is acceptable when its
   error against a float64 oracle is at most ``K_BUDGET`` times the error of a same-precision reference
   that orders the arithmetic differently, plus a rounding quantum
   ``QUANTUM_ULPS * eps * (1 + conditioning) * max|oracle|`` (conditioning: rule 3's n_terms, capped, or the
   case's own first-order conditioning where the weights are known, whichever is smaller:
   :func:`output_conditioning`).

ULP distances are reported everywhere for information (``ulp_distance``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import precision

__all__ = ["Tolerance", "Comparison", "EXACT", "BFLOAT16_EPS", "K_FORWARD", "K_BUDGET", "QUANTUM_ULPS",
           "CONDITIONING_CAP", "budget_conditioning", "ulp_distance", "eps", "printed", "printed_decimals", "forward",
           "forward_for_sdpa", "sdpa_terms", "within_budget", "budget", "output_conditioning", "compare",
           "row_sum_bound", "softmax_input_perturbation", "lse"]

K_FORWARD = 4.0      # safety factor of the forward bound (two evaluations, each within it)
K_BUDGET = 2.0       # FlashAttention rule: error <= K_BUDGET x reference error + quantum
QUANTUM_ULPS = 4.0   # the rounding quantum of the budget rule, in ulps of the largest oracle value
CONDITIONING_CAP = 4.0   # the budget's quantum is at most 1/CONDITIONING_CAP of the answer (budget_conditioning)


BFLOAT16_EPS = precision.PRECISIONS["bfloat16"].eps   # 2**-8; NumPy has no bfloat16 dtype


def _precision(dtype) -> precision.Precision:
    p = precision.of(dtype)
    if p is None:
        raise ValueError(f"dtype must be one of {', '.join(precision.NAMES)} (a name, NumPy or torch dtype), "
                         f"got {dtype!r}")
    return p


def eps(dtype) -> float:
    """Unit roundoff u = 2**-p of a float dtype (2**-53 for float64, 2**-24 for float32, 2**-11 for
    float16, 2**-8 for bfloat16): :mod:`refimpl.precision`'s figure."""
    return _precision(dtype).eps


def ulp_distance(a, b) -> np.ndarray:
    """Number of representable floats between ``a`` and ``b`` (elementwise, in ``a``'s precision).

    Both are cast to the precision of ``a``; NaN against anything gives the maximum int64.
    """
    a = np.asarray(a)
    dtype = a.dtype if a.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    ai = np.asarray(a, dtype).copy()
    bi = np.asarray(b, dtype).astype(dtype, copy=True)
    itype = np.int32 if dtype == np.float32 else np.int64
    ia, ib = ai.view(itype).astype(np.int64), bi.view(itype).astype(np.int64)
    # map the sign-magnitude float order onto a monotone integer line
    top = np.int64(np.iinfo(np.int32).min if dtype == np.float32 else np.iinfo(np.int64).min)
    ia = np.where(ia < 0, top - ia, ia)
    ib = np.where(ib < 0, top - ib, ib)
    d = np.abs(ia - ib)
    return np.where(np.isnan(ai) | np.isnan(bi), np.iinfo(np.int64).max, d)


@dataclass(frozen=True)
class Tolerance:
    """``|actual - expected| <= atol + rtol * |expected|`` elementwise; ``atol`` may be an array."""
    atol: float | np.ndarray
    rtol: float
    rule: str                      # which rule and which figures made it, for reports

    def bound(self, expected) -> np.ndarray:
        return np.asarray(self.atol, dtype=np.float64) + self.rtol * np.abs(np.asarray(expected, np.float64))

    def describe(self) -> str:
        a = np.asarray(self.atol)
        atol = f"{float(a.max()):.3g}" if a.size else "0"
        return f"{self.rule} (atol {atol}, rtol {self.rtol:.3g})"


EXACT = Tolerance(0.0, 0.0, "exact")


@dataclass(frozen=True)
class Comparison:
    """What a comparison measured: worst absolute and relative error, worst ulp distance, verdict."""
    ok: bool
    max_abs: float
    max_rel: float
    max_ulp: int
    max_ratio: float               # worst |a - e| / bound (<= 1 passes); inf when bound is 0 and a != e
    worst_index: tuple[int, ...]
    tolerance: Tolerance
    shape_ok: bool = True
    detail: str = field(default="")

    def summary(self) -> str:
        if not self.shape_ok:
            return self.detail
        ulps = f"{self.max_ulp} ulp, " if self.max_ulp < 2 ** 20 else ""      # ulps say nothing of O(1) errors
        return (f"max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}, {ulps}"
                f"{self.max_ratio:.3g} of tolerance [{self.tolerance.describe()}], worst at {self.worst_index}")


def compare(actual, expected, tol: Tolerance) -> Comparison:
    """Compare arrays under ``tol``; shapes must match exactly (no broadcasting hides a bug)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return Comparison(False, math.inf, math.inf, np.iinfo(np.int64).max, math.inf, (), tol, False,
                          f"shape {a.shape}, but should be {e.shape}")
    if a.size == 0:
        return Comparison(True, 0.0, 0.0, 0, 0.0, (), tol)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        diff = np.abs(a - e)
        diff = np.where(np.isnan(a) != np.isnan(e), np.inf, np.where(np.isnan(a) & np.isnan(e), 0.0, diff))
        same_inf = np.isinf(a) & (a == e)
        diff = np.where(same_inf, 0.0, diff)
        bound = np.broadcast_to(tol.bound(e), e.shape)
        ratio = np.where(diff == 0, 0.0, np.where(bound > 0, diff / np.where(bound > 0, bound, 1), np.inf))
        rel = np.where(diff == 0, 0.0, diff / np.where(e != 0, np.abs(e), np.inf))
        ratio, rel = (np.where(np.isnan(x), np.inf, x) for x in (ratio, rel))   # inf/inf: a finite value vs inf
    worst = np.unravel_index(int(np.argmax(ratio)), e.shape)
    ulps = ulp_distance(np.asarray(actual), e)
    return Comparison(bool((ratio <= 1.0).all()), float(diff.max()), float(rel.max()), int(ulps.max()),
                      float(ratio.max()), tuple(int(i) for i in worst), tol)


# --- rule 2: printed numbers -----------------------------------------------------------------

def printed_decimals(text: str) -> int:
    """Decimals shown by a printed number's text: '0.7891368' -> 7, '6' -> 0, '1.5e-05' -> 6."""
    t = text.strip().lower()
    mant, _, exp = t.partition("e")
    dec = len(mant.split(".")[1]) if "." in mant else 0
    return max(dec - int(exp or 0), 0)


def printed(values, *, decimals: int | None = None, significant: int | None = None,
            texts=None, who: str = "") -> Tolerance:
    """Half a unit of the last printed digit, per element.

    ``decimals``: the printer showed a fixed number of decimals (numpy, torch).
    ``significant``: the printer showed at least this many significant digits (R's ``print``).
    ``texts``: the quoted texts, whose own decimals count too (the finer of the two wins).
    """
    v = np.asarray(values, dtype=np.float64)
    dec = np.zeros(v.shape, dtype=np.int64)
    if decimals is not None:
        dec[...] = decimals
    if significant is not None:
        with np.errstate(divide="ignore"):
            mag = np.floor(np.log10(np.abs(np.where(v == 0, 1.0, v))))
        dec = np.maximum(dec, (significant - 1 - mag).astype(np.int64))
    if texts is not None:
        td = np.vectorize(printed_decimals, otypes=[np.int64])(np.asarray(texts, dtype=object))
        dec = np.maximum(dec, td.reshape(v.shape))
    atol = 0.5 * np.power(10.0, -dec.astype(np.float64))
    label = "printed" + (f" by {who}" if who else "")
    spec = [f"{decimals} decimals" if decimals is not None else "", f"{significant} sig. digits" if significant else ""]
    quoted = ', '.join(s for s in spec if s) or 'as quoted'
    return Tolerance(atol, 0.0, f"{label}: half a unit of the last digit ({quoted})")


# --- rule 3: forward error bound ---------------------------------------------------------------

def forward(dtype, n_terms: float, magnitude: float) -> Tolerance:
    """``K_FORWARD * eps * n_terms * magnitude``: two same-precision evaluations of a length-n reduction."""
    atol = K_FORWARD * eps(dtype) * float(n_terms) * float(magnitude)
    name = _precision(dtype).name
    return Tolerance(atol, 0.0, f"forward bound {K_FORWARD:g}*eps({name})*{n_terms:g}*{magnitude:.3g}")


def lse(dtype, n_terms: float, *, rounded_to=None, score_max: float = 0.0) -> Tolerance:
    """The log-sum-exp's bound (rule 3 in log space): ``lse = max s + log sum exp(s - max s)`` inherits each
    score's error, at most ``eps * n_terms`` in absolute terms (the scores' reduction over D, the additive
    terms), and the sum's ``eps * Sk`` relative error becomes an absolute one under the log; ``n_terms`` of
    :func:`sdpa_terms` counts both. ``dtype``: the precision the LSE is computed and returned in
    (FlashAttention's: float32).

    ``rounded_to``: a lower precision the scores may be rounded to (a float16/bfloat16 case's own): each score
    then moves by at most ``u * |s|`` and the LSE, a weighted mean of those moves (``d lse = sum_j p_j d s_j``),
    by at most ``u * score_max``."""
    t = forward(dtype, n_terms, 1.0)
    extra = 0.0 if rounded_to is None else _precision(rounded_to).eps * float(score_max)
    how = f"log-sum-exp bound {K_FORWARD:g}*eps({_precision(dtype).name})*{n_terms:g}"
    if extra:
        how += f" + u({_precision(rounded_to).name})*{float(score_max):.4g} (scores rounded to it)"
    return Tolerance(t.atol + extra, 0.0, how)


def sdpa_terms(q, k, v, scale: float | None = None, *, weights: bool = False, per_case: bool = False):
    """``(n_terms, magnitude)`` of rule 3 for ``softmax(s q k^T) v`` (or its weights).

    ``per_case=True``: axis 0 stacks independent cases; both figures are then arrays, one per case.
    """
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    d_k, n_keys, d_v = q.shape[-1], k.shape[-2], v.shape[-1]
    s = 1.0 / math.sqrt(d_k) if scale is None else float(scale)

    def mx(a):
        return np.abs(a).reshape(len(a), -1).max(axis=1) if per_case else float(np.abs(a).max())
    with np.errstate(over="ignore"):
        n = np.minimum(2.0 * s * d_k * mx(q) * mx(k), 1e30) + n_keys + d_v + 2
    mag = (np.ones(len(q)) if per_case else 1.0) if weights else mx(v)
    return (n, mag) if per_case else (float(n), mag)


def forward_for_sdpa(q, k, v, scale: float | None = None, dtype=None, *, weights: bool = False) -> Tolerance:
    """Rule 3 for the output (or, ``weights=True``, the weights) of ``softmax(s q k^T) v``."""
    dtype = dtype or np.result_type(*(np.asarray(a) for a in (q, k, v)))
    return forward(dtype, *sdpa_terms(q, k, v, scale, weights=weights))


# --- rule 4: the FlashAttention error budget ----------------------------------------------------

def budget_conditioning(n_terms: float, dtype) -> float:
    """The conditioning a judge gives :func:`within_budget`: the problem's ``n_terms``, capped so that the
    quantum stays at most a quarter of the answer, ``QUANTUM_ULPS * eps * (1 + cap) <= 1/4``.

    Uncapped, the quantum ``QUANTUM_ULPS * eps * (1 + n_terms) * max|oracle|`` reaches the size of the answer
    itself in bfloat16 from n_terms ~ 64 (in float32 for scores near 1e7): a target returning zeros would pass.
    Errors beyond the cap that a correct low-precision kernel makes (scores so large that the dtype cannot
    resolve the softmax) are the same-precision reference's too, and the ``K_BUDGET`` term covers them.
    """
    cap = 1.0 / (CONDITIONING_CAP * QUANTUM_ULPS * eps(dtype)) - 1.0
    return min(float(n_terms), cap)


def output_conditioning(q, k, v, weights, out, scale: float | None = None, additive=None,
                        dtype="float32") -> float:
    """The budget's conditioning of one case from its own numbers (first order), in units of ``max|out|``:
    ``2 + max_id (sum_j p_ij (c_ij + 1) |v_jd - o_id| + n_i |o_id|) / max|out|``.

    ``c_ij = 2 (s sum_d |q_id k_jd| + |additive_ij|)`` is the error of score ``ij`` per unit roundoff (its
    products, the added term, the max subtracted) and the 1 beside it a weight rounded to the precision (as
    FlashAttention rounds P before P @ V): a score off by ``delta_ij`` moves ``o_i`` by ``sum_j p_ij delta_ij
    (v_j - o_i)``, so a row whose softmax is saturated (one weight 1, the others ~0) is insensitive however
    large its scores. The 2 counts the normalisation and the output's own rounding. ``n_i = min(max_j c_ij,
    -ln(max_j p_ij) / u)`` is a kernel normalising through a rounded log-sum-exp (FlashAttention's ``exp(s -
    lse)``, split-KV combines): every weight of the row then moves by ``lse``'s rounding, at most
    ``u |lse| <= u max_j c_ij``, and nothing when the row is saturated (``lse`` = the max exactly, as long as
    ``ln l = -ln max_j p_ij`` is below an ulp of it). Where ``u c`` reaches the gap between the largest scores
    the first order is no longer a bound: the capped n_terms (:func:`budget_conditioning`) then is the smaller.
    The judge's n_terms bounds the same quantity by the largest score alone, which reaches the size of the
    answer where the float32 reference is exact (extreme logits: a 1.10x output passed).

    Evaluated without cancellation: the largest weight's term exactly, ``p_iw c_iw |v_wd - o_id|`` (a saturated
    row has ``o_i = v_w`` to rounding, however large ``c_iw``), the others through ``|v_jd - o_id| <= |v_jd| +
    |o_id|``, in matrix products. ``q`` (B, Hq, Sq, D), ``k`` (B, Hkv, Sk, D), ``v`` (B, Hkv, Sk, Dv),
    ``weights`` (B, Hq, Sq, Sk) and ``out`` (B, Hq, Sq, Dv) float64, the oracle's values; ``additive``
    broadcasts to the weights (-inf where a key is dropped)."""
    q, k, v, p, o = (np.asarray(a, np.float64) for a in (q, k, v, weights, out))
    if p.size == 0 or o.size == 0:
        return 2.0
    group = q.shape[-3] // k.shape[-3]
    k, v = (np.repeat(a, group, axis=-3) if group > 1 else a for a in (k, v))
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else abs(float(scale))
    c = s * (np.abs(q) @ np.swapaxes(np.abs(k), -1, -2))                  # (B, Hq, Sq, Sk)
    if additive is not None:
        a = np.abs(np.asarray(additive, np.float64))
        c = c + np.where(np.isfinite(a), a, 0.0)
    top_c = np.where(p > 0, c, 0.0).max(axis=-1, keepdims=True)          # (B, Hq, Sq, 1): |lse| per u, at most
    p_max = p.max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        log_l = np.where(p_max > 0, -np.log(np.where(p_max > 0, p_max, 1.0)), 0.0) / eps(dtype)
    pc = p * (2.0 * c + 1.0)                                              # (B, Hq, Sq, Sk)
    w = np.argmax(p, axis=-1)[..., None]                                  # (B, Hq, Sq, 1): the largest weight
    top = np.take_along_axis(pc, w, axis=-1)                              # (B, Hq, Sq, 1)
    v_w = np.take_along_axis(v, np.broadcast_to(w, w.shape[:-1] + v.shape[-1:]), axis=-2)   # (B, Hq, Sq, Dv)
    np.put_along_axis(pc, w, 0.0, axis=-1)
    per_row = pc.sum(axis=-1, keepdims=True) + np.minimum(top_c, log_l)    # (B, Hq, Sq, 1): times |o_id|
    moved = top * np.abs(v_w - o) + pc @ np.abs(v) + per_row * np.abs(o)
    largest = float(np.abs(o).max())
    moved = float(moved.max())
    return 2.0 + (moved / largest if largest > 0 else 0.0)


def within_budget(test, reference, oracle, dtype, conditioning: float = 0.0) -> tuple[bool, float, float]:
    """``max|test - oracle| <= K_BUDGET * max|reference - oracle| + quantum`` with the rounding quantum
    ``QUANTUM_ULPS * eps * (1 + conditioning) * max|oracle|``.

    ``conditioning`` is the problem's error amplification, for attention the ``n_terms`` of
    :func:`sdpa_terms` (score size, which the softmax turns into relative error, plus the lengths of the
    sums): without it a reference that happens to round luckily would leave a budget smaller than the
    rounding any correct order of operations may produce.
    Returns ``(ok, test_error, allowed)``.
    """
    allowed = budget(reference, oracle, dtype, conditioning)
    err_t = float(np.abs(np.asarray(test, np.float64) - np.asarray(oracle, np.float64)).max())
    return err_t <= allowed, err_t, allowed


def budget(reference, oracle, dtype, conditioning: float = 0.0) -> float:
    """The error rule 4 allows: ``K_BUDGET * max|reference - oracle| + QUANTUM_ULPS * eps * (1 + conditioning)
    * max|oracle|`` (:func:`within_budget`)."""
    o = np.asarray(oracle, dtype=np.float64)
    err_r = float(np.abs(np.asarray(reference, np.float64) - o).max())
    return K_BUDGET * err_r + QUANTUM_ULPS * eps(dtype) * (1.0 + conditioning) * float(np.abs(o).max())


# --- bounds for the invariants ---------------------------------------------------------------

def row_sum_bound(n: int, dtype) -> float:
    """``|sum_j w_ij - 1|`` for a softmax row of ``n`` weights: ``K_FORWARD * (n + 2) * eps``."""
    return K_FORWARD * (n + 2) * eps(dtype)


def softmax_input_perturbation(max_abs_x: float, n: int, dtype) -> Tolerance:
    """Two softmaxes whose inputs differ by rounding of magnitude ``eps * max|x|`` (shifted rows,
    reordered sums): ``K_FORWARD * eps * (2 max|x| + n + 2)`` absolute on weights in [0, 1]."""
    return forward(dtype, 2.0 * max_abs_x + n + 2, 1.0)


def forward_for_sdpa_cases(q, k, v, scale: float | None = None, dtype=None, *, weights: bool = False) -> Tolerance:
    """Rule 3 for a stack of independent cases (axis 0): one bound per case, shape (n, 1, 1)."""
    n, mag = sdpa_terms(q, k, v, scale, weights=weights, per_case=True)
    dtype = dtype or np.float64
    return Tolerance((K_FORWARD * eps(dtype) * n * mag)[:, None, None], 0.0,
                     f"forward bound per case, {K_FORWARD:g}*eps({_precision(dtype).name})*n_terms*max|v|")
