"""refimpl.family against per-pair loops written here, and each of its input checks (issue #18: mutants
of family.py that the property tests let through)."""
import numpy as np
import pytest

import refimpl as ri
from refimpl import tolerance as tol
from refimpl.testing import assert_conforms

F64 = tol.forward(np.float64, 64, 10.0)


@pytest.fixture
def enc():
    rng = np.random.default_rng(2014)
    s, h = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 6))       # (B, T, d_s), (B, N, d_h)
    return rng, s, h


def loop_context(e, h, keep=None):
    """alpha = softmax over positions (kept ones), c = alpha @ h, one step at a time."""
    w = np.zeros(e.shape)
    for t in range(e.shape[0]):
        z = e[t] if keep is None else np.where(keep[t], e[t], -np.inf)
        if np.isfinite(z).any():
            x = np.exp(z - z.max())
            w[t] = x / x.sum()
    return w @ h, w


def test_additive_and_concat_scores_equal_a_per_pair_loop(enc):
    rng, s, h = enc
    w_a, u_a, v_a = rng.standard_normal((4, 7)), rng.standard_normal((6, 7)), rng.standard_normal(7)
    e = ri.additive_scores(s, h, w_a, u_a, v_a)
    ref = np.array([[[v_a @ np.tanh(s[b, t] @ w_a + h[b, i] @ u_a) for i in range(5)] for t in range(3)]
                    for b in range(2)])
    assert e.shape == (2, 3, 5)
    assert_conforms(e, ref, F64, "additive scores")
    w = np.concatenate([w_a, u_a])
    assert_conforms(ri.luong_scores(s, h, "concat", w=w, v_a=v_a), ref, F64, "concat scores")


def test_dot_and_general_scores_equal_a_per_pair_loop(enc):
    rng, s, h = enc
    w = rng.standard_normal((4, 6))
    ref = np.array([[[s[b, t] @ w @ h[b, i] for i in range(5)] for t in range(3)] for b in range(2)])
    assert_conforms(ri.luong_scores(s, h, "general", w=w), ref, F64, "general")
    h4 = h[..., :4]
    ref = np.array([[[s[b, t] @ h4[b, i] for i in range(5)] for t in range(3)] for b in range(2)])
    assert_conforms(ri.luong_scores(s, h4), ref, F64, "dot")


@pytest.mark.parametrize("mask_kind", ["per_sequence", "per_step", "none"])
def test_attention_context_equals_a_loop_with_padding(enc, mask_kind):
    rng, _, h = enc
    e = 2 * rng.standard_normal((2, 3, 5))
    keep = {"per_sequence": np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], bool),
            "per_step": np.array([[1, 1, 0, 1, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool),
            "none": None}[mask_kind]
    c, w = ri.attention_context(e, h, mask=keep)
    for b in range(2):
        kb = None if keep is None else (keep[b][None, :].repeat(3, 0) if keep.ndim == 2 and mask_kind == "per_sequence"
                                        else keep)
        c_ref, w_ref = loop_context(e[b], h[b], kb)
        assert_conforms(c[b], c_ref, F64, f"context {b}")
        assert_conforms(w[b], w_ref, F64, f"weights {b}")
    if mask_kind == "per_step":
        assert np.all(w[:, 1] == 0) and np.all(c[:, 1] == 0)          # every position padded: zeros


@pytest.mark.parametrize("call, err, words", [
    (lambda s, h: ri.additive_scores(s, h, np.ones((5, 7)), np.ones((6, 7)), np.ones(7)), ri.ShapeError,
     ["w_a", "d_s=4"]),
    (lambda s, h: ri.additive_scores(s, h, np.ones((4, 7)), np.ones((5, 7)), np.ones(7)), ri.ShapeError,
     ["u_a", "d_h=6"]),
    (lambda s, h: ri.additive_scores(s, h, np.ones((4, 7)), np.ones((6, 7)), np.ones(8)), ri.ShapeError, ["d_a"]),
    (lambda s, h: ri.additive_scores(s, h, np.ones((4, 7)), np.ones((6, 8)), np.ones(7)), ri.ShapeError, ["d_a"]),
    (lambda s, h: ri.luong_scores(s, s, w=np.ones((4, 4))), ri.InputTypeError, ["dot", "no w"]),
    (lambda s, h: ri.luong_scores(s, s, v_a=np.ones(4)), ri.InputTypeError, ["dot", "no w"]),
    (lambda s, h: ri.luong_scores(s, h, "general", w=np.ones((6, 4))), ri.ShapeError, ["(4, 6)", "(6, 4)"]),
    (lambda s, h: ri.luong_scores(s, h, "concat", w=np.ones((9, 3)), v_a=np.ones(3)), ri.ShapeError,
     ["d_s + d_h = 10"]),
    (lambda s, h: ri.luong_scores(s, h[:1, :, :4].repeat(3, 0)), ri.ShapeError, ["batch", "s: (2,)", "h: (3,)"]),
    (lambda s, h: ri.luong_scores(s[0, 0], h), ri.ShapeError, ["s", "at least 2"]),
    (lambda s, h: ri.attention_context(np.ones((2, 3, 5)), h, mask=np.ones((2, 4, 5), bool)), ri.ShapeError, ["mask"]),
    (lambda s, h: ri.attention_context(np.ones((2, 3, 5)), h, mask=np.ones((3, 5), np.int64)), ri.InputTypeError,
     ["bool", "int64"]),
])
def test_each_input_check_names_its_argument(enc, call, err, words):
    _, s, h = enc
    with pytest.raises(err) as e:
        call(s, h)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_dtypes_float32_only_when_every_input_is():
    f = np.float32
    s, h = np.ones((2, 3), f), np.ones((4, 3), f)
    assert ri.additive_scores(s, h, np.ones((3, 2), f), np.ones((3, 2), f), np.ones(2, f)).dtype == f
    assert ri.additive_scores(s, h, np.ones((3, 2), f), np.ones((3, 2)), np.ones(2, f)).dtype == np.float64
    assert ri.luong_scores(s, h, "general", w=np.ones((3, 3))).dtype == np.float64
    assert ri.luong_scores(s, h, "general", w=np.ones((3, 3), f)).dtype == f
    c, w = ri.attention_context(np.ones((2, 4), f), np.ones((4, 3)))
    assert c.dtype == w.dtype == np.float64


def test_a_per_sequence_mask_with_two_batch_dimensions():
    rng = np.random.default_rng(11)
    e, h = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 5, 2))   # (B1, B2, T, N)
    keep = rng.random((2, 3, 5)) < 0.6
    keep[..., 0] = True
    c, w = ri.attention_context(e, h, mask=keep)
    for i in range(2):
        for j in range(3):
            c_ref, w_ref = loop_context(e[i, j], h[i, j], keep[i, j][None, :].repeat(4, 0))
            assert_conforms(w[i, j], w_ref, F64, "weights")
            assert_conforms(c[i, j], c_ref, F64, "context")


def test_a_mask_that_reads_both_per_sequence_and_per_step_is_refused_as_ambiguous():
    e, h = np.zeros((2, 2, 5)), np.ones((2, 5, 3))                # B = T = 2: a (2, N) mask fits both readings
    with pytest.raises(ri.ShapeError, match=r"mask of shape \(2, 5\) is ambiguous"):
        ri.attention_context(e, h, mask=np.ones((2, 5), bool))
    c, w = ri.attention_context(e, h, mask=np.ones((1, 5), bool))  # leading 1: both readings agree
    np.testing.assert_array_equal(w, np.full((2, 2, 5), 0.2))
