"""#26 item 1: the scale model is fitted, not matched: kernels built with several wrong scales (written here, each
a plain softmax attention with one scale rule) are named with the scale they used and its value; a correct
kernel gets no diagnosis line."""
import math

import numpy as np
import pytest

from refimpl.harness.analysis.diagnosis import diagnose
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.targets.target import Target

SPECS = select(["sizes", "batched-heads", "scale", "bool-mask"], "quick", ("float64",))


def _kernel(rule):
    """fn(q, k, v, mask=None, scale=None): softmax(rule(...) q k^T, masked) v, in NumPy."""
    def fn(q, k, v, mask=None, scale=None):
        c = rule(q.shape[-1], v.shape[-1], k.shape[-2], scale)
        s = (q @ np.swapaxes(k, -1, -2)) * c
        if mask is not None:
            s = np.where(mask, s, -np.inf)
        m = np.max(s, axis=-1, keepdims=True)
        e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
        z = e.sum(axis=-1, keepdims=True)
        return (e / np.where(z == 0, 1.0, z)) @ v
    return fn


RULES = {   # name the diagnosis must print -> (the rule, the value it must quote for the quoted case)
    "1/sqrt(Dv)": lambda d, dv, sk, sc: (1 / math.sqrt(dv)) if sc is None else sc,
    "1/sqrt(Sk)": lambda d, dv, sk, sc: (1 / math.sqrt(sk)) if sc is None else sc,
    "1/D": lambda d, dv, sk, sc: (1 / d) if sc is None else sc,
    "1/sqrt(D) (the given scale ignored)": lambda d, dv, sk, sc: 1 / math.sqrt(d),
    "scale**2 (applied twice)": lambda d, dv, sk, sc: (1 / math.sqrt(d) if sc is None else sc) ** 2,
    "the constant 0.125": lambda d, dv, sk, sc: 0.125 if sc is None else sc,
}


def _diagnose(rule):
    store = CaseStore()
    target = Target("k", _kernel(rule), api="refimpl")
    results = [run_one(target, s, store) for s in SPECS]
    return results, diagnose(results, store, target="k", specs={s.id: s for s in SPECS})


@pytest.mark.parametrize("name", list(RULES))
def test_the_scale_a_kernel_used_is_fitted_and_named_with_its_value(name):
    results, lines = _diagnose(RULES[name])
    assert any(r.status == Status.FAIL for r in results)
    scale_lines = [x for x in lines if x.startswith("diagnosis k: scale — the kernel used ")]
    assert len(scale_lines) == 1, lines
    used = scale_lines[0].split("the kernel used ", 1)[1]
    assert used.startswith(name + " = "), (name, scale_lines[0])
    quoted = used.split(" = ", 1)[1].split(" ", 1)[0]
    case = scale_lines[0].rsplit("e.g. ", 1)[1].split(":", 1)[0]
    spec = next(s for s in SPECS if s.id == case)
    want = RULES[name](spec.D, spec.Dv, spec.Sk, spec.scale)
    assert float(quoted) == pytest.approx(want, rel=1e-3), (quoted, want)


def test_a_correct_kernel_gets_no_diagnosis():
    results, lines = _diagnose(lambda d, dv, sk, sc: 1 / math.sqrt(d) if sc is None else sc)
    assert all(r.status == Status.PASS for r in results if r.status in (Status.PASS, Status.FAIL)) and lines == []


def test_a_threshold_is_searched_from_the_cases_and_only_when_is_exact():
    """A kernel that drops every key after the 32nd fails from Sk = 33: the localisation finds that threshold
    (no fixed 'Sk > 64'), and 'only when' holds on every failing case and no passing one."""
    from refimpl.harness.analysis.diagnosis import localise

    def first_32_keys(q, k, v, mask=None, scale=None):
        return _kernel(lambda d, dv, sk, sc: 1 / math.sqrt(d) if sc is None else sc)(
            q, k[..., :32, :], v[..., :32, :], None if mask is None else mask[..., :32], scale)

    specs = select(["sizes", "batched-heads"], "quick", ("float64",))
    store = CaseStore()
    results = [run_one(Target("k", first_32_keys, api="refimpl"), s, store) for s in specs]
    by_id = {s.id: s for s in specs}
    failing = [by_id[r.id].Sk for r in results if r.status == Status.FAIL]
    passing = [by_id[r.id].Sk for r in results if r.status == Status.PASS]
    assert failing and min(failing) > 32 and passing and max(passing) <= 32, (failing, passing)
    assert localise(results, by_id) == f"fails only when: Sk >= {min(failing)}"
    text = localise(results)                          # without the specs: no threshold, and no false "only"
    assert text.startswith("fails mostly when: ") or text == "fails only when: Sk > 64" and min(failing) > 64, text


def test_a_float64_target_computing_in_float32_is_told_so():
    """#26 item 4: faithful code that computes in float32 and returns float64 fails float64 cases by float32-sized
    errors: the line says what the numbers mean instead of 'unknown'."""
    inner = _kernel(lambda d, dv, sk, sc: 1 / math.sqrt(d) if sc is None else sc)

    def in_float32(q, k, v, mask=None, scale=None):
        return inner(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32), mask, scale).astype(q.dtype)

    store = CaseStore()
    results = [run_one(Target("k", in_float32, api="refimpl"), s, store) for s in SPECS]
    assert any(r.status == Status.FAIL for r in results)
    lines = diagnose(results, store, target="k", specs={s.id: s for s in SPECS})
    assert len(lines) == 1 and lines[0].startswith("diagnosis k: float32 arithmetic — the float64 cases fail with "
                                                   "errors of ~"), lines
    assert lines[0].endswith("check it with --dtype float32")


def test_a_float64_output_off_by_a_small_factor_is_not_called_float32_arithmetic():
    """Errors of float32's size are not enough: a float64 kernel whose output is 1 + 3e-6 times the right one
    fails float64 cases by ~3e-6 relative, but its slope on the oracle is not what float32 rounding gives."""
    inner = _kernel(lambda d, dv, sk, sc: 1 / math.sqrt(d) if sc is None else sc)

    def scaled(q, k, v, mask=None, scale=None):
        return inner(q, k, v, mask, scale) * (1.0 + 3e-6)

    store = CaseStore()
    results = [run_one(Target("k", scaled, api="refimpl"), s, store) for s in SPECS]
    assert any(r.status == Status.FAIL for r in results)
    lines = diagnose(results, store, target="k", specs={s.id: s for s in SPECS})
    assert not any("float32 arithmetic" in line for line in lines), lines


@pytest.mark.slow
def test_a_float32_kernel_failing_most_of_the_default_suite_is_still_told_so():
    """A faithful kernel computing in float32 fails hundreds of float64 cases of the default suite, more than the
    fingerprint reads (MAX_NOISE): it reads an even sample of them and still says float32 arithmetic."""
    from refimpl import scaled_dot_product_attention
    from refimpl.harness.analysis.diagnosis import MAX_NOISE

    def in_float32(q, k, v, **kw):
        kw = {n: a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float64 else a
              for n, a in kw.items()}
        out = scaled_dot_product_attention(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32), **kw)
        return np.asarray(out[0], np.float64), out[1]

    specs = select(None, "default", ("float64",))
    store = CaseStore()
    results = [run_one(Target("k", in_float32, api="refimpl"), s, store) for s in specs]
    assert sum(r.status == Status.FAIL for r in results) > MAX_NOISE
    lines = diagnose(results, store, target="k", specs={s.id: s for s in specs})
    assert len(lines) == 1 and lines[0].startswith("diagnosis k: float32 arithmetic — "), lines
