"""The gradient judge's rules one at a time (refimpl/harness/verdicts/grad_judge.py, issue #24): the float mask
counted in the float64 bound, the GQA hint of a wrong-shaped dK/dV, an upstream gradient of zero (nothing
allowed, ratio 0/0 = 0), judging without a cache, the per-case caches, the distance ``d`` the diagnosis uses, and
the diagnosis rule of the module docstring at each of its bounds (2 x allowed, EXPLAINS x d(oracle, got), a wrong
gradient strictly above its allowed error, MAX_FAILING and MAX_PASSING cases read).

Expected values come from the rule as documented (module docstring, tolerance_gradients.py's formula) or by hand;
the diagnosis rule is read with one hand-made bug model whose gradients, the oracle and the target's gradients
are small exact numbers, so that each bound is met exactly."""
import math

import numpy as np
import pytest

from refimpl import bugs_backward, sdpa_backward, tolerance as tol, tolerance_gradients as tg
from refimpl.bug_model import BugModel, Variant
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore
from refimpl.harness.verdicts import grad_judge as gj

STORE = CaseStore()


def _case(family, index, dtype="float64"):
    return STORE.get(next(s for s in select([family], "quick", (dtype,)) if s.index == index))


def _exact(gd, dtype):
    return gj.GradReturned({n: gd.oracle[n].copy() for n in gj.GRADS}, dtype)


# --- the float64 bound counts the float mask among the logits ------------------------------------------------

def _max_row_norm(a):
    return float(np.sqrt(np.square(a).sum(axis=-1)).max())


def test_a_float_mask_enters_the_float64_gradient_bound_and_a_bool_mask_does_not():
    data = _case("additive-mask", 4)                      # B = Hq = Hkv = 1, Sq 3, Sk 33, D = Dv = 8, float mask
    mask = data.reference_kwargs()["mask"]
    assert mask.dtype != bool and np.isneginf(mask).any()
    cache: dict = {}
    gd = gj.grad_data(data, cache)
    assert gd.additive is not None and np.array_equal(gd.additive, mask)
    got = _exact(gd, "float64")
    assert gj.judge_grads(gd, got, "float64", cache).status == Status.PASS
    # dQ by hand (tolerance_gradients.py): z = 2 (s D max|q| max|k| + max|finite mask|),
    # n = z + Sk + 2 Dv + D + 6, dQ's n_terms n + Sk + 1, magnitude s max|k| 2 G, G = max||dO_i|| max||v_j||
    q, k, v, g = data.q, data.k, data.v, gd.d_out
    sk, d, dv = k.shape[-2], q.shape[-1], v.shape[-1]
    assert data.spec.scale is None
    s = 1.0 / math.sqrt(d)
    fin = np.abs(mask[np.isfinite(mask)]).max()
    z = 2 * (s * d * np.abs(q).max() * np.abs(k).max() + fin)
    n_dq = z + sk + 2 * dv + d + 6 + sk + 1
    mag = s * np.abs(k).max() * 2 * _max_row_norm(g) * _max_row_norm(v)
    tiny = np.finfo(np.float64).smallest_subnormal
    dq = tol.K_FORWARD * n_dq * (tol.eps("float64") * mag + tiny * max(1.0, s * np.abs(k).max()))
    assert got.allowed["dq"] == pytest.approx(dq, rel=1e-12)
    with_mask = tg.gradient_for_sdpa(q, k, v, g, None, np.float64, additive=mask)
    without = tg.gradient_for_sdpa(q, k, v, g, None, np.float64)
    for name in gj.GRADS:
        assert got.allowed[name] == pytest.approx(float(np.max(with_mask[name].atol)), rel=1e-12)
        assert got.allowed[name] > float(np.max(without[name].atol))

    data = _case("bool-mask", 8)                           # a keep-mask: no logit magnitude of its own
    cache = {}
    gd = gj.grad_data(data, cache)
    assert gd.additive is None and data.reference_kwargs()["mask"].dtype == bool
    got = _exact(gd, "float64")
    gj.judge_grads(gd, got, "float64", cache)
    plain = tg.gradient_for_sdpa(data.q, data.k, data.v, gd.d_out, None, np.float64)
    for name in gj.GRADS:
        assert got.allowed[name] == pytest.approx(float(np.max(plain[name].atol)), rel=1e-12)


# --- a wrong shape: the GQA hint only where one kv head serves several query heads ---------------------------

@pytest.mark.parametrize("name", ["dk", "dv"])
def test_an_unsummed_gqa_gradient_fails_with_the_hint_naming_the_group(name):
    data = _case("gqa", 6)                                 # B 2, Hq 2, Hkv 1, Sk 64
    gd = gj.grad_data(data, {})
    grads = {n: gd.oracle[n].copy() for n in gj.GRADS}
    grads[name] = np.repeat(grads[name], 2, axis=1) / 2   # one per query head, not summed
    v = gj.judge_grads(gd, gj.GradReturned(grads, "float64"), "float64", {})
    assert v.status == Status.FAIL and v.ratio == math.inf
    assert f"{name}: shape {grads[name].shape}, but should be {gd.oracle[name].shape} " \
           f"(one kv head serves 2 query heads: {name} is the sum over them)" in v.detail


def test_a_wrong_shaped_dq_gets_no_gqa_hint():
    data = _case("gqa", 6)
    gd = gj.grad_data(data, {})
    grads = {n: gd.oracle[n].copy() for n in gj.GRADS}
    grads["dq"] = grads["dq"][:, :1]
    v = gj.judge_grads(gd, gj.GradReturned(grads, "float64"), "float64", {})
    assert v.status == Status.FAIL and "dq: shape" in v.detail and "kv head" not in v.detail


@pytest.mark.parametrize("name", ["dk", "dv"])
def test_a_wrong_shaped_gradient_of_a_single_head_case_gets_no_gqa_hint(name):
    data = _case("sizes", 8)                               # B = Hq = Hkv = 1, Sk 63
    gd = gj.grad_data(data, {})
    grads = {n: gd.oracle[n].copy() for n in gj.GRADS}
    grads[name] = grads[name][..., :-1]
    v = gj.judge_grads(gd, gj.GradReturned(grads, "float64"), "float64", {})
    assert v.status == Status.FAIL and v.detail.startswith(f"{name}: shape ") and "kv head" not in v.detail


# --- nothing allowed: an upstream gradient of zero ----------------------------------------------------------

def test_a_zero_upstream_gradient_allows_nothing_exact_zeros_pass_with_ratio_zero_and_any_error_is_infinite():
    data = _case("sizes", 8, "float32")
    d_out = np.zeros(data.expected.shape)
    # the loss sum(d_out * O) is 0 for every input: each gradient is exactly 0 (and sdpa_backward agrees)
    oracle = {n: np.zeros(a.shape) for n, a in zip(gj.GRADS, sdpa_backward(data.q, data.k, data.v, d_out)[:3])}
    gd = gj.GradData(data, d_out, oracle, None)
    cache: dict = {}
    got = gj.GradReturned({n: a.copy() for n, a in oracle.items()}, "float32")
    v = gj.judge_grads(gd, got, "float32", cache)
    assert v.status == Status.PASS and v.ratio == 0.0 and got.allowed == {n: 0.0 for n in gj.GRADS}
    grads = {n: a.copy() for n, a in oracle.items()}
    grads["dv"].reshape(-1)[0] = 2.0 ** -40
    v = gj.judge_grads(gd, gj.GradReturned(grads, "float32"), "float32", cache)
    assert v.status == Status.FAIL and v.ratio == math.inf and v.detail.startswith("dv: error ")


# --- judging without a cache, and the caches ---------------------------------------------------------------

def test_a_low_precision_case_is_judged_without_a_cache_as_with_one():
    data = _case("sizes", 8, "float32")
    cache: dict = {}
    gd = gj.grad_data(data, cache)
    with_cache, without = _exact(gd, "float32"), _exact(gd, "float32")
    a = gj.judge_grads(gd, with_cache, "float32", cache)
    b = gj.judge_grads(gd, without, "float32")
    assert a.status == b.status == Status.PASS and a.ratio == b.ratio == 0.0
    assert without.allowed == with_cache.allowed and all(x > 0 for x in without.allowed.values())


def test_the_gradient_case_its_same_precision_reference_and_magnitudes_are_made_once_per_case(monkeypatch):
    calls = {"backward": 0, "expand": 0}

    def counting(key, fn):
        def wrapped(*a, **kw):
            calls[key] += 1
            return fn(*a, **kw)
        return wrapped
    monkeypatch.setattr(gj, "sdpa_backward", counting("backward", gj.sdpa_backward))
    monkeypatch.setattr(gj, "expand_gqa", counting("expand", gj.expand_gqa))
    data = _case("sizes", 8, "float32")
    cache: dict = {}
    gd = gj.grad_data(data, cache)
    assert gj.grad_data(data, cache) is gd and calls["backward"] == 1          # the float64 oracle, once
    for _ in range(3):                                                          # three targets judged on the case
        assert gj.judge_grads(gd, _exact(gd, "float32"), "float32", cache).status == Status.PASS
    assert calls["backward"] == 2                  # + the float32 reference, once
    assert calls["expand"] == 2                    # the magnitudes (|K| and V expanded over the group), once


# --- d: the distance the diagnosis uses -------------------------------------------------------------------

INF, NAN = math.inf, math.nan


@pytest.mark.parametrize("a,b,d", [
    ([1.0, -2.0, 0.5], [1.5, 1.0, 0.5], 3.0),      # max |a - b|
    ([7.0], [4.0], 3.0),                             # a single entry
    ([NAN, 1.0], [NAN, 1.25], 0.25),                 # NaN == NaN
    ([NAN, 1.0], [0.0, 1.0], INF),                   # NaN on one side only
    ([INF, 1.0], [1.0, 1.0], INF),                   # inf on one side only
    ([INF, -INF], [INF, -INF], 0.0),                 # the same infinity
    ([], [], 0.0),                                   # nothing to differ
])
def test_the_diagnosis_distance_is_the_largest_difference_nan_equal_to_nan(a, b, d):
    assert gj._distance(np.array(a), np.array(b)) == d
    assert gj._distance(np.array(b), np.array(a)) == d


def test_the_diagnosis_distance_of_two_shapes_is_infinite_even_where_they_broadcast():
    assert gj._distance(np.zeros((1, 1, 3, 2)), np.zeros((1, 2, 3, 2))) == math.inf
    assert gj._distance(np.zeros((2, 1)), np.zeros((1, 2))) == math.inf


# --- the diagnosis rule, with one hand-made model -----------------------------------------------------------

SHAPE = (1, 1, 1, 2)
DATA = _case("sizes", 5)                    # the model ignores its inputs: any case serves for reference_kwargs


def _grads(dq=0.0, dk=0.0, dv=0.0):
    """Gradients that are 0 but for their first entry."""
    out = {}
    for name, x in zip(gj.GRADS, (dq, dk, dv)):
        a = np.zeros(SHAPE)
        a[0, 0, 0, 0] = x
        out[name] = a
    return out


def _pair(got, allowed):
    """A gradient case whose oracle is 0 everywhere, and a target's gradients ``got`` with the judge's
    ``allowed`` (one number for the three gradients)."""
    gd = gj.GradData(DATA, np.zeros((1, 1, 1, 1)), _grads(), None)
    return gd, gj.GradReturned(got, "float64", {n: allowed for n in gj.GRADS})


@pytest.fixture
def model(monkeypatch):
    """The only backward bug model: its gradients are set with ``model(dq=, dk=, dv=)`` (first entries)."""
    out = {"grads": _grads()}

    def fn(*args, **kw):
        return tuple(out["grads"][n] for n in gj.GRADS)
    hand = BugModel("bwd-hand", "made by hand", (Variant("only", fn),))
    monkeypatch.setattr(bugs_backward, "MODELS", {"bwd-hand": hand})

    def set_(**kw):
        out["grads"] = _grads(**kw)
    return set_


NAMED = ["diagnosis t: bwd-hand — made by hand"]
UNKNOWN = ["diagnosis t: unknown gradient error (no backward bug model fits)"]


@pytest.mark.parametrize("m_dq,named", [(2.0, True), (1.75, False)])
def test_a_model_far_from_the_target_fits_when_it_is_at_most_half_as_far_as_the_oracle(model, m_dq, named):
    # dq: oracle 0, target 4 (d_o = 4, wrong), model m_dq: d_m = 4 - m_dq, beyond 2 x allowed = 1
    model(dq=m_dq)
    lines = gj.diagnose_grads([_pair(_grads(dq=4.0), 0.5)], [], "t")
    assert lines == (NAMED if named else UNKNOWN)


@pytest.mark.parametrize("m_dk,named", [(2.0, True), (2.5, False)])
def test_on_a_failing_case_a_model_not_closer_must_be_within_twice_the_allowed_error(model, m_dk, named):
    # dq explains the failure (the model is the target's, d_o = 4 > 1); dk: oracle = target = 0, model m_dk
    model(dq=4.0, dk=m_dk)
    assert gj.diagnose_grads([_pair(_grads(dq=4.0), 1.0)], [], "t") == (NAMED if named else UNKNOWN)


@pytest.mark.parametrize("allowed,named", [(2.0, True), (1.5, False)])
def test_on_a_passing_case_a_model_must_be_within_twice_the_allowed_error(model, allowed, named):
    model(dq=4.0)
    failing = [_pair(_grads(dq=4.0), 1.0)]                  # the model is the failing target's gradients
    passing = [_pair(_grads(), allowed)]                    # the target is right here; d_m = 4
    assert gj.diagnose_grads(failing, passing, "t") == (NAMED if named else UNKNOWN)


@pytest.mark.parametrize("got_dq,named", [(2.5, True), (2.0, False)])
def test_a_model_explains_only_a_gradient_strictly_beyond_its_allowed_error(model, got_dq, named):
    # allowed 2: the target's dq is off by got_dq; the model is half way (closer), every other gradient exact
    model(dq=got_dq / 2)
    assert gj.diagnose_grads([_pair(_grads(dq=got_dq), 2.0)], [], "t") == (NAMED if named else UNKNOWN)


def test_a_model_within_twice_the_allowed_error_but_not_closer_explains_nothing(model):
    model()                                                  # the correct gradients
    assert gj.diagnose_grads([_pair(_grads(dq=1.5), 1.0)], [], "t") == UNKNOWN


def test_a_gradient_just_over_its_bound_is_an_unknown_error_not_a_model_identical_to_the_backward():
    data = _case("sizes", 8)                               # no mask, no GQA, no dead row: three models are the
    cache: dict = {}                                       # correct backward here (gqa-sum, masked-nan, unmasked)
    gd = gj.grad_data(data, cache)
    got = _exact(gd, "float64")
    gj.judge_grads(gd, got, "float64", cache)
    grads = {n: gd.oracle[n].copy() for n in gj.GRADS}
    grads["dq"].reshape(-1)[0] += 1.5 * got.allowed["dq"]
    got = gj.GradReturned(grads, "float64")
    assert gj.judge_grads(gd, got, "float64", cache).status == Status.FAIL
    assert gj.diagnose_grads([(gd, got)], [], "t") == UNKNOWN


def test_a_model_is_read_on_the_first_max_failing_failing_cases_only(model):
    model(dq=4.0)
    fits, against = _pair(_grads(dq=4.0), 1.0), _pair(_grads(dq=-4.0), 1.0)     # d_m = 8, d_o = 4
    n = gj.MAX_FAILING
    assert n == 12
    assert gj.diagnose_grads([fits] * n + [against], [], "t") == NAMED
    assert gj.diagnose_grads([fits] * (n - 1) + [against], [], "t") == UNKNOWN


def test_a_model_is_read_on_the_first_max_passing_passing_cases_only(model):
    model(dq=4.0)
    failing = [_pair(_grads(dq=4.0), 1.0)]
    ok, against = _pair(_grads(dq=4.0), 4.0), _pair(_grads(), 1.0)      # the model 4 away from a right answer
    n = gj.MAX_PASSING
    assert n == 6
    assert gj.diagnose_grads(failing, [ok] * n + [against], "t") == NAMED
    assert gj.diagnose_grads(failing, [ok] * (n - 1) + [against], "t") == UNKNOWN


def test_nothing_failing_means_no_diagnosis():
    data = _case("sizes", 8)
    gd = gj.grad_data(data, {})
    assert gj.diagnose_grads([], [], "t") == []
    assert gj.diagnose_grads([], [(gd, _exact(gd, "float64"))], "t") == []


def test_a_same_precision_backward_that_overflows_bounds_nothing_and_the_exact_answer_still_passes(monkeypatch):
    """When the float32 reference backward overflows (huge V) while the oracle stays finite, its error is not a
    budget: the floor alone is (a NaN budget failed every answer, the exact one included)."""
    data = _case("sizes", 4, "float32")
    cache: dict = {}
    gd = gj.grad_data(data, cache)
    broken = {n: np.full_like(gd.oracle[n], np.nan) for n in gj.GRADS}          # the overflowed reference
    monkeypatch.setattr(gj, "_naive", lambda gd_, cache_: broken)
    assert gj.judge_grads(gd, _exact(gd, "float32"), "float32", {}).status == Status.PASS
    off = gj.GradReturned({n: gd.oracle[n] + 0.1 * (1.0 + np.abs(gd.oracle[n]).max()) for n in gj.GRADS}, "float32")
    res = gj.judge_grads(gd, off, "float32", {})
    assert res.status == Status.FAIL and math.isfinite(res.ratio) and res.ratio > 1
