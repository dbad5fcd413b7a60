"""JavaScript targets (--target js:kernel.mjs:fn, a Node process per target) and tools/conform.mjs (an export
checked with Node alone). The kernels are tests/zoo/js (two correct, six broken, written on purpose by a helper
that did not read the harness). Without node these tests skip saying so (tools/setup.sh installs it)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from refimpl.errors import UsageError
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.target_spec import load_target
from refimpl.harness.targets.isolation import isolator

ROOT = Path(__file__).resolve().parents[1]
JS = ROOT / "tests" / "zoo" / "js"
STORE = CaseStore()
QUICK = select(None, "quick", ("float64", "float32"))
pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="no node on PATH: JavaScript targets need "
                                                                     "Node.js (tools/setup.sh installs it)")


def _results(spec, specs=QUICK, isolate=None):
    t = load_target(spec, isolate=isolate)
    try:
        return t, [run_one(t, s, STORE) for s in specs]
    finally:
        t.fn.close()


@pytest.mark.parametrize("fn", ["attn", "attn_online"])
def test_a_correct_js_kernel_conforms(fn):
    t, results = _results(f"js:{JS / 'correct.mjs'}:{fn}")
    assert t.api == "js"
    judged = [r for r in results if r.status in (Status.PASS, Status.FAIL)]
    assert len(judged) > 100 and not [r for r in results if Status(r.status).failed], \
        [(r.id, r.detail) for r in results if Status(r.status).failed][:3]


@pytest.mark.parametrize("fn,status,words", [
    ("attn_no_max", Status.FAIL, ""), ("attn_mask_inverted", Status.FAIL, ""), ("attn_gqa_modulo", Status.FAIL, ""),
    ("attn_float32_typed_accumulator", Status.FAIL, ""),
    ("attn_throws_on_mask", Status.ERROR, "masks not supported"), ("attn_wrong_length", Status.ERROR, "B*Hq*Sq*Dv")])
def test_a_broken_js_kernel_is_caught_and_says_why(fn, status, words):
    specs = [s for s in QUICK if s.dtype == "float64"]
    _, results = _results(f"js:{JS / 'broken.mjs'}:{fn}", specs)
    bad = [r for r in results if r.status == status]
    assert bad and all(words in r.detail for r in bad), \
        [(r.status, r.detail) for r in results if r.status != "pass"][:2]


def test_a_js_target_runs_isolated_and_a_missing_export_is_a_usage_error():
    t, results = _results(f"js:{JS / 'correct.mjs'}:attn", [s for s in QUICK if s.family == "sizes"][:4],
                          isolate=isolator(timeout=60, max_memory_mib=None, flag="--target"))
    assert all(r.status == Status.PASS for r in results)
    with pytest.raises(UsageError, match='exports no function "nope"'):
        load_target(f"js:{JS / 'correct.mjs'}:nope")
    with pytest.raises(UsageError, match="no file"):
        load_target("js:/nonexistent/k.mjs:attn")


def test_conform_mjs_gives_the_python_runs_verdicts(tmp_path):
    """The same export (float64 and float32), judged by Node alone, passes the correct kernel and fails the broken one
    on the same cases as refimpl check does (float32 cases by the export's budget: refimpl check's own)."""
    out = tmp_path / "cases"
    p = subprocess.run([sys.executable, "-m", "refimpl", "export", "--family", "bool-mask", "--family", "gqa",
                        "--family", "masked-rows", "--suite", "quick", "--dtype", "float64,float32", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    for module, fn, code in (("correct.mjs", "attn", 0), ("broken.mjs", "attn_mask_inverted", 1)):
        r = subprocess.run(["node", str(ROOT / "tools" / "conform.mjs"), str(out), str(JS / module), fn],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == code, r.stdout[-800:] + r.stderr
        assert r.stdout.splitlines()[-1] == ("RESULT: all targets conform" if code == 0 else "RESULT: NON-CONFORMANCE")
        node = {line.split()[-1] if line.startswith("pass") else line.split()[2].rstrip(":"): line.split()[0]
                for line in r.stdout.splitlines() if line.startswith(("pass", "FAIL"))}
        index = json.loads((out / "index.json").read_text())
        specs = {s.id: s for s in select(["bool-mask", "gqa", "masked-rows"], "quick", ("float64", "float32"))}
        t = load_target(f"js:{JS / module}:{fn}")
        try:
            py = {c["id"]: run_one(t, specs[c["id"]], STORE).status for c in index["cases"] if c["id"] in node}
        finally:
            t.fn.close()
        assert node and {i: ("pass" if s == Status.PASS else "FAIL") for i, s in py.items()} == node
