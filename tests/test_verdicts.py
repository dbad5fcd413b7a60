"""The verdict proven on implementations written on purpose (tests/zoo, independent of refimpl): every correct
one conforms in its API, every broken one is caught; hostile ones get their verdict in an isolated worker."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from refimpl.harness.cases import Status
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.cases.families import select
from refimpl.harness.target_spec import Target

ZOO = Path(__file__).parent / "zoo"
STORE = CaseStore()
SPECS = select(None, "quick", ("float64", "float32"))


def _module(name):
    spec = importlib.util.spec_from_file_location(f"zoo_{name}", ZOO / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _entries(module, api):
    mod = _module(module)
    return [(module, e) for e in mod.CATALOG if e["api"] == api]


def _run(module, entry, dtypes=("float64", "float32")):
    mod = _module(module)
    t = Target(entry["name"], getattr(mod, entry["fn"]), api=entry["api"])
    specs = [s for s in SPECS if s.dtype in dtypes] if set(dtypes) <= {"float64", "float32"} else \
        select(None, "quick", tuple(dtypes))
    return [run_one(t, s, STORE, entry.get("masked_rows")) for s in specs]     # an entry may pin a convention


CASES = (_entries("numpy_impls", "refimpl") + _entries("numpy_broken", "refimpl")
         + _entries("torch_sdpa_impls", "torch-sdpa") + _entries("flash_impls", "flash-attn")
         + _entries("jax_impls", "jax") + _entries("hf_impls", "hf")
         + _entries("flash_varlen_impls", "flash-attn-varlen"))
CASES = [(m, e) for m, e in CASES if not e.get("unobservable")]      # a mistake the API cannot show (zoo note)


@pytest.mark.parametrize("module,entry", CASES, ids=[f"{m}:{e['name']}" for m, e in CASES])
def test_correct_implementations_conform_and_broken_ones_are_caught(module, entry):
    # a correct kernel conforms in both precisions; a broken one is caught in its own (float64 unless a float32
    # kernel): the float32 judge is proven on the broken kernels by tests/test_judge_bounds.py
    dtypes = ("float32",) if entry.get("dtype") == "float32" else ("float64", "float32") if entry["correct"] \
        else ("float64",)
    results = _run(module, entry, dtypes)
    failed = [r for r in results if Status(r.status).failed]
    judged = [r for r in results if r.status in (Status.PASS, Status.FAIL)]
    assert len(judged) > 10, f"{entry['name']}: only {len(judged)} cases judged"
    if entry["correct"]:
        assert not failed, f"{entry['name']} is correct but failed: {[(r.id, r.detail) for r in failed[:3]]}"
    else:
        assert len(failed) >= len(dtypes), \
            f"{entry['name']} ({entry['note']}) failed {len(failed)} of {len(judged)} judged cases"


HALF = [(m, e) for m, e in CASES if m in ("torch_sdpa_impls", "flash_impls") and e["correct"]]


@pytest.mark.parametrize("module,entry", HALF, ids=[f"{m}:{e['name']}" for m, e in HALF])
def test_correct_torch_kernels_conform_in_float16_and_bfloat16(module, entry):
    results = _run(module, entry, ("float16", "bfloat16"))
    failed = [(r.id, r.detail) for r in results if Status(r.status).failed]
    assert not failed and sum(r.status == Status.PASS for r in results) > 40, failed[:3]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_a_target_returning_zeros_fails_every_precision_budget(dtype):
    """The budget's quantum is capped (tolerance.budget_conditioning): uncapped, zeros passed half the bfloat16
    cases."""
    import numpy as np

    def zeros(q, k, v, mask=None, scale=None):
        return np.zeros(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype)
    results = [run_one(Target("zeros", zeros), s, STORE) for s in select(None, "quick", (dtype,))]
    passed = [r for r in results if r.status == Status.PASS]
    failed = [r for r in results if r.status == Status.FAIL]
    # a zero output is right only where every row has no key, or every value row is zero
    assert len(failed) > 10 * max(1, len(passed)), (len(passed), [r.id for r in passed])


def test_a_float32_kernel_given_float64_is_told_which_dtype_to_use():
    mod = _module("torch_sdpa_impls")
    t = Target("f32", mod.sdpa_float32, api="torch-sdpa")

    inner = t.fn

    def downcast(*a, **kw):
        return inner(*a, **kw).float()
    t.fn = downcast
    r = run_one(t, next(s for s in SPECS if s.dtype == "float64"), STORE)
    assert r.status == Status.FAIL and "--dtype float32" in r.detail


HOSTILE = {"segfault": "crash", "exit_zero": "crash", "exit_nonzero": "crash", "sys_exit": "crash",
           "alloc": "oom", "raises_not_implemented": None}
# (returns_list & co are refused before the run: tests/test_probe.py)


@pytest.mark.slow
def test_hostile_targets_get_their_verdicts_and_json_stays_valid(tmp_path):
    args = [sys.executable, "-m", "refimpl", "check", "--random", "0", "--quiet", "--format", "json",
            "--timeout", "60", "--max-memory", "400", "--only", "refimpl"]
    for name in HOSTILE:
        args += ["--target", f"{ZOO / 'hostile.py'}:{name}", "--only", f"{ZOO / 'hostile.py'}:{name}"]
    args += ["--target", f"{ZOO / 'hostile.py'}:chatty", "--only", f"{ZOO / 'hostile.py'}:chatty"]
    p = subprocess.run(args + ["--family", "sizes", "--suite", "quick"], capture_output=True, text=True, timeout=240)
    assert p.returncode == 1, p.stderr[-2000:]
    report = json.loads(p.stdout)                                  # 50 MB of prints did not reach stdout
    fam = next(c for c in report["cases"] if c["id"] == "family:sizes")
    assert fam["results"]["refimpl"]["status"] == "pass"
    for name, want in HOSTILE.items():
        got = fam["results"][f"{ZOO / 'hostile.py'}:{name}"]["status"]
        if want is None:
            continue
        assert got in (want, "error"), (name, got)
    assert fam["results"][f"{ZOO / 'hostile.py'}:chatty"]["status"] == "pass"


@pytest.mark.slow
def test_a_hanging_target_times_out_and_the_run_ends_within_the_timeout_plus_seconds():
    import time
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "refimpl", "check", "--random", "0", "--quiet", "--format", "json",
                        "--timeout", "2", "--family", "sizes", "--suite", "quick", "--no-families",
                        "--target", f"{ZOO / 'hostile.py'}:hang", "--only", f"{ZOO / 'hostile.py'}:hang"],
                       capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - t
    assert p.returncode == 1, p.stderr[-1500:]
    statuses = {c["id"]: r["status"] for c in json.loads(p.stdout)["cases"] for r in c["results"].values()}
    assert "timeout" in str(p.stdout) and "pass" not in statuses.values(), statuses
    assert set(statuses.values()) <= {"timeout", "skip"}, statuses        # a fixture row's timeout is not "error"
    assert took < 3 * 2 + 20, f"{took:.1f} s: three timeouts of 2 s, then no more calls"


@pytest.mark.r
def test_a_catalogued_divergence_excuses_only_the_rows_it_explains(rb):
    """One fully masked row in a random case used to mark the whole case as D3: NaN (a convention) on that row
    passes, 42 there fails, and a broken row elsewhere is not excused."""
    from refimpl.harness.rows.r_cases import random_case
    case = random_case(200)
    nan_rows = Target("nan", _module("numpy_impls").nan_masked_rows)
    forty_two = Target("42", _module("numpy_broken").masked_rows_42)
    assert case.run(nan_rows).status == Status.PASS
    o = case.run(forty_two)
    assert o.status == Status.FAIL, o.detail


@pytest.mark.slow
def test_a_target_writing_to_its_inputs_is_reported_and_affects_no_other_cell():
    """The issue's case: a target scaling q in place corrupted the cached vignette inputs for the next target."""
    bad, good = f"{ZOO / 'numpy_broken.py'}:mutates_input", f"{ZOO / 'numpy_impls.py'}:plain"
    p = subprocess.run([sys.executable, "-m", "refimpl", "check", "--random", "20", "--quiet", "--no-families",
                        "--format", "json", "--target", bad, "--only", bad, "--target", good, "--only", good],
                       capture_output=True, text=True, timeout=240)
    rows = {c["id"]: c["results"] for c in json.loads(p.stdout)["cases"]}
    for row in ("vignette:simple_attention", "vignette:complete_attention", "fixture:codefinity/self-attention"):
        if rows[row][good]["status"] == "skip":
            continue                                         # R unavailable: the vignette rows skip for both
        assert rows[row][good]["status"] == "pass", (row, rows[row][good])
        assert rows[row][bad]["status"] in ("error", "FAIL") and "writes to its inputs" in rows[row][bad]["detail"]


@pytest.mark.slow
def test_a_float32_kernel_checked_with_dtype_float32_conforms_on_every_row():
    """The issue's case: a correct float32 kernel failed the float64 fixture rows at 1e7x; with --dtype float32
    those rows are n/a for it (their expectations are float64) and the families judge it by the float32 budget."""
    spec = f"{ZOO / 'numpy_impls.py'}:float32"
    p = subprocess.run([sys.executable, "-m", "refimpl", "check", "--target", spec, "--only", spec, "--random", "0",
                        "--suite", "quick", "--dtype", "float32", "--quiet"],
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0 and "RESULT: all targets conform" in p.stdout, p.stdout[-2000:]
    fixed = [line for line in p.stdout.splitlines() if line.startswith("fixture:codefinity")]
    assert fixed and " n/a" in fixed[0], fixed


def test_a_module_that_crashes_on_import_is_a_usage_error_not_the_end_of_the_run(tmp_path):
    """The user's module is imported in its worker only: a segfault there is exit 2 naming the target and the
    signal (it used to end refimpl check itself with status 139 and no output)."""
    mod = tmp_path / "crashes_on_import.py"
    mod.write_text("import ctypes\nctypes.string_at(0)\n\ndef attn(q, k, v, mask=None, scale=None):\n    return q\n")
    p = subprocess.run([sys.executable, "-m", "refimpl", "check", "--random", "0", "--quiet", "--no-families",
                        "--target", f"{mod}:attn"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, (p.returncode, p.stderr[-1500:])
    assert f"--target '{mod}:attn'" in p.stderr and "SIGSEGV" in p.stderr, p.stderr[-1500:]
    assert "child_loader" not in p.stderr, p.stderr[-1500:]         # the user's words, not refimpl's internals
    wrong = tmp_path / "wrong_signature.py"
    wrong.write_text("def attn(q, k):\n    return q\n")
    p = subprocess.run([sys.executable, "-m", "refimpl", "check", "--random", "0", "--quiet", "--no-families",
                        "--target", f"{wrong}:attn"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "takes 2 positional arguments" in p.stderr and "q, k, v first" in p.stderr, p.stderr
