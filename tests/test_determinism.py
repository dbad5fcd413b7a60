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


def _module(path, name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _grad_targets():
    """A torch-sdpa target with autograd, and one whose dq gets a 1-ulp nudge in one value on its 2nd call."""
    torch = pytest.importorskip("torch")
    ta = _module(ZOO / "torch_autograd_impls.py", "torch_autograd_det")

    class Nudge(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.view_as(x)

        @staticmethod
        def backward(ctx, g):
            g = g.clone()
            g.view(-1)[0] = torch.nextafter(g.view(-1)[0], torch.tensor(float("inf"), dtype=g.dtype))
            return g

    calls = [0]

    def nudged(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        calls[0] += 1
        query = Nudge.apply(query) if calls[0] == 2 else query                 # the backward of call 2 only
        return ta.autograd_reference(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    return ta.autograd_reference, nudged, calls


def test_gradients_must_be_bitwise_the_same_on_every_repeat():
    from refimpl.harness.rows.grad_cases import run_grad_one
    plain, nudged, calls = _grad_targets()
    specs = SIZES[:4]
    assert all(run_grad_one(Target("p", plain, api="torch-sdpa", repeat=3), s, STORE).status == Status.PASS
               for s in specs)
    res = []
    for s in specs:
        calls[0] = 0
        res.append(run_grad_one(Target("n", nudged, api="torch-sdpa", repeat=3), s, STORE))
    assert all(r.status == Status.NONDETERMINISTIC for r in res), [(r.status, r.detail) for r in res]
    assert all(r.detail.startswith("call 2 of 3 differs from call 1 (dq: 1 of ") and "dk" not in r.detail
               for r in res), res[0].detail
    calls[0] = 0                                             # without --repeat the same target passes
    assert run_grad_one(Target("n", nudged, api="torch-sdpa"), specs[0], STORE).status == Status.PASS


def test_the_kv_cache_a_target_leaves_must_be_bitwise_the_same_on_every_repeat():
    torch = pytest.importorskip("torch")
    kv = _module(Path(__file__).parent / "support" / "kvcache_kernels.py", "kvcache_kernels_det")
    specs = [s for s in select(["kvcache"], "quick", ("float64",)) if s.new_len][:4]
    assert specs

    def rounding_on_call_2():
        calls = [0]

        def attn(q, k_cache, v_cache, k=None, v=None, **kw):
            calls[0] += 1
            out = kv.attn(q, k_cache, v_cache, k, v, **kw)
            if calls[0] == 2:                # the same output, the new keys written rounded up by one ulp
                kv.attn(q, k_cache, v_cache, torch.nextafter(k, torch.full_like(k, float("inf"))), v, **kw)
            return out
        return attn

    ok = [run_one(Target("kv", kv.attn, api="flash-attn-kvcache", repeat=3), s, STORE) for s in specs]
    assert all(r.status == Status.PASS for r in ok), [r.detail for r in ok]
    bad = [run_one(Target("kv", rounding_on_call_2(), api="flash-attn-kvcache", repeat=3), s, STORE) for s in specs]
    assert all(r.status == Status.NONDETERMINISTIC for r in bad), [(r.status, r.detail) for r in bad]
    assert all("(k_cache: " in r.detail and "values differ" in r.detail and "output" not in r.detail
               and "v_cache" not in r.detail for r in bad), bad[0].detail
    once = run_one(Target("kv", rounding_on_call_2(), api="flash-attn-kvcache"), specs[0], STORE)
    assert once.status == Status.PASS                        # one call: nothing to compare


def test_first_difference_names_every_array_that_differs_and_the_writes():
    a = Returned(np.zeros((1, 1, 2, 2)), None, "float64", [], written={"k_cache": np.zeros(3)})
    b = Returned(np.ones((1, 1, 2, 2)), None, "float64", [], written={"k_cache": np.array([0.0, 0.0, 2.0])})
    assert first_difference(a, b) == ("output: 4 of 4 values differ, by up to 1; "
                                      "k_cache: 1 of 3 values differ, by up to 2")
    c = Returned(np.zeros((1, 1, 2, 2)), None, "float64", [])
    assert first_difference(a, c) == "k_cache: written on call 1 only"
