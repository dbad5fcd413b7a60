"""An argument ignored under a fitted condition (refimpl/harness/analysis/fitting_ignored.py; docs/diagnosis.md, "An
argument ignored under a fitted condition"), on hand-made cases: which argument's omission is tried (each failing case
must carry it; an argument handed inside another cannot be left out alone), the model and words each argument is
named with, and no line when no condition separates. The kernel's output here is refimpl's with the argument left
out."""
import itertools

import numpy as np
import pytest

from refimpl.attention import scaled_dot_product_attention
from refimpl.harness.analysis.fitting_ignored import ignored_line
from refimpl.harness.cases.features import CaseSpec, materialise

_INDEX = itertools.count()


def _case(**kw):
    sizes = dict(Sq=4, Sk=6, D=4, Dv=3)
    sizes.update(kw)
    return materialise(CaseSpec("ignored-rules", next(_INDEX), **sizes))


def _left_out(data, **change):
    """refimpl's output of the case with its keyword arguments changed (an argument left out)."""
    return scaled_dot_product_attention(data.q, data.k, data.v, **dict(data.reference_kwargs(), **change))[0]


def _close(a, b):
    return np.shape(a) == np.shape(b) and np.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)


def _line(fail, passing=()):
    return ignored_line("t", list(fail), list(passing), lambda out, data, got: _close(out, got),
                        lambda out, data: not _close(out, data.expected))


@pytest.mark.parametrize("features, change, named", [
    (dict(is_causal=True), dict(is_causal=False), "causal-dropped — the causal flag is ignored always"),
    (dict(window=(1, 1)), dict(window=None), "window-bounds — the window is ignored always"),
    (dict(mask="bool"), dict(mask=None), "mask-skipped — the mask is ignored always"),
    (dict(softcap=0.5, magnitude=2.0), dict(softcap=None), "softcap — the softcap is ignored always"),
    (dict(scale=0.3), dict(scale=None), "scale — the given scale is ignored always"),
])
def test_an_argument_left_out_on_every_failing_case_is_named_with_its_model(features, change, named):
    fail = [(d, _left_out(d, **change)) for d in (_case(**features), _case(B=2, **features))]
    assert all(not _close(got, d.expected) for d, got in fail)            # the argument changes these cases
    assert _line(fail) == [f"diagnosis t: {named} (fitted: refimpl without it reproduces all 2 failing cases "
                           f"sampled; 0 passing cases it would change decide the condition)"]


def test_alibi_left_out_is_named_alibi_dropped():
    d = _case(alibi=True, Hq=2, Hkv=2)
    lines = _line([(d, _left_out(d, mask=None))])
    assert len(lines) == 1 and lines[0].startswith("diagnosis t: alibi-dropped — ALiBi's bias is ignored always"), lines


def test_a_packed_batchs_alibi_is_handed_inside_its_mask_and_never_fitted_as_dropped():
    d = _case(B=2, Sq=3, Sk=5, Hq=2, Hkv=2, alibi=True, seqlens=((2, 3), (3, 5)))
    got = _left_out(d, mask=d.mask)                           # the sequences' keep-mask without ALiBi's bias
    assert not _close(got, d.expected) and _line([(d, got)]) == []


@pytest.mark.parametrize("left_out", ["causal", "mask"])
def test_a_band_or_mask_that_reached_the_target_inside_its_mask_is_not_fitted_as_ignored(left_out):
    d = _case(is_causal=True, mask="bool")
    d.band_flags = False                                      # the band reached the target folded into its mask
    got = _left_out(d, **({"is_causal": False} if left_out == "causal" else {"mask": None}))
    assert not _close(got, d.expected) and _line([(d, got)]) == []


def test_an_argument_some_failing_case_does_not_carry_is_not_tried():
    dropped, other = _case(is_causal=True), _case()
    # the second failing case has no causal flag (it fails on something the output does not show)
    assert _line([(dropped, _left_out(dropped, is_causal=False)), (other, other.expected)]) == []


def test_no_failing_case_no_line():
    ok = _case(is_causal=True)
    assert _line([], [(ok, ok.expected)]) == []


def test_no_line_when_a_passing_case_the_omission_changes_looks_like_the_failing_one():
    d, ok = _case(is_causal=True), _case(is_causal=True)      # the same features: no condition separates them
    assert _line([(d, _left_out(d, is_causal=False))], [(ok, ok.expected)]) == []
