"""The rules of the backward's fitted scale (refimpl/harness/verdicts/grad_scale.py), on gradients made here: the
exact gradient of a forward with another scale (refimpl's backward at that scale). What the line names (the
formula, its value, and the scale the case asked for: the given one, else 1/sqrt(D)), which cases are read with
which rule (a failing case explained, a passing one left as it is: grad_judge's ``_fits``), and the empty answer."""
import math
import re

from refimpl import sdpa_backward
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore
from refimpl.harness.verdicts import grad_judge as gj
from refimpl.harness.verdicts.grad_scale import scale_grads_line

STORE = CaseStore()


def _gd(family, index):
    """(the gradient case, its cache) of a quick float64 case."""
    cache: dict = {}
    spec = next(s for s in select([family], "quick", ("float64",)) if s.index == index)
    return gj.grad_data(STORE.get(spec), cache), cache


def _at_scale(gd, cache, used, off=0.0):
    """The target's gradients: the exact gradient of the forward with scale ``used``, plus ``off``; judged
    (``allowed`` filled), and it must fail."""
    d = gd.data
    grads = sdpa_backward(d.q, d.k, d.v, gd.d_out, **dict(d.reference_kwargs(), scale=used))[:3]
    got = gj.GradReturned({n: g + off for n, g in zip(gj.GRADS, grads)}, "float64")
    assert gj.judge_grads(gd, got, "float64", cache).status == Status.FAIL
    return gd, got


def test_nothing_failing_gives_no_line():
    assert scale_grads_line("t", [], [], gj._fits) == []


def test_no_formula_that_holds_gives_no_line():
    gd, cache = _gd("batched-heads", 8)
    assert scale_grads_line("t", [_at_scale(gd, cache, 1.0)], [], lambda *a: False) == []


def _named(line):
    """(formula shown, its value, the scale asked for, its value) of a ``bwd-scale`` line."""
    m = re.match(r"diagnosis t: bwd-scale — the whole backward used (.*) = (\S+) instead of (.*) = (\S+) \(fitted",
                 line)
    assert m, line
    return m.group(1), float(m.group(2)), m.group(3), float(m.group(4))


def test_a_formula_giving_the_asked_for_scale_on_every_failing_case_is_never_named():
    # sizes/0008: Hq 1, D = Dv = 8, no scale given: 1/sqrt(Dv), 1/sqrt(Hq*D), 1/sqrt(D padded to 8) are all
    # 1/sqrt(D) here, the right scale; even a fit that takes every model must not name one of them
    gd, cache = _gd("sizes", 8)
    s = gd.data.spec
    assert (s.Hq, s.D, s.Dv, s.scale) == (1, 8, 8, None)
    lines = scale_grads_line("t", [_at_scale(gd, cache, 1.0)], [], lambda *a: True)
    assert len(lines) == 1
    _, used, asked, right = _named(lines[0])
    assert asked == "1/sqrt(D)" and right == float(f"{1 / math.sqrt(8):.4g}")
    assert used != right, lines


def test_a_target_nearer_the_wrong_scale_than_the_oracle_is_explained_on_its_failing_case():
    # batched-heads/0008: B 1, Hq 3, D 8, no scale given; the target is 1/sqrt(Hq*D)'s gradient plus 1e-6: far
    # beyond twice the allowed error of it, but within half the oracle's distance -- the failing-case rule
    # explains it, the passing-case rule would not
    gd, cache = _gd("batched-heads", 8)
    s = gd.data.spec
    assert (s.Hq, s.D, s.scale) == (3, 8, None)
    gd, got = _at_scale(gd, cache, 1.0 / math.sqrt(24), off=1e-6)
    assert all(1e-6 > 2 * got.allowed[n] for n in gj.GRADS)
    lines = scale_grads_line("t", [(gd, got)], [], gj._fits)
    assert len(lines) == 1
    assert _named(lines[0])[:2] == ("1/sqrt(Hq*D)", float(f"{1 / math.sqrt(24):.4g}")), lines


def test_a_passing_case_is_read_with_the_passing_rule():
    gd, cache = _gd("batched-heads", 8)
    failing = [_at_scale(gd, cache, 1.0 / math.sqrt(24))]
    seen = []

    def fits(model, gd_, got, failing_):
        seen.append(failing_)
        return True
    scale_grads_line("t", failing, [failing[0]], fits)
    assert seen[:2] == [True, False]


def _ignoring_the_given_scale():
    """A backward at scale 1 always ("1 (no scaling), the given scale ignored"), failing on batched-heads/0007
    (B 1, Hq 1, Sq 40, Sk 5, D 4: 1/sqrt(D) = 0.5) and on scale/0000 (B 1, Hq 1, Sq 8, Sk 64, scale 0.5 given)."""
    (none, c1), (given, c2) = _gd("batched-heads", 7), _gd("scale", 0)
    assert none.data.spec.scale is None and none.data.spec.D == 4 and given.data.spec.scale == 0.5
    return _at_scale(none, c1, 1.0), _at_scale(given, c2, 1.0)


def test_on_a_smallest_case_without_a_given_scale_the_ignored_given_scale_is_not_named():
    # the smallest failing case (B * Hq, then Sq * Sk: 200 < 512) gives no scale: it asked for 1/sqrt(D), and
    # "the given scale ignored" says nothing of it
    none, given = _ignoring_the_given_scale()
    lines = scale_grads_line("t", [given, none], [], gj._fits)
    assert len(lines) == 1
    shown, used, asked, right = _named(lines[0])
    assert shown in ("1", "1 (no scaling)") and used == 1.0, lines
    assert (asked, right) == ("1/sqrt(D)", 0.5), lines
    assert "e.g. batched-heads/0007-float64: D=4, Dv=4, Hq=1, Sk=5)" in lines[0]


def test_on_a_smallest_case_with_a_given_scale_the_line_says_it_was_ignored():
    none, given = _ignoring_the_given_scale()
    heads, cache = _gd("batched-heads", 8)                       # B * Hq = 3: scale/0000 (1) is the smallest now
    lines = scale_grads_line("t", [_at_scale(heads, cache, 1.0), given], [], gj._fits)
    assert len(lines) == 1
    shown, used, asked, right = _named(lines[0])
    assert shown.startswith("1") and shown.endswith(", the given scale ignored") and used == 1.0, lines
    assert (asked, right) == ("the given scale", 0.5), lines
    assert "e.g. scale/0000-float64:" in lines[0]
