"""The judge, read as its specification: for each dtype and each rule, an answer just inside its bound (0.99x)
passes and one just outside (1.01x) fails — outputs (rule 3 in float64; the same-precision budget and the
slope in float32, float16, bfloat16), weights, the log-sum-exp and each gradient — and the case's ratio is the
error over what was allowed (to 1e-12). Rows with no key: zeros, NaN and the mean of V are each accepted, and
refused when another policy is pinned; NaN anywhere else fails with an infinite ratio."""
import math
from dataclasses import replace

import numpy as np
import pytest

from refimpl import scaled_dot_product_attention, sdpa_backward, tolerance as tol, tolerance_gradients as tg
from refimpl.precision import get as precision
from refimpl.harness.apis import Returned
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore
from refimpl.harness.verdicts import grad_judge as gj
from refimpl.harness.verdicts.judge import Bounds, bounds, judge, n_terms
from refimpl.harness.verdicts.lse_judge import judge_lse, lse_bound, reference_lse

STORE = CaseStore()
LOW = ["float32", "float16", "bfloat16"]
FACTORS = [(0.99, Status.PASS), (1.01, Status.FAIL)]


def _case(dtype, family="sizes", index=4):
    """A small case of ``family`` (index ``index`` of the quick suite) in ``dtype``."""
    return STORE.get(next(s for s in select([family], "quick", (dtype,)) if s.index == index))


def _got(data, out, weights=None, dtype=None, lse=None):
    return Returned(out, weights, dtype or data.spec.dtype, [], lse=lse, lse_dtype="float32")


def _smallest(a, mask):
    """The index of the entry of ``a`` with the smallest magnitude where ``mask``: a perturbation there is
    represented almost exactly, so the error it makes is the one asked for."""
    flat = np.where(mask, np.abs(a), np.inf)
    return np.unravel_index(int(np.argmin(flat)), a.shape)


def _live_index(data):
    live = np.broadcast_to(data.live[..., None], data.expected.shape)
    return _smallest(data.expected, live)


@pytest.mark.parametrize("factor,status", FACTORS)
def test_float64_output_rule_3_at_the_bound(factor, status):
    data = _case("float64")
    assert data.reference_kwargs()["mask"] is None                   # no additive term: rule 3 as tolerance.py says
    b = tol.forward_for_sdpa(data.q, data.k, data.v, data.spec.scale, np.float64)
    idx = _live_index(data)
    allowed = float(np.broadcast_to(b.atol, data.expected.shape)[idx]) + b.rtol * abs(data.expected[idx])
    out = data.expected.copy()
    out[idx] += factor * allowed
    res = judge(data, _got(data, out), "float64")
    err = float(np.abs(out - data.expected)[data.live].max())
    assert res.status == status and res.ratio == pytest.approx(err / allowed, rel=1e-12)
    assert res.ratio == pytest.approx(factor, rel=1e-3)
    assert (status == Status.PASS) == (res.detail == "") and ("output: max abs" in res.detail) == (status != "pass")


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("factor,status", FACTORS)
def test_low_precision_output_budget_at_the_bound(dtype, factor, status):
    data = _case(dtype)
    s, live = data.spec, data.live
    q32, k32, v32 = (a.astype(np.float32) for a in (data.q, data.k, data.v))
    ref = precision(dtype).round(scaled_dot_product_attention(q32, k32, v32)[0])
    cond = min(tol.budget_conditioning(n_terms(data), dtype),   # rule 4, the case's own conditioning if smaller
               tol.output_conditioning(data.q, data.k, data.v, data.weights, data.expected, s.scale, None, dtype))
    allowed = tol.budget(ref[live], data.expected[live], dtype, cond)
    cache: dict = {}
    assert bounds(data, cache).output.atol == pytest.approx(allowed, rel=1e-12)
    idx = _live_index(data)
    out = data.expected.copy()
    out[idx] += factor * allowed
    res = judge(data, _got(data, out), dtype, cache=cache)
    err = float(np.abs(out - data.expected)[data.live].max())
    assert res.status == status and res.ratio == pytest.approx(err / allowed, rel=1e-12)
    assert ("budget" in res.detail) == (status == Status.FAIL) and "scaled by" not in res.detail


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("factor,status", FACTORS)
def test_low_precision_output_slope_at_the_bound(dtype, factor, status):
    """An output scaled by 1 + f x (the slope's allowance): within the elementwise budget (this case's allowance
    times its largest output is under half the budget), so the slope alone decides."""
    data = _case(dtype)
    cache: dict = {}
    b = bounds(data, cache)
    assert b.slope * np.abs(data.expected[data.live]).max() < 0.5 * b.output.atol
    res = judge(data, _got(data, data.expected * (1 + factor * b.slope)), dtype, cache=cache)
    assert res.status == status and res.ratio == pytest.approx(factor, rel=1e-6)
    assert ("scaled by" in res.detail) == (status == Status.FAIL) and "budget" not in res.detail


@pytest.mark.parametrize("dtype", ["float64"] + LOW)
@pytest.mark.parametrize("factor,status", FACTORS)
def test_weights_at_the_bound_and_the_ratio_counts_them(dtype, factor, status):
    data = _case(dtype)
    w_allowed = tol.forward(dtype, n_terms(data), 1.0).atol          # rule 3 with magnitude 1, in the case's dtype
    assert bounds(data).weights.atol == w_allowed
    live = np.broadcast_to(data.live[..., None], data.weights.shape)
    idx = _smallest(data.weights, live)
    w = data.weights.copy()
    w[idx] += factor * w_allowed
    res = judge(data, _got(data, data.expected.copy(), w), dtype)
    assert res.status == status and ("weights:" in res.detail) == (status == Status.FAIL)
    err = float(np.abs(w - data.weights)[live].max())
    assert res.ratio == pytest.approx(err / w_allowed, rel=1e-12)


@pytest.mark.parametrize("dtype", ["float64"] + LOW)
@pytest.mark.parametrize("factor,status", FACTORS)
def test_log_sum_exp_at_the_bound(dtype, factor, status):
    data = _case(dtype)
    n = n_terms(data)
    ref = reference_lse(data, {})
    limit = float(lse_bound(data, "float32", n).atol)
    idx = _smallest(ref, data.live)
    lse = ref.copy()
    lse[idx] += factor * limit
    ratio, problems, _ = judge_lse(data, lse, "float32", n, {})
    err = float(np.abs(lse - ref)[data.live].max())
    assert (not problems) == (status == Status.PASS) and ratio == pytest.approx(err / limit, rel=1e-12)
    res = judge(data, _got(data, data.expected.copy(), lse=lse), dtype)        # the case's ratio carries it
    assert res.status == status and res.ratio == pytest.approx(ratio, rel=1e-12)


@pytest.mark.parametrize("dtype", ["float64"] + LOW)
@pytest.mark.parametrize("name", gj.GRADS)
@pytest.mark.parametrize("factor,status", FACTORS)
def test_each_gradient_at_the_bound(dtype, name, factor, status):
    data = _case(dtype)
    cache: dict = {}
    gd = gj.grad_data(data, cache)
    exact = gj.GradReturned({n: gd.oracle[n].copy() for n in gj.GRADS}, dtype)
    assert gj.judge_grads(gd, exact, dtype, cache).status == Status.PASS
    e = gd.oracle[name]
    idx = _smallest(e, np.ones(e.shape, bool))
    if dtype == "float64":
        b = tg.gradient_for_sdpa(data.q, data.k, data.v, gd.d_out, data.spec.scale, np.float64)[name]
        allowed = float(np.broadcast_to(b.atol, e.shape)[idx]) + b.rtol * abs(e[idx])
    else:                       # rule 4 over refimpl's own backward in float32, rounded (tolerance_gradients)
        g32 = sdpa_backward(*(a.astype(np.float32) for a in (data.q, data.k, data.v, gd.d_out)),
                            **data.reference_kwargs())
        naive = precision(dtype).round(dict(zip(gj.GRADS, g32[:3]))[name])
        terms = tg.sdpa_grad_terms(data.q, data.k, data.v, gd.d_out, data.spec.scale)
        cond = tol.budget_conditioning(terms[name][0], dtype)
        rule4 = tg.gradient_within_budget(e, naive, e, dtype, cond)[2]
        # its floor: the quantum over the largest entry of the gradient computed on absolute values
        sc = 1.0 / math.sqrt(data.q.shape[-1]) if data.spec.scale is None else data.spec.scale
        g = data.spec.Hq // data.spec.Hkv
        ke, ve = np.repeat(np.abs(data.k), g, axis=1), np.repeat(data.v, g, axis=1)      # (B, Hq, Sk, D|Dv)
        p = data.weights                                                                   # (B, Hq, Sq, Sk)
        ds = p * (np.abs(gd.d_out @ np.swapaxes(ve, -1, -2))
                  + np.abs(np.sum(gd.d_out * data.expected, axis=-1, keepdims=True)))

        def group_sum(a):                                                                  # (B, Hq, ..) -> (B, Hkv, ..)
            return a.reshape(a.shape[0], -1, g, *a.shape[2:]).sum(axis=2)
        mag = {"dq": sc * (ds @ ke), "dk": group_sum(sc * (np.swapaxes(ds, -1, -2) @ np.abs(data.q))),
               "dv": group_sum(np.swapaxes(p, -1, -2) @ np.abs(gd.d_out))}[name].max()
        floor = tol.QUANTUM_ULPS * tol.eps(dtype) * (1.0 + cond) * mag
        allowed = max(rule4, tg.K_GRAD_BUDGET * float(np.abs(naive - e).max()) + floor)
        assert exact.allowed[name] == pytest.approx(allowed, rel=1e-9), (exact.allowed[name], allowed)
    grads = {n: gd.oracle[n].copy() for n in gj.GRADS}
    grads[name][idx] += factor * allowed
    got = gj.GradReturned(grads, dtype)
    v = gj.judge_grads(gd, got, dtype, cache)
    err = float(np.abs(grads[name] - e).max())
    assert v.status == status and (name + ":" in v.detail) == (status == Status.FAIL)
    assert v.ratio == pytest.approx(err / allowed, rel=1e-9) and got.allowed[name] == pytest.approx(allowed)


# --- rows with no key, NaN elsewhere, and the rule's own figures -------------------------------------------

def _dead_case():
    return STORE.get(next(s for s in select(["masked-rows"], "quick", ("float64",)) if s.mask == "bool"))


def _with_dead(data, fill):
    out = data.expected.copy()
    out[data.dead] = fill
    return out


def _mean_v(data):
    g = data.spec.Hq // data.spec.Hkv
    return np.broadcast_to(np.repeat(data.v, g, axis=1).mean(axis=-2, keepdims=True), data.expected.shape)


@pytest.mark.parametrize("policy", ["zeros", "nan", "uniform"])
def test_each_dead_row_policy_is_accepted_and_refused_when_another_is_pinned(policy):
    data = _dead_case()
    assert data.dead.any()
    out = _with_dead(data, 0.0) if policy == "zeros" else _with_dead(data, np.nan) if policy == "nan" else \
        np.where(data.dead[..., None], _mean_v(data), data.expected)
    res = judge(data, _got(data, out), "float64")
    assert res.status == Status.PASS and res.convention == policy and res.ratio < 1
    other = next(p for p in ("zeros", "nan", "uniform") if p != policy)
    pinned = judge(data, _got(data, out), "float64", masked_rows=other)
    assert pinned.status == Status.FAIL and f"fully masked rows give '{policy}' (accepted: {other})" in pinned.detail
    assert 1.0 < pinned.ratio < 1.0 + 1e-6                           # a failing case never reads as passing


@pytest.mark.parametrize("off,policy", [(0.005, "uniform"), (0.02, "other")])
def test_the_mean_of_v_is_recognised_within_one_percent(off, policy):
    data = _dead_case()
    mean = _mean_v(data)
    out = np.where(data.dead[..., None], mean * (1 + off), data.expected)
    assert judge(data, _got(data, out), "float64").convention == policy


def test_a_dead_row_with_anything_else_is_other_and_fails():
    data = _dead_case()
    res = judge(data, _got(data, _with_dead(data, 7.0)), "float64")
    assert res.status == Status.FAIL and res.convention == "other" and "give 'other'" in res.detail


def test_a_single_dead_value_is_classified_like_many():
    """One dead row of one value (Dv = 1) is as much a row as any: NaN there is 'nan', not 'zeros'."""
    data = _dead_case()
    one = np.zeros_like(data.dead)
    one[np.unravel_index(int(np.argmax(data.dead)), data.dead.shape)] = True
    narrow = replace(data, dead=one, expected=data.expected[..., :1], v=data.v[..., :1])
    out = narrow.expected.copy()
    out[one] = np.nan
    assert judge(narrow, _got(narrow, out), "float64").convention == "nan"


def test_a_case_without_dead_rows_reports_no_convention():
    data = _case("float64")
    assert not data.dead.any()
    assert judge(data, _got(data, data.expected.copy()), "float64").convention is None


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_nan_in_a_row_with_a_key_fails_with_an_infinite_ratio(dtype):
    data = _case(dtype)
    out = data.expected.copy()
    out[_live_index(data)] = np.nan
    res = judge(data, _got(data, out), dtype)
    assert res.status == Status.FAIL and res.ratio == math.inf


def test_a_low_precision_case_with_no_row_to_judge_has_ratio_zero():
    data = _case("float32")
    none = replace(data, dead=np.ones_like(data.dead))
    res = judge(none, _got(none, np.zeros_like(none.expected)), "float32")
    assert res.status == Status.PASS and res.ratio == 0.0


def test_the_additive_mask_counts_twice_its_largest_finite_term():
    data = next(d for d in map(STORE.get, select(["additive-mask"], "default", ("float64",)))
                if not np.isfinite(d.mask).all())                  # finite terms and -inf entries
    m = data.reference_kwargs()["mask"]
    base, _ = tol.sdpa_terms(data.q, data.k, data.v, data.spec.scale)
    assert n_terms(data) == pytest.approx(base + 2 * np.abs(m[np.isfinite(m)]).max(), rel=1e-15)
    plain = _case("float64")
    assert n_terms(plain) == tol.sdpa_terms(plain.q, plain.k, plain.v, plain.spec.scale)[0]


def test_the_float32_budget_is_measured_on_refimpl_in_float32_mask_included():
    data = STORE.get(next(s for s in select(["additive-mask"], "quick", ("float32",))))
    cache: dict = {}
    b = bounds(data, cache)
    kw = data.reference_kwargs()
    kw["mask"] = kw["mask"].astype(np.float32)
    ref = scaled_dot_product_attention(*(a.astype(np.float32) for a in (data.q, data.k, data.v)), **kw)[0]
    want = tol.budget(ref[data.live], data.expected[data.live], "float32", cache["conditioning"])
    assert b.output.atol == want


def test_a_case_without_known_weights_uses_the_capped_conditioning():
    data = _case("float32")
    blind = replace(data, weights=None)
    cache: dict = {}
    b = bounds(blind, cache)
    assert cache["conditioning"] == tol.budget_conditioning(n_terms(data), "float32")
    assert b.output.atol >= bounds(data, {}).output.atol


def test_bounds_are_a_fixed_statement():
    b = bounds(_case("float64"))
    with pytest.raises(Exception):
        b.slope = 0.0                                                # type: ignore[misc]
    assert isinstance(b, Bounds)


# --- the log-sum-exp's own rules ----------------------------------------------------------------------------

@pytest.mark.parametrize("case_dtype,lse_dtype,own", [("float64", "float64", "float64"),
                                                      ("float64", "float32", "float32"),
                                                      ("float32", "float64", "float32"),
                                                      ("float16", "float32", "float32")])
def test_an_lse_is_bounded_in_the_lower_of_its_own_and_the_cases_precision(case_dtype, lse_dtype, own):
    data = _case(case_dtype)
    n = n_terms(data)
    b = lse_bound(data, lse_dtype, n)
    plain = tol.forward(own, n, 1.0).atol
    assert b.atol >= plain and (case_dtype == "float16" or b.atol == plain)


@pytest.mark.parametrize("family", ["softcap", "additive-mask", "sizes"])
def test_a_half_cases_lse_also_allows_its_scores_rounding(family):
    """Scores rounded to float16 move the LSE by at most u(float16) x the largest |score|, bounded by
    Cauchy-Schwarz: |scale| max ||q_i|| max ||k_j|| (at most the softcap), plus the largest finite additive term."""
    data = STORE.get(next(s for s in select([family], "quick", ("float16",))))
    s = data.spec
    scale = 1 / math.sqrt(s.D) if s.scale is None else abs(s.scale)
    top = scale * np.linalg.norm(data.q, axis=-1).max() * np.linalg.norm(data.k, axis=-1).max()
    if s.softcap:
        top = min(top, s.softcap)
    m = data.reference_kwargs()["mask"]
    if m is not None and m.dtype != bool:
        top += np.abs(m[np.isfinite(m)]).max()
    n = n_terms(data)
    want = tol.forward("float32", n, 1.0).atol + tol.eps("float16") * top
    assert lse_bound(data, "float32", n).atol == pytest.approx(want, rel=1e-12)


def test_the_lse_of_rows_with_no_key_is_all_plus_or_all_minus_infinity():
    data = _dead_case()
    n, ref = n_terms(data), reference_lse(data, {})
    for fill, conv in ((np.inf, "+inf"), (-np.inf, "-inf")):
        lse = ref.copy()
        lse[data.dead] = fill
        ratio, problems, got = judge_lse(data, lse, "float32", n, {})
        assert not problems and got == conv and ratio < 1
    for fill in (np.nan, 0.0):
        lse = ref.copy()
        lse[data.dead] = fill
        assert judge_lse(data, lse, "float32", n, {})[1]
    if data.dead.sum() > 1:
        lse = ref.copy()
        lse[data.dead] = np.inf
        lse[np.unravel_index(int(np.argmax(data.dead)), data.dead.shape)] = -np.inf
        assert "a mix of +inf and -inf" in judge_lse(data, lse, "float32", n, {})[1][0]
    plain = _case("float64")
    assert judge_lse(plain, reference_lse(plain, {}), "float32", n_terms(plain), {})[2] is None


def test_an_lse_with_no_row_to_judge_has_ratio_zero_and_a_wrong_shape_or_dtype_fails():
    data = _case("float64")
    none = replace(data, dead=np.ones_like(data.dead))
    ratio, problems, _ = judge_lse(none, np.full(data.dead.shape, np.inf), "float32", n_terms(data), {})
    assert ratio == 0.0 and not problems
    ref = reference_lse(data, {})
    assert judge_lse(data, ref[..., None], "float32", 1.0, {})[0] == math.inf
    assert "must be float32" in judge_lse(data, ref, "float16", n_terms(data), {})[1][0]


# --- the gradient judge's other rules ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", gj.GRADS)
def test_a_non_finite_gradient_fails_with_an_infinite_ratio_and_a_dead_row_hint(dtype, name):
    data = _dead_case() if dtype == "float64" else _case(dtype)
    cache: dict = {}
    gd = gj.grad_data(data, cache)
    grads = {n: gd.oracle[n].copy() for n in gj.GRADS}
    grads[name].reshape(-1)[0] = np.nan
    got = gj.GradReturned(grads, dtype)
    v = gj.judge_grads(gd, got, dtype, cache)
    assert v.status == Status.FAIL and v.ratio == math.inf and f"{name}: 1 of {grads[name].size} entries NaN" \
        in v.detail and got.allowed[name] == 0.0
    assert ("fully masked query rows" in v.detail) == bool(data.dead.any())


@pytest.mark.parametrize("name", gj.GRADS)
def test_a_gradient_of_the_wrong_shape_fails_naming_it(name):
    data = _case("float64")
    gd = gj.grad_data(data, {})
    grads = {n: gd.oracle[n].copy() for n in gj.GRADS}
    grads[name] = grads[name][..., :-1] if grads[name].shape[-1] > 1 else grads[name][None]
    v = gj.judge_grads(gd, gj.GradReturned(grads, "float64"), "float64", {})
    assert v.status == Status.FAIL and v.ratio == math.inf and v.detail.startswith(f"{name}: shape ")


def test_gradients_returned_in_a_lower_precision_than_given_fail():
    data = _case("float32")
    gd = gj.grad_data(data, {})
    v = gj.judge_grads(gd, gj.GradReturned({n: gd.oracle[n] for n in gj.GRADS}, "float16"), "float32", {})
    assert v.status == Status.FAIL and v.ratio == math.inf and "float16" in v.detail


def test_the_upstream_gradient_is_seeded_by_the_case_and_rounded_to_its_dtype():
    from refimpl.precision import get
    a, b = _case("float16"), _case("float16", index=3)
    g = gj.d_out_for(a)
    assert g.shape == a.expected.shape and np.array_equal(g, gj.d_out_for(a)) and not np.array_equal(
        g.ravel()[:5], gj.d_out_for(b).ravel()[:5])
    assert np.array_equal(g, get("float16").round(g))
