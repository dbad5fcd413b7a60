"""Fuzzing the public functions: arbitrary arrays, dtypes, shapes and values. Every call returns a valid
result or raises a documented refimpl error -- never IndexError, ZeroDivisionError, a RuntimeWarning
(pytest turns those into errors here) or a crash. The number of calls is printed at the end of the run."""
import numpy as np
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import refimpl as ri
from refimpl.r import rrng
from refimpl.online import sdpa_online

CALLS = {"n": 0}
DTYPES = st.sampled_from([np.float64, np.float32, np.float16, np.int64, np.int8, np.uint8, np.bool_,
                          np.complex128, np.dtype("U2"), np.dtype("O")])
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)


@st.composite
def anything(draw):
    kind = draw(st.sampled_from(["array", "array", "array", "scalar", "none", "text", "list"]))
    if kind == "array":
        dt = np.dtype(draw(DTYPES))
        shape = draw(SHAPES)
        if dt.kind == "f":
            el = st.floats(width=8 * dt.itemsize if dt.itemsize in (2, 4, 8) else 64)
        elif dt.kind == "O":
            el = st.sampled_from([1.0, None, "a"])
        else:
            el = None
        return draw(hnp.arrays(dt, shape, elements=el))
    if kind == "scalar":
        return draw(st.one_of(st.floats(), st.integers(-10, 10), st.booleans()))
    if kind == "none":
        return None
    if kind == "text":
        return draw(st.text(max_size=3))
    return draw(st.lists(st.lists(st.floats(allow_nan=False), max_size=3), max_size=3))


def call(fn, *args, **kw):
    CALLS["n"] += 1
    try:
        return fn(*args, **kw)
    except ri.RefimplError as e:
        assert isinstance(e, (ValueError, TypeError)) and str(e), repr(e)
        return None


def check_valid(result):
    if result is None:
        return
    for a in (result if isinstance(result, tuple) else (result,)):
        a = np.asarray(a)
        assert a.dtype.kind == "f" and np.isfinite(a).all(), f"invalid result {a!r}"


@given(anything(), anything(), anything(), st.one_of(st.none(), anything()), st.one_of(st.none(), anything()),
       st.booleans())
def test_fuzz_sdpa(q, k, v, mask, scale, causal):
    check_valid(call(ri.scaled_dot_product_attention, q, k, v, mask=mask, scale=scale, is_causal=causal))


@given(anything(), anything(), anything(), st.one_of(st.none(), anything()))
def test_fuzz_sdpa_online(q, k, v, mask):
    check_valid(call(sdpa_online, q, k, v, mask=mask, block_q=2, block_k=3))


@given(anything(), st.integers(-3, 3))
def test_fuzz_softmax(x, axis):
    check_valid(call(ri.softmax, x, axis=axis))


@given(anything(), anything(), anything())
def test_fuzz_general_attention(query, keys, values):
    check_valid(call(ri.general_attention, query, keys, values))


@given(anything(), anything(), anything(), anything(), st.sampled_from(["in_out", "out_in", "bad"]))
def test_fuzz_self_attention(x, wq, wk, wv, layout):
    check_valid(call(ri.self_attention, x, wq, wk, wv, weights_layout=layout))


@given(anything(), anything(), anything(), anything(), st.one_of(st.none(), anything()))
def test_fuzz_multi_head_attention(x, wq, wk, wv, wo):
    check_valid(call(ri.multi_head_attention, x, wq, wk, wv, wo))


@given(anything(), st.one_of(st.integers(-2, 5), anything()))
def test_fuzz_split_heads(w, n):
    check_valid(call(ri.split_heads, w, n))


@given(st.one_of(st.integers(-3, 5), anything()), st.one_of(st.none(), st.integers(-3, 5), anything()))
def test_fuzz_causal_mask(n, m):
    r = call(ri.causal_mask, n, m)
    assert r is None or r.dtype == bool


@given(st.one_of(st.integers(), st.floats(), st.text(max_size=4), st.booleans(), st.none()),
       st.one_of(st.integers(-5, 700), st.integers(2 ** 31, 2 ** 70), st.floats(max_value=1e4),
                 st.sampled_from([float("nan"), float("inf"), 2.0 ** 31])), st.floats(), st.floats())
def test_fuzz_r_rng(seed, n, lo, hi):
    def run():
        return rrng.RRNG(seed).runif(n, lo, hi)
    r = call(run)
    assert r is None or (r.dtype == np.float64 and np.isfinite(r).all())


@given(st.integers(-3, 50), st.one_of(st.none(), st.integers(-3, 60)), st.booleans())
def test_fuzz_r_sample(n, size, replace):
    r = call(lambda: rrng.RRNG(7).sample_int(n, size, replace))
    assert r is None or (r.min(initial=1) >= 1 and r.max(initial=1) <= max(n, 1))
