"""Gradient conformance of targets (``grad:<family>`` rows): the zoo's backward passes, correct and broken.

Correct implementations conform in float64 and float32 (NumPy) and float64, float32, bfloat16, float16 (torch
autograd); every broken one fails and is diagnosed by its catalogued bug model, and by no other model.
"""
import importlib.util
import json
import math
import re
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from refimpl.backward import sdpa_backward
from refimpl.bugs_backward import MODELS, backward_with
from refimpl.errors import UsageError
from refimpl.harness.cases import CheckRun, Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.rows.grad_cases import Backward, analyse_grad, grad_case, load_backward
from refimpl.harness.target_spec import Target, builtin_targets

ZOO = Path(__file__).resolve().parent / "zoo"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"grad_zoo_{name}", ZOO / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


NB = _load("numpy_backward")
torch = pytest.importorskip("torch")
TA = _load("torch_autograd_impls")
STORE = CaseStore()        # inputs and oracles made once for the whole module


def _rows(target, families, dtypes, backward=None, keep=lambda s: True):
    """{family: (Outcome, diagnosis model ids)} of the grad rows of ``families`` (quick suite) on ``target``."""
    specs = [s for s in select(families, "quick", dtypes) if keep(s)]
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in families:
            case = grad_case(f, [s for s in specs if s.family == f], STORE, backward)
            o = case.run(target)
            models = {line.split(": ", 1)[1].split(" — ")[0] for line in case.diagnoses.get(target.name, [])}
            out[f] = (o, models)
    return out


def _numpy_target():
    return Target("zoo:forward", lambda q, k, v, mask=None, scale=None: q)


# --- the bug models themselves ---------------------------------------------------------------------------

def test_the_models_change_exactly_the_gradient_they_name():
    rng = np.random.default_rng(1)
    q, k, v = rng.normal(size=(1, 4, 6, 8)), rng.normal(size=(1, 2, 6, 8)), rng.normal(size=(1, 2, 6, 3))
    g = rng.normal(size=(1, 4, 6, 3))
    s = 0.3
    ref = sdpa_backward(q, k, v, g, scale=s, enable_gqa=True)
    ok = backward_with(q, k, v, g, scale=s, enable_gqa=True)
    for a, b in zip(ok, ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    dq, dk, dv = backward_with(q, k, v, g, mistake="scale-dq", scale=s, enable_gqa=True)
    np.testing.assert_allclose(dq * s, ref[0], rtol=1e-12, atol=1e-12)     # dQ missing exactly the factor s
    np.testing.assert_allclose(dk, ref[1], rtol=1e-12, atol=1e-12)
    dq, dk, dv = backward_with(q, k, v, g, mistake="gqa-first", scale=s, enable_gqa=True)
    assert not np.allclose(dk, ref[1]) and np.allclose(dq, ref[0])
    with pytest.raises(ValueError, match="Sq == Sk"):
        backward_with(q[..., :5, :], k, v, g[..., :5, :], mistake="ds-transposed-dq", enable_gqa=True)
    assert set(MODELS) == {"bwd-delta-term", "bwd-scale-dq", "bwd-scale-dk", "bwd-ds-transposed", "bwd-gqa-sum",
                           "bwd-masked-nan", "bwd-delta-axis", "bwd-mask-not-reapplied", "bwd-masked-uniform",
                           "bwd-recompute", "bwd-tile-accumulation", "bwd-value-dims", "bwd-scale", "bwd-low-precision",
                           "bwd-forward-mistake", "bwd-layout"}


# --- NumPy backward passes (--backward MOD:FN) --------------------------------------------------------

NP_FAMILIES = ["sizes", "causal", "window", "masked-rows"]


@pytest.mark.parametrize("entry", NB.CATALOG, ids=[e["name"] for e in NB.CATALOG])
def test_numpy_backward_zoo(entry):
    dtypes = ("float32",) if entry["dtype"] == "float32" else ("float64", "float32")
    rows = _rows(_numpy_target(), NP_FAMILIES, dtypes, Backward(entry["fn"], getattr(NB, entry["fn"])))
    statuses = {f: o.status for f, (o, _) in rows.items()}
    models = set().union(*(m for _, m in rows.values()))
    if entry["correct"]:
        assert all(s == Status.PASS for s in statuses.values()), {f: o.detail[:300] for f, (o, _) in rows.items()}
        assert not models
    else:
        assert Status.FAIL in statuses.values(), statuses
        assert models == {entry["model"]}, (models, statuses)


def test_a_float32_backward_fails_the_float64_rule():
    rows = _rows(_numpy_target(), ["sizes"], ("float64",), Backward("grad_float32", NB.grad_float32))
    o, _ = rows["sizes"]
    assert o.status == Status.FAIL and "gradient bound" in o.detail


def test_a_tiny_relative_error_in_dk_fails_float64_but_not_float32():
    def nudged(q, k, v, d_out, mask=None, scale=None):
        dq, dk, dv = NB.grad_plain(q, k, v, d_out, mask=mask, scale=scale)
        return dq, dk * (1 + 1e-7), dv
    rows64 = _rows(_numpy_target(), ["causal"], ("float64",), Backward("nudged", nudged))
    rows32 = _rows(_numpy_target(), ["causal"], ("float32",), Backward("nudged", nudged))
    assert rows64["causal"][0].status == Status.FAIL and "dk" in rows64["causal"][0].detail
    assert rows32["causal"][0].status == Status.PASS, rows32["causal"][0].detail[:300]


# --- torch autograd (hand-written backward passes behind torch-sdpa's signature) ---------------------

TORCH_FAMILIES = ["gqa", "causal", "masked-rows"]


@pytest.mark.parametrize("entry", TA.CATALOG, ids=[e["name"] for e in TA.CATALOG])
def test_torch_autograd_zoo(entry):
    correct = entry["correct"]
    dtypes = ("float64", "float32", "bfloat16", "float16") if correct else ("float64",)
    target = Target("zoo:" + entry["fn"], getattr(TA, entry["fn"]), api="torch-sdpa", torch=True)
    rows = _rows(target, TORCH_FAMILIES, dtypes, keep=lambda s: s.mask != "additive")   # the zoo takes bool masks
    statuses = {f: o.status for f, (o, _) in rows.items()}
    models = set().union(*(m for _, m in rows.values()))
    if correct:
        assert all(s == Status.PASS for s in statuses.values()), {f: o.detail[:300] for f, (o, _) in rows.items()}
        judged = sum(1 for o, _ in rows.values() for r in o.cases if r.status == Status.PASS)
        assert judged >= 40
    else:
        assert Status.FAIL in statuses.values(), statuses
        assert models == {entry["model"]}, (models, statuses)


def test_torch_nan_softmax_forward_has_nan_gradients_and_is_diagnosed():
    """The zoo's sdpa_plain (torch.softmax: its forward's masked-rows convention is "nan") passes the forward
    rows but its gradients of fully masked rows are NaN, not zero."""
    sdpa = _load("torch_sdpa_impls")
    target = Target("zoo:sdpa_plain", sdpa.sdpa_plain, api="torch-sdpa", torch=True)
    rows = _rows(target, ["masked-rows", "sizes"], ("float64",))
    assert rows["masked-rows"][0].status == Status.FAIL and "NaN" in rows["masked-rows"][0].detail
    assert rows["masked-rows"][1] == {"bwd-masked-nan"}
    assert rows["sizes"][0].status == Status.PASS


def test_flash_attn_layout_gradients_conform_in_bfloat16():
    flash = _load("flash_impls")
    target = Target("zoo:flash_online", flash.flash_online, api="flash-attn", torch=True)
    rows = _rows(target, ["gqa", "window"], ("float32", "bfloat16"))
    assert {o.status for o, _ in rows.values()} == {Status.PASS}, {f: o.detail[:300] for f, (o, _) in rows.items()}


# --- who gets gradients, n/a families, diagnoses in the run, --backward loading ------------------------

def test_columns_reference_skip_and_na():
    ref = builtin_targets()["refimpl"]()
    assert _rows(ref, ["sizes"], ("float64",))["sizes"][0].status == Status.REFERENCE
    o = _rows(_numpy_target(), ["sizes"], ("float64",))["sizes"][0]
    assert o.status == Status.SKIP and "--backward" in o.detail
    target = Target("zoo:autograd_correct", TA.autograd_correct, api="torch-sdpa", torch=True)
    o = _rows(target, ["extreme-logits"], ("float64",))["extreme-logits"][0]
    assert o.status == Status.PASS, o.detail          # judged on finiteness: a stable backward passes
    r_fn = Target("R:attn.R:attention", lambda q, k, v, mask=None, scale=None: q)
    assert _rows(r_fn, ["sizes"], ("float64",), Backward("x", NB.grad_plain))["sizes"][0].status == Status.NA


def test_analyse_grad_puts_the_lines_into_the_run():
    target = Target("zoo:autograd_bwd_no_scale_dk", TA.autograd_bwd_no_scale_dk, api="torch-sdpa", torch=True)
    case = grad_case("gqa", select(["gqa"], "quick", ("float64",)), STORE)
    run = CheckRun([case], [target.name], {(case.id, target.name): case.run(target)}, {}, 0.0)
    run.diagnoses[target.name] = ["diagnosis zoo: something forward"]
    analyse_grad(run)
    lines = run.diagnoses[target.name]
    assert lines[0] == "diagnosis zoo: something forward"
    assert len(lines) == 2 and lines[1].startswith(f"diagnosis {target.name}: bwd-scale-dk — ")
    assert not run.ok
    assert case.grad_samples == {}                    # the failing cases' gradients are dropped once read


def test_isolated_targets_get_their_gradients_in_their_worker():
    from refimpl.harness.targets.isolation import IsolatedFunction
    spec = f"{ZOO / 'torch_autograd_impls.py'}:autograd_bwd_gqa_first_head"
    proxy = IsolatedFunction(spec, timeout=60)
    try:
        target = Target(spec, proxy, api="torch-sdpa", torch=True)
        o, models = _rows(target, ["gqa"], ("float64",))["gqa"]
    finally:
        proxy.close()
    assert o.status == Status.FAIL and models == {"bwd-gqa-sum"}


def test_an_in_process_target_with_a_grads_attribute_is_still_differentiated_here():
    """Only the worker proxy's class marks remote gradients: a user's callable object that happens to have a
    ``grads`` attribute is called and differentiated in this process (--no-isolation)."""
    hg = _load("hostile_grads")

    class Kernel:
        grads = []                                  # e.g. a list the author keeps for debugging

        def __call__(self, *args, **kwargs):
            return hg.sdpa_correct(*args, **kwargs)
    o = _rows(Target("kernel", Kernel(), api="torch-sdpa", torch=True), ["gqa"], ("float64",))["gqa"][0]
    assert o.status == Status.PASS, o.detail


def _hostile(name, timeout=60.0):
    from refimpl.harness.targets.isolation import IsolatedFunction
    spec = f"{ZOO / 'hostile_grads.py'}:{name}"
    return spec, IsolatedFunction(spec, timeout=timeout)


def _statuses(outcome):
    return Counter(Status(r.status).value for r in outcome.cases)


@pytest.mark.slow
def test_a_target_that_segfaults_in_its_backward_gets_crash_verdicts_and_the_rest_go_on():
    spec, proxy = _hostile("sdpa_segfault_in_backward")
    try:
        o = _rows(Target(spec, proxy, api="torch-sdpa", torch=True), ["sizes"], ("float64",))["sizes"][0]
    finally:
        proxy.close()
    n = _statuses(o)
    # the worker dies on its 3rd backward and restarts (2 passes per crash) until the death-rate rule
    # (refimpl/harness/targets/call_policy.py) stops it: 3 deaths in 9 backward calls; the rest are not called
    assert set(n) == {"crash", "pass"} and n["pass"] == 6, n
    died = [r.detail for r in o.cases if r.status == Status.CRASH]
    assert sum("SIGSEGV" in d for d in died) == 3, died[:4]
    assert all("not called: 3 of its last 9 calls died" in d for d in died[3:]) and len(died) > 3, died[3:5]
    correct_spec, correct = _hostile("sdpa_correct")
    try:
        ok = _rows(Target(correct_spec, correct, api="torch-sdpa", torch=True), ["sizes"], ("float64",))["sizes"][0]
    finally:
        correct.close()
    assert ok.status == Status.PASS, ok.detail


@pytest.mark.slow
def test_sys_exit_and_a_hang_in_the_backward_are_that_case_s_verdict():
    spec, proxy = _hostile("sdpa_sys_exit_in_backward")
    try:
        o = _rows(Target(spec, proxy, api="torch-sdpa", torch=True), ["scale"], ("float64",))["scale"][0]
    finally:
        proxy.close()
    assert set(_statuses(o)) == {"crash"} and "exit" in o.cases[0].detail.lower(), o.cases[0].detail
    spec, proxy = _hostile("sdpa_hang_in_backward", timeout=2.0)
    t = time.perf_counter()
    target = Target(spec, proxy, api="torch-sdpa", torch=True)
    try:
        o = _rows(target, ["sizes"], ("float64",))["sizes"][0]
        took = time.perf_counter() - t
        # the backward's timeouts stop further gradient calls, not the forward ones (--explore runs after)
        forward = [run_one(target, s, STORE) for s in select(["sizes"], "quick", ("float64",))[:2]]
    finally:
        proxy.close()
    n = _statuses(o)
    assert set(n) == {"timeout"} and n["timeout"] == len(o.cases), n
    assert sum("not called" in r.detail for r in o.cases) == len(o.cases) - 3
    assert took < 3 * 2 + 20, f"{took:.1f} s: three timeouts of 2 s, then no more calls"
    assert [Status(r.status) for r in forward] == [Status.PASS] * 2, [r.detail for r in forward]


@pytest.mark.slow
def test_a_backward_function_that_exits_runs_in_its_own_worker():
    from refimpl.harness.targets.isolation import IsolatedFunction
    spec = f"{ZOO / 'hostile_grads.py'}:grad_exit_every_second_call"
    backward = load_backward(spec)
    backward.fn = proxy = IsolatedFunction(spec, timeout=60)
    try:
        o = _rows(_numpy_target(), ["batched-heads"], ("float64",), backward)["batched-heads"][0]
    finally:
        proxy.close()
    n = _statuses(o)
    died = [r.detail for r in o.cases if r.status == Status.CRASH]
    # pass, exit, pass, exit, pass, exit: 3 deaths in 6 calls, then the death-rate rule stops calling it
    assert set(n) == {"crash", "pass"} and n["pass"] == 3 and sum("exit" in d.lower() for d in died[:3]) == 3, n
    assert all("not called: 3 of its last 6 calls died" in d for d in died[3:]) and len(died) > 3, died[3:5]


@pytest.mark.slow
def test_check_grad_survives_a_crash_in_autograd_and_a_hanging_backward_and_json_stays_valid():
    target = f"{ZOO / 'hostile_grads.py'}:sdpa_segfault_in_backward"
    p = subprocess.run([sys.executable, "-m", "refimpl", "check", "--random", "0", "--quiet", "--format", "json",
                        "--family", "scale", "--suite", "quick", "--dtype", "float64", "--grad",
                        "--timeout", "3", "--api", "torch-sdpa", "--target", target, "--only", target],
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 1, p.stderr[-2000:]
    rows = {c["id"]: c["results"][target] for c in json.loads(p.stdout)["cases"]}
    assert rows["family:scale"]["status"] == "pass"                     # the forward rows are untouched
    assert rows["grad:scale"]["status"] == "crash" and "SIGSEGV" in rows["grad:scale"]["detail"], rows["grad:scale"]
    target = f"{ZOO / 'numpy_impls.py'}:plain"
    p = subprocess.run([sys.executable, "-m", "refimpl", "check", "--random", "0", "--quiet", "--format", "json",
                        "--family", "scale", "--suite", "quick", "--dtype", "float64", "--timeout", "3",
                        "--backward", f"{ZOO / 'hostile_grads.py'}:grad_hang", "--target", target, "--only", target],
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 1, p.stderr[-2000:]
    rows = {c["id"]: c["results"][target] for c in json.loads(p.stdout)["cases"]}
    assert rows["family:scale"]["status"] == "pass"
    assert rows["grad:scale"]["status"] == "timeout", rows["grad:scale"]


def test_load_backward_errors_name_the_flag(tmp_path):
    with pytest.raises(UsageError, match="--backward 'no_such_mod_xyz:fn'"):
        load_backward("no_such_mod_xyz:fn")
    f = tmp_path / "bw.py"
    f.write_text("def fwd_only(q, k, v, mask=None, scale=None):\n    return q\n")
    with pytest.raises(UsageError, match=r"--backward .*expected FN\(q, k, v, d_out, mask=None, scale=None\)"):
        load_backward(f"{f}:fwd_only")
    from refimpl.harness.targets.isolation import isolated

    def isolate(spec, check):
        return isolated(spec, check, flag="--backward")
    with pytest.raises(UsageError, match="--backward 'no_such_mod_xyz:fn': cannot import module"):
        load_backward("no_such_mod_xyz:fn", isolate)                     # the same words from the worker
    with pytest.raises(UsageError, match=r"--backward .*expected FN\(q, k, v, d_out, mask=None, scale=None\)"):
        load_backward(f"{f}:fwd_only", isolate)
    f.write_text("import os\nos._exit(7)\n")                          # a module that ends its process on import
    with pytest.raises(UsageError, match=r"--backward .*the worker could not load it: .*os._exit\(7\)"):
        load_backward(f"{f}:fwd_only", isolate)
    b = load_backward(f"{ZOO / 'numpy_backward.py'}:grad_plain")
    assert callable(b.fn) and math.isfinite(float(np.asarray(b.fn(*(np.ones((2, 3)),) * 4)[0]).sum()))


def test_bshd_layouts_transpose_inputs_and_gradients():
    """A NumPy backward and a torch-tensor target that both take (B, S, H, D) conform; so a missed transposition
    of the gradients would fail (the shapes differ whenever S != H)."""
    def grad_bshd(q, k, v, d_out, mask=None, scale=None):
        t = [np.swapaxes(a, 1, 2) for a in (q, k, v, d_out)]                 # (B, S, H, D) -> (B, H, S, D)
        return tuple(np.swapaxes(g, 1, 2) for g in NB.grad_plain(*t, mask=mask, scale=scale))

    def attn_bshd(q, k, v, mask=None, scale=None):
        q, k, v = (a.transpose(1, 2) for a in (q, k, v))
        s = q.shape[-1] ** -0.5 if scale is None else scale
        scores = (q @ k.transpose(-2, -1)) * s
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return (torch.softmax(scores, dim=-1) @ v).transpose(1, 2)

    numpy_target = Target("zoo:bshd", lambda q, k, v, mask=None, scale=None: q, layout="BSHD")
    o, _ = _rows(numpy_target, ["batched-heads"], ("float64",), Backward("grad_bshd", grad_bshd))["batched-heads"]
    assert o.status == Status.PASS, o.detail[:300]
    torch_target = Target("zoo:attn_bshd", attn_bshd, layout="BSHD", torch=True)
    o, _ = _rows(torch_target, ["batched-heads"], ("float64", "float32"))["batched-heads"]
    assert o.status == Status.PASS, o.detail[:300]
    wrong = Backward("grad_plain", NB.grad_plain)                             # ignores the layout
    o, _ = _rows(numpy_target, ["batched-heads"], ("float64",), wrong)["batched-heads"]
    assert o.status in (Status.FAIL, Status.ERROR)


def _numpy_backward_with(mistake):
    """A --backward function (refimpl's protocol) making ``mistake``: k, v may come with one head (MQA, broadcast),
    whose dk, dv are then the sums over the query heads (unless the mistake is about that)."""
    def fn(q, k, v, d_out, mask=None, scale=None):
        mqa = k.shape[1] == 1 and q.shape[1] > 1
        kk, vv = (np.repeat(a, q.shape[1], axis=1) if mqa else a for a in (k, v))
        made = "none" if mistake == "gqa-last" else mistake          # gqa-last is made below, not by the model
        dq, dk, dv = backward_with(q, kk, vv, d_out, mistake=made, mask=mask, scale=scale)
        if mqa and mistake == "gqa-last":                # one buffer per kv head, assigned per query head
            dk_kv, dv_kv = np.zeros_like(k), np.zeros_like(v)
            for h in range(q.shape[1]):
                dk_kv[:, 0], dv_kv[:, 0] = dk[:, h], dv[:, h]
            dk, dv = dk_kv, dv_kv
        elif mqa:
            dk, dv = (a.mean(axis=1, keepdims=True) if mistake == "gqa-mean" else a.sum(axis=1, keepdims=True)
                      for a in (dk, dv))
        return dq, dk, dv
    return fn


@pytest.mark.parametrize("mistake,model,families", [
    ("delta-axis", "bwd-delta-axis", NP_FAMILIES), ("unmasked", "bwd-mask-not-reapplied", NP_FAMILIES),
    ("gqa-mean", "bwd-gqa-sum", ["gqa"]), ("gqa-last", "bwd-gqa-sum", ["gqa"]),
    ("none", None, NP_FAMILIES + ["gqa"])])
def test_a_numpy_backward_with_each_mistake_is_named_by_its_model(mistake, model, families):
    rows = _rows(_numpy_target(), families, ("float64",), Backward(mistake, _numpy_backward_with(mistake)))
    statuses = {f: o.status for f, (o, _) in rows.items()}
    models = set().union(*(m for _, m in rows.values()))
    if model is None:                                   # the right backward, MQA given broadcast: every row passes
        assert set(statuses.values()) == {Status.PASS} and not models, {f: o.detail[:300] for f, (o, _) in rows.items()}
        return
    assert Status.FAIL in statuses.values() and models == {model}, (models, statuses)


def _unstabilised(q, k, v, d_out, mask=None, scale=None):
    """The textbook backward with P = exp(S) / sum exp(S) (a sum of 0 read as 1), the row max never subtracted."""
    s = (1.0 / np.sqrt(q.shape[-1]) if scale is None else scale) * q @ np.swapaxes(k, -1, -2)
    if mask is not None:
        s = np.where(mask, s, -np.inf) if np.asarray(mask).dtype == bool else s + mask
    with np.errstate(all="ignore"):
        e = np.exp(s)
        z = e.sum(axis=-1, keepdims=True)
        p = e / np.where(z == 0, 1.0, z)
        o = p @ v
        ds = p * (d_out @ np.swapaxes(v, -1, -2) - np.sum(d_out * o, axis=-1, keepdims=True))
        c = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
        return c * ds @ k, c * np.swapaxes(ds, -1, -2) @ q, np.swapaxes(p, -1, -2) @ d_out


def test_a_backward_that_overflows_on_saturated_scores_fails_the_extreme_logits_gradient_row():
    """Gradients of a saturated softmax are judged on finiteness: exp(S) without the row max is inf / inf there."""
    target = Target("user:forward", lambda q, k, v, mask=None, scale=None: q)
    o = _rows(target, ["extreme-logits"], ("float64",), Backward("numpy", _unstabilised))["extreme-logits"][0]
    assert o.status == Status.FAIL and "NaN or inf" in o.detail, o.detail
    fine = _rows(target, ["sizes"], ("float64",), Backward("numpy", _unstabilised))["sizes"][0]
    assert fine.status == Status.PASS, fine.detail      # right wherever exp(S) stays in range


def test_a_backward_without_the_row_max_is_named_as_a_recompute_from_the_wrong_lse():
    target = Target("user:forward", lambda q, k, v, mask=None, scale=None: q)
    specs = select(["extreme-logits", "sizes"], "quick", ("float64",))
    lines = []
    for f in ("extreme-logits", "sizes"):
        case = grad_case(f, [s for s in specs if s.family == f], STORE, Backward("numpy", _unstabilised))
        case.run(target)
        lines += case.diagnoses.get(target.name, [])
    assert len(lines) == 1 and ": bwd-recompute — " in lines[0] and "the row max never subtracted" in lines[0], lines


def test_nan_gradients_on_saturated_16_bit_scores_are_left_out_of_a_fit_on_cases_judged_by_value():
    """A backward with dK's scale missing also returns NaN on float16 extreme-logits cases (exp(S) without the row
    max): the model is fitted on the cases judged by value, and the line counts the ones left out."""
    def both(q, k, v, d_out, mask=None, scale=None):
        dq, dk, dv = _unstabilised(q, k, v, d_out, mask, scale)
        return dq, dk / (1.0 / np.sqrt(q.shape[-1]) if scale is None else scale), dv
    target = Target("user:forward", lambda q, k, v, mask=None, scale=None: q)
    specs = select(["extreme-logits"], "quick", ("float16",)) + select(["sizes"], "quick", ("float64",))
    cases = [grad_case(f, [s for s in specs if s.family == f], STORE, Backward("numpy", both))
             for f in ("extreme-logits", "sizes")]
    results = {(c.id, target.name): c.run(target) for c in cases}
    run = CheckRun(cases, [target.name], results, {}, 0.0)
    analyse_grad(run)
    lines = run.diagnoses.get(target.name, [])
    assert len(lines) == 1 and ": bwd-scale-dk — " in lines[0], lines
    assert re.search(r"\(fitted on the failing cases judged by value; \d+ 16-bit extreme-logits cases with NaN or "
                     r"inf gradients left out\)$", lines[0]), lines


def _max_floor(q, k, v, d_out, mask=None, scale=None):
    """The textbook backward with P recomputed from a running max started at 0 (max(0, row max)): rows whose kept
    scores all lie far below 0 underflow to zero weights."""
    c = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = c * q @ np.swapaxes(k, -1, -2)
    if mask is not None:
        s = np.where(mask, s, -np.inf) if np.asarray(mask).dtype == bool else s + mask
    with np.errstate(all="ignore"):
        e = np.exp(s - np.maximum(s.max(axis=-1, keepdims=True), 0.0))
        z = e.sum(axis=-1, keepdims=True)
        p = e / np.where(z == 0, 1.0, z)
        o = p @ v
        ds = p * (d_out @ np.swapaxes(v, -1, -2) - np.sum(d_out * o, axis=-1, keepdims=True))
        return c * ds @ k, c * np.swapaxes(ds, -1, -2) @ q, np.swapaxes(p, -1, -2) @ d_out


def test_saturated_float64_gradients_are_judged_by_value():
    """A running max floored at 0 zeroes the weights of rows whose scores lie far below it: finite, wrong values,
    caught on the quick suite's float64 extreme-logits cases (only 16-bit cases are judged on finiteness alone)."""
    target = Target("user:forward", lambda q, k, v, mask=None, scale=None: q)
    o = _rows(target, ["extreme-logits"], ("float64",), Backward("numpy", _max_floor))["extreme-logits"][0]
    assert o.status == Status.FAIL and "NaN or inf" not in o.detail, o.detail
