"""The output-columns fit (refimpl/harness/analysis/fitting_columns.py, docs/diagnosis.md "Fitted forms") on hand-made
cases; tests/test_fitted_forms.py runs it on a kernel through the quick suite. Each output channel is right, another
channel of the reference, or never written (zeros), judged with the diagnosis's closeness (atol = 1e-6 * (1 + max
|v|), rtol = 1e-3, the bound itself close); the line prints the smallest failing case's channel map and, when one
generates every failing case's map, the rule: value tiles of T in (8, 16, 32, 64, 128) each stored from channel 0."""
import re
from types import SimpleNamespace

import numpy as np
import pytest

from refimpl.harness.analysis.fitting_columns import columns_line


def _expected(Dv, Sq=3):
    """(1, 1, Sq, Dv): every channel differs from every other by far more than the tolerance."""
    return 1.0 + np.arange(Sq * Dv, dtype=float).reshape(1, 1, Sq, Dv)


def _data(E, v_max=1.0):
    return SimpleNamespace(expected=E, live=np.ones(E.shape[:-1], bool), v=np.full((1, 1, 1, 1), v_max))


def _lines(*cases):
    return columns_line("k", [(_data(E, **kw), got) for E, got, kw in cases])


def _swapped(E, a=0, b=1):
    """Channels a and b exchanged, every other channel right."""
    got = E.copy()
    got[..., [a, b]] = E[..., [b, a]]
    return got


def _shown(lines):
    """(Dv, the printed map as a list of ints, -1 for '-', the rest of the line)."""
    assert len(lines) == 1 and lines[0].startswith("diagnosis k: output-columns — "), lines
    dv, shown = re.search(r"on a case of Dv=(\d+), channels 0\.\.\d+ hold the reference's channels ([-\d ]+) \(",
                          lines[0]).groups()
    return int(dv), [-1 if c == "-" else int(c) for c in shown.split()], lines[0]


def _tiles_at_zero(values, tile):
    """A kernel storing each value tile of `tile` channels at channel 0 instead of its offset, in order; channels
    no tile reaches stay unwritten (0; -1 when `values` are channel indices, giving the map itself)."""
    Dv = values.shape[-1]
    out = np.full_like(values, -1 if values.dtype.kind == "i" else 0)
    for start in range(0, Dv, tile):
        part = values[..., start:start + tile]
        out[..., :part.shape[-1]] = part
    return out


def test_two_channels_exchanged_beside_right_ones_are_printed_as_their_map_with_no_rule():
    E = _expected(4)
    Dv, shown, line = _shown(_lines((E, _swapped(E), {})))
    assert (Dv, shown) == (4, [1, 0, 2, 3]), line         # channel 1 holds channel 0: printed "0", not "-"
    assert "fitted" not in line, line                     # no tile width generates an exchange


def test_a_single_channel_written_is_a_placement_even_when_it_is_channel_zero():
    """Some channel written (its source channel 0 included) and the others never: a placement, not all zeros."""
    E = _expected(4)
    got = np.zeros_like(E)
    got[..., 1] = E[..., 0]
    Dv, shown, _ = _shown(_lines((E, got, {})))
    assert shown == [-1, 0, -1, -1]
    got = np.zeros_like(E)
    got[..., 0] = E[..., 0]
    assert _shown(_lines((E, got, {})))[1] == [0, -1, -1, -1]


@pytest.mark.parametrize("tile, Dv", [(8, 12), (16, 40), (32, 48), (64, 96), (128, 160)])
def test_value_tiles_stored_from_channel_zero_are_fitted_with_their_width(tile, Dv):
    E = _expected(Dv)
    Dv_shown, shown, line = _shown(_lines((E, _tiles_at_zero(E, tile), {})))
    assert (Dv_shown, shown) == (Dv, _tiles_at_zero(np.arange(Dv), tile).tolist()), line
    assert f"; fitted, value tiles of {tile} channels each stored from channel 0" in line, line


def test_the_map_of_the_smallest_failing_case_is_printed_and_the_tile_fits_every_case():
    small, large = _expected(12), _expected(40)
    Dv, shown, line = _shown(_lines((large, _tiles_at_zero(large, 8), {}), (small, _tiles_at_zero(small, 8), {})))
    assert (Dv, shown) == (12, _tiles_at_zero(np.arange(12), 8).tolist()), line
    assert "value tiles of 8 channels" in line, line


@pytest.mark.parametrize("factor, fitted", [(1 + 0.5e-3, True), (1 + 1.5e-3, False)])
def test_a_channel_is_right_within_a_relative_tolerance_of_one_in_a_thousand_and_else_fits_nothing(factor, fitted):
    E = _expected(4)
    got = _swapped(E, 2, 3)
    got[..., 0] *= factor                                 # values 1 .. 9: far above the absolute tolerance
    lines = _lines((E, got, {"v_max": 0.0}))
    assert (lines != []) == fitted and isinstance(lines, list), lines


@pytest.mark.parametrize("off, fitted", [(1e-6, True), (1.5e-6, False)])
def test_a_channel_exactly_at_the_absolute_tolerance_is_right(off, fitted):
    """max |v| = 0: atol = 1e-6; an expected 0 leaves only the absolute part."""
    E = _expected(4)
    E[0, 0, 0, 0] = 0.0
    got = _swapped(E, 2, 3)
    got[0, 0, 0, 0] = off
    lines = _lines((E, got, {"v_max": 0.0}))
    assert (lines != []) == fitted and isinstance(lines, list), lines


@pytest.mark.parametrize("extra", [1, -1])
def test_an_output_of_another_shape_is_no_channel_map(extra):
    E = _expected(4)
    got = _swapped(E)
    got = np.concatenate([got, got[..., :1]], -1) if extra > 0 else got[..., :3]
    assert _lines((E, got, {})) == []


def test_an_output_that_is_the_expected_one_or_all_zeros_is_no_channel_map():
    E = _expected(4)
    assert _lines((E, E.copy(), {})) == []
    assert _lines((E, np.zeros_like(E), {})) == []


def test_one_failing_case_that_is_no_channel_map_refutes_the_fit():
    E = _expected(4)
    assert _lines((E, _swapped(E), {}), (E, 2.0 * E, {})) == []


def test_no_failing_case_no_line():
    assert columns_line("k", []) == []


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_judged_channel_that_is_not_finite_is_none_of_the_three(bad):
    E = _expected(4)
    got = _swapped(E)
    got[0, 0, 1, 3] = bad
    assert _lines((E, got, {})) == []


def test_rows_the_judge_does_not_hold_are_not_read_and_a_case_with_none_is_no_channel_map():
    E = _expected(4)
    got = _swapped(E)
    got[0, 0, 2] = np.nan                                 # a row with no key: not judged
    data = _data(E)
    data.live = np.array([[[True, True, False]]])
    assert _shown(columns_line("k", [(data, got)]))[1] == [1, 0, 2, 3]
    data.live = np.zeros_like(data.live)
    assert columns_line("k", [(data, got)]) == []
