"""Kernel features (alignment, sliding window, softcap, GQA, ALiBi) against an independent formulation
written here: explicit loops over (batch, i, j) in float64 with math.fsum, GQA by repeat-interleave.
Then the online and row-blocked variants against the plain one, and argument validation."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import refimpl as ri
from refimpl import attention as att, strategies as rst, tolerance as tol
from refimpl.online import sdpa_online
from refimpl.testing import assert_conforms


# --- the independent formulation -------------------------------------------------------------------

def allowed(i, j, n_q, n_k, is_causal, window, alignment):
    """Query i may attend key j, written from the rules (no band arithmetic shared with refimpl)."""
    diag = i + (n_k - n_q if alignment == "bottom-right" else 0)
    if is_causal and j > diag:
        return False
    if window is not None:
        left, right = window
        if left != -1 and j < diag - left:
            return False
        if right != -1 and j > diag + right:
            return False
    return True


def naive_sdpa(q, k, v, *, mask=None, scale=None, is_causal=False, alignment="top-left", window=None,
               softcap=None, enable_gqa=False):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    if enable_gqa:
        g = q.shape[-3] // k.shape[-3]
        k, v = np.repeat(k, g, axis=-3), np.repeat(v, g, axis=-3)     # head h -> kv head h // g
    n_q, n_k, d = q.shape[-2], k.shape[-2], q.shape[-1]
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    q, k, v = (np.broadcast_to(a, batch + a.shape[-2:]) for a in (q, k, v))
    m = None if mask is None else np.broadcast_to(np.asarray(mask), batch + (n_q, n_k))
    s = 1.0 / math.sqrt(d) if scale is None else scale
    out, w = np.zeros(batch + (n_q, v.shape[-1])), np.zeros(batch + (n_q, n_k))
    for idx in np.ndindex(*batch):
        for i in range(n_q):
            scores = {}
            for j in range(n_k):
                if not allowed(i, j, n_q, n_k, is_causal, window, alignment):
                    continue
                if m is not None and m.dtype == bool and not m[idx][i, j]:
                    continue
                x = s * math.fsum(float(q[idx][i, t]) * float(k[idx][j, t]) for t in range(d))
                if softcap is not None:
                    x = softcap * math.tanh(x / softcap)
                if m is not None and m.dtype != bool:
                    x += float(m[idx][i, j])
                if x != -math.inf:
                    scores[j] = x
            if not scores:
                continue                                             # no key: zero weights, zero output
            top = max(scores.values())
            ex = {j: math.exp(x - top) for j, x in scores.items()}
            total = math.fsum(ex.values())
            for j, e in ex.items():
                w[idx][i, j] = e / total
            for c in range(v.shape[-1]):
                out[idx][i, c] = math.fsum(w[idx][i, j] * float(v[idx][j, c]) for j in ex)
    return out, w


def bound(c, dtype, weights=False):
    """The tolerance model's forward bound, with the additive mask's magnitude added to the score terms."""
    n, mag = tol.sdpa_terms(c["q"], c["k"], c["v"], weights=weights)
    m = c.get("mask")
    if m is not None and m.dtype != bool and np.isfinite(m).any():
        n += 2 * float(np.abs(m[np.isfinite(m)]).max())
    return tol.forward(dtype, n, mag)


# --- cases ---------------------------------------------------------------------------------------

WINDOWS = st.one_of(st.none(), st.tuples(st.integers(-1, 4), st.integers(-1, 4)))


@st.composite
def feature_cases(draw, dtypes=(np.float64, np.float32)):
    """q (B?, Hq, Sq, D), k/v (B?, Hkv, Sk, D*) with every feature drawn; returns (inputs, kwargs)."""
    gqa = draw(st.booleans())
    n_kv, g = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    n_hq = n_kv * g if gqa else n_kv
    outer = draw(st.sampled_from([(), (2,)]))
    n_q, n_k, d, d_v = (draw(st.integers(1, 7)) for _ in range(4))
    dt = draw(st.sampled_from(dtypes))
    arr = lambda shape: draw(rst.float_arrays(shape, dtype=dt, magnitude=3.0))  # noqa: E731
    q, k, v = arr(outer + (n_hq, n_q, d)), arr(outer + (n_kv, n_k, d)), arr(outer + (n_kv, n_k, d_v))
    alignment = draw(st.sampled_from(["top-left", "bottom-right"]))
    kind = draw(st.sampled_from(["none", "bool", "additive", "alibi"]))
    mask = None
    if kind == "bool":
        mask = draw(hnp.arrays(np.bool_, draw(st.sampled_from([(n_q, n_k), (n_hq, n_q, n_k), (1, n_q, n_k)]))))
    elif kind == "additive":
        mask = draw(hnp.arrays(dt, draw(st.sampled_from([(n_q, n_k), (n_hq, n_q, n_k)])),
                               elements=st.sampled_from([0.0, -1.0, -np.inf, 2.0])))
    elif kind == "alibi":
        slopes = np.asarray(draw(st.lists(st.floats(0, 1, width=32), min_size=n_hq, max_size=n_hq)), dt)
        mask = ri.alibi_bias(slopes, n_q, n_k, alignment=alignment)
    kw = dict(mask=mask, is_causal=draw(st.booleans()), alignment=alignment, window=draw(WINDOWS),
              softcap=draw(st.sampled_from([None, 0.7, 5.0])), enable_gqa=gqa)
    return dict(q=q, k=k, v=v, mask=mask), kw


@given(feature_cases())
def test_sdpa_features_match_the_explicit_loops(case):
    c, kw = case
    out, w = ri.scaled_dot_product_attention(c["q"], c["k"], c["v"], **kw)
    ref_out, ref_w = naive_sdpa(c["q"], c["k"], c["v"], **kw)
    dtype = c["q"].dtype
    assert out.dtype == dtype and w.dtype == dtype, "float32 in, float32 out (and float64 likewise)"
    assert out.shape == ref_out.shape and w.shape == ref_w.shape
    assert_conforms(w, ref_w, bound(c, dtype, weights=True), f"weights {kw}")
    assert_conforms(out, ref_out, bound(c, dtype), f"output {kw}")
    if kw["mask"] is None or kw["mask"].dtype == bool:
        np.testing.assert_array_equal(w == 0, ref_w == 0)         # masked-out keys: exactly 0, others not


@given(feature_cases(), st.integers(1, 5), st.integers(1, 5))
def test_online_equals_plain_for_every_feature(case, bq, bk):
    c, kw = case
    ref, _ = ri.scaled_dot_product_attention(c["q"], c["k"], c["v"], **kw)
    out = sdpa_online(c["q"], c["k"], c["v"], block_q=bq, block_k=bk, **kw)
    assert out.dtype == ref.dtype and out.shape == ref.shape
    assert_conforms(out, ref, bound(c, ref.dtype), f"online (bq={bq}, bk={bk}) {kw}")


def _large_case(dtype=np.float64):
    rng = np.random.default_rng(14)
    q = rng.standard_normal((4, 130, 8)).astype(dtype)            # Hq = 4
    k, v = rng.standard_normal((2, 140, 8)).astype(dtype), rng.standard_normal((2, 140, 3)).astype(dtype)
    kw = dict(mask=ri.alibi_bias(np.array([0.5, 0.25, 0.125, 0.0625], dtype), 130, 140), window=(20, 3),
              is_causal=True, alignment="bottom-right", softcap=4.0, enable_gqa=True)
    return q, k, v, kw


def test_blocked_path_with_every_feature_matches_the_loops_and_online():
    q, k, v, kw = _large_case()
    assert 130 * 140 >= att.BLOCKED_MIN_SCORES
    out, w = ri.scaled_dot_product_attention(q, k, v, **kw)
    ref_out, ref_w = naive_sdpa(q, k, v, **kw)
    c = dict(q=q, k=k, v=v, mask=kw["mask"])
    assert_conforms(w, ref_w, bound(c, np.float64, weights=True), "blocked weights vs loops")
    assert_conforms(out, ref_out, bound(c, np.float64), "blocked output vs loops")
    assert_conforms(sdpa_online(q, k, v, block_q=32, block_k=16, **kw), out, bound(c, np.float64), "online")


def test_float32_stays_float32_with_every_feature_on_every_path():
    q, k, v, kw = _large_case(np.float32)
    assert kw["mask"].dtype == np.float32
    out, w = ri.scaled_dot_product_attention(q, k, v, **kw)                         # row-blocked path
    small = ri.scaled_dot_product_attention(q[:, :5], k[:, :6], v[:, :6], **{**kw, "mask": None})[0]
    online = sdpa_online(q, k, v, block_q=64, block_k=64, **kw)
    assert {out.dtype, w.dtype, small.dtype, online.dtype} == {np.dtype(np.float32)}


# --- edge cases decided in the docstrings ------------------------------------------------------------

@pytest.mark.parametrize("fn", ["plain", "online"])
def test_bottom_right_causal_with_more_queries_than_keys_gives_zero_rows(fn):
    q, k, v = np.ones((5, 2)), np.ones((3, 2)), np.arange(6.0).reshape(3, 2)
    if fn == "plain":
        out, w = ri.scaled_dot_product_attention(q, k, v, is_causal=True, alignment="bottom-right")
        np.testing.assert_array_equal(w[:3], [[0, 0, 0], [0, 0, 0], [1, 0, 0]])
    else:
        out = sdpa_online(q, k, v, is_causal=True, alignment="bottom-right", block_q=2, block_k=1)
    np.testing.assert_array_equal(out[:2], 0.0)                  # queries 0, 1 see no key
    np.testing.assert_array_equal(out[2], v[0])                  # query 2 sees key 0 only
    np.testing.assert_allclose(out[4], v.mean(axis=0), rtol=1e-15)


def test_gqa_uses_kv_head_h_floordiv_group():
    # 4 query heads, 2 kv heads: heads 0, 1 read kv head 0 (values 10), heads 2, 3 kv head 1 (values 20)
    q, k = np.zeros((4, 1, 2)), np.zeros((2, 3, 2))
    v = np.stack([np.full((3, 1), 10.0), np.full((3, 1), 20.0)])
    out, w = ri.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    np.testing.assert_array_equal(out[:, 0, 0], [10, 10, 20, 20])
    assert w.shape == (4, 1, 3)


def test_softcap_bounds_the_scores_before_the_additive_mask():
    # scores 100 and 0, cap 1: capped to tanh(100) ~ 1 and 0; the mask +1 on key 1 then ties them
    q, k = np.array([[100.0]]), np.array([[1.0], [0.0]])
    _, w = ri.scaled_dot_product_attention(q, k, np.eye(2), scale=1.0, softcap=1.0, mask=np.array([0.0, 1.0]))
    np.testing.assert_allclose(w, [[0.5, 0.5]], rtol=0, atol=1e-15)


# --- the mask helpers against explicit loops --------------------------------------------------------

SIZES = st.integers(1, 9)


@given(SIZES, SIZES, WINDOWS.filter(lambda w: w is not None), st.sampled_from(["top-left", "bottom-right"]))
def test_window_and_causal_masks_match_the_loops(n_q, n_k, window, alignment):
    got = ri.window_mask(n_q, n_k, window, alignment=alignment)
    exp = [[allowed(i, j, n_q, n_k, False, window, alignment) for j in range(n_k)] for i in range(n_q)]
    np.testing.assert_array_equal(got, exp)
    causal = ri.causal_mask(n_q, n_k, alignment=alignment)
    np.testing.assert_array_equal(causal, [[allowed(i, j, n_q, n_k, True, None, alignment) for j in range(n_k)]
                                           for i in range(n_q)])


@given(SIZES, SIZES, st.sampled_from(["top-left", "bottom-right"]), st.sampled_from([(3,), (2, 3)]))
def test_alibi_bias_matches_the_loops(n_q, n_k, alignment, slopes_shape):
    slopes = np.arange(1.0, 1.0 + np.prod(slopes_shape)).reshape(slopes_shape) / 8
    got = ri.alibi_bias(slopes, n_q, n_k, alignment=alignment)
    assert got.shape == slopes_shape + (n_q, n_k)
    off = n_k - n_q if alignment == "bottom-right" else 0
    for h in np.ndindex(*slopes_shape):
        for i in range(n_q):
            for j in range(n_k):
                assert got[h + (i, j)] == -slopes[h] * abs(i + off - j)


def test_alibi_default_alignment_is_bottom_right_and_float32_stays():
    b = ri.alibi_bias(np.array([1.0], np.float32), 1, 3)
    np.testing.assert_array_equal(b, [[[-2.0, -1.0, 0.0]]])
    assert b.dtype == np.float32


# --- validation of the new arguments ---------------------------------------------------------------

OK = np.ones((2, 2, 3))
BAD = [
    (dict(alignment="center"), ri.InputValueError, ["alignment", "top-left", "'center'"]),
    (dict(alignment=None), ri.InputValueError, ["alignment", "bottom-right", "None"]),
    (dict(window=3), ri.InputTypeError, ["window", "(left, right)", "3"]),
    (dict(window=(1, 2, 3)), ri.InputTypeError, ["window", "(left, right)"]),
    (dict(window=(-2, 0)), ri.InputValueError, ["window left", ">= -1", "-2"]),
    (dict(window=(0, 1.5)), ri.InputTypeError, ["window right", "int", "1.5"]),
    (dict(window=(True, 0)), ri.InputTypeError, ["window left", "int", "bool"]),
    (dict(softcap=0.0), ri.InputValueError, ["softcap", "positive", "0.0"]),
    (dict(softcap=-1), ri.InputValueError, ["softcap", "positive", "-1"]),
    (dict(softcap=float("inf")), ri.InputValueError, ["softcap", "finite", "inf"]),
    (dict(softcap="1"), ri.InputTypeError, ["softcap", "real number", "str"]),
    (dict(enable_gqa=1), ri.InputTypeError, ["enable_gqa", "bool", "int"]),
    (dict(enable_gqa=True, q=np.ones((3, 2, 3))), ri.ShapeError, ["Hq=3", "multiple", "Hkv=2"]),
    (dict(enable_gqa=True, v=np.ones((1, 2, 3))), ri.ShapeError, ["k and v", "heads", "(1, 2, 3)"]),
    (dict(enable_gqa=True, q=np.ones((2, 3))), ri.ShapeError, ["q", "at least 3", "heads"]),
    (dict(q=np.ones((4, 2, 3))), ri.ShapeError, ["broadcastable", "q: (4,)", "k: (2,)"]),
]


@pytest.mark.parametrize("fn", [ri.scaled_dot_product_attention, sdpa_online], ids=["plain", "online"])
@pytest.mark.parametrize("kw, exc, words", BAD, ids=[str(b[0])[:40] for b in BAD])
def test_new_arguments_are_validated(fn, kw, exc, words):
    args = {"q": OK, "k": OK, "v": OK, **kw}
    with pytest.raises(exc) as e:
        fn(args.pop("q"), args.pop("k"), args.pop("v"), **args)
    missing = [w for w in words if w not in str(e.value)]
    assert not missing, f"message {str(e.value)!r} lacks {missing}"


@pytest.mark.parametrize("call, words", [
    (lambda: ri.window_mask(2, 2, None), ["window", "(left, right)", "None"]),
    (lambda: ri.window_mask(0, 2, (1, 1)), ["n_queries", ">= 1", "0"]),
    (lambda: ri.causal_mask(2, 2, alignment="top"), ["alignment", "'top'"]),
    (lambda: ri.alibi_bias(np.ones((1, 2, 3)), 2, 2), ["slopes", "(H,) or (B, H)", "(1, 2, 3)"]),
    (lambda: ri.alibi_bias(np.array([-0.5]), 2, 2), ["slopes", ">= 0", "-0.5"]),
    (lambda: ri.alibi_bias(np.array([np.nan]), 2, 2), ["slopes", "NaN"]),
    (lambda: ri.alibi_bias([1.0], 2, 2.0), ["n_keys", "int", "2.0"]),
])
def test_mask_helpers_validate_their_arguments(call, words):
    with pytest.raises(ri.RefimplError) as e:
        call()
    missing = [w for w in words if w not in str(e.value)]
    assert not missing, f"message {str(e.value)!r} lacks {missing}"


ODD = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(), st.text(max_size=3),
                st.tuples(st.integers(-3, 3), st.integers(-3, 3)), st.sampled_from(["top-left", "bottom-right"]))


@given(ODD, ODD, ODD, ODD, st.sampled_from(["plain", "online"]))
def test_fuzz_new_arguments_give_a_result_or_a_refimpl_error(alignment, window, softcap, enable_gqa, fn):
    q, k, v = np.ones((2, 3, 2)), np.ones((1, 4, 2)), np.arange(8.0).reshape(1, 4, 2)
    kw = dict(alignment=alignment, window=window, softcap=softcap, enable_gqa=enable_gqa)
    try:
        out = ri.scaled_dot_product_attention(q, k, v, **kw)[0] if fn == "plain" else sdpa_online(q, k, v, **kw)
    except ri.RefimplError as e:
        assert isinstance(e, (TypeError, ValueError)) and str(e)
    else:
        assert out.shape == (2, 3, 2) and np.isfinite(out).all()


def test_a_case_id_gives_back_its_dtype():
    from refimpl.harness.cases.families import select
    from refimpl.harness.cases.features import CaseSpec as Spec
    specs = select(["sizes", "kvcache"], "quick", ("float64", "float32", "float16", "bfloat16"))
    assert {s.dtype for s in specs} == {"float64", "float32", "float16", "bfloat16"}
    assert all(Spec.dtype_of(s.id) == s.dtype for s in specs)
