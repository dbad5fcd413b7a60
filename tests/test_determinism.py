"""--repeat N: every case called N times must come back bitwise the same, else 'nondeterministic'."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from refimpl.harness.apis import Returned
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.target_spec import Target, load_target
from refimpl.harness.targets.isolation import isolator
from refimpl.harness.verdicts.determinism import first_difference

ZOO = Path(__file__).parent / "zoo"
STORE = CaseStore()
SIZES = [s for s in select(["sizes"], "quick", ("float64", "float32"))][:8]
WOBBLE = Path(__file__).parent / "support" / "wobbling_kernel.py"


def _plain():
    import importlib.util
    spec = importlib.util.spec_from_file_location("zoo_numpy_impls_det", ZOO / "numpy_impls.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.plain


def _wobbling(plain):
    calls = [0]

    def attn(q, k, v, mask=None, scale=None):
        out = np.array(plain(q, k, v, mask=mask, scale=scale))
        calls[0] += 1
        if calls[0] % 2 == 0:
            out.flat[0] = np.nextafter(out.flat[0], out.dtype.type(np.inf))          # the last bit, every other call
        return out
    return attn


def test_a_kernel_that_wobbles_in_the_last_bit_is_nondeterministic_only_with_repeat():
    fn = _wobbling(_plain())
    once = [run_one(Target("w", fn), s, STORE) for s in SIZES]
    assert all(r.status == Status.PASS for r in once)                # within tolerance: a pass without --repeat
    thrice = [run_one(Target("w", fn, repeat=3), s, STORE) for s in SIZES]
    assert all(r.status == Status.NONDETERMINISTIC for r in thrice), [r.detail for r in thrice]
    assert all("differs from call 1" in r.detail and "1 of" in r.detail for r in thrice)
    assert Status.NONDETERMINISTIC.failed


def test_a_deterministic_kernel_passes_with_repeat():
    assert all(run_one(Target("p", _plain(), repeat=4), s, STORE).status == Status.PASS for s in SIZES)


def test_an_isolated_kernel_is_repeated_in_its_worker():
    t = load_target(f"{WOBBLE}:attn", isolate=isolator(timeout=60, max_memory_mib=None, flag="--target"))
    t.repeat = 2
    try:
        res = [run_one(t, s, STORE) for s in SIZES[:3]]
    finally:
        t.fn.close()
    assert all(r.status == Status.NONDETERMINISTIC for r in res), [r.detail for r in res]


def test_first_difference_names_the_array_and_the_size_of_the_difference():
    a = Returned(np.zeros((1, 1, 2, 2)), None, "float64", [])
    assert first_difference(a, Returned(np.zeros((1, 1, 2, 2)), None, "float64", [])) is None
    b = Returned(np.array([0.0, 0.0, 0.0, 1e-3]).reshape(1, 1, 2, 2), None, "float64", [])
    assert first_difference(a, b) == "output: 1 of 4 values differ, by up to 0.001"
    neg = Returned(-np.zeros((1, 1, 2, 2)), None, "float64", [])           # -0.0 is not bitwise 0.0
    assert first_difference(a, neg) == "output: the same values in different bits (a signed zero or a NaN's payload)"
    w = Returned(np.zeros((1, 1, 2, 2)), np.ones((1, 1, 2, 2)), "float64", [])
    assert first_difference(a, w).startswith("weights: returned")


@pytest.mark.parametrize("bad", ["0", "-1", "101", "x"])
def test_repeat_takes_1_to_100(bad):
    p = subprocess.run([sys.executable, "-m", "refimpl", "check", "--repeat", bad], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and "--repeat takes a whole number of calls from 1 to 100" in p.stderr
