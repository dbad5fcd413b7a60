"""Bahdanau and Luong attention: properties, one per test, and cross-checks against per-pair loops."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import refimpl as ri
from refimpl import strategies as rst, tolerance as tol
from refimpl.testing import assert_conforms, assert_exact


@st.composite
def encoder_decoder(draw, masked=False):
    t, n, d, d_a = (draw(st.integers(1, 5)) for _ in range(4))
    s = draw(rst.float_arrays((t, d), magnitude=3.0))
    h = draw(rst.float_arrays((n, d), magnitude=3.0))
    w_a, u_a = (draw(rst.float_arrays((d, d_a), magnitude=1.0)) for _ in range(2))
    v_a = draw(rst.float_arrays((d_a,), magnitude=1.0))
    mask = draw(hnp.arrays(bool, (n,)).filter(lambda m: m.any())) if masked else None
    return s, h, w_a, u_a, v_a, mask


def context_tol(e, h, weights=False):
    return tol.forward(np.float64, 2 * float(np.abs(e).max()) + e.shape[-1] + h.shape[-1] + 2,
                       1.0 if weights else float(np.abs(h).max()))


@given(encoder_decoder(masked=True))
def test_weights_sum_to_one_per_decoder_step(c):
    s, h, w_a, u_a, v_a, mask = c
    _, w = ri.attention_context(ri.additive_scores(s, h, w_a, u_a, v_a), h, mask=mask)
    assert np.all(np.abs(w.sum(axis=-1) - 1) <= tol.row_sum_bound(h.shape[0], w.dtype))


@given(encoder_decoder(masked=True))
def test_context_lies_within_the_column_range_of_the_encoder_states(c):
    s, h, w_a, u_a, v_a, mask = c
    e = ri.additive_scores(s, h, w_a, u_a, v_a)
    ctx, _ = ri.attention_context(e, h, mask=mask)
    slack = context_tol(e, h).atol
    live = h[mask]
    assert np.all(ctx >= live.min(axis=0) - slack) and np.all(ctx <= live.max(axis=0) + slack)


@given(rst.float_arrays(st.tuples(st.integers(1, 5), st.just(4))),
       rst.float_arrays(st.tuples(st.integers(1, 5), st.just(4))))
def test_luong_general_with_identity_equals_dot(s, h):
    assert_conforms(ri.luong_scores(s, h, "general", w=np.eye(4)), ri.luong_scores(s, h, "dot"),
                    tol.forward(np.float64, 8, float(np.abs(s).max() * np.abs(h).max() * 4)), "general(W=I) vs dot")


@given(encoder_decoder(masked=True))
def test_a_padded_source_position_gets_zero_weight(c):
    s, h, w_a, u_a, v_a, mask = c
    _, w = ri.attention_context(ri.additive_scores(s, h, w_a, u_a, v_a), h, mask=mask)
    assert np.all(w[:, ~mask] == 0.0)


@given(encoder_decoder(), st.randoms(use_true_random=False))
def test_permuting_encoder_positions_with_their_states_leaves_the_context_unchanged(c, rnd):
    s, h, w_a, u_a, v_a, _ = c
    perm = list(range(h.shape[0]))
    rnd.shuffle(perm)
    e = ri.additive_scores(s, h, w_a, u_a, v_a)
    ctx, _ = ri.attention_context(e, h)
    ctx_p, _ = ri.attention_context(ri.additive_scores(s, h[perm], w_a, u_a, v_a), h[perm])
    assert_conforms(ctx_p, ctx, context_tol(e, h), f"permutation {perm}")


@given(encoder_decoder())
def test_additive_scores_match_a_per_pair_loop(c):
    s, h, w_a, u_a, v_a, _ = c
    loop = np.array([[sum(v_a[a] * np.tanh(sum(s[t, j] * w_a[j, a] for j in range(s.shape[1])) +
                                           sum(h[i, j] * u_a[j, a] for j in range(h.shape[1])))
                          for a in range(len(v_a))) for i in range(h.shape[0])] for t in range(s.shape[0])])
    n = 2 * (s.shape[1] + h.shape[1]) + len(v_a) + 4
    assert_conforms(ri.additive_scores(s, h, w_a, u_a, v_a), loop,
                    tol.forward(np.float64, n * 6, float(np.abs(v_a).sum())), "additive vs loop")


@given(encoder_decoder(), rst.float_arrays((5, 5), magnitude=1.0))
def test_luong_general_matches_a_per_pair_loop(c, w_full):
    s, h = c[0], c[1]
    w = w_full[: s.shape[1], : h.shape[1]]
    loop = np.array([[s[t] @ w @ h[i] for i in range(h.shape[0])] for t in range(s.shape[0])])
    mag = float(np.abs(s).max() * np.abs(w).max() * np.abs(h).max())
    assert_conforms(ri.luong_scores(s, h, "general", w=w), loop,
                    tol.forward(np.float64, s.shape[1] * h.shape[1] * 2, mag * s.shape[1] * h.shape[1]),
                    "general vs loop")


@given(encoder_decoder())
def test_luong_concat_is_additive_with_split_weights(c):
    s, h, w_a, u_a, v_a, _ = c
    assert_exact(ri.luong_scores(s, h, "concat", w=np.vstack([w_a, u_a]), v_a=v_a),
                 ri.additive_scores(s, h, w_a, u_a, v_a), "concat == additive")


def test_batched_decoder_steps_and_per_sequence_padding():
    rng = np.random.default_rng(5)
    s, h = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    mask = np.array([[True] * 5, [True, True, False, False, False]])
    ctx, w = ri.attention_context(ri.luong_scores(s, h), h, mask=mask)
    assert ctx.shape == (2, 3, 4) and w.shape == (2, 3, 5)
    assert np.all(w[1, :, 2:] == 0) and np.all(w[0] > 0)


def test_float32_stays_float32():
    s = np.ones((2, 3), np.float32)
    e = ri.luong_scores(s, s)
    c, w = ri.attention_context(e, s)
    assert e.dtype == c.dtype == w.dtype == np.float32


@pytest.mark.parametrize("call, words", [
    (lambda: ri.luong_scores(np.ones((2, 3)), np.ones((2, 4))), ["d_s == d_h", "(2, 3)", "(2, 4)"]),
    (lambda: ri.luong_scores(np.ones((2, 3)), np.ones((2, 3)), "bilinear"), ["kind", "'bilinear'"]),
    (lambda: ri.luong_scores(np.ones((2, 3)), np.ones((2, 3)), "general", w=np.ones((3, 2))),
     ["w", "(3, 3)", "(3, 2)"]),
    (lambda: ri.additive_scores(np.ones((2, 3)), np.ones((2, 3)), np.ones((3, 4)), np.ones((3, 5)), np.ones(4)),
     ["d_a"]),
    (lambda: ri.attention_context(np.ones((2, 3)), np.ones((4, 2))), ["encoder positions", "(2, 3)", "(4, 2)"]),
    (lambda: ri.attention_context(np.ones((2, 3)), np.ones((3, 2)), mask=np.ones(3)), ["mask", "bool", "float64"]),
    (lambda: ri.attention_context(np.ones((2, 3)), np.ones((3, 2)), mask=np.ones(4, bool)), ["mask", "(4,)"]),
    (lambda: ri.additive_scores(np.full((2, 3), np.nan), np.ones((2, 3)), np.ones((3, 4)), np.ones((3, 4)), np.ones(4)),
     ["s", "NaN"]),
])
def test_bad_arguments_get_clear_errors(call, words):
    with pytest.raises((ValueError, TypeError)) as e:
        call()
    assert all(w in str(e.value) for w in words), str(e.value)
