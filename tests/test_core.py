"""Hand-computed cases with exact expected values for every function of the core.

The cases are built so that every expected value is a short fraction: a scale of ln 3 turns a score
difference of 1 into a weight ratio of exactly 3 (e.g. weights [3/4, 1/4]).
"""
import math

import numpy as np

import refimpl as ri
from refimpl import tolerance as tol

LN3 = math.log(3.0)


def assert_close(actual, expected, n_terms=8, magnitude=10.0, dtype=np.float64, what=""):
    cmp = tol.compare(actual, expected, tol.forward(dtype, n_terms, magnitude))
    assert cmp.ok, f"{what}: {cmp.summary()}\nactual={np.asarray(actual)!r}\nexpected={np.asarray(expected)!r}"


# --- softmax -------------------------------------------------------------------------------

def test_softmax_two_values_ratio_three():
    assert_close(ri.softmax([0.0, LN3]), [0.25, 0.75], what="softmax([0, ln3])")


def test_softmax_constant_row_is_exactly_uniform():
    np.testing.assert_array_equal(ri.softmax(np.full((2, 4), 7.5)), np.full((2, 4), 0.25))


def test_softmax_axis_zero():
    x = np.array([[0.0, 1.0], [LN3, 1.0]])
    assert_close(ri.softmax(x, axis=0), [[0.25, 0.5], [0.75, 0.5]], what="softmax(axis=0)")


def test_softmax_neg_inf_gets_zero_and_all_neg_inf_row_is_zero():
    out = ri.softmax(np.array([[0.0, -np.inf], [-np.inf, -np.inf]]))
    np.testing.assert_array_equal(out, [[1.0, 0.0], [0.0, 0.0]])


def test_softmax_extreme_values_are_finite():
    out = ri.softmax(np.array([1e308, -1e308, 1e308]))
    np.testing.assert_array_equal(out, [0.5, 0.0, 0.5])


def test_softmax_float32_stays_float32():
    assert ri.softmax(np.zeros(3, np.float32)).dtype == np.float32


def test_softmax_integers_become_float64():
    out = ri.softmax([0, 0])
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [0.5, 0.5])


# --- scaled dot-product attention ------------------------------------------------------------

Q1 = np.array([[1.0, 0.0]])
K2 = np.array([[1.0, 0.0], [0.0, 1.0]])
V2 = np.array([[4.0, 1.0], [8.0, -1.0]])


def test_sdpa_hand_computed_with_scale_ln3():
    out, w = ri.scaled_dot_product_attention(Q1, K2, V2, scale=LN3)
    assert_close(w, [[0.75, 0.25]], what="weights")
    assert_close(out, [[5.0, 0.5]], what="output = 3/4*[4,1] + 1/4*[8,-1]")


def test_sdpa_default_scale_is_one_over_sqrt_dk():
    q = np.array([[LN3 * 2.0, 0.0, 0.0, 0.0]])                # d_k = 4 -> scale 1/2
    k = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    _, w = ri.scaled_dot_product_attention(q, k, V2)
    assert_close(w, [[0.75, 0.25]], what="default scale 1/sqrt(4)")


def test_sdpa_bool_mask_false_means_masked():
    out, w = ri.scaled_dot_product_attention(Q1, K2, V2, scale=LN3, mask=np.array([[False, True]]))
    np.testing.assert_array_equal(w, [[0.0, 1.0]])
    np.testing.assert_array_equal(out, [[8.0, -1.0]])


def test_sdpa_additive_mask_is_added_to_scaled_scores():
    # scores*scale = [ln3, 0]; adding [0, ln3] makes them equal -> weights [1/2, 1/2]
    out, w = ri.scaled_dot_product_attention(Q1, K2, V2, scale=LN3, mask=np.array([0.0, LN3]))
    assert_close(w, [[0.5, 0.5]], what="weights")
    assert_close(out, [[6.0, 0.0]], what="output")


def test_sdpa_fully_masked_query_gives_zero_weights_and_zero_output():
    q = np.ones((2, 2))
    out, w = ri.scaled_dot_product_attention(q, K2, V2, mask=np.array([[True, True], [False, False]]))
    np.testing.assert_array_equal(w[1], [0.0, 0.0])
    np.testing.assert_array_equal(out[1], [0.0, 0.0])
    assert_close(w[0], [0.5, 0.5])


def test_sdpa_is_causal_lower_triangular():
    q = k = np.zeros((3, 2))
    v = np.array([[3.0], [6.0], [9.0]])
    out, w = ri.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert_close(w, [[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]], what="causal weights")
    assert_close(out, [[3.0], [4.5], [6.0]], what="causal output")


def test_causal_mask_helper():
    np.testing.assert_array_equal(ri.causal_mask(2, 3), [[True, False, False], [True, True, False]])
    np.testing.assert_array_equal(ri.causal_mask(2), [[True, False], [True, True]])


def test_sdpa_broadcasts_batch_dimensions():
    q = np.zeros((2, 1, 4, 3))
    k = np.zeros((3, 5, 3))
    v = np.arange(5.0 * 2).reshape(5, 2)          # no batch dims at all
    out, w = ri.scaled_dot_product_attention(q, k, v)
    assert out.shape == (2, 3, 4, 2), f"out.shape={out.shape}, but should be (2, 3, 4, 2)"
    assert w.shape == (2, 3, 4, 5)
    assert_close(out, np.broadcast_to(v.mean(axis=0), (2, 3, 4, 2)), what="uniform weights -> mean of v")


def test_sdpa_float32_in_float32_out_even_with_float64_mask_and_python_scale():
    q = np.ones((2, 3), np.float32)
    out, w = ri.scaled_dot_product_attention(q, q, q, mask=np.zeros((2, 2)), scale=0.5)
    assert out.dtype == np.float32 and w.dtype == np.float32


def test_sdpa_mixed_precision_computes_in_float64():
    out, _ = ri.scaled_dot_product_attention(np.ones((1, 2), np.float32), np.ones((1, 2)), np.ones((1, 2)))
    assert out.dtype == np.float64


def test_sdpa_huge_inputs_are_finite_and_exact_argmax():
    q = np.array([[1e300, 0.0]])
    k = np.array([[1e300, 0.0], [-1e300, 0.0], [1e300, 0.0]])
    v = np.array([[1.0], [100.0], [3.0]])
    out, w = ri.scaled_dot_product_attention(q, k, v)
    np.testing.assert_array_equal(w, [[0.5, 0.0, 0.5]])
    np.testing.assert_array_equal(out, [[2.0]])


# --- general attention (Cristina) -------------------------------------------------------------

def test_general_attention_one_query():
    ctx, w = ri.general_attention(np.array([LN3, 0.0]), K2, V2, scale=1.0)
    assert_close(w, [0.75, 0.25])
    assert_close(ctx, [5.0, 0.5])


def test_general_attention_matrix_projects_words():
    words = np.eye(2)
    ident = np.eye(2)
    att, w = ri.general_attention_matrix(words, ident * LN3, ident, V2, scale=1.0)
    assert_close(w, [[0.75, 0.25], [0.25, 0.75]])
    assert_close(att, [[5.0, 0.5], [7.0, -0.5]])


# --- self-attention and multi-head -------------------------------------------------------------

def test_self_attention_in_out_and_out_in_layouts_agree_with_transposed_weights():
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    wq = np.array([[LN3, 0.0], [0.0, LN3]])
    wv = np.array([[1.0, 2.0], [3.0, 4.0]])
    out, w = ri.self_attention(x, wq, np.eye(2), wv, scale=1.0)
    assert_close(w, [[0.75, 0.25], [0.25, 0.75]])
    assert_close(out, [[0.75 * 1 + 0.25 * 3, 0.75 * 2 + 0.25 * 4], [0.25 * 1 + 0.75 * 3, 0.25 * 2 + 0.75 * 4]])
    out2, w2 = ri.self_attention(x, wq.T, np.eye(2), wv.T, scale=1.0, weights_layout="out_in")
    np.testing.assert_array_equal(out2, out)


def test_multi_head_two_heads_with_output_projection():
    x = np.eye(2)                                            # 2 tokens, d_model 2
    w_qk = np.stack([np.eye(2), np.eye(2)])                  # (2 heads, 2, 2)
    w_v = np.stack([np.eye(2), 2 * np.eye(2)])               # head 1 doubles the values
    w_o = np.array([[1.0], [0.0], [0.0], [1.0]])             # (H*d_v=4, d_out=1)
    out, w = ri.multi_head_attention(x, w_qk, w_qk, w_v, w_o, scale=LN3)
    assert w.shape == (2, 2, 2)
    assert_close(w[0], [[0.75, 0.25], [0.25, 0.75]])
    # concat row i = [w_i, 2 w_i]; out = w_i0 + 2 w_i1
    assert_close(out, [[0.75 + 0.5], [0.25 + 1.5]])


def test_multi_head_without_w_o_returns_concatenated_heads():
    x = np.eye(2)
    w = np.stack([np.eye(2), np.eye(2), np.eye(2)])
    out, a = ri.multi_head_attention(x, w, w, w, scale=LN3)
    assert out.shape == (2, 6) and a.shape == (3, 2, 2)
    assert_close(out[:, 0:2], out[:, 4:6])


def test_split_heads_blocks_columns():
    w = np.arange(12.0).reshape(2, 6)
    h = ri.split_heads(w, 3)
    assert h.shape == (3, 2, 2)
    np.testing.assert_array_equal(h[1], w[:, 2:4])
