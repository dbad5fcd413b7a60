"""rrng against R's own set.seed/runif/sample.int: bit-identical draws."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from refimpl.r import rrng
from refimpl.testing import assert_exact

LENGTHS = [1, 2, 9, 623, 624, 625, 1248, 1249, 2000]
SEEDS = [0, 1, -1, 42, 123, 2 ** 31 - 1, -(2 ** 31 - 1), 2 ** 30, -(2 ** 30) + 7]


def grid():
    """1,008 (seed, length, range) triples: the edge seeds and lengths crossed, plus seeded random ones."""
    rng = np.random.default_rng(2024)
    triples = [(s, n, lo, hi) for s in SEEDS for n in LENGTHS for lo, hi in ((0, 1), (-3, 3))]
    while len(triples) < 1008:
        lo = float(rng.uniform(-1e6, 1e6))
        triples.append((int(rng.integers(-2 ** 31 + 1, 2 ** 31)), int(rng.integers(1, 40)),
                        lo, lo + float(rng.exponential(10.0))))
    return triples


@pytest.mark.r
def test_runif_grid_is_bit_identical_to_r(rb):
    g = grid()
    seeds, ns, los, his = zip(*g)
    r_draws = rb.runif_batch(seeds, ns, los, his)
    for (s, n, lo, hi), r in zip(g, r_draws):
        assert_exact(rrng.RRNG(s).runif(n, lo, hi), r, f"set.seed({s}); runif({n}, {lo!r}, {hi!r})")
    assert len(g) >= 1000


@pytest.mark.r
@given(seed=st.integers(-(2 ** 31) + 1, 2 ** 31 - 1), n=st.integers(1, 1300),
       lo=st.floats(-1e9, 1e9), width=st.floats(0, 1e9))
def test_runif_matches_r_for_any_seed_length_range(rb, seed, n, lo, width):
    r = rb.runif_batch([seed], [n], [lo], [lo + width])[0]
    assert_exact(rrng.RRNG(seed).runif(n, lo, lo + width), r, f"set.seed({seed}); runif({n}, {lo!r}, {lo + width!r})")


@pytest.mark.r
@given(seed=st.integers(-(2 ** 31) + 1, 2 ** 31 - 1), n=st.integers(1, 3000), data=st.data())
def test_sample_int_matches_r(rb, seed, n, data):
    replace = data.draw(st.booleans())
    size = data.draw(st.integers(0, n if not replace else 50))
    r = rb.sample_batch([seed], [n], [size], [replace])[0]
    assert_exact(rrng.RRNG(seed).sample_int(n, size, replace), r,
                 f"set.seed({seed}); sample.int({n}, {size}, replace={replace})")


@pytest.mark.r
def test_sample_large_n_uses_rs_rejection_bits(rb):
    for seed, n, size in [(1, 2 ** 30 + 3, 5), (7, 10 ** 7, 3), (3, 65537, 10)]:
        r = rb.sample_batch([seed], [n], [size], [True])[0]
        assert_exact(rrng.RRNG(seed).sample_int(n, size, True), r, f"set.seed({seed}); sample.int({n}, {size}, TRUE)")


def test_sample_of_a_vector_picks_elements():
    x = np.array([10.0, 20.0, 30.0])
    out = rrng.RRNG(5).sample(x)
    assert sorted(out.tolist()) == [10.0, 20.0, 30.0]


@pytest.mark.parametrize("seed", [2 ** 31, -(2 ** 31), float("nan"), float("inf"), "abc"])
def test_seeds_r_refuses_are_refused(seed):
    with pytest.raises(rrng.RSeedError, match="seed"):
        rrng.RRNG(seed)


@pytest.mark.r
@pytest.mark.parametrize("seed", ["2^31", "-2^31", "NA", "Inf"])
def test_r_really_refuses_those_seeds(rb, seed):
    from refimpl.r.bridge import RError
    with pytest.raises(RError, match="supplied seed is not a valid integer"):
        rb.apply(f"function() suppressWarnings(set.seed({seed}))")


def test_seed_coercion_truncates_like_as_integer():
    assert_exact(rrng.RRNG(1.9).runif(3), rrng.RRNG(1).runif(3), "set.seed(1.9) == set.seed(1)")
    assert_exact(rrng.RRNG(-1.9).runif(3), rrng.RRNG(-1).runif(3), "set.seed(-1.9) == set.seed(-1)")
    assert_exact(rrng.RRNG("12").runif(3), rrng.RRNG(12).runif(3), "set.seed('12') == set.seed(12)")


def test_runif_bad_ranges_are_refused_and_equal_bounds_draw_nothing():
    r = rrng.RRNG(0)
    with pytest.raises(ValueError, match="min <= max"):
        r.runif(2, 3, 1)
    s = rrng.RRNG(0)
    np.testing.assert_array_equal(s.runif(2, 5, 5), [5.0, 5.0])
    assert_exact(s.runif(3), rrng.RRNG(0).runif(3), "runif(n, a, a) consumes no draws")


def test_unseeded_stream_is_refused():
    with pytest.raises(ValueError, match="set_seed"):
        rrng.RRNG().runif(1)
