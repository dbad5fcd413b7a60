"""The judge's tolerance model, pinned down: compare()'s rules and every width's exact value.

The verdicts of ``refimpl check`` and every fixture test rest on refimpl.tolerance; a bound that quietly
became looser (or a rule that quietly passes a NaN or a wrong shape) would turn every verdict soft. So each
width is checked against its documented formula, evaluated here by hand, and each rule at its boundary
(a difference exactly at the bound passes, the next float above it fails). Issue #18 (mutation testing).
"""
import math

import numpy as np
import pytest

from refimpl import tolerance as tol
from refimpl import tolerance_gradients as tg

U64, U32 = 2.0 ** -53, 2.0 ** -24          # unit roundoffs, written out


def up(x):
    return float(np.nextafter(x, np.inf))


# --- compare(): shapes, non-finite values, empty arrays ------------------------------------------------

@pytest.mark.parametrize("a, e", [(np.zeros(3), np.zeros((3, 1))), (np.zeros(1), np.zeros(())),
                                  (np.zeros((0,)), np.zeros((0, 3))), (np.zeros((2, 3)), np.zeros((3, 2)))])
def test_a_shape_mismatch_is_never_ok_even_with_equal_values_and_a_huge_tolerance(a, e):
    c = tol.compare(a, e, tol.Tolerance(1e300, 1e300, "huge"))
    assert c.ok is False and c.shape_ok is False
    assert str(a.shape) in c.detail and str(e.shape) in c.detail and c.summary() == c.detail
    assert c.max_abs == math.inf and c.max_ratio == math.inf


def test_empty_arrays_of_the_same_shape_compare_ok_with_zero_errors():
    c = tol.compare(np.zeros((0, 4)), np.zeros((0, 4)), tol.EXACT)
    assert (c.ok, c.shape_ok, c.max_abs, c.max_rel, c.max_ulp, c.max_ratio) == (True, True, 0.0, 0.0, 0, 0.0)


@pytest.mark.parametrize("a, e", [(np.inf, 1.0), (1.0, np.inf), (-np.inf, np.inf), (np.inf, 1e308), (-np.inf, -1e308)])
def test_an_infinity_against_anything_else_fails_under_any_tolerance(a, e):
    for t in (tol.Tolerance(1.0, 0.5, "wide"), tol.Tolerance(1e300, 1e300, "huge: the bound itself overflows")):
        c = tol.compare([a], [e], t)
        assert not c.ok and c.max_abs == math.inf
    if math.isfinite(e):                         # an infinite expected value makes the ratio inf/inf (reported NaN)
        assert tol.compare([a], [e], tol.Tolerance(1.0, 0.5, "")).max_ratio == math.inf


@pytest.mark.parametrize("x", [np.inf, -np.inf])
def test_the_same_infinity_on_both_sides_is_exact(x):
    c = tol.compare([x, 1.0], [x, 1.0], tol.EXACT)
    assert c.ok and c.max_abs == 0.0 and c.max_ratio == 0.0


def test_nan_against_nan_passes_and_nan_against_a_number_fails_both_ways():
    assert tol.compare([np.nan, 2.0], [np.nan, 2.0], tol.EXACT).ok
    for a, e in [(np.nan, 2.0), (2.0, np.nan)]:
        c = tol.compare([a], [e], tol.Tolerance(1e300, 1e300, "huge"))
        assert not c.ok and c.max_abs == math.inf
    assert tol.compare([np.nan], [1.0], tol.EXACT).max_ulp == np.iinfo(np.int64).max


# --- compare(): the bound at its edge, and the figures it reports --------------------------------------

def test_atol_passes_at_the_bound_and_fails_one_float_above():
    t = tol.Tolerance(0.5, 0.0, "atol")
    assert tol.compare([1.5], [1.0], t).ok and tol.compare([0.5], [1.0], t).ok
    assert not tol.compare([up(1.5)], [1.0], t).ok


def test_rtol_scales_with_the_expected_value_not_the_actual_one():
    t = tol.Tolerance(0.0, 0.25, "rtol")
    assert tol.compare([2.5], [2.0], t).ok and tol.compare([-2.5], [-2.0], t).ok
    assert not tol.compare([2.6], [2.0], t).ok            # 0.6 > 0.25*2 (0.25*2.6 = 0.65 would pass it)
    assert not tol.compare([up(2.5)], [2.0], t).ok


def test_atol_and_rtol_add_and_an_array_atol_is_per_element():
    assert tol.compare([3.0], [2.0], tol.Tolerance(0.5, 0.25, "")).ok          # 1.0 <= 0.5 + 0.5
    assert not tol.compare([up(3.0)], [2.0], tol.Tolerance(0.5, 0.25, "")).ok
    t = tol.Tolerance(np.array([0.1, 1.0]), 0.0, "per element")
    assert tol.compare([0.1, 1.0], [0.0, 0.0], t).ok
    assert not tol.compare([1.0, 0.1], [0.0, 0.0], t).ok
    np.testing.assert_array_equal(t.bound([4.0, -4.0]), [0.1, 1.0])
    np.testing.assert_array_equal(tol.Tolerance(0.5, 0.25, "").bound([-4.0, 2.0]), [1.5, 1.0])


def test_zero_tolerance_fails_any_difference_with_an_infinite_ratio():
    c = tol.compare([1.0], [up(1.0)], tol.EXACT)
    assert not c.ok and c.max_ratio == math.inf and c.max_ulp == 1


def test_the_reported_figures_are_the_worst_element():
    c = tol.compare([[1.0, 3.0], [2.0, 2.25]], [[1.0, 2.0], [2.0, 2.0]], tol.Tolerance(0.5, 0.0, "atol 0.5"))
    assert not c.ok
    assert (c.max_abs, c.max_rel, c.max_ratio, c.worst_index) == (1.0, 0.5, 2.0, (0, 1))
    assert "atol 0.5" in c.summary() and "(0, 1)" in c.summary()
    c = tol.compare([1.0, 0.5], [0.0, 0.0], tol.Tolerance(2.0, 0.0, ""))
    assert c.ok and c.max_rel == 0.0 and c.max_ratio == 0.5          # no relative error against 0


# --- ulp distance ---------------------------------------------------------------------------------------

def test_ulp_distance_across_zero_and_next_to_one():
    tiny = 5e-324
    assert tol.ulp_distance(0.0, -0.0) == 0 and tol.ulp_distance(-0.0, 0.0) == 0
    assert tol.ulp_distance(0.0, tiny) == 1 and tol.ulp_distance(-0.0, tiny) == 1
    assert tol.ulp_distance(-tiny, tiny) == 2 and tol.ulp_distance(0.0, -tiny) == 1
    assert tol.ulp_distance(1.0, up(1.0)) == 1 and tol.ulp_distance(1.0, np.nextafter(1.0, 0.0)) == 1
    assert tol.ulp_distance(1.0, 2.0) == 2 ** 52 and tol.ulp_distance(-1.0, -2.0) == 2 ** 52
    assert tol.ulp_distance(1.0, np.nan) == np.iinfo(np.int64).max


def test_ulp_distance_counts_in_float32_for_float32():
    one = np.float32(1.0)
    assert tol.ulp_distance(one, np.nextafter(one, np.float32(2))) == 1
    assert tol.ulp_distance(one, np.float32(2.0)) == 2 ** 23
    assert tol.ulp_distance(np.float32(-0.0), np.float32(1e-45)) == 1


# --- the widths: each against its documented formula ----------------------------------------------------

def test_unit_roundoffs_and_the_named_constants():
    assert (tol.eps(np.float64), tol.eps(np.float32), tol.eps(np.float16)) == (U64, U32, 2.0 ** -11)
    assert tol.eps("bfloat16") == tol.eps("torch.bfloat16") == tol.BFLOAT16_EPS == 2.0 ** -8
    assert (tol.K_FORWARD, tol.K_BUDGET, tol.QUANTUM_ULPS, tg.K_GRAD_BUDGET) == (4.0, 2.0, 4.0, 4.0)


def test_forward_is_k_forward_eps_n_terms_magnitude():
    assert tol.forward(np.float64, 10, 3.0).atol == 4 * U64 * 30
    assert tol.forward(np.float32, 10, 3.0).atol == 4 * U32 * 30
    assert tol.forward(np.float64, 10, 3.0).rtol == 0.0


def _qkv():
    q = np.array([[3.0, -1.0, 0.0, 0.5], [0.0, 1.0, 2.0, -2.0]])            # max|q| 3, d_k 4
    k = np.array([[1.0, -2.0, 0.0, 0.0]] * 5)                                # max|k| 2, n_keys 5
    v = np.array([[1.0, -7.0, 0.0]] * 5)                                     # max|v| 7, d_v 3
    return q, k, v


def test_sdpa_terms_and_forward_for_sdpa_follow_rule_3():
    q, k, v = _qkv()
    n = 2 * 0.5 * 4 * 3 * 2 + 5 + 3 + 2                                      # default scale 1/sqrt(4)
    assert tol.sdpa_terms(q, k, v) == (n, 7.0)
    assert tol.sdpa_terms(q, k, v, weights=True) == (n, 1.0)
    assert tol.sdpa_terms(q, k, v, 0.25) == (2 * 0.25 * 4 * 3 * 2 + 10, 7.0)
    assert tol.forward_for_sdpa(q, k, v).atol == 4 * U64 * n * 7.0
    assert tol.forward_for_sdpa(q.astype(np.float32), k, v).atol == 4 * U64 * n * 7.0      # promoted: float64
    f = np.float32
    assert tol.forward_for_sdpa(q.astype(f), k.astype(f), v.astype(f)).atol == 4 * U32 * n * 7.0
    assert tol.forward_for_sdpa(q, k, v, weights=True).atol == 4 * U64 * n


def test_forward_for_sdpa_cases_is_one_bound_per_case():
    q, k, v = _qkv()
    qs, ks, vs = np.stack([q, q / 3]), np.stack([k, k]), np.stack([v, v / 7])
    t = tol.forward_for_sdpa_cases(qs, ks, vs)
    n = np.array([24.0 + 10, 8.0 + 10])
    assert t.atol.shape == (2, 1, 1)
    np.testing.assert_array_equal(t.atol[:, 0, 0], 4 * U64 * n * np.array([7.0, 1.0]))


def test_printed_is_half_a_unit_of_the_last_digit():
    np.testing.assert_array_equal(tol.printed([1.0, 2.0], decimals=3).atol, [0.0005, 0.0005])
    t = tol.printed([0.7891368, 123.4567, 0.0, -0.01234567], significant=7)
    np.testing.assert_allclose(t.atol, [0.5e-7, 0.5e-4, 0.5e-6, 0.5e-8], rtol=1e-12)
    t = tol.printed([0.1, 0.25], decimals=1, texts=["0.10", "0.25"])       # the finer of the two wins
    np.testing.assert_allclose(t.atol, [0.005, 0.005], rtol=1e-12)
    t = tol.printed([0.1], decimals=4, texts=["0.1"])
    np.testing.assert_allclose(t.atol, [0.00005], rtol=1e-12)
    assert t.rtol == 0.0 and tol.compare([0.10005], [0.1], t).ok and not tol.compare([0.10006], [0.1], t).ok


@pytest.mark.parametrize("text, n", [("0.7891368", 7), ("6", 0), ("1.5e-05", 6), ("1.25e2", 0), ("1.234e1", 2),
                                     (" -0.50 ", 2), ("1E-3", 3), ("2.5e+01", 0), ("10.", 0), ("3.14159", 5)])
def test_printed_decimals(text, n):
    assert tol.printed_decimals(text) == n


def test_row_sum_bound_and_softmax_perturbation():
    assert tol.row_sum_bound(10, np.float64) == 4 * 12 * U64
    assert tol.row_sum_bound(10, np.float32) == 4 * 12 * U32
    t = tol.softmax_input_perturbation(3.0, 5, np.float64)
    assert t.atol == 4 * U64 * (2 * 3.0 + 5 + 2) and t.rtol == 0.0
    assert tol.softmax_input_perturbation(3.0, 5, np.float32).atol == 4 * U32 * 13


def test_within_budget_at_its_edge():
    oracle = np.array([0.0, -2.0])
    ref = oracle + [0.0, 2.0 ** -20]                                  # reference error 2**-20
    allowed = 2 * 2.0 ** -20 + 4 * U32 * (1 + 3.0) * 2.0               # K_BUDGET*err + quantum (cond 3)
    ok, err, got = tol.within_budget(oracle + [allowed, 0.0], ref, oracle, np.float32, conditioning=3.0)
    assert ok and got == allowed and err == allowed
    ok, _, _ = tol.within_budget(oracle + [up(allowed), 0.0], ref, oracle, np.float32, conditioning=3.0)
    assert not ok
    ok, err, got = tg.gradient_within_budget(oracle, ref, oracle, np.float64)
    assert ok and err == 0.0 and got == 4 * 2.0 ** -20 + 4 * U64 * 2.0


# --- the gradient bound (rule 3 for gradients), against the formula in tolerance.py's comment ----------

def _grad_case():
    q, k, v, g = np.zeros((2, 3, 4)), np.zeros((2, 5, 4)), np.zeros((2, 5, 3)), np.zeros((2, 3, 3))
    q[0, 1, 2] = -3.0                                             # max|q| 3, Sq 3, D 4 (scale 1/2)
    k[1, 4, 0] = 2.0                                              # max|k| 2, Sk 5
    v[0, 2] = [1.0, 2.0, -2.0]                                    # max row norm 3, Dv 3
    g[1, 0] = [0.0, 3.0, -4.0]                                    # max row norm 5, max|dO| 4
    return q, k, v, g


def test_gradient_terms_follow_the_documented_formula():
    q, k, v, g = _grad_case()
    z, big_g = 2 * 0.5 * 4 * 3 * 2, 5.0 * 3.0                     # 24, 15
    n = z + 5 + 2 * 3 + 4 + 6                                     # 45
    t = tg.sdpa_grad_terms(q, k, v, g, bias_shape=(3, 5))
    assert t["dq"] == (n + 5 + 1, 0.5 * 2 * 2 * big_g, 0.5 * 2)
    assert t["dk"] == (n + 3 + 1, 3 * 0.5 * 3 * 2 * big_g, 3 * 0.5 * 3)
    assert t["dv"] == (z + 5 + 3 + 1, 3 * 4.0, 3.0)
    assert t["dbias"] == (n + 2, 2 * 2 * big_g, 2.0)               # 2*3*5 scores summed to 15: 2 copies
    t = tg.sdpa_grad_terms(q, k, v, g, additive=np.array([-np.inf, 1.5, -0.5]), softcap=4.0)
    n2 = 2 * (12 + 1.5) + 5 + 6 + 4 + 6 + 12 / 4.0                # + 2*max|finite additive| + s*D*mq*mk/cap
    assert t["dq"][0] == n2 + 5 + 1 and t["dv"][0] == 27 + 5 + 3 + 1 and "dbias" not in t
    t = tg.sdpa_grad_terms(q, k[1:], v[:1], g)                    # k, v broadcast over the batch: 2 copies
    assert t["dk"] == (n + 3 + 2, 2 * 4.5 * 2 * big_g, 9.0) and t["dv"] == (z + 5 + 3 + 2, 2 * 3 * 4.0, 6.0)
    assert tg.sdpa_grad_terms(q, k, v, g, scale=0.25)["dq"][2] == 0.25 * 2


def test_gradient_for_sdpa_is_k_forward_n_eps_magnitude_plus_the_underflow_floor():
    q, k, v, g = _grad_case()
    tiny = float(np.finfo(np.float64).smallest_subnormal)
    b = tg.gradient_for_sdpa(q, k, v, g)
    assert b["dq"].atol == 4 * 51 * (U64 * 30 + tiny * 1.0)
    assert b["dk"].atol == 4 * 49 * (U64 * 135 + tiny * 4.5)
    assert b["dv"].atol == 4 * 33 * (U64 * 12 + tiny * 3.0)
    f = np.float32
    b32 = tg.gradient_for_sdpa(q.astype(f), k.astype(f), v.astype(f), g)
    assert b32["dq"].atol == 4 * 51 * (U32 * 30 + float(np.finfo(f).smallest_subnormal) * 1.0)
    q0 = q * 0
    assert tg.gradient_for_sdpa(q0, k, v, g)["dq"].atol == 4 * (4 + 5 + 6 + 6 + 5 + 1) * (U64 * 30 + tiny)


def test_tolerances_are_immutable_and_say_what_made_them():
    import dataclasses
    t = tol.printed([0.5], decimals=3, who="numpy")
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.rtol = 1.0
    assert t.rule == "printed by numpy: half a unit of the last digit (3 decimals)"
    assert tol.printed([0.5], significant=7).rule == "printed: half a unit of the last digit (7 sig. digits)"
    assert tol.printed([0.5], texts=["0.5"]).rule.endswith("(as quoted)")
    assert tol.Tolerance(np.array([0.5, 2.0]), 0.25, "r").describe() == "r (atol 2, rtol 0.25)"


def test_vacuous_bounds_are_capped_at_1e30_terms():
    q, k, v, g = _grad_case()
    huge = tg.sdpa_grad_terms(q * 1e200, k * 1e200, v, g, softcap=1e-200)
    assert huge["dv"][0] == 1e30 + 5 + 3 + 1                      # z = min(2 * min(s D mq mk, 1e30), 1e30)
    assert huge["dq"][0] == 1e30 + 1e30 + 5 + 6 + 4 + 6 + 5 + 1   # + the softcap's term, capped too
    n, _ = tol.sdpa_terms(q[0] * 1e200, k[1] * 1e200, v[0])
    assert n == 1e30 + 5 + 3 + 2
    masked = tg.sdpa_grad_terms(q, k, v, g, additive=np.full(3, -np.inf))   # no finite additive value
    assert masked["dq"][0] == 45 + 5 + 1
    zero = tg.sdpa_grad_terms(q, k, v, g * 0)                     # max row norm of zeros: 0
    assert zero["dq"][1] == 0.0 and zero["dv"][1] == 0.0


def test_budget_conditioning_caps_the_quantum_at_a_quarter_of_the_answer():
    # documented: n_terms, capped so that QUANTUM_ULPS * eps * (1 + cap) <= 1/4
    for dtype, u in [("bfloat16", 2.0 ** -8), (np.float32, U32), (np.float64, U64)]:
        cap = tol.budget_conditioning(1e300, dtype)
        assert cap == 1 / (4 * 4 * u) - 1 and 4 * u * (1 + cap) == 0.25
        assert tol.budget_conditioning(3.0, dtype) == 3.0
    assert tol.budget_conditioning(15.5, "bfloat16") == 15.0


def test_the_gradient_underflow_floor_grows_with_the_gain():
    q, k, v, g = _grad_case()
    tiny = float(np.finfo(np.float64).smallest_subnormal)
    b = tg.gradient_for_sdpa(q, k, v, g * 0)                     # magnitude 0: only the floor is left
    assert b["dk"].atol == 4 * 49 * (tiny * 4.5) > 4 * 49 * tiny
    assert b["dv"].atol == 4 * 33 * (tiny * 3.0)


def test_a_finite_value_against_inf_has_an_infinite_ratio_not_nan():
    import math

    from refimpl import tolerance as t
    c = t.compare([1.0, 2.0], [math.inf, 2.0], t.Tolerance(0.0, 1e-6, "test"))
    assert not c.ok and c.max_ratio == math.inf and c.max_rel == math.inf


def test_within_budget_without_conditioning_is_one_quantum_of_the_answer():
    """The default conditioning is 0: quantum = QUANTUM_ULPS * eps * max|oracle| (tolerance:216)."""
    oracle = np.array([0.0, -2.0])
    allowed = 4 * U32 * 2.0                                            # a perfect reference: the quantum only
    ok, _, got = tol.within_budget(oracle + [allowed, 0.0], oracle, oracle, np.float32)
    assert ok and got == allowed
    assert not tol.within_budget(oracle + [up(allowed), 0.0], oracle, oracle, np.float32)[0]


def test_forward_for_sdpa_cases_uses_the_dtype_it_is_given():
    """float32 cases get float32's eps; no dtype means float64 (tolerance:249)."""
    q, k, v = _qkv()
    qs, ks, vs = np.stack([q]), np.stack([k]), np.stack([v])
    t32, t64 = (tol.forward_for_sdpa_cases(qs, ks, vs, dtype=d) for d in (np.float32, None))
    assert t32.atol[0, 0, 0] == t64.atol[0, 0, 0] * U32 / U64 > 0
    assert t64.atol[0, 0, 0] == tol.forward_for_sdpa_cases(qs, ks, vs, dtype=np.float64).atol[0, 0, 0]


def test_comparisons_are_immutable_and_forward_rules_name_their_dtype():
    """A verdict cannot be edited after the fact (tolerance:92); the rule names the dtype whose eps it used
    (tolerance:176), bfloat16 by name."""
    import dataclasses
    c = tol.compare([1.0], [1.0], tol.Tolerance(0.0, 0.0, "exact"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.ok = False
    for dtype, name in ((np.float64, "float64"), (np.float32, "float32"), ("float16", "float16"),
                        ("bfloat16", "bfloat16"), ("torch.bfloat16", "bfloat16")):
        assert tol.forward(dtype, 3, 2.0).rule.startswith(f"forward bound 4*eps({name})*3*2"), dtype


def test_the_gradient_floor_is_at_least_one_subnormal_per_step_and_the_bound_is_absolute_only():
    """max(1, gain) in the underflow floor: a gain below 1 still allows one subnormal per step (tolerance:337,
    the 1.0); the bound has no relative part, so a gradient 1 % off fails however large it is (the 0.0)."""
    q, k, v, g = _grad_case()
    tiny = float(np.finfo(np.float64).smallest_subnormal)
    b = tg.gradient_for_sdpa(q, k, v, g * 0)                      # magnitude 0: the floor alone
    assert b["dq"].atol == 4 * 51 * tiny                            # gain s * max|k| = 0.5 * 2 = 1
    b = tg.gradient_for_sdpa(q, k, v, g * 0, scale=0.25)           # gain 0.25 * 2 = 0.5 < 1
    n = 2 * 0.25 * 4 * 3 * 2 + 5 + 2 * 3 + 4 + 6 + 5 + 1          # z + n_k + 2 Dv + D + 6, + n_k + copies
    assert b["dq"].atol == 4 * n * tiny
    b = tg.gradient_for_sdpa(q, k, v, g)
    for name, t in b.items():
        assert t.rtol == 0.0, name
    big = np.full((2, 3, 4), 1e6)
    assert not tol.compare(big * 1.01, big, b["dq"]).ok
