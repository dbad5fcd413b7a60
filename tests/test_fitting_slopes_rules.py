"""The fitted ALiBi slope map (refimpl/harness/analysis/fitting_slopes.py) on outputs built here from the quick
suite's ALiBi cases: each query head's output computed with another head's slope (refimpl's attention with the
slopes rearranged, the rearrangement chosen by the test), and what the fit prints or refuses."""
import re
from dataclasses import replace

import numpy as np

from refimpl.attention import scaled_dot_product_attention
from refimpl.harness.analysis.conditions import Seen, condition
from refimpl.harness.analysis.fitting_slopes import slopes_line
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore

STORE = CaseStore()
CASES = {s.id.split("-")[0]: STORE.get(s) for s in select(["alibi"], "quick", ("float64",))}
SIX, TWO, PER_BATCH = CASES["alibi/0000"], CASES["alibi/0002"], CASES["alibi/0005"]     # Hq 6; Hq 2; (B, Hq) = (3, 3)
SIX_GQA = CASES["alibi/0003"]                                                             # Hq 6 over Hkv 3
LINE = "diagnosis k: alibi-slopes — query head h is given another head's ALiBi slope instead of its own: fitted "


def _with_map(data, pi):
    """The output with query head h given head pi[h]'s slope (from its own batch's row)."""
    slopes = np.asarray(data.slopes)[..., list(pi)]
    moved = replace(data, slopes=slopes)
    return np.asarray(scaled_dot_product_attention(data.q, data.k, data.v, **moved.reference_kwargs())[0])


def _close(a, b, v):
    return np.allclose(a, b, rtol=1e-9, atol=1e-12)


def _changes(out, data):
    return not np.allclose(out, data.expected, rtol=1e-9, atol=1e-12)


def _line(fail, passing=()):
    return slopes_line("k", list(fail), list(passing), _close, _changes, condition, Seen)


def test_the_slope_each_head_was_given_is_printed_per_head_count():
    fail = [(SIX, _with_map(SIX, (0, 1, 2, 0, 1, 2))), (TWO, _with_map(TWO, (0, 0)))]
    assert _line(fail) == [LINE + "Hq=2, Hkv=2: query heads 0..1 use the slopes of heads 0 0; Hq=6, Hkv=6: query "
                                  "heads 0..5 use the slopes of heads 0 1 2 0 1 2"]


def test_one_head_count_over_two_kv_head_counts_may_map_heads_two_ways():
    """Slopes sliced per kv group (every group given the first group's slopes) map head h to h mod (Hq / Hkv): under
    MHA every head takes head 0's slope, with 6 query heads over 3 kv heads h takes h mod 2's. One map per (Hq, Hkv),
    not per Hq: the two cases of Hq = 6 are both explained, each by its own map."""
    assert (SIX.spec.Hq, SIX.spec.Hkv, SIX_GQA.spec.Hq, SIX_GQA.spec.Hkv) == (6, 6, 6, 3)
    fail = [(SIX, _with_map(SIX, (0,) * 6)), (SIX_GQA, _with_map(SIX_GQA, (0, 1, 0, 1, 0, 1)))]
    assert _line(fail) == [LINE + "Hq=6, Hkv=3: query heads 0..5 use the slopes of heads 0 1 0 1 0 1; Hq=6, Hkv=6: "
                                  "query heads 0..5 use the slopes of heads 0 0 0 0 0 0"]


def test_two_cases_of_one_head_shape_that_disagree_fit_nothing():
    other = replace(SIX, slopes=np.asarray(SIX.slopes) * 1.5)
    assert _line([(SIX, _with_map(SIX, (0,) * 6)), (other, _with_map(other, (1,) * 6))]) == []


def test_slopes_per_batch_are_read_from_each_batchs_own_row():
    assert _line([(PER_BATCH, _with_map(PER_BATCH, (2, 1, 0)))]) == [
        LINE + "Hq=3, Hkv=3: query heads 0..2 use the slopes of heads 2 1 0"]


def test_the_right_slopes_or_a_case_without_alibi_fit_nothing():
    assert _line([(SIX, SIX.expected)]) == []
    plain = STORE.get(select(["sizes"], "quick", ("float64",))[0])
    assert _line([(plain, plain.expected + 1.0)]) == []
    assert _line([]) == []


def test_heads_sharing_a_slope_cannot_be_told_apart_and_fit_nothing():
    same = replace(TWO, slopes=np.full_like(np.asarray(TWO.slopes), 0.5))
    assert _line([(same, _with_map(same, (0, 0)))]) == []


def test_an_output_no_slope_explains_refutes_the_map():
    got = _with_map(SIX, (0, 1, 2, 0, 1, 2))
    got[0, 4] += 1.0
    assert _line([(SIX, got)]) == []
    assert _line([(SIX, _with_map(SIX, (0, 1, 2, 0, 1, 2))), (TWO, TWO.expected)]) == []    # the identity on one


def test_a_passing_case_the_map_would_change_decides_when_it_applies():
    fail = [(SIX, _with_map(SIX, (0, 1, 2, 0, 1, 2)))]
    other = CASES["alibi/0003"]                         # Hq 6 over 3 kv heads: the same map would change it
    line = _line(fail, [(other, other.expected)])
    assert len(line) == 1 and line[0].startswith(
        LINE + "Hq=6, Hkv=6: query heads 0..5 use the slopes of heads 0 1 2 0 1 2; when "), line
    assert "not GQA (Hq != Hkv)" in line[0], line           # one of the conditions that separate the two cases
    assert _line(fail, [(CASES["alibi/0002"], CASES["alibi/0002"].expected)]) == [    # Hq 2: no map to apply
        LINE + "Hq=6, Hkv=6: query heads 0..5 use the slopes of heads 0 1 2 0 1 2"]


def test_a_case_without_alibi_or_without_slopes_is_never_fitted_whatever_it_carries():
    from refimpl.harness.analysis.fitting_slopes import _distinct
    plain = STORE.get(select(["sizes"], "quick", ("float64",))[0])
    assert not _distinct(replace(plain, slopes=np.array([0.5, 0.25])))               # slopes but no ALiBi
    assert not _distinct(replace(SIX, slopes=None))                                    # ALiBi but no slopes
    assert _distinct(SIX) and _distinct(PER_BATCH)


def test_the_maps_of_the_first_three_head_shapes_are_printed():
    counts = {}
    for s in select(["alibi"], "default", ("float64",)):
        if s.Hq >= 2 and s.Hq not in counts:
            counts[s.Hq] = STORE.get(s)
    assert len(counts) >= 4, sorted(counts)
    fail = [(d, _with_map(d, tuple(range(1, hq)) + (0,))) for hq, d in counts.items()]   # each head the next's slope
    line = _line(fail)
    shown = [int(n) for n in re.findall(r"Hq=(\d+), Hkv=\d+:", line[0])]
    assert shown == sorted(counts)[:3], line
