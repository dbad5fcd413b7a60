"""The softmax-denominator fit (refimpl/harness/analysis/fitting_normaliser.py, docs/diagnosis.md's
`softmax-denominator` bullet) on hand-made cases; tests/test_fitted_forms.py runs it on kernels through the quick
suite. Every judged row of every failing case must be the reference's row times a factor c > 0 or come back zero (a
reference row of zeros must come back zero), judged with the forms' closeness (atol = output_atol(v), rtol = 1e-3,
the bound itself close); every failing case has a row with c away from 1 (by more than 1e-3); some failing row
with Dv >= 2 channels that are not all equal has c away from 1 and from 0; only the judged rows count. The line gives
the range of c, "one factor on every row" when the factors agree, and the denominator when a form reproduces every
failing row's factor: without the scale, or over every key the mask, causal band or window drops."""
import re

import numpy as np

from refimpl.attention import scaled_dot_product_attention
from refimpl.harness.analysis.fitting_normaliser import denominator_line
from refimpl.harness.analysis.fitting_placement import output_atol
from refimpl.harness.cases.features import CaseData
from types import SimpleNamespace

HEAD = "diagnosis k: softmax-denominator — "


def _case(E=None, dead=None, Hq=2, Sq=4, Sk=5, D=4, Dv=3, mask=None, seed=0, **spec):
    """A CaseData of random q, k, v (|v| < 1) whose expected output is E, or the reference's output when E is None."""
    rng = np.random.default_rng(seed)
    q, k = rng.normal(size=(1, Hq, Sq, D)), rng.normal(size=(1, Hq, Sk, D))
    v = rng.uniform(-0.9, 0.9, size=(1, Hq, Sk, Dv))
    sp = SimpleNamespace(**dict(dict(softcap=None, alibi=False, scale=None, is_causal=False, alignment="top-left",
                                     window=None, seqlens=None, gqa=False), **spec))
    data = CaseData(spec=sp, q=q, k=k, v=v, mask=mask, slopes=None, expected=np.zeros((1, Hq, Sq, Dv)),
                    dead=np.zeros((1, Hq, Sq), bool) if dead is None else dead)
    data.expected = (np.asarray(scaled_dot_product_attention(q, k, v, **data.reference_kwargs())[0], float)
                     if E is None else np.asarray(E, float))
    return data


def _varied(Hq=2, Sq=4, Dv=3):
    """(1, Hq, Sq, Dv): every row's channels differ (0.1, 0.2, ...)."""
    return 0.1 * (1.0 + np.arange(Hq * Sq * Dv, dtype=float)).reshape(1, Hq, Sq, Dv)


def _line(*cases):
    lines = denominator_line("k", list(cases))
    assert len(lines) == 1 and lines[0].startswith(HEAD), lines
    return lines[0]


def _range(line):
    return tuple(float(x) for x in re.search(r"sum to ([\d.e+-]+) \.\. ([\d.e+-]+) instead of 1", line).groups())


def test_rows_that_are_the_right_ones_halved_are_a_denominator_with_one_factor():
    d = _case(_varied())
    line = _line((d, 0.5 * d.expected))
    assert _range(line) == (0.5, 0.5) and "one factor on every row: the output scaled by 0.5," in line, line


def test_no_failing_case_is_no_line():
    assert denominator_line("k", []) == []


def test_an_output_of_another_shape_is_no_factor():
    d = _case(_varied())
    assert denominator_line("k", [(d, 0.5 * d.expected[..., :2])]) == []


def test_a_reference_row_of_zeros_must_come_back_zero():
    E = _varied()
    E[0, 0, 1] = 0.0
    d = _case(E)
    assert _range(_line((d, 0.5 * E))) == (0.5, 0.5)           # the zero row is no factor, and no failure
    got = 0.5 * E
    got[0, 0, 1] = 0.01
    assert denominator_line("k", [(d, got)]) == []


def test_a_row_off_its_multiple_by_exactly_the_absolute_tolerance_is_a_multiple():
    E = _varied(Dv=2)
    E[0, 0, 0] = (1.0, 0.0)
    d = _case(E)
    atol = output_atol(d.v)
    got = 0.5 * E
    got[0, 0, 0] = (0.5, atol)                  # c = 0.5 exactly; channel 1 off by atol, its rtol part 0
    assert _range(_line((d, got))) == (0.5, 0.5)
    got[0, 0, 0, 1] = 2 * atol
    assert denominator_line("k", [(d, got)]) == []


def test_a_zero_row_within_exactly_the_absolute_tolerance_comes_back_zero():
    E = _varied()
    E[0, 1, 2] = 0.0
    d = _case(E)
    atol = output_atol(d.v)
    got = 0.5 * E
    got[0, 1, 2] = (atol, -atol, 0.0)
    assert _range(_line((d, got))) == (0.5, 0.5)
    got[0, 1, 2, 0] = 2 * atol
    assert denominator_line("k", [(d, got)]) == []


def test_a_channel_is_off_its_multiple_by_more_than_rtol_of_the_multiple_itself():
    """Row (4, 4, 8) times 0.5 = (2, 2, 4), channels 0 and 1 moved by +d and -d (c stays 0.5): within the bound
    while d <= atol + 1e-3 * 2, outside it beyond."""
    E = _varied()
    E[0, 0, 0] = (4.0, 4.0, 8.0)
    d = _case(E)
    for delta, kept in ((1.5e-3, True), (3e-3, False)):
        got = 0.5 * E
        got[0, 0, 0, :2] += (delta, -delta)
        assert bool(denominator_line("k", [(d, got)])) == kept, delta


def test_a_factor_is_away_from_1_beyond_1e_3():
    d = _case(_varied())
    lo, hi = _range(_line((d, 1.0015 * d.expected)))             # printed to 4 digits
    assert 1.001 <= lo <= hi <= 1.002
    assert denominator_line("k", [(d, 1.0005 * d.expected)]) == []


def test_rows_constant_over_their_channels_are_no_evidence():
    """A row whose channels are all equal is a multiple of anything: rows of 3s halved are not this form."""
    d = _case(np.full((1, 2, 4, 3), 3.0))
    assert denominator_line("k", [(d, 0.5 * d.expected)]) == []


def test_the_evidence_is_a_varied_row_whose_own_factor_is_away_from_1():
    """Varied rows right (c = 1) beside constant rows halved: no varied row has its factor away from 1."""
    E = _varied()
    E[0, 1] = 3.0
    d = _case(E)
    got = E.copy()
    got[0, 1] *= 0.5
    assert denominator_line("k", [(d, got)]) == []


def test_a_single_row_of_two_channels_is_evidence():
    d = _case(np.array([[[[1.0, 2.0]]]]), Hq=1, Sq=1, Dv=2)
    assert _range(_line((d, 0.5 * d.expected))) == (0.5, 0.5)


def test_only_the_judged_rows_count():
    """A row the judge does not hold (no key) halved beside judged rows of 3s halved: no varied judged row."""
    E = np.full((1, 2, 4, 3), 3.0)
    E[0, 0, 2] = (0.1, 0.2, 0.3)
    dead = np.zeros((1, 2, 4), bool)
    dead[0, 0, 2] = True
    d = _case(E, dead=dead)
    assert denominator_line("k", [(d, 0.5 * E)]) == []


def test_every_failing_case_needs_a_row_whose_factor_is_away_from_1():
    """The second case's judged rows are all right (its unjudged row aside): the rows are no factor there."""
    first = _case(_varied())
    dead = np.zeros((1, 2, 4), bool)
    dead[0, 1, 3] = True
    second = _case(_varied(), dead=dead, seed=1)
    got = second.expected.copy()
    got[0, 1, 3] = 0.0
    assert denominator_line("k", [(first, 0.5 * first.expected), (second, got)]) == []


def test_factors_equal_to_a_part_in_a_billion_are_one_factor():
    d = _case(_varied())
    wobble = 1.0 + 1e-9 * np.linspace(0.0, 1.0, 8).reshape(1, 2, 4, 1)
    line = _line((d, 50.0 * wobble * d.expected))
    assert "one factor on every row: the output scaled by 50," in line, line
    line = _line((d, np.array([0.5, 0.6]).reshape(1, 2, 1, 1) * d.expected))
    assert "one factor on every row" not in line, line


def _keep(d):
    """(1, Hq, Sq, Sk) bool: the keys the case's mask, causal band (top-left) and window keep."""
    Sq, Sk = d.q.shape[-2], d.k.shape[-2]
    i, j = np.arange(Sq)[:, None], np.arange(Sk)[None, :]
    keep = np.ones((Sq, Sk), bool) if d.mask is None else np.broadcast_to(d.mask, d.q.shape[:-1] + (Sk,))
    if d.spec.is_causal:
        keep = keep & (j <= i)
    if d.spec.window is not None:
        left, right = d.spec.window
        keep = keep & (j >= i - left if left >= 0 else True) & (j <= i + right if right >= 0 else True)
    return np.broadcast_to(keep, d.q.shape[:-1] + (Sk,))


def _kernel(d, denominator):
    """The numerators exp(scale * (s - m)) on the kept keys, divided by the sum of exp(s - m) over them
    ("unscaled") or of exp(scale * (s - m)) over every key ("every key")."""
    sc = 1.0 / np.sqrt(d.q.shape[-1])
    s = d.q @ np.swapaxes(d.k, -1, -2)
    keep = _keep(d)
    m = np.where(keep, s, -np.inf).max(axis=-1, keepdims=True)
    num = np.where(keep, np.exp(sc * (s - m)), 0.0)
    den = (np.where(keep, np.exp(s - m), 0.0) if denominator == "unscaled" else np.exp(sc * (s - m))).sum(-1)
    return (num @ d.v) / den[..., None]


MASK = np.array([[1, 0, 1, 1, 0], [0, 1, 1, 0, 1], [1, 1, 0, 0, 1], [0, 0, 1, 1, 1]], bool)


def test_a_denominator_without_the_scale_is_named():
    d = _case(mask=MASK)
    assert "fitted, the denominator was the sum of exp(s - m) without the scale" in _line((d, _kernel(d, "unscaled")))


def test_a_denominator_over_every_key_is_named_for_a_mask_a_causal_band_and_a_window():
    for d in (_case(mask=MASK), _case(is_causal=True, Sk=4), _case(window=(1, 0), Sk=4)):
        line = _line((d, _kernel(d, "every key")))
        assert "fitted, the denominator was the sum over every key, those the mask or band drops too" in line, line
        lo, hi = _range(line)
        assert 0 < lo <= hi < 1, line


def test_a_case_where_nothing_is_dropped_is_never_summed_over_every_key():
    """Rows times 1.0010005 (away from 1) on a case with no mask, band or window: the every-key denominator is the
    right one there, so it names no denominator however close its factor 1 is."""
    d = _case()
    line = _line((d, 1.0010005 * d.expected))
    assert "fitted, the denominator" not in line, line
