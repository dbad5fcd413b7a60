"""Faults of the math found by the red team (issue #18): each test failed before its fix.

Every call here runs with RuntimeWarnings turned into errors: an overflow that is "handled" by
producing NaN/inf and a warning is a fault, not a result."""
import math
import tracemalloc
import warnings

import numpy as np
import pytest

import refimpl as ri
from refimpl import _checks, attention as att, tolerance as tol
from refimpl.online import sdpa_online
from refimpl.testing import assert_conforms

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

BOTH = pytest.mark.parametrize("fn", ["plain", "online"])


def run(fn, q, k, v, **kw):
    if fn == "plain":
        return ri.scaled_dot_product_attention(q, k, v, **kw)[0]
    return sdpa_online(q, k, v, block_q=1, block_k=2, **kw)


def softmax_of(scores):
    e = np.exp(np.asarray(scores, np.float64) - max(scores))
    return e / e.sum()


# --- overflow: the temperature, a large scale, inputs at the edge of the range ------------------------

@BOTH
@pytest.mark.parametrize("magnitude", [5e37, 1e38, 3e38])
def test_float32_inputs_near_the_top_of_the_range_are_exact(fn, magnitude):
    # 2**(e_q+e_k) exceeded float32's range here: the temperature became inf, the weights NaN
    f = np.float32
    q, k = np.zeros((1, 8), f), np.zeros((3, 8), f)             # d_k = 8 enters the overflow bound
    q[0, 0], k[:, 0] = magnitude, [magnitude, -magnitude, magnitude]
    v = np.array([[1.0], [100.0], [3.0]], f)
    out = run(fn, q, k, v)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[2.0]])                 # weights exactly [1/2, 0, 1/2]


@BOTH
def test_a_scale_that_overflows_q_times_scale_restores_the_true_scores(fn):
    # q * 1e308 overflowed before the split; the true scores are moderate: about 1 and 2
    q = np.array([[1e10, 0.0]])
    k = np.array([[1e-318, 0.0], [2e-318, 0.0]])                  # subnormal, exactly representable
    v = np.array([[1.0, 0.0], [0.0, 1.0]])
    true = [(1e10 * k[0, 0]) * 1e308, (1e10 * k[1, 0]) * 1e308]   # each product in range
    out = run(fn, q, k, v, scale=1e308)
    assert_conforms(out, softmax_of(true)[None, :], tol.forward(np.float64, 8, 1.0), "weights via v = I")


@BOTH
def test_scores_at_the_edge_of_float64_give_no_overflow_error(fn):
    # 2.0 ** (e_q + e_k) raised OverflowError once e_q + e_k > 1023
    q, k = np.array([[1.7e308]]), np.array([[-1.7e308], [1.0]])
    np.testing.assert_array_equal(run(fn, q, k, np.array([[1.0], [2.0]])), [[2.0]])


@BOTH
def test_temperature_restore_after_power_of_two_rescaling_is_exact(fn):
    # bounds 1e160 * 1e160 force a split of ~2**44 although the true scores are just 1 and 2
    q, k = np.array([[1e160, 0.0]]), np.array([[1e-160, 1e160], [2e-160, 1e160]])
    expected = softmax_of([1e160 * 1e-160, 1e160 * 2e-160])
    assert_conforms(run(fn, q, k, np.eye(2), scale=1), expected[None, :], tol.forward(np.float64, 8, 1.0), "")
    if fn == "plain":
        _, w = ri.scaled_dot_product_attention(q, k, np.eye(2), scale=1)
        assert_conforms(w, expected[None, :], tol.forward(np.float64, 8, 1.0), "weights")


@BOTH
@pytest.mark.parametrize("scale, words", [(1e39, ["scale=1e+39", "overflows float32"]),
                                          (10 ** 400, ["scale", "401 digits", "float64"])], ids=["1e39", "10**400"])
def test_scales_beyond_the_dtype_are_refimpl_errors(fn, scale, words):
    f = np.ones((2, 2), np.float32)
    with pytest.raises(ri.InputValueError) as e:
        run(fn, f, f, f, scale=scale)
    assert all(w in str(e.value) for w in words), str(e.value)


# --- arguments whose meaning NumPy or Python would silently change ------------------------------------

@BOTH
@pytest.mark.parametrize("arg", ["q", "k", "v", "mask"])
def test_masked_arrays_are_refused(fn, arg):
    # the mask of a MaskedArray was dropped: a masked-out 1e6 took all the weight
    args = {"q": np.eye(2), "k": np.eye(2), "v": np.eye(2), "mask": None}
    args[arg] = np.ma.masked_array(np.array([[1.0, 1e6], [0.0, 0.0]]), mask=[[False, True], [False, False]])
    with pytest.raises(ri.InputTypeError, match=f"^{arg} must be a plain ndarray, got a numpy.ma.MaskedArray"):
        run(fn, args.pop("q"), args.pop("k"), args.pop("v"), **args)


@BOTH
@pytest.mark.parametrize("value", ["yes", None, 1, 0.0])
def test_is_causal_must_be_a_bool_in_both_variants(fn, value):
    with pytest.raises(ri.InputTypeError, match="is_causal must be a bool"):
        run(fn, np.eye(2), np.eye(2), np.eye(2), is_causal=value)


@BOTH
@pytest.mark.parametrize("make", [lambda t: t.ones(2, 2, dtype=t.bool, device="meta"),
                                  lambda t: t.zeros(2, 2, requires_grad=True),
                                  lambda t: t.zeros(2, 2)], ids=["meta", "requires_grad", "cpu"])
def test_torch_masks_are_refused_like_torch_q_k_v(fn, make):
    # decided: a torch tensor is refused in every array argument, mask included (raw torch errors before)
    torch = pytest.importorskip("torch")
    with pytest.raises(ri.InputTypeError, match=r"^mask must be a NumPy array-like, got a torch\.Tensor.*detach"):
        run(fn, np.eye(2), np.eye(2), np.eye(2), mask=make(torch))


@BOTH
@pytest.mark.parametrize("m", [np.array(True), np.float64(0.0)])
def test_zero_d_masks_are_refused_with_a_clear_message(fn, m):
    # decided: refuse (a scalar would mask all keys or none); the old message claimed a shape mismatch
    with pytest.raises(ri.ShapeError, match="at least 1 dimension.*0-d mask"):
        run(fn, np.eye(2), np.eye(2), np.eye(2), mask=m)


def test_multi_head_promotes_a_float64_w_o_instead_of_downcasting_it():
    x = np.eye(2, dtype=np.float32)
    w = np.ones((1, 2, 2), np.float32)
    w_o = np.array([[1.0 + 2.0 ** -40], [1.0]])                  # not representable in float32
    concat, _ = ri.multi_head_attention(x, w, w, w)
    out, _ = ri.multi_head_attention(x, w, w, w, w_o)
    assert concat.dtype == np.float32 and out.dtype == np.float64
    np.testing.assert_array_equal(out, concat.astype(np.float64) @ w_o)


# --- memory: estimated up front, refused clearly -------------------------------------------------------

def test_causal_mask_of_an_impossible_size_is_a_resource_error():
    with pytest.raises(ri.ResourceError, match=r"\(4611686018427387904, 1\) bool mask.*GiB") as e:
        ri.causal_mask(2 ** 62, 1)
    assert isinstance(e.value, MemoryError) and isinstance(e.value, ri.RefimplError)


@pytest.mark.parametrize("call", [lambda: ri.window_mask(2 ** 40, 2 ** 40, (1, 1)),
                                  lambda: ri.alibi_bias(np.ones(8), 2 ** 30, 2 ** 30)])
def test_mask_helpers_estimate_before_allocating(call):
    with pytest.raises(ri.ResourceError, match="GiB"):
        call()


def test_sdpa_refuses_what_cannot_fit_and_online_accepts_it(monkeypatch):
    monkeypatch.setattr(_checks, "machine_memory", lambda: 16 * 2 ** 20)      # a 16 MiB machine
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1500, 2))                                       # 1500^2 scores: 20 MB
    with pytest.raises(ri.ResourceError, match=r"q \(1500, 2\).*scores \(1500, 1500\).*GiB.*sdpa_online"):
        ri.scaled_dot_product_attention(q, q, q)
    out = sdpa_online(q, q, q, block_q=256, block_k=256)                     # blocks: well under 16 MiB
    assert out.shape == (1500, 2)
    with pytest.raises(ri.ResourceError, match="blocks"):
        sdpa_online(q, q, q, block_q=2000, block_k=2000)


def test_a_huge_broadcast_view_is_refused_before_validation_allocates():
    # validation alone used to allocate 9.3 GiB for this (1e5, 1e5) view; now: an estimate, no allocation
    q = np.broadcast_to(np.ones(4), (100_000, 4))
    mask = np.broadcast_to(np.float64(0.0), (100_000, 100_000))
    tracemalloc.start()
    try:
        with pytest.raises(ri.ResourceError, match=r"scores \(100000, 100000\)"):
            ri.scaled_dot_product_attention(q, q, q, mask=mask)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2 ** 20, f"peak {peak / 2 ** 20:.0f} MiB"


def test_validating_a_broadcast_mask_checks_its_distinct_values_only():
    mask = np.broadcast_to(np.array([0.0, -np.inf]), (3000, 3000, 2))
    tracemalloc.start()
    try:
        out = ri.softmax(np.zeros((3, 2)))            # warm-up allocations of the module do not count
        tracemalloc.reset_peak()
        _checks.as_float_array(mask, "mask", allow_neg_inf=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == (3, 2) and peak < 2 ** 20, f"peak {peak} bytes for an 18e6-element view"
    bad = np.broadcast_to(np.array([0.0, np.nan]), (3000, 3000, 2))
    with pytest.raises(ri.NonFiniteInputError, match=r"mask.*NaN.*index \(0, 0, 1\)"):
        _checks.as_float_array(bad, "mask", allow_neg_inf=True)


# --- the row-blocked path: taken for large inputs, and agreeing ---------------------------------------

def test_blocked_path_is_taken_for_large_inputs_and_agrees_with_the_vectorised_one(monkeypatch):
    rng = np.random.default_rng(18)
    q, k, v = rng.standard_normal((2, 130, 8)), rng.standard_normal((2, 129, 8)), rng.standard_normal((2, 129, 3))
    kw = dict(window=(9, 2), alignment="bottom-right", softcap=3.0, mask=rng.standard_normal((130, 129)))
    calls = []
    real = att.sdpa_blocked
    monkeypatch.setattr(att, "sdpa_blocked", lambda *a, **k_: calls.append(1) or real(*a, **k_))
    out_b, w_b = ri.scaled_dot_product_attention(q, k, v, **kw)
    assert calls, "130 x 129 scores must take the row-blocked path"
    monkeypatch.setattr(att, "BLOCKED_MIN_SCORES", math.inf)              # force the vectorised path
    out_v, w_v = ri.scaled_dot_product_attention(q, k, v, **kw)
    assert len(calls) == 1
    assert_conforms(w_b, w_v, tol.forward_for_sdpa(q, k, v, weights=True), "weights")
    assert_conforms(out_b, out_v, tol.forward_for_sdpa(q, k, v), "output")
    row = w_b[:, 10, :]                          # query 10, offset 129 - 130 = -1: keys 0..11 (right side 2)
    assert np.all(row[:, 12:] == 0) and np.all(row[:, :12] > 0)


def test_online_with_a_window_stays_memory_bounded_and_skips_blocks():
    rng = np.random.default_rng(5)
    q = rng.standard_normal((2048, 4))
    tracemalloc.start()
    try:
        out = sdpa_online(q, q, q, window=(16, 0), block_q=128, block_k=128)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2 ** 20, f"peak {peak / 2 ** 20:.1f} MiB (the scores alone would be 32 MiB)"
    ref = ri.scaled_dot_product_attention(q[:300], q[:300], q[:300], window=(16, 0))[0]
    assert_conforms(out[:300], ref, tol.forward_for_sdpa(q, q, q), "first 300 queries")


def test_no_warning_escapes_even_when_runtime_warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = sdpa_online(np.array([[1e300, 1.0]]), np.array([[1e300, 0.0], [-1e300, 0.0]]), np.eye(2),
                          scale=1e8, softcap=1e300, mask=np.array([0.0, -np.inf]))
    np.testing.assert_array_equal(out, [[1.0, 0.0]])
