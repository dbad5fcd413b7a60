"""The verdict rules that the mutation pass of issue #24 found unpinned (judge, lse_judge, determinism): what a
case not judged reads, how the mean of V on a fully masked row is recognised (its tolerance, and which key-value
head a grouped query head shares), the bound of a case with no row to judge, the case's own conditioning with a
mask, the per-case caches, the ratio of a case failing on a rule other than its error, the slope allowance's
edge, the LSE's score bound under small norms, and how --repeat counts its calls and the values that differ.
Expected figures come from the documented rules and hand computations, not from the judge's output."""
import math
from dataclasses import replace

import numpy as np
import pytest

from refimpl import scaled_dot_product_attention, tolerance as tol
from refimpl.harness.apis import Returned
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.target_spec import Target
from refimpl.harness.verdicts.determinism import first_difference, repeat_calls
from refimpl.harness.verdicts.judge import bounds, classify_dead_rows, judge, n_terms
from refimpl.harness.verdicts.lse_judge import lse_bound, reference_lse
from refimpl.tolerance_slope import SLOPE_ULPS, slope_of

STORE = CaseStore()


def _case(family, dtype, index=None, suite="quick"):
    return STORE.get(next(s for s in select([family], suite, (dtype,)) if index is None or s.index == index))


def _got(data, out, weights=None, dtype=None):
    return Returned(out, weights, dtype or data.spec.dtype, [])


def _dead_case():
    """masked-rows/0000-float64: a bool mask leaving some query rows with no key (B = Hq = Hkv = 1)."""
    return _case("masked-rows", "float64", 0)


# --- CaseResult: what a case not judged reads, and what its repr shows ----------------------------------------

def test_a_case_the_target_does_not_support_reads_ratio_zero_and_no_weights():
    """A target raising NotImplementedError is 'unsupported', not judged: no error was measured, so its ratio is
    0 (never a figure that reads as a measured error at the bound) and it returned no weights."""
    def unsupported(q, k, v, mask=None, scale=None):
        raise NotImplementedError("not this one")
    spec = next(s for s in select(["sizes"], "quick", ("float64",)))
    res = run_one(Target("u", unsupported), spec, STORE)
    assert res.status == Status.UNSUPPORTED
    assert res.ratio == 0.0 and res.returned_weights is False


def test_a_case_results_repr_leaves_out_the_returned_arrays_and_the_traceback():
    """A result's repr (logs, assertion messages) names the case and its verdict, not what the target returned
    (whole arrays) nor the target's traceback."""
    data = _case("sizes", "float64", 4)
    res = judge(data, _got(data, data.expected.copy()), "float64")
    res.traceback = "Traceback (most recent call last): SENTINEL"
    text = repr(res)
    assert res.id in text and "ratio=" in text
    assert "got=" not in text and "traceback=" not in text and "SENTINEL" not in text


# --- rows with no key: the mean of V -------------------------------------------------------------------------

def _dead_with_v(v):
    """The dead-row case with its values replaced by ``v`` (B, Hkv, Sk, Dv)."""
    data = _dead_case()
    return replace(data, v=v)


@pytest.mark.parametrize("fraction,policy", [(0.9, "uniform"), (1.1, "other")])
def test_the_mean_of_v_is_recognised_to_a_thousandth_of_one_plus_its_largest_magnitude(fraction, policy):
    """'uniform' is the mean of V within rtol 1e-2 and atol 1e-3 x (1 + max|mean of V|). V's column 1 is all
    ones (mean 1, so the atol is 2e-3) and column 0 all zeros (mean 0: only the atol counts there); a dead row
    off by 0.9 x 2e-3 in column 0 is the mean, off by 1.1 x 2e-3 it is not."""
    base = _dead_case()
    v = np.zeros_like(base.v)
    v[..., 1] = 1.0
    data = _dead_with_v(v)
    assert data.dead.any()
    mean = np.zeros(data.expected.shape[-1])
    mean[1] = 1.0                                                      # the mean over keys, by hand
    out = data.expected.copy()
    out[data.dead] = mean
    out[data.dead, 0] = fraction * 1e-3 * (1 + 1.0)
    assert classify_dead_rows(out, data) == policy


def test_a_grouped_query_heads_uniform_is_the_mean_of_the_key_value_head_it_shares():
    """With grouped-query attention (Hq = g Hkv) query head h reads key-value head h // g: a dead row of head h
    giving the mean over keys of V[:, h // g] is 'uniform'; the mean of another head's V is not."""
    data = _case("gqa", "float64", 0)
    s = data.spec
    g = s.Hq // s.Hkv
    assert s.Hkv > 1 and g > 1
    dead = np.zeros_like(data.dead)
    dead[:, :, 0] = True                                               # the first query of every head
    case = replace(data, dead=dead)
    out = data.expected.copy()
    wrong = data.expected.copy()
    for b in range(s.B):
        for h in range(s.Hq):
            out[b, h, 0] = data.v[b, h // g].mean(axis=0)
            wrong[b, h, 0] = data.v[b, (h // g + 1) % s.Hkv].mean(axis=0)
    assert classify_dead_rows(out, case) == "uniform"
    assert classify_dead_rows(wrong, case) == "other"


# --- the judge's bounds ----------------------------------------------------------------------------------------

def test_a_low_precision_case_with_no_row_with_a_key_states_a_zero_bound():
    """With no row to compare, the output's budget is stated as zero (atol 0, rtol 0: what the export's
    budget_atol and a reproduction script print), named 'no row has a key'."""
    data = _case("sizes", "float32", 4)
    none = replace(data, dead=np.ones_like(data.dead))
    b = bounds(none, {})
    assert float(b.output.atol) == 0.0 and float(b.output.rtol) == 0.0 and b.output.rule == "no row has a key"


def _budget_by_hand(data, additive):
    """Rule 4 for a float32 case: K_BUDGET x refimpl-in-float32's error + the quantum, with the conditioning the
    smaller of the capped n_terms and the case's own (``additive`` counted among its score terms)."""
    s, live = data.spec, data.live
    kw = data.reference_kwargs()
    if kw["mask"] is not None and kw["mask"].dtype != bool:
        kw["mask"] = kw["mask"].astype(np.float32)
    ref = scaled_dot_product_attention(*(a.astype(np.float32) for a in (data.q, data.k, data.v)), **kw)[0]
    cond = min(tol.budget_conditioning(n_terms(data), "float32"),
               tol.output_conditioning(data.q, data.k, data.v, data.weights, data.expected, s.scale, additive,
                                       "float32"))
    return tol.budget(ref[live], data.expected[live], "float32", cond), cond


def test_the_case_conditioning_counts_an_additive_mask_among_its_score_terms():
    data = _case("additive-mask", "float32", 1)
    m = data.reference_kwargs()["mask"]
    assert m.dtype != bool
    args = (data.q, data.k, data.v, data.weights, data.expected, data.spec.scale)
    assert tol.output_conditioning(*args, m, "float32") != tol.output_conditioning(*args, None, "float32")
    want, cond = _budget_by_hand(data, m)
    b = bounds(data, {})
    assert b.output.atol == pytest.approx(want, rel=1e-12) and f"(1 + {cond:.6g})" in b.output.rule


def test_the_case_conditioning_does_not_read_a_bool_mask_as_score_terms():
    """A bool keep-mask adds nothing to any score: the case's own conditioning is that of its scores alone."""
    data = _case("bool-mask", "float32", 0)
    m = data.reference_kwargs()["mask"]
    assert m.dtype == bool
    args = (data.q, data.k, data.v, data.weights, data.expected, data.spec.scale)
    assert tol.output_conditioning(*args, m, "float32") != tol.output_conditioning(*args, None, "float32")
    want, cond = _budget_by_hand(data, None)
    b = bounds(data, {})
    assert b.output.atol == pytest.approx(want, rel=1e-12) and f"(1 + {cond:.6g})" in b.output.rule


def test_bounds_make_the_reference_the_conditioning_and_the_magnitude_once_per_cache(monkeypatch):
    """The cache is shared by every target of a run (CaseStore.cache): the float32 reference, the conditioning
    and each element's magnitude are made by the first call and read by the next ones, not made again."""
    data = _case("sizes", "float32", 4)
    cache: dict = {}
    first = bounds(data, cache)
    ref, mag = cache["ref"], cache["magnitude"]
    assert ref is not None and mag is not None
    made = []
    real = tol.budget_conditioning
    monkeypatch.setattr(tol, "budget_conditioning", lambda *a, **k: made.append(a) or real(*a, **k))
    again = bounds(data, cache)
    assert cache["ref"] is ref and cache["magnitude"] is mag and made == []
    assert again == first


def test_the_reference_lse_is_made_once_per_cache():
    data = _case("sizes", "float64", 4)
    cache: dict = {}
    lse = reference_lse(data, cache)
    assert reference_lse(data, cache) is lse and cache["lse"] is lse


# --- the verdict's ratio -----------------------------------------------------------------------------------------

def test_a_case_failing_on_a_rule_other_than_its_error_reads_ratio_one_plus_1e_minus_9():
    """Exact values on the rows with a key but 'other' on the rows with none: the case fails, and its ratio (0 by
    its errors) is raised to the failing floor 1 + 1e-9 (the gradient rows' floor too): above 1, so a failing
    case never reads as passing, and no further."""
    data = _dead_case()
    out = data.expected.copy()
    out[data.dead] = 7.0
    res = judge(data, _got(data, out), "float64")
    assert res.status == Status.FAIL and res.convention == "other"
    assert res.ratio == 1.0 + 1e-9


def test_an_output_whose_slope_is_off_by_exactly_the_allowance_passes_with_ratio_one():
    """The slope's allowance is inclusive, as every bound of the judge is (tolerance.compare passes at the bound):
    an output whose least-squares slope on the oracle is exactly 1 + allowance passes, with ratio exactly 1. This
    float32 case's allowance is its floor, SLOPE_ULPS = 2 ulps (2 x 2**-24), a multiple of 2**-52, so a slope
    1 + 2**-23 is reachable exactly by scaling the oracle."""
    data = _case("sizes", "float32", 4)
    assert not data.dead.any()
    cache: dict = {}
    b = bounds(data, cache)
    assert b.slope == SLOPE_ULPS * 2.0 ** -24
    exp = data.expected
    scaled = [exp * (1 + b.slope + j * 2.0 ** -52) for j in range(-64, 65)]
    out = next(o for o in scaled if abs(slope_of(o, exp) - 1.0) == b.slope)
    res = judge(data, _got(data, out), "float32", cache=cache)
    assert res.status == Status.PASS and res.ratio == 1.0 and res.detail == ""


# --- the log-sum-exp's score bound ---------------------------------------------------------------------------

def test_a_half_cases_lse_score_bound_uses_norms_below_one_as_they_are():
    """The float16 LSE bound's score term is u(float16) x |scale| max||q_i|| max||k_j|| (Cauchy-Schwarz): with q
    and k scaled so that every norm is below 1, the product of the norms, not of norms raised to 1."""
    data = _case("sizes", "float16", 4)
    small = replace(data, q=data.q / 64, k=data.k / 64)
    nq, nk = (float(np.linalg.norm(a, axis=-1).max()) for a in (small.q, small.k))
    assert nq < 1 and nk < 1 and small.spec.scale is None and not small.spec.softcap
    scale = 1 / math.sqrt(small.spec.D)
    n = n_terms(small)
    want = tol.forward("float32", n, 1.0).atol + tol.eps("float16") * scale * nq * nk
    assert lse_bound(small, "float32", n).atol == pytest.approx(want, rel=1e-12)


# --- --repeat N ----------------------------------------------------------------------------------------------------

def test_repeat_calls_makes_n_minus_one_more_calls():
    """The first call is the case's own; --repeat 3 calls the target twice more, and no third time."""
    first = _got(_case("sizes", "float64", 4), np.zeros((1, 1, 2, 2)))
    calls = []

    def call():
        calls.append(1)
        return first if len(calls) < 3 else Returned(np.ones((1, 1, 2, 2)), None, "float64", [])
    assert repeat_calls(call, first, 3) is None and len(calls) == 2


def test_the_largest_difference_between_two_calls_is_the_largest_absolute_difference():
    a = Returned(np.array([1.0, 2.0, -3.0]), None, "float64", [])
    b = Returned(np.array([1.0, 2.25, -3.0]), None, "float64", [])
    assert first_difference(a, b) == "output: 1 of 3 values differ, by up to 0.25"


def test_a_nan_against_a_number_counts_as_a_differing_value():
    """A value that is NaN in one call and a number in the other differs (only NaN against NaN is the same)."""
    a = Returned(np.array([1.0, np.nan, 3.0, np.nan]), None, "float64", [])
    b = Returned(np.array([1.0, 2.0, 3.5, np.nan]), None, "float64", [])
    assert first_difference(a, b) == "output: 2 of 4 values differ, by up to 0.5"
