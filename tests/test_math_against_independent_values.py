"""Tests written to kill the mutants the rest of the suite let through (issue #18, tools/mutation_check.py).

Each test checks a behaviour against values computed here independently (a per-head loop, a textbook
softmax, exact powers of two), so that a changed operator, constant or guard in the math fails it.
docs/mutation.md lists which mutant each group was written for.
"""
import math

import numpy as np
import pytest

import refimpl as ri
from refimpl import _checks, attention as att, tolerance as tol, tolerance_gradients as tg
from refimpl._kernel import prepare
from refimpl.online import sdpa_online
from refimpl.testing import assert_conforms

F64 = tol.forward(np.float64, 64, 10.0)          # a generous forward bound for the small cases here


def textbook(q, k, v, scale=None, keep=None, bias=None):
    """softmax(scale * q k^T + bias, masked where keep is False) @ v, one (query) row at a time.
    Returns (Sq, Dv), (Sq, Sk)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    w = np.zeros((q.shape[0], k.shape[0]))
    for i in range(q.shape[0]):
        z = np.array([s * float(q[i] @ k[j]) for j in range(k.shape[0])]) + (0 if bias is None else bias[i])
        if keep is not None:
            z = np.where(keep[i], z, -np.inf)
        if np.isfinite(z).any():
            e = np.exp(z - z.max())
            w[i] = e / e.sum()
    return w @ v, w


def mha_loop(x, wq, wk, wv, wo=None, scale=None):
    """Multi-head attention for one sequence x (S, d_model), weights (H, d_model, d_*), w_o (H*Dv, d_out)."""
    outs, ws = [], []
    for h in range(wq.shape[0]):
        o, w = textbook(x @ wq[h], x @ wk[h], x @ wv[h], scale)
        outs.append(o)
        ws.append(w)
    concat = np.concatenate(outs, axis=1)
    return (concat if wo is None else concat @ wo), np.stack(ws)


# --- multi-head: batched x, the out_in layout with w_o ---------------------------------------------------

@pytest.fixture
def mha():
    rng = np.random.default_rng(1818)
    x = rng.standard_normal((3, 4, 5))                      # (B=3, S=4, d_model=5)
    wq, wk = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 3))   # (H=2, d_model, d_head=3)
    wv = rng.standard_normal((2, 5, 4))                     # d_v = 4
    wo = rng.standard_normal((8, 6))                        # (H*d_v, d_out=6)
    return x, wq, wk, wv, wo


def test_batched_multi_head_equals_a_loop_over_sequences_and_heads(mha):
    x, wq, wk, wv, wo = mha
    out, w = ri.multi_head_attention(x, wq, wk, wv, wo)
    assert out.shape == (3, 4, 6) and w.shape == (3, 2, 4, 4)
    for b in range(3):
        o_b, w_b = mha_loop(x[b], wq, wk, wv, wo)
        assert_conforms(out[b], o_b, F64, f"output of sequence {b}")
        assert_conforms(w[b], w_b, F64, f"weights of sequence {b}")
    concat, _ = ri.multi_head_attention(x, wq, wk, wv)
    assert concat.shape == (3, 4, 8)
    assert_conforms(concat[2], mha_loop(x[2], wq, wk, wv)[0], F64, "concatenated heads")


def test_out_in_layout_with_w_o_equals_in_out_with_every_weight_transposed(mha):
    x, wq, wk, wv, wo = mha
    t = lambda w: np.swapaxes(w, -1, -2)                    # noqa: E731
    out, w = ri.multi_head_attention(x, t(wq), t(wk), t(wv), wo.T, weights_layout="out_in", scale=0.3)
    o_ref, w_ref = mha_loop(x[1], wq, wk, wv, wo, scale=0.3)
    assert out.shape == (3, 4, 6)
    assert_conforms(out[1], o_ref, F64, "out_in output")
    assert_conforms(w[1], w_ref, F64, "out_in weights")
    with pytest.raises(ri.ShapeError, match=r"w_o .*2\*4 = 8.*got w_o.shape=\(6, 7\).*out_in"):
        ri.multi_head_attention(x, t(wq), t(wk), t(wv), np.ones((6, 7)), weights_layout="out_in")
    with pytest.raises(ri.ShapeError, match=r"w_o .*8.*got w_o.shape=\(7, 6\)"):
        ri.multi_head_attention(x, wq, wk, wv, np.ones((7, 6)))


def test_multi_head_shape_checks_name_the_weight(mha):
    x, wq, wk, wv, _ = mha
    with pytest.raises(ri.ShapeError, match="w_k must have d_model=5"):
        ri.multi_head_attention(x, wq, wk[:, :4], wv)
    with pytest.raises(ri.ShapeError, match="same number of heads"):
        ri.multi_head_attention(x, wq, wk, wv[:1])
    with pytest.raises(ri.ShapeError, match="w_v must have d_model=5 along axis -1"):
        ri.multi_head_attention(x, np.swapaxes(wq, 1, 2), np.swapaxes(wk, 1, 2), wv, weights_layout="out_in")


def test_split_heads_refuses_bad_head_counts():
    w = np.arange(12.0).reshape(2, 6)
    for n, err in [(0, ri.InputValueError), (4, ri.ShapeError), (True, ri.InputTypeError), (2.0, ri.InputTypeError)]:
        with pytest.raises(err, match="n_heads"):
            ri.split_heads(w, n)
    np.testing.assert_array_equal(ri.split_heads(w, 1)[0], w)
    np.testing.assert_array_equal(ri.split_heads(w, 6)[5], w[:, 5:6])


def test_project_transposes_the_last_two_axes_of_batched_weights():
    rng = np.random.default_rng(12)
    x, w = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))           # w: (B, d_out, d_in)
    ref = np.stack([x[b] @ w[b].T for b in range(2)])
    np.testing.assert_allclose(att.project(x, w, "out_in"), ref, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(att.project(x, np.swapaxes(w, 1, 2), "in_out"), ref, rtol=1e-13, atol=1e-13)


def test_batched_self_attention_and_out_in():
    rng = np.random.default_rng(7)
    x, wq, wk, wv = rng.standard_normal((2, 3, 4)), *(rng.standard_normal((4, 2)) for _ in range(3))
    out, w = ri.self_attention(x, wq, wk, wv, is_causal=True)
    out2, w2 = ri.self_attention(x, wq.T, wk.T, wv.T, is_causal=True, weights_layout="out_in")
    for b in range(2):
        o, a = textbook(x[b] @ wq, x[b] @ wk, x[b] @ wv, keep=np.tril(np.ones((3, 3), bool)))
        assert_conforms(out[b], o, F64, "in_out")
        assert_conforms(out2[b], o, F64, "out_in")
        assert_conforms(w2[b], a, F64, "out_in weights")
    with pytest.raises(ri.ShapeError, match=r"w_k must have d_model=4 along axis -1.*out_in"):
        ri.self_attention(x, wq.T, wk, wv.T, weights_layout="out_in")


# --- the power-of-two rescaling: the temperature is restored ----------------------------------------------

@pytest.mark.parametrize("fn", ["plain", "online"])
def test_a_huge_finite_additive_mask_rescales_yet_matches_a_bool_mask(fn):
    # -1e308 in the mask forces e > 0 (split_exponents' extra_log2); the unmasked scores are ordinary
    rng = np.random.default_rng(3)
    q, k, v = rng.standard_normal((4, 3)), rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    keep = np.array([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
    bias = rng.standard_normal((4, 5))                      # added at the true scale: times 2**-e inside
    additive = np.where(keep, bias, -1e308)
    o_ref, w_ref = textbook(q, k, v, keep=keep, bias=bias)
    if fn == "plain":
        o, w = ri.scaled_dot_product_attention(q, k, v, mask=additive)
        assert_conforms(w, w_ref, F64, "weights")
    else:
        o = sdpa_online(q, k, v, mask=additive, block_q=2, block_k=2)
    assert_conforms(o, o_ref, F64, "output")


@pytest.mark.parametrize("fn", ["plain", "online"])
def test_a_huge_softcap_rescales_and_is_the_identity(fn):
    rng = np.random.default_rng(4)
    q, k, v = 3 * rng.standard_normal((3, 4)), rng.standard_normal((6, 4)), rng.standard_normal((6, 2))
    o_ref, w_ref = textbook(q, k, v, scale=0.7)
    if fn == "plain":
        o, w = ri.scaled_dot_product_attention(q, k, v, softcap=1e308, scale=0.7)
        assert_conforms(w, w_ref, F64, "weights")
    else:
        o = sdpa_online(q, k, v, softcap=1e308, scale=0.7, block_q=2, block_k=4)
    assert_conforms(o, o_ref, F64, "output")


@pytest.mark.parametrize("fn", ["plain", "online"])
@pytest.mark.parametrize("shift", [600, -600])
def test_keys_near_the_top_of_the_range_with_tiny_queries(fn, shift):
    # |k| ~ 2**1022 (or |q| ~ 2**1022): one factor must be split; true scores are ordinary
    rng = np.random.default_rng(5)
    q, k, v = rng.standard_normal((3, 4)), rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    o_ref, w_ref = textbook(q, k, v)
    big = 1022 - 600 if shift > 0 else 0
    qs, ks = np.ldexp(q, -shift - big), np.ldexp(k, shift + big)         # exact: q k^T unchanged
    if fn == "plain":
        o, w = ri.scaled_dot_product_attention(qs, ks, v)
        assert_conforms(w, w_ref, F64, "weights")
    else:
        o = sdpa_online(qs, ks, v, block_q=2, block_k=2)
    assert_conforms(o, o_ref, F64, "output")


# --- the blocked path: exactly from 128 x 128 scores on --------------------------------------------------

@pytest.mark.parametrize("n_q, n_k, blocked", [(128, 128, True), (127, 129, False), (64, 256, True)])
def test_the_blocked_path_starts_at_128_by_128_scores(monkeypatch, n_q, n_k, blocked):
    calls = []
    real = att.sdpa_blocked
    monkeypatch.setattr(att, "sdpa_blocked", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    rng = np.random.default_rng(6)
    q, k, v = rng.standard_normal((n_q, 2)), rng.standard_normal((n_k, 2)), rng.standard_normal((n_k, 2))
    o, w = ri.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert bool(calls) == blocked
    o_ref, w_ref = textbook(q[-3:], k, v, keep=np.tril(np.ones((n_q, n_k), bool))[-3:])
    assert_conforms(o[-3:], o_ref, F64, "last rows")
    assert_conforms(w[-3:], w_ref, F64, "last rows' weights")


def test_blocked_rows_per_block_cover_every_row():
    rng = np.random.default_rng(8)
    q, k, v = rng.standard_normal((2, 300, 3)), rng.standard_normal((2, 70, 3)), rng.standard_normal((2, 70, 2))
    p = prepare(q, k, v)
    qs = p.q * p.scale
    out, w = att.sdpa_blocked(qs, p.k, p.v, p.keep, p.additive, 0, p.scores_shape, block_rows=64)
    for b in (0, 1):
        o_ref, w_ref = textbook(q[b], k[b], v[b])
        assert_conforms(out[b], o_ref, F64, "output")
        assert_conforms(w[b], w_ref, F64, "weights")


# --- the 2**53 integer limit, 0-d masks ------------------------------------------------------------------

def test_integers_up_to_2_to_the_53_are_accepted_and_beyond_refused():
    for n in (2 ** 53, -(2 ** 53)):
        assert _checks.as_float_array(np.array([n, 1]), "x")[0] == float(n)
    for n in (2 ** 53 + 2, -(2 ** 53) - 2, 2 ** 62):
        with pytest.raises(ri.InputValueError, match=r"x has integer values beyond 2\*\*53"):
            _checks.as_float_array(np.array([n, 1], dtype=np.int64), "x")
    np.testing.assert_array_equal(ri.softmax(np.array([2 ** 53, 2 ** 53])), [0.5, 0.5])


@pytest.mark.parametrize("n", [2 ** 53 + 1, -(2 ** 53) - 1])
def test_the_first_integer_float64_cannot_hold_is_refused(n):
    with pytest.raises(ri.InputValueError, match=r"beyond 2\*\*53"):
        _checks.as_float_array(np.array([n, 1], dtype=np.int64), "x")


@pytest.mark.parametrize("m", [np.bool_(True), np.array(0.0), True, 0.0])
def test_zero_d_masks_are_refused_in_every_variant(m):
    q = np.ones((2, 3))
    with pytest.raises(ri.ShapeError, match="0-d mask"):
        ri.scaled_dot_product_attention(q, q, q, mask=m)
    with pytest.raises(ri.ShapeError, match="0-d mask"):
        sdpa_online(q, q, q, mask=m)
    out, _ = ri.scaled_dot_product_attention(q, q, q, mask=np.array([True, False]))   # 1-d: per key
    np.testing.assert_array_equal(out, q[:1].repeat(2, axis=0))


# --- softmax's axis, family's input checks --------------------------------------------------------------

def test_softmax_axis_must_be_an_in_range_int():
    x = np.array([[0.0, math.log(3.0)], [0.0, 0.0]])
    np.testing.assert_allclose(ri.softmax(x, axis=-2), [[0.5, 0.75], [0.5, 0.25]], rtol=1e-15)
    np.testing.assert_allclose(ri.softmax(x, axis=1), [[0.25, 0.75], [0.5, 0.5]], rtol=1e-15)
    for bad in (2, -3):
        with pytest.raises(ri.ShapeError, match=rf"axis must be in \[-2, 1\] for x of shape \(2, 2\), got {bad}"):
            ri.softmax(x, axis=bad)
    for bad in (1.0, True, None, "1"):
        with pytest.raises(ri.InputTypeError, match="axis must be an int"):
            ri.softmax(x, axis=bad)


# --- band_mask (the mask-only APIs' causal and window cases), multi_head_with's defaults ----------------

def test_band_mask_is_the_band_and_the_user_mask():
    from refimpl.masks import band_mask
    assert band_mask(3, 4) is None
    tril = np.array([[j <= i for j in range(4)] for i in range(3)])
    np.testing.assert_array_equal(band_mask(3, 4, is_causal=True), tril)
    br = np.array([[j <= i + 1 for j in range(4)] for i in range(3)])
    np.testing.assert_array_equal(band_mask(3, 4, is_causal=True, alignment="bottom-right"), br)
    win = np.array([[i - 1 <= j <= i + 1 for j in range(4)] for i in range(3)])
    np.testing.assert_array_equal(band_mask(3, 4, window=(1, 1)), win)
    user = np.array([True, False, True, True])
    np.testing.assert_array_equal(band_mask(3, 4, is_causal=True, mask=user), tril & user)
    np.testing.assert_array_equal(band_mask(3, 4, mask=user), user)


def test_multi_head_with_defaults_to_no_causal_band(mha):
    from refimpl.multihead import multi_head_with
    x, wq, wk, wv, wo = mha
    out, w = multi_head_with(ri.scaled_dot_product_attention, x[0], wq, wk, wv, wo)
    o_ref, w_ref = mha_loop(x[0], wq, wk, wv, wo)
    assert_conforms(w, w_ref, F64, "weights")
    assert_conforms(out, o_ref, F64, "output")
    out, _ = att.self_attention_with(ri.scaled_dot_product_attention, x[0], wq[0], wk[0], wv[0])
    assert_conforms(out, textbook(x[0] @ wq[0], x[0] @ wk[0], x[0] @ wv[0])[0], F64, "self_attention_with")


@pytest.mark.parametrize("fn", ["plain", "online"])
def test_a_huge_positive_additive_mask_on_top_of_huge_scores_does_not_overflow(fn):
    # scores 1e307 (no split needed for q, k alone) + additive 1.7e308 would overflow to inf: the additive
    # mask's magnitude must enter the split (rescaled()'s extra_log2)
    q, k, v = np.array([[1.0]]), np.array([[1e307], [0.0]]), np.array([[3.0], [5.0]])
    mask = np.array([1.7e308, 1.7e308])
    out = (ri.scaled_dot_product_attention(q, k, v, mask=mask, scale=1.0)[0] if fn == "plain"
           else sdpa_online(q, k, v, mask=mask, scale=1.0, block_k=1))
    np.testing.assert_array_equal(out, [[3.0]])               # true logits 1.8e308 vs 1.7e308: all weight on key 0


# --- survivors of the second sample (seed 1) ---------------------------------------------------------------

def test_as_float_array_takes_a_0d_value_by_default():
    a = _checks.as_float_array(np.float64(3.0), "x")
    assert a.shape == () and float(a) == 3.0


@pytest.mark.parametrize("mask", ["yes", b"no"])
def test_a_string_mask_is_an_input_type_error_naming_the_mask(mask):
    q = np.ones((2, 3))
    with pytest.raises(ri.InputTypeError, match="mask must be a bool keep-mask"):
        ri.scaled_dot_product_attention(q, q, q, mask=mask)


def test_gqa_refuses_batch_dims_that_do_not_broadcast_naming_the_arrays():
    q = np.ones((2, 4, 3, 5))
    k = np.ones((3, 2, 3, 5))                       # batch 3 against q's 2: no broadcast
    with pytest.raises(ri.ShapeError, match="k"):
        ri.scaled_dot_product_attention(q, k, np.ones((2, 2, 3, 5)), enable_gqa=True)
    with pytest.raises(ri.ShapeError, match="v"):
        ri.scaled_dot_product_attention(q, np.ones((2, 2, 3, 5)), np.ones((3, 2, 3, 5)), enable_gqa=True)


def test_forward_for_sdpa_cases_is_absolute_only():
    from refimpl import tolerance as t
    q = np.ones((2, 3, 4))
    b = t.forward_for_sdpa_cases(q, q, q)
    assert b.rtol == 0.0
    e = np.full((2, 3, 4), 1.0)                     # the expected value's size must not widen the bound
    over = e + 4 * np.asarray(b.atol)
    assert not t.compare(over, e, b).ok


def test_a_scalar_bias_sums_every_score_into_its_one_gradient():
    rng = np.random.default_rng(7)
    q, k, v, g = (rng.standard_normal(s) for s in ((2, 3, 4), (2, 5, 4), (2, 5, 6), (2, 3, 6)))
    one = tg.sdpa_grad_terms(q, k, v, g, bias_shape=(1, 1))["dbias"]
    assert one[2] == 2 * 3 * 5            # gain: n_batch * n_q * n_k copies summed into one dbias entry


def test_gradient_within_budget_at_its_edge():
    from refimpl import tolerance as t
    o = np.array([1.0])
    quantum = t.QUANTUM_ULPS * t.eps(np.float64)      # conditioning 0, reference exact: allowed = quantum
    ok, err, allowed = tg.gradient_within_budget(o + quantum, o, o, np.float64, conditioning=0.0)
    assert err == allowed == quantum and ok


# --- survivors of the third sample (seed 2) ----------------------------------------------------------------

@pytest.mark.parametrize("bad,word", [(None, "NoneType"), ({"a": 1}, "dict"), ("text", "str")])
def test_a_non_array_is_refused_naming_what_arrived(bad, word):
    with pytest.raises(ri.InputTypeError, match=f"x must be an array-like of real numbers, got {word}"):
        _checks.as_float_array(bad, "x")


def test_allow_nonfinite_keeps_nan_and_inf():
    a = _checks.as_float_array([np.nan, np.inf, 1.0], "x", allow_nonfinite=True)
    assert np.isnan(a[0]) and np.isinf(a[1]) and a[2] == 1.0


def test_gradient_within_budget_scales_its_quantum_with_the_conditioning():
    from refimpl import tolerance as t
    o = np.array([1.0])
    quantum = t.QUANTUM_ULPS * t.eps(np.float64) * (1.0 + 1.0)     # conditioning 1: twice the quantum
    ok, err, allowed = tg.gradient_within_budget(o + quantum, o, o, np.float64, conditioning=1.0)
    assert err == allowed == quantum and ok


def test_an_array_of_strings_is_refused_describing_the_array():
    with pytest.raises(ri.InputTypeError,
                       match=r"x must hold real numbers, got dtype <U1 \(ndarray of dtype <U1 and shape \(2,\)\)"):
        _checks.as_float_array(np.array(["a", "b"]), "x")
