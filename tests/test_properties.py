"""Invariants of attention, one property per test, over Hypothesis-drawn shapes, dtypes, masks and values."""

import numpy as np
from hypothesis import assume, given, strategies as st
from hypothesis.extra import numpy as hnp

import refimpl as ri
from refimpl import strategies as rst, tolerance as tol
from refimpl.testing import assert_conforms, assert_exact

BATCH = hnp.array_shapes(min_dims=0, max_dims=2, max_side=3)
ANY = rst.attention_inputs(batch_shape=BATCH, dtype=st.sampled_from([np.float32, np.float64]))
MASKED = rst.attention_inputs(batch_shape=BATCH, mask=st.sampled_from(["bool", "additive", "causal"]))


def sdpa(c, **kw):
    return ri.scaled_dot_product_attention(c.q, c.k, c.v, **{**c.kwargs(), **kw})


def live_rows(w):
    """Rows that attend at least one key (a fully masked row is all zeros by decision)."""
    return w.sum(axis=-1) > 0


@given(ANY)
def test_weight_rows_sum_to_one(c):
    _, w = sdpa(c)
    err = np.abs(w.sum(axis=-1, dtype=np.float64) - 1.0)
    bound = tol.row_sum_bound(c.k.shape[-2], w.dtype)
    assert err.max() <= bound, f"max |row sum - 1| = {err.max():.3g} > {bound:.3g}\n{c.reproduction()}"


@given(MASKED)
def test_weight_rows_sum_to_one_or_zero_under_masks(c):
    _, w = sdpa(c)
    s = w.sum(axis=-1, dtype=np.float64)
    live = live_rows(w)
    assert np.all(np.abs(s[live] - 1) <= tol.row_sum_bound(c.k.shape[-2], w.dtype))
    assert np.all(s[~live] == 0)


@given(ANY)
def test_weights_lie_in_zero_one(c):
    _, w = sdpa(c)
    assert w.min() >= 0 and w.max() <= 1, f"weights outside [0, 1]: min {w.min()}, max {w.max()}"


@given(rst.float_arrays(hnp.array_shapes(min_dims=1, max_dims=3, max_side=6), magnitude=50.0),
       st.floats(-100, 100))
def test_softmax_is_shift_invariant(x, c):
    t = tol.softmax_input_perturbation(float(np.abs(x).max()) + abs(c), x.shape[-1], np.float64)
    assert_conforms(ri.softmax(x + c), ri.softmax(x), t, f"softmax(x + {c!r}) vs softmax(x)")


@given(st.integers(1, 50), st.floats(-1e300, 1e300), st.sampled_from([np.float32, np.float64]))
def test_softmax_of_a_constant_row_is_exactly_uniform(n, value, dtype):
    with np.errstate(over="ignore"):
        x = np.full(n, value, dtype=dtype)
    assume(np.isfinite(x).all())
    assert_exact(ri.softmax(x), np.full(n, dtype(1) / dtype(n), dtype=dtype), f"softmax(full({n}, {value}))")


@given(rst.attention_inputs(batch_shape=BATCH))
def test_tiny_scale_gives_the_mean_of_v(c):
    s = 1e-12
    out, _ = sdpa(c, scale=s)
    mean = np.broadcast_to(c.v.mean(axis=-2, keepdims=True), out.shape)
    spread = s * 2 * c.q.shape[-1] * np.abs(c.q).max() * np.abs(c.k).max()   # max |score| after scaling
    t = tol.Tolerance(tol.forward(np.float64, c.k.shape[-2] + 2, np.abs(c.v).max()).atol
                      + 2 * spread * np.abs(c.v).max(), 0.0, "mean of v up to the scaled score spread")
    assert_conforms(out, mean, t, "scale -> 0 gives mean(v)")


@given(ANY, st.randoms(use_true_random=False))
def test_permuting_queries_permutes_outputs(c, rnd):
    perm = list(range(c.q.shape[-2]))
    rnd.shuffle(perm)
    out, w = sdpa(c)
    out_p, w_p = ri.scaled_dot_product_attention(c.q[..., perm, :], c.k, c.v)
    assert_conforms(out_p, out[..., perm, :], tol.forward_for_sdpa(c.q, c.k, c.v, dtype=out.dtype), "outputs")
    assert_conforms(w_p, w[..., perm, :], tol.forward_for_sdpa(c.q, c.k, c.v, dtype=out.dtype, weights=True), "weights")


@given(ANY, st.randoms(use_true_random=False))
def test_permuting_key_value_pairs_together_leaves_outputs_unchanged(c, rnd):
    perm = list(range(c.k.shape[-2]))
    rnd.shuffle(perm)
    out, _ = sdpa(c)
    out_p, _ = ri.scaled_dot_product_attention(c.q, c.k[..., perm, :], c.v[..., perm, :])
    assert_conforms(out_p, out, tol.forward_for_sdpa(c.q, c.k, c.v, dtype=out.dtype), f"key permutation {perm}")


@given(MASKED)
def test_output_rows_lie_within_the_column_range_of_v(c):
    out, w = sdpa(c)
    lo = np.broadcast_to(c.v.min(axis=-2, keepdims=True), out.shape)
    hi = np.broadcast_to(c.v.max(axis=-2, keepdims=True), out.shape)
    slack = tol.forward_for_sdpa(c.q, c.k, c.v).atol
    live = np.broadcast_to(live_rows(w)[..., None], out.shape)
    assert np.all(out[live] >= lo[live] - slack) and np.all(out[live] <= hi[live] + slack)


@given(rst.attention_inputs(batch_shape=BATCH, mask="bool"))
def test_masked_keys_get_exactly_zero_weight(c):
    _, w = sdpa(c)
    masked = ~np.broadcast_to(c.mask, w.shape)
    assert np.all(w[masked] == 0.0), f"masked weights {w[masked]}"


@given(rst.attention_inputs(batch_shape=BATCH, mask="bool"))
def test_additive_neg_inf_mask_equals_the_boolean_mask(c):
    additive = np.where(c.mask, 0.0, -np.inf)
    out_b, w_b = ri.scaled_dot_product_attention(c.q, c.k, c.v, mask=c.mask)
    out_a, w_a = ri.scaled_dot_product_attention(c.q, c.k, c.v, mask=additive)
    assert_exact(w_a, w_b, "weights")
    assert_exact(out_a, out_b, "outputs")


@given(rst.attention_inputs(batch_shape=BATCH, mask="causal"))
def test_causal_weights_are_lower_triangular(c):
    _, w = sdpa(c)
    upper = ~np.tri(w.shape[-2], w.shape[-1], dtype=bool)
    assert np.all(w[..., upper] == 0.0)


@given(rst.attention_inputs(batch_shape=BATCH, n_keys=1, dtype=st.sampled_from([np.float32, np.float64])))
def test_one_key_gives_that_keys_value(c):
    out, w = sdpa(c)
    assert_exact(w, np.ones_like(w), "weights")
    assert_exact(out, np.broadcast_to(c.v, out.shape), "output = v")


@given(rst.float_arrays(st.tuples(st.integers(1, 5), st.integers(1, 6))).flatmap(
    lambda x: st.tuples(st.just(x), *(rst.float_arrays((1, x.shape[1], d), magnitude=2.0) for d in (3, 3, 2)))))
def test_multi_head_with_one_head_and_identity_w_o_equals_sdpa(args):
    x, wq, wk, wv = args
    out, a = ri.multi_head_attention(x, wq, wk, wv, np.eye(wv.shape[-1]))
    ref, w = ri.scaled_dot_product_attention(x @ wq[0], x @ wk[0], x @ wv[0])
    t = tol.forward_for_sdpa(x @ wq[0], x @ wk[0], x @ wv[0])
    assert_conforms(out, ref, t, "output")
    assert_conforms(a[0], w, tol.forward_for_sdpa(x @ wq[0], x @ wk[0], x @ wv[0], weights=True), "weights")


@given(rst.float_arrays((4, 6)), rst.float_arrays((3, 6, 2), magnitude=2.0), rst.float_arrays((6, 2), magnitude=2.0))
def test_heads_are_independent(x, w, other):
    out1, a1 = ri.multi_head_attention(x, w, w, w)
    w2 = w.copy()
    w2[1] = other                                         # change head 1 only
    out2, a2 = ri.multi_head_attention(x, w2, w2, w2)
    assert_exact(a2[[0, 2]], a1[[0, 2]], "weights of heads 0 and 2")
    assert_exact(out2[:, 0:2], out1[:, 0:2], "head 0's output columns")
    assert_exact(out2[:, 4:6], out1[:, 4:6], "head 2's output columns")


@given(rst.attention_inputs(batch_shape=st.tuples(st.integers(2, 4))))
def test_batch_entries_are_independent(c):
    out, w = sdpa(c)
    for b in range(c.q.shape[0]):
        o_b, w_b = ri.scaled_dot_product_attention(c.q[b], c.k[b], c.v[b])
        assert_conforms(out[b], o_b, tol.forward_for_sdpa(c.q[b], c.k[b], c.v[b]), f"batch entry {b}")


@given(rst.attention_inputs(batch_shape=BATCH, dtype=np.float32, magnitude=st.sampled_from([1.0, 4.0, 20.0])))
def test_float32_is_within_the_float32_budget_of_float64(c):
    out32, w32 = sdpa(c)
    assert out32.dtype == np.float32
    q, k, v = (a.astype(np.float64) for a in (c.q, c.k, c.v))    # the same (float32) values, in float64
    out64, w64 = ri.scaled_dot_product_attention(q, k, v)
    assert_conforms(out32, out64, tol.forward_for_sdpa(q, k, v, dtype=np.float32), "float32 output vs float64")
    assert_conforms(w32, w64, tol.forward_for_sdpa(q, k, v, dtype=np.float32, weights=True), "float32 weights")


@given(rst.attention_inputs(batch_shape=BATCH, magnitude=st.sampled_from([1e100, 1e200, 1e300]),
                            mask=st.sampled_from(["none", "bool", "causal"])))
def test_inputs_up_to_1e300_give_finite_results(c):
    out, w = sdpa(c)
    assert np.isfinite(out).all() and np.isfinite(w).all()
    live = live_rows(w)
    assert np.all(np.abs(w.sum(axis=-1)[live] - 1) <= tol.row_sum_bound(c.k.shape[-2], w.dtype))


@given(rst.attention_inputs(batch_shape=BATCH), st.floats(0.01, 10))
def test_scale_is_the_same_as_scaling_q(c, s):
    out, _ = sdpa(c, scale=s)
    out2, _ = ri.scaled_dot_product_attention(c.q * s, c.k, c.v, scale=1.0)
    assert_conforms(out2, out, tol.forward_for_sdpa(c.q, c.k, c.v, s), f"scale={s}")


def _conditioning(c):
    return tol.sdpa_terms(c.q, c.k, c.v)[0]


def _naive_float32(q, k, v):
    """A same-precision reference that orders the arithmetic differently: scale after the matmul,
    exp / sum / divide, no blocking."""
    s = (q @ np.swapaxes(k, -1, -2)) * np.float32(1 / np.sqrt(q.shape[-1]))
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)) @ v


@given(rst.attention_inputs(batch_shape=BATCH, dtype=np.float32, n_queries=st.integers(1, 40),
                            n_keys=st.integers(1, 40), d_k=st.integers(1, 16)))
def test_float32_error_is_within_the_flashattention_budget(c):
    oracle, _ = ri.scaled_dot_product_attention(*(a.astype(np.float64) for a in (c.q, c.k, c.v)))
    out, _ = sdpa(c)
    ok, err, allowed = tol.within_budget(out, _naive_float32(c.q, c.k, c.v), oracle, np.float32, _conditioning(c))
    assert ok, f"float32 error {err:.3g} > budget {allowed:.3g}\n{c.reproduction()}"


@given(rst.attention_inputs(batch_shape=BATCH, dtype=np.float32, n_queries=st.integers(1, 40),
                            n_keys=st.integers(1, 40)), st.integers(1, 16))
def test_online_float32_error_is_within_the_budget_of_the_plain_version(c, block):
    from refimpl.online import sdpa_online
    oracle, _ = ri.scaled_dot_product_attention(*(a.astype(np.float64) for a in (c.q, c.k, c.v)))
    plain, _ = sdpa(c)
    online = sdpa_online(c.q, c.k, c.v, block_q=block, block_k=block)
    ok, err, allowed = tol.within_budget(online, plain, oracle, np.float32, _conditioning(c))
    assert ok, f"online float32 error {err:.3g} > budget {allowed:.3g}\n{c.reproduction()}"
