"""Tests written for the survivors of the full mutation run (all 1,288 mutants, issue #18; docs/mutation.md).

Values are computed here independently (one batch element or one pair at a time, textbook softmax), and the
error messages are checked for the words a user needs: which argument, what was expected, what arrived.
"""
import numpy as np
import pytest

import refimpl as ri
from refimpl._checks import ShapeError

from test_math_against_independent_values import textbook


def test_values_with_more_batch_than_q_and_k_give_one_result_per_batch():
    """q (Sq, D) and k (Sk, D) with v and the mask (2, ...): the unblocked path broadcasts the (Sq, Sk) scores
    up to the batch before its in-place softmax (attention:70: without it the weights keep one batch)."""
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((3, 4)), rng.standard_normal((5, 4)), rng.standard_normal((2, 5, 2))
    keep = np.ones((2, 3, 5), bool)
    keep[0, :, 1] = keep[1, :, 3] = False
    for mask in (None, keep):
        out, w = ri.scaled_dot_product_attention(q, k, v, mask=mask)
        assert out.shape == (2, 3, 2) and w.shape == (2, 3, 5)
        for b in range(2):
            o_b, w_b = textbook(q, k, v[b], keep=None if mask is None else keep[b])
            np.testing.assert_allclose(out[b], o_b, rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(w[b], w_b, rtol=1e-13, atol=1e-15)


def test_weight_shape_errors_name_the_layout_s_dimensions():
    """The dims hint follows weights_layout (attention:171, multihead:43, multihead:63)."""
    x = np.ones((3, 4))
    with pytest.raises(ShapeError, match=r"w_q.*\(d_out, d_model\)"):
        ri.self_attention(x, np.ones((2, 4, 4)), np.ones((4, 4)), np.ones((4, 4)), weights_layout="out_in")
    with pytest.raises(ShapeError, match=r"w_q.*\(d_model, d_out\)"):
        ri.self_attention(x, np.ones((2, 4, 4)), np.ones((4, 4)), np.ones((4, 4)))
    w = np.ones((2, 4, 3))
    with pytest.raises(ShapeError, match=r"w_q.*\(n_heads, d_head, d_model\)"):
        ri.multi_head_attention(x, np.ones((2, 4)), w, w, weights_layout="out_in")
    with pytest.raises(ShapeError, match=r"w_q.*\(n_heads, d_model, d_head\)"):
        ri.multi_head_attention(x, np.ones((2, 4)), w, w)
    w_oi = np.ones((2, 3, 4))                                       # (H, d_head, d_model)
    with pytest.raises(ShapeError, match=r"w_o.*\(d_out, H\*d_v\)"):
        ri.multi_head_attention(x, w_oi, w_oi, w_oi, w_o=np.ones((2, 3, 4)), weights_layout="out_in")
    with pytest.raises(ShapeError, match=r"w_o.*\(H\*d_v, d_out\)"):
        ri.multi_head_attention(x, w, w, w, w_o=np.ones((2, 3, 4)))


def test_a_head_count_mismatch_names_the_matrix_that_differs():
    """w_k with 3 heads against w_q's 2: the message shows w_k's shape (multihead:50)."""
    x = np.ones((3, 4))
    with pytest.raises(ShapeError, match=r"same number of heads.*w_q\.shape=\(2, 4, 3\), w_k\.shape=\(3, 4, 3\)"):
        ri.multi_head_attention(x, np.ones((2, 4, 3)), np.ones((3, 4, 3)), np.ones((2, 4, 3)))


def test_a_memory_refusal_names_the_call_and_its_blocks_only_when_blocked(monkeypatch):
    """The ResourceError says what was asked: the shapes, the dtype, and the blocks for the online variant
    only (_kernel:209); and what to do instead."""
    from refimpl import _checks
    from refimpl.online import sdpa_online
    monkeypatch.setattr(_checks, "machine_memory", lambda: 64)
    q, k, v = np.ones((3, 4)), np.ones((5, 4)), np.ones((5, 2))
    with pytest.raises(ri.ResourceError) as plain:
        ri.scaled_dot_product_attention(q, k, v)
    msg = str(plain.value)
    assert "scaled_dot_product_attention with q (3, 4), k (5, 4), v (5, 2)" in msg, msg
    assert "float64" in msg and "blocks" not in msg and "or sdpa_online" in msg, msg
    with pytest.raises(ri.ResourceError, match=r"float64, blocks \(2, 3\)\).*smaller blocks"):
        sdpa_online(q, k, v, block_q=2, block_k=3)
    # the documented defaults (docs/performance.md: block_q=512, block_k=1024; online:40)
    with pytest.raises(ri.ResourceError, match=r"sdpa_online with q .*blocks \(512, 1024\)\)"):
        sdpa_online(q, k, v)


def test_the_exponent_split_counts_the_feature_dimension_not_another_axis():
    """The scores' bound is max|q s| max|k| D: D is the last axis, whatever q's rank (_kernel:230); the
    rescaled scores still give the exact softmax (the larger score takes all the weight)."""
    from refimpl import _kernel
    q, k = np.full((1, 8, 1, 2), 2.0 ** 500), np.full((1, 8, 1, 2), 2.0 ** 520)   # H = 8, D = 2
    # log2 bound = 500 + 520 + log2(2) = 1021, one past L - 4 = 1020: the least e is 1 (with log2(8): 3)
    assert sum(_kernel.split_exponents(q, k, 1.0)) == 1
    v = np.random.default_rng(3).standard_normal((1, 8, 2, 3))
    k2 = np.concatenate([k, k / 2], axis=-2)                                     # two keys: scores 2**1021, 2**1020
    out, w = ri.scaled_dot_product_attention(q, k2, v)
    np.testing.assert_array_equal(w[..., 1], 0.0)                               # exp(-2**1020) underflows to 0
    np.testing.assert_array_equal(out, v[..., :1, :])


def test_an_array_like_with_a_numpy_method_but_no_detach_is_accepted():
    """Only torch tensors (detach and numpy) are refused as foreign; an array-like that merely has a numpy()
    method, as TensorFlow's eager tensors do, converts through __array__ (_checks:132)."""
    class ArrayLike:
        def __init__(self, a):
            self.a = np.asarray(a, np.float64)

        def __array__(self, dtype=None):
            return self.a if dtype is None else self.a.astype(dtype)

        def numpy(self):
            return self.a
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    out, _ = ri.scaled_dot_product_attention(ArrayLike(q), ArrayLike(q), ArrayLike(q))
    np.testing.assert_allclose(out, ri.scaled_dot_product_attention(q, q, q)[0], rtol=0, atol=0)


def test_compact_keeps_one_element_per_broadcast_axis():
    """compact() of a scalar broadcast to (3, 4) is (1, 1), so the split's scan of a broadcast additive mask
    reads its distinct values only, never the 1e10 of a (1e5, 1e5) broadcast (_checks:139)."""
    from refimpl._checks import compact
    assert compact(np.broadcast_to(5.0, (3, 4))).shape == (1, 1)
    assert compact(np.broadcast_to(np.arange(4.0), (3, 4))).shape == (1, 4)
    assert compact(np.ones((3, 4))).shape == (3, 4)
