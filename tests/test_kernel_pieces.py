"""refimpl._kernel and refimpl._checks pinned where the rest of the suite is loose (issue #18: mutants of the
memory estimate, the exponent split, the band and the argument checks)."""
import math

import numpy as np
import pytest

import refimpl as ri
from refimpl import _checks, _kernel
from refimpl.online import sdpa_online


def _at_the_edge(monkeypatch, need, call):
    """call() passes with exactly `need` bytes of RAM and is refused with one byte less."""
    monkeypatch.setattr(_checks, "machine_memory", lambda: need)
    call()
    monkeypatch.setattr(_checks, "machine_memory", lambda: need - 1)
    with pytest.raises(ri.ResourceError, match="GiB"):
        call()


def test_the_plain_memory_estimate_is_the_documented_sum(monkeypatch):
    # q*scale, k, output, plus every score (8 bytes) and its bool mask byte: float64, batch 2
    q, k, v = np.ones((2, 3, 4)), np.ones((2, 5, 4)), np.ones((2, 5, 6))
    need = 8 * (2 * 3 * 4 + 2 * 5 * 4 + 2 * 3 * 6) + 2 * 3 * 5 * (8 + 1)
    _at_the_edge(monkeypatch, need, lambda: ri.scaled_dot_product_attention(q, k, v))


def test_the_online_memory_estimate_is_one_block(monkeypatch):
    q, k, v = np.ones((3, 4), np.float32), np.ones((7, 4), np.float32), np.ones((7, 2), np.float32)
    need = 4 * (3 * 4 + 7 * 4 + 3 * 2) + 2 * 5 * (3 * 4 + 2)          # blocks (2, 5): 2 x 5 scores
    _at_the_edge(monkeypatch, need, lambda: sdpa_online(q, k, v, block_q=2, block_k=5))
    need = 4 * (3 * 4 + 7 * 4 + 3 * 2) + 3 * 7 * (3 * 4 + 2)          # blocks larger than the inputs
    _at_the_edge(monkeypatch, need, lambda: sdpa_online(q, k, v, block_q=9, block_k=9))


def test_mask_helpers_estimate_exactly(monkeypatch):
    _at_the_edge(monkeypatch, 3 * 4, lambda: ri.causal_mask(3, 4))
    _at_the_edge(monkeypatch, 2 * 3 * 4 * 8, lambda: ri.alibi_bias(np.ones(2), 3, 4))


def test_unknown_ram_means_no_check(monkeypatch):
    monkeypatch.setattr(_checks, "machine_memory", lambda: None)
    _checks.check_memory(10 ** 30, "anything")


# --- the exponent split -----------------------------------------------------------------------------------

def _bound_log2(q, k, s, e_q, e_k):
    a = math.log2(float(np.abs(q).max())) + math.log2(s) - e_q
    b = math.log2(float(np.abs(k).max())) - e_k
    return a, b, a + b + math.log2(q.shape[-1])


@pytest.mark.parametrize("lq, lk, d, s", [(1000, 1000, 1, 1.0), (600, 500, 8, 0.5), (1023, 0, 4, 1.0),
                                          (0, 1023, 4, 1.0), (1023, 1023, 2, 1.0), (300, -200, 1, 2.0 ** 800),
                                          (1000, 20.5, 1, 1.0), (1010, 15, 4, 1.0), (20, 1010, 4, 1.0),
                                          (1023, -100, 1, 1.0), (-100, 1023, 1, 1.0)])
def test_split_exponents_is_the_least_balanced_split_that_fits(lq, lk, d, s):
    q, k = np.zeros((2, d)), np.zeros((3, d))
    q[0, 0], k[1, 0] = 2.0 ** lq, 2.0 ** lk
    lim = math.log2(np.finfo(np.float64).max)
    e_q, e_k = _kernel.split_exponents(q, k, s)
    a, b, bound = _bound_log2(q, k, s, e_q, e_k)
    assert bound <= lim - 4 and a <= lim - 2 and b <= lim - 2                 # it fits
    a0, b0, bound0 = _bound_log2(q, k, s, 0, 0)
    least = max(math.ceil(bound0 - (lim - 4)), 0)
    assert e_q + e_k == max(least, (a0 > lim - 2) * math.ceil(a0 - (lim - 2))
                            + (b0 > lim - 2) * math.ceil(b0 - (lim - 2)))
    ideal = (e_q + e_k + a0 - b0) / 2                       # the e_q that makes both factors equal
    if a0 <= lim - 2 and b0 <= lim - 2:                     # no factor forced on its own: balanced
        if ideal < 0:
            assert e_q == 0
        elif ideal > e_q + e_k:
            assert e_k == 0
        else:
            assert abs(a - b) <= 1


def test_split_exponents_is_zero_in_ordinary_cases_and_counts_the_extra_term():
    q = np.ones((2, 3))
    assert _kernel.split_exponents(q, q, 1.0) == (0, 0)
    big = np.full((1, 1), 2.0 ** 1000)
    assert sum(_kernel.split_exponents(big, np.full((1, 1), 2.0 ** 20.5), 1.0)) == 1   # 2**1020.5: past 2**(L-4) by < 1
    assert _kernel.split_exponents(q, q, 1.0, math.log2(1e308)) == (2, 2)           # 2**1023.1 -> 4 below
    assert _kernel.split_exponents(np.zeros((1, 3)), q, 1.0) == (0, 0)


# --- the band ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("offset, left, right", [(0, None, 0), (2, 1, 0), (-1, 2, 3), (0, 0, None), (3, None, None),
                                                 (1, 0, 0)])
def test_band_keep_key_range_and_covers_agree_with_the_rule(offset, left, right):
    b = _kernel.Band(offset, left, right)
    n_q, n_k = 5, 7
    rule = np.array([[(left is None or j >= i + offset - left) and (right is None or j <= i + offset + right)
                      for j in range(n_k)] for i in range(n_q)])
    np.testing.assert_array_equal(b.keep(0, n_q, 0, n_k), rule)
    for i0 in range(n_q):
        for i1 in range(i0 + 1, n_q + 1):
            cols = np.flatnonzero(rule[i0:i1].any(axis=0))
            lo, hi = b.key_range(i0, i1, n_k)
            if cols.size:
                assert lo <= cols[0] and hi >= cols[-1] + 1 and rule[i0:i1, lo:hi].any(axis=0).all()
            else:
                assert lo >= hi
            for j0 in range(n_k):
                for j1 in range(j0 + 1, n_k + 1):
                    assert b.covers(i0, i1, j0, j1) == bool(rule[i0:i1, j0:j1].all())
                    np.testing.assert_array_equal(b.keep(i0, i1, j0, j1), rule[i0:i1, j0:j1])


@pytest.mark.parametrize("window, err", [((1,), ri.InputTypeError), ((1, 2, 3), ri.InputTypeError),
                                         ("ab", ri.InputTypeError), ((1.0, 2), ri.InputTypeError),
                                         ((True, 2), ri.InputTypeError), ((-2, 0), ri.InputValueError),
                                         ((0, -2), ri.InputValueError)])
def test_bad_windows_are_refused(window, err):
    with pytest.raises(err, match="window"):
        _kernel.check_window(window)


def test_windows_and_causal_make_the_documented_band():
    assert _kernel.check_window([-1, 0]) == (None, 0) and _kernel.check_window((0, -1)) == (0, None)
    assert _kernel.make_band(3, 5) is None
    assert _kernel.make_band(3, 5, is_causal=True) == (0, None, 0)
    assert _kernel.make_band(3, 5, is_causal=True, alignment="bottom-right") == (2, None, 0)
    assert _kernel.make_band(3, 5, window=(1, 4), is_causal=True) == (0, 1, 0)
    assert _kernel.make_band(3, 5, window=(1, -1), is_causal=True) == (0, 1, 0)
    assert _kernel.make_band(5, 3, window=(2, 1), alignment="bottom-right") == (-2, 2, 1)


# --- _checks: messages that say what arrived, the underflow guard, the RAM fallback, broadcast views --------

def test_bool_and_complex_arrays_get_their_own_message():
    with pytest.raises(ri.InputTypeError, match=r"q must hold real numbers, got a bool array \(is this a mask"):
        ri.scaled_dot_product_attention(np.ones((2, 2), bool), np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ri.InputTypeError, match="k must hold real numbers, got complex dtype complex128"):
        ri.scaled_dot_product_attention(np.ones((2, 2)), np.ones((2, 2), complex), np.ones((2, 2)))


def test_a_long_argument_is_described_in_at_most_120_characters():
    with pytest.raises(ri.InputValueError) as e:
        _checks.check_choice("x" * 500, "kind", ("a", "b"))
    assert str(e.value).endswith("got " + ("str '" + "x" * 500)[:120])
    assert _checks.check_choice("b", "kind", ("a", "b")) == "b"


@pytest.mark.parametrize("scale, dtype", [(1e-50, np.float32), (1e-46, np.float32)])
def test_a_scale_that_underflows_to_zero_is_refused(scale, dtype):
    q = np.ones((2, 2), dtype)
    with pytest.raises(ri.InputValueError, match=r"scale=.* underflows to 0 in " + np.dtype(dtype).name):
        ri.scaled_dot_product_attention(q, q, q, scale=scale)


def test_machine_memory_falls_back_to_sysconf_without_proc_meminfo(monkeypatch):
    import os

    def no_file(*a, **kw):
        raise OSError("no /proc here")
    monkeypatch.setattr(_checks, "open", no_file, raising=False)
    want = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert _checks.machine_memory.__wrapped__() == want > 0


def test_machine_memory_reads_the_memtotal_line(monkeypatch, tmp_path):
    f = tmp_path / "meminfo"
    f.write_text("MemFree:  7 kB\nMemTotal:  1000 kB\nMemAvailable: 9 kB\n")
    real_open = open
    monkeypatch.setattr(_checks, "open", lambda path, *a, **kw: real_open(f, *a, **kw), raising=False)
    assert _checks.machine_memory.__wrapped__() == 1000 * 1024


def test_a_broadcast_float_mask_is_used_as_its_full_shape():
    rng = np.random.default_rng(9)
    q, k, v = rng.standard_normal((3, 2)), rng.standard_normal((5, 2)), rng.standard_normal((5, 2))
    row = np.array([0.0, -1.0, 2.0, -np.inf, 0.5])
    view = np.broadcast_to(row, (3, 5))                         # strides (0, 8)
    for fn in (lambda m: ri.scaled_dot_product_attention(q, k, v, mask=m)[0],
               lambda m: sdpa_online(q, k, v, mask=m, block_q=2, block_k=2)):
        np.testing.assert_allclose(fn(view), fn(np.array(view)), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("shape", [(2,), (4, 5), (2, 1, 1, 5)])
def test_a_mask_that_does_not_broadcast_to_the_scores_is_refused(shape):
    q, k = np.ones((3, 2)), np.ones((5, 2))
    for m in (np.ones(shape, bool), np.zeros(shape)):
        with pytest.raises(ri.ShapeError, match=r"mask must broadcast to the scores' shape \(3, 5\)"):
            ri.scaled_dot_product_attention(q, k, k, mask=m)


@pytest.mark.parametrize("bad, err, words", [(np.nan, ri.NonFiniteInputError, "must be finite"),
                                             (np.inf, ri.NonFiniteInputError, "must be finite"),
                                             (-np.inf, ri.NonFiniteInputError, "must be finite")])
def test_q_k_v_refuse_nan_and_both_infinities(bad, err, words):
    q = np.ones((2, 3))
    q[1, 2] = bad
    for args in ((q, np.ones((2, 3)), np.ones((2, 3))), (np.ones((2, 3)), q, np.ones((2, 3)))):
        with pytest.raises(err, match=words + r", got 1 NaN/inf value\(s\), first at index \(1, 2\)"):
            ri.scaled_dot_product_attention(*args)
    with pytest.raises(err):
        ri.softmax(np.array([1.0, bad]) if bad != -np.inf else np.array([np.nan, 1.0]))


def test_float16_is_refused_and_the_largest_float_scale_is_accepted():
    with pytest.raises(ri.InputTypeError, match="q must have dtype float32 or float64, got float16"):
        ri.scaled_dot_product_attention(np.ones((2, 2), np.float16), np.ones((2, 2)), np.ones((2, 2)))
    f = np.float32
    q = np.array([[1e-30, 0.0], [0.0, 1e-30]], f)
    out, w = ri.scaled_dot_product_attention(q, np.eye(2, dtype=f), np.eye(2, dtype=f), scale=float(np.finfo(f).max))
    assert np.isfinite(out).all() and out.dtype == f
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-6)


# --- GQA: per-head masks with a batch, and k/v broadcast over q's batch ------------------------------------

def test_gqa_with_a_batched_per_head_mask_and_broadcast_kv_equals_repeated_heads():
    rng = np.random.default_rng(13)
    q = rng.standard_normal((2, 4, 3, 5))                       # (B=2, Hq=4, Sq, D)
    k, v = rng.standard_normal((1, 2, 6, 5)), rng.standard_normal((1, 2, 6, 3))   # (1, Hkv=2, Sk, D*)
    keep = rng.random((2, 4, 3, 6)) < 0.7                      # per batch and query head
    keep[..., 0] = True
    out, w = ri.scaled_dot_product_attention(q, k, v, mask=keep, enable_gqa=True)
    kr, vr = np.repeat(k, 2, axis=1), np.repeat(v, 2, axis=1)   # query head h uses kv head h // 2
    o_ref, w_ref = ri.scaled_dot_product_attention(q, kr, vr, mask=keep)
    assert out.shape == (2, 4, 3, 3) and w.shape == (2, 4, 3, 6)
    np.testing.assert_allclose(out, o_ref, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(w, w_ref, rtol=1e-13, atol=1e-14)
    add = np.where(keep, rng.standard_normal(keep.shape), -np.inf)
    np.testing.assert_allclose(sdpa_online(q, k, v, mask=add, enable_gqa=True, block_q=2, block_k=4),
                               ri.scaled_dot_product_attention(q, kr, vr, mask=add)[0], rtol=1e-12, atol=1e-13)
