"""The fitted split-KV merge (refimpl/harness/analysis/fitting_splits.py, docs/diagnosis.md's ``split-merge`` fitted
weights) on outputs built here from quick-suite cases: each row a mix sum_i w_i O_i of its own key splits' partial
outputs (each normalised by its split's own sum), with weights the test chooses, and what the fit names or refuses.
The split counts (2, 3, 4, 8 of ceil(Sk / n) keys) and sizes (16, 32, 64, 128 keys) are the documented layouts; a row
counts when Dv >= splits + 2; at least two failing cases must hold such rows, every one reproduced."""
import math
from dataclasses import replace

import numpy as np

import pytest

from refimpl.harness.analysis.fitting_splits import splits_line
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore

STORE = CaseStore()
USED = ("batched-heads/0006", "decode/0003", "decode/0000", "sizes/0001", "batched-heads/0000", "scale/0001",
        "causal/0010", "causal/0002")
CASES = {s.id.rsplit("-", 1)[0]: STORE.get(s) for s in select(None, "quick", ("float64",))
         if s.id.rsplit("-", 1)[0] in USED}
HEADS, DECODE = CASES["batched-heads/0006"], CASES["decode/0003"]      # Sk 100, Dv 12; Sk 64, Dv 64
LONG, SIZES = CASES["decode/0000"], CASES["sizes/0001"]                # Sk 1000, Dv 64; Sk 200, Dv 64
SK33 = (CASES["batched-heads/0000"], CASES["scale/0001"])              # Sk 33: splits of 16 keys end in one key
CAUSAL = (CASES["causal/0010"], CASES["causal/0002"])                  # top-left causal, Sq = Sk = 100, Dv 12 and 8
START = "diagnosis k: split-merge — each row is a mix of its own key splits' partial outputs ("


def _by_count(Sk, n):
    size = -(-Sk // n)
    return [(a, min(a + size, Sk)) for a in range(0, Sk, size)]


def _by_size(Sk, size):
    return [(a, min(a + size, Sk)) for a in range(0, Sk, size)]


def _narrow(data, dv):
    """The case with its first ``dv`` value channels only (each channel's output is its own)."""
    return replace(data, v=data.v[..., :dv], expected=data.expected[..., :dv])


def _split_parts(data, bounds):
    """Each split's own output (B, Hq, Sq, Dv, n), normalised by its own sum (0 where the row keeps none of its keys),
    and each split's share of the row's weight (B, Hq, Sq, n): exp(lse_i - lse)."""
    q, k, v = (np.asarray(a, np.float64) for a in (data.q, data.k, data.v))
    k, v = (np.repeat(a, q.shape[1] // a.shape[1], axis=1) for a in (k, v))                 # GQA: head h // G
    sc = 1.0 / math.sqrt(q.shape[-1]) if data.spec.scale is None else data.spec.scale
    s = q @ np.swapaxes(k, -1, -2) * sc
    if data.mask is not None:
        s = s + data.mask                                     # the additive masks built here
    if data.spec.is_causal:                                   # top-left: query i keeps keys 0..i
        i, j = np.indices(s.shape[-2:])
        s = np.where(j <= i, s, -np.inf)
    outs, lses = [], []
    with np.errstate(all="ignore"):
        for a, b in bounds:
            top = s[..., a:b].max(axis=-1, keepdims=True)
            top = np.where(np.isfinite(top), top, 0.0)
            e = np.exp(s[..., a:b] - top)
            z = e.sum(axis=-1, keepdims=True)
            outs.append(np.where(z > 0, (e @ v[..., a:b, :]) / np.where(z > 0, z, 1.0), 0.0))
            lses.append(np.where(z[..., 0] > 0, np.log(np.where(z[..., 0] > 0, z[..., 0], 1.0)) + top[..., 0],
                                 -np.inf))
        lse = np.stack(lses, axis=-1)
        share = np.exp(lse - lse.max(axis=-1, keepdims=True))
    return np.stack(outs, axis=-1), share / share.sum(axis=-1, keepdims=True)


def _merged(data, bounds, weigh):
    """The output with each row's partials merged with ``weigh(share)`` (B, Hq, Sq, n) instead of the shares."""
    outs, share = _split_parts(data, bounds)
    assert np.allclose(np.einsum("...dn,...n->...d", outs, share), data.expected, rtol=1e-9, atol=1e-9)
    return np.einsum("...dn,...n->...d", outs, weigh(share))


def _reversed(share):                                         # split i weighed with split n - 1 - i's share
    return share[..., ::-1]


def _line(fail):
    return splits_line("k", list(fail))


@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_each_documented_split_count_is_fitted_and_named(n):
    fail = [(d, _merged(d, _by_count(d.k.shape[-2], n), _reversed)) for d in (HEADS, DECODE)]
    line = _one(_line(fail))
    assert f"({n} splits of ceil(Sk / {n}) keys, each normalised" in line and "fitted on 2 failing cases" in line


def _one(lines):
    assert len(lines) == 1 and lines[0].startswith(START), lines
    return lines[0]


# per size, two (case, Dv) whose rows say something for that size and nothing for any finer one (a mix of coarse
# splits is a mix of finer ones too: the first layout that holds is named, the finest informative one)
BY_SIZE = {16: ((HEADS, 12), (SIZES, 64)), 32: ((HEADS, 8), (SIZES, 12)), 64: ((SIZES, 8), (LONG, 24)),
           128: ((SIZES, 5), (LONG, 12))}


@pytest.mark.parametrize("size", [16, 32, 64, 128])
def test_each_documented_split_size_is_fitted_and_named(size):
    fail = [(d, _merged(d, _by_size(d.k.shape[-2], size), _reversed))
            for d in (_narrow(c, dv) for c, dv in BY_SIZE[size])]
    assert f"(splits of {size} keys, each normalised" in _one(_line(fail))


def test_a_row_counts_when_it_has_exactly_two_channels_more_than_its_splits():
    fail = [(d, _merged(d, _by_count(d.k.shape[-2], 2), _reversed)) for d in (_narrow(HEADS, 4), _narrow(DECODE, 4))]
    assert "(2 splits of ceil(Sk / 2) keys" in _one(_line(fail))
    fewer = [(_narrow(d, 3), g[..., :3]) for d, g in fail]            # Dv = n + 1: any row is a mix, nothing said
    assert _line(fewer) == []


def test_two_failing_cases_are_enough_and_one_is_not():
    fail = [(d, _merged(d, _by_count(d.k.shape[-2], 3), _reversed)) for d in (HEADS, DECODE)]
    assert "fitted on 2 failing cases" in _one(_line(fail))
    assert _line(fail[:1]) == []


def test_right_outputs_fit_nothing_and_return_an_empty_list():
    assert _line([(d, d.expected) for d in (HEADS, DECODE)]) == []
    assert _line([]) == []


def test_a_failing_case_of_another_shape_has_no_rows_and_the_others_are_still_named():
    fail = [(d, _merged(d, _by_count(d.k.shape[-2], 3), _reversed)) for d in (HEADS, DECODE)]
    odd = (SIZES, SIZES.expected[..., :-1])
    assert "(3 splits of ceil(Sk / 3) keys" in _one(_line(fail + [odd]))
    assert "fitted on 2 failing cases" in _line(fail + [odd])[0]


def test_a_judged_row_that_is_not_finite_is_not_reproduced_and_fits_nothing():
    fail = [(d, _merged(d, _by_count(d.k.shape[-2], 3), _reversed)) for d in (HEADS, DECODE)]
    bad = _merged(SIZES, _by_count(SIZES.k.shape[-2], 3), _reversed)
    bad[0, 0, 0, 0] = np.nan
    assert _line(fail + [(SIZES, bad)]) == []


def test_a_merge_that_misweighs_only_a_split_of_one_key_is_named():
    """Sk = 33 in splits of 16 keys: the last split holds one key (its own sum is exactly 1, its LSE that key's
    score): doubling that split's weight alone is a merge with weights other than the shares, not one factor."""
    def doubled_last(share):
        return share * np.array([1.0, 1.0, 2.0])
    assert all(d.k.shape[-2] == 33 for d in SK33)
    fail = [(d, _merged(d, _by_size(33, 16), doubled_last)) for d in SK33]
    assert "(splits of 16 keys, each normalised" in _one(_line(fail))


def _used(share):
    return share > 0


def _averaged_where_a_split_is_empty(share):
    """The shares on rows every split of which holds keys; the partials averaged on rows where a split holds none of
    the row's keys (a merge path taken only there)."""
    used = _used(share)
    avg = used / used.sum(axis=-1, keepdims=True)
    return np.where(used.all(axis=-1, keepdims=True), share, avg)


def test_rows_with_a_split_holding_none_of_their_keys_are_still_judged_as_a_merge():
    """Top-left causal, 3 splits of 34 keys: rows 34..67 see two splits, the third holds none of their keys (its
    share is 0, its output nothing). Averaging their two partials is a wrong merge, and only those rows show it."""
    fail = [(d, _merged(d, _by_count(100, 3), _averaged_where_a_split_is_empty)) for d in CAUSAL]
    assert "(3 splits of ceil(Sk / 3) keys" in _one(_line(fail))


def test_a_split_holding_none_of_a_rows_keys_adds_nothing_to_its_mix():
    """A row of a merge (the partials averaged) plus a constant where some split holds none of the row's keys is no
    mix of the row's own splits' partials: nothing fits."""
    def averaged(share):
        used = _used(share)
        return used / used.sum(axis=-1, keepdims=True)
    fail = []
    for d in CAUSAL:
        got = _merged(d, _by_count(100, 3), averaged)
        i = np.arange(100)
        some_empty = (i < 68)[:, None]                           # rows 0..67 keep no key of the third split
        fail.append((d, np.where(some_empty, got + 0.5, got)))
    assert _line(fail) == []


@pytest.mark.parametrize("shift", [500.0, -1000.0])
def test_a_merge_is_judged_alike_when_every_score_is_shifted_by_one_constant(shift):
    """The shares exp(lse_i - lse) depend only on the LSEs' differences: every score shifted by a constant (an
    additive mask of one value) leaves the fit, and the split count named, unchanged."""
    fail = []
    for d in (HEADS, DECODE):
        moved = replace(d, mask=np.full(d.q.shape[-2:-1] + d.k.shape[-2:-1], shift))
        fail.append((moved, _merged(moved, _by_count(d.k.shape[-2], 3), _reversed)))
    assert "(3 splits of ceil(Sk / 3) keys" in _one(_line(fail))
