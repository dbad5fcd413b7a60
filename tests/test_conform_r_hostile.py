"""r_reference/conform.R against hostile R functions (tests/zoo/r/hostile_impls.R) and malformed case files:
each attack ends as its case's verdict (crash, timeout, error), the other cases are still judged, and the run
ends with its count, RESULT: NON-CONFORMANCE and exit 1 (issue #27 item 1)."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from refimpl.harness.cases.families import family_specs

pytestmark = [pytest.mark.r, pytest.mark.slow]      # R subprocess runs with per-call timeouts: the slow leg

ROOT = Path(__file__).resolve().parents[1]
CONFORM = ROOT / "r_reference/conform.R"
HOSTILE = ROOT / "tests/zoo/r/hostile_impls.R"
ZOO = ROOT / "tests/zoo/r/attention_impls.R"
LINE = re.compile(r"^(\S+)\s+(pass|FAIL|error|crash|timeout|n/a)\s+(.*)$")


GQA_QUICK = len(family_specs("gqa", "quick", ("float64",)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The export tests/test_r_targets.py uses: 14 cases an R function can express (47 calls), and n/a the gqa
    family's quick cases (an R function has no grouped heads: GQA_QUICK of them)."""
    from refimpl.harness.reports.export import export
    out = tmp_path_factory.mktemp("export") / "cases"
    export(["scale", "bool-mask", "gqa"], out, suite="quick", dtypes=("float64",))
    return out


@pytest.fixture(scope="module")
def scale_only(exported, tmp_path_factory):
    """The export's scale cases alone (4 cases of one call each): for the checks that need every case to run."""
    out = tmp_path_factory.mktemp("scale") / "cases"
    shutil.copytree(exported / "scale", out / "scale")
    index = json.loads((exported / "index.json").read_text())
    index["cases"] = [c for c in index["cases"] if c["family"] == "scale"]
    (out / "index.json").write_text(json.dumps(index))
    return out


def _conform(directory, src, fn, tmp_path, r_timeout=None):
    """conform.R DIR src fn, run in tmp_path; REFIMPL_R_TIMEOUT only when r_timeout is given (default 60 s)."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        pytest.skip("Rscript is not on PATH")
    e = {k: v for k, v in os.environ.items() if k != "REFIMPL_R_TIMEOUT"}
    e["REFIMPL_HOSTILE_COUNTER"] = str(tmp_path / "calls")       # the hostile functions' call counter
    if r_timeout is not None:
        e["REFIMPL_R_TIMEOUT"] = r_timeout
    return subprocess.run([rscript, str(CONFORM), str(directory), str(src), fn], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path, env=e)


def _verdicts(p):
    """{case id: (status, detail)} from conform.R's stdout."""
    return {m[1]: (m[2], m[3]) for m in map(LINE.match, p.stdout.splitlines()) if m}


def _judged(directory):
    """The ids of the cases an R function can express, in order, with their number of calls (B * Hq)."""
    out = []
    for row in json.loads((directory / "index.json").read_text())["cases"]:
        if row["r_protocol"] is None:
            f = json.loads((directory / row["file"]).read_text())["features"]
            out.append((row["id"], f["B"] * f["Hq"]))
    return out


def _case_of_call(directory, n):
    """The id of the case whose slices include the n-th call of the run."""
    seen = 0
    for i, calls in _judged(directory):
        seen += calls
        if seen >= n:
            return i
    raise AssertionError(n)


def _non_conformance(p):
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stdout.splitlines()[-1] == "RESULT: NON-CONFORMANCE", p.stdout
    assert re.search(r"^\d+ passed, \d+ failed \(", p.stdout, re.M), p.stdout


def _others_pass(p, directory, hit, status, text):
    v = _verdicts(p)
    ids = [i for i, _ in _judged(directory)]
    assert set(ids) <= set(v), p.stdout                     # every case has its verdict
    assert v[hit][0] == status and text in v[hit][1], v[hit]
    assert all(v[i][0] == "pass" for i in ids if i != hit), p.stdout
    assert f"{len(ids) - 1} passed, 1 failed" in p.stdout, p.stdout


def test_the_correct_function_still_conforms(exported, tmp_path):
    p = _conform(exported, ZOO, "attn_correct", tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.splitlines()[-1] == "RESULT: all targets conform"
    v = _verdicts(p)
    assert all(v[i][0] == "pass" for i, _ in _judged(exported))
    assert f" 0 failed (0 FAIL, 0 error), {GQA_QUICK} n/a" in p.stdout


def test_quit_in_the_third_call_is_that_cases_crash_and_the_run_goes_on(exported, tmp_path):
    p = _conform(exported, HOSTILE, "hostile_quit_third", tmp_path)
    _non_conformance(p)
    _others_pass(p, exported, _case_of_call(exported, 3), "crash", "R ended during the call")
    assert "(0 FAIL, 0 error, 1 crash)" in p.stdout


def test_a_hang_in_the_second_call_is_that_cases_timeout_and_the_run_goes_on(exported, tmp_path):
    p = _conform(exported, HOSTILE, "hostile_hang_second", tmp_path, r_timeout="2")
    _non_conformance(p)
    _others_pass(p, exported, _case_of_call(exported, 2), "timeout", "more than 2 s")
    assert "(0 FAIL, 0 error, 1 timeout)" in p.stdout


def test_results_assignment_does_not_reach_the_checkers_verdicts(exported, tmp_path):
    """results <<- list() in every call, mask ignored: the original conform.R printed one verdict (the last)."""
    p = _conform(exported, HOSTILE, "hostile_clobber", tmp_path)
    _non_conformance(p)
    plain = _conform(exported, HOSTILE, "ignore_mask", tmp_path)      # the same mask bug without the assignment
    assert _verdicts(p) == _verdicts(plain) and set(_verdicts(p)) >= {i for i, _ in _judged(exported)}
    assert p.stdout.replace("hostile_clobber", "ignore_mask") == plain.stdout
    assert any(s == "FAIL" for s, _ in _verdicts(p).values())
    f = _conform(ROOT / "fixtures", HOSTILE, "hostile_clobber", tmp_path)   # no masks: it is correct there
    assert f.returncode == 0, f.stdout + f.stderr
    fv = _verdicts(f)
    assert len(fv) > 1 and "r-attention/simple-vignette" in fv and all(s == "pass" for s, _ in fv.values())
    assert f"{len(fv)} passed, 0 failed" in f.stdout


@pytest.mark.parametrize("fn,text", [
    ("hostile_character", 'returned a character vector of length 1 ("attention output")'),
    ("hostile_null", "returned NULL;"),
    ("hostile_wrong_shape", "double matrix as the output; the protocol expects a numeric"),
    ("hostile_list_char", "returned list(character, matrix);"),
])
def test_a_value_that_is_not_a_numeric_matrix_is_each_cases_error_naming_it(scale_only, tmp_path, fn, text):
    p = _conform(scale_only, HOSTILE, fn, tmp_path)
    _non_conformance(p)
    v = _verdicts(p)
    ids = [i for i, _ in _judged(scale_only)]
    assert len(ids) == 4 and all(v[i][0] == "error" for i in ids), p.stdout   # every case still judged
    assert text in v["scale/0000-float64"][1], v["scale/0000-float64"]
    assert "0 passed, 4 failed (0 FAIL, 4 error)" in p.stdout


def test_a_malformed_case_file_is_that_cases_error_naming_the_file(exported, tmp_path):
    bad = tmp_path / "cases"
    shutil.copytree(exported, bad)
    truncated, missing = "bool-mask/0003-float64", "scale/0001-float64"
    (bad / f"{truncated}.json").write_text((exported / f"{truncated}.json").read_text()[:300])   # invalid JSON
    case = json.loads((exported / f"{missing}.json").read_text())
    del case["inputs"]["q"]                                                                   # a missing field
    (bad / f"{missing}.json").write_text(json.dumps(case))
    p = _conform(bad, ZOO, "attn_correct", tmp_path)
    _non_conformance(p)
    v = _verdicts(p)
    assert v[truncated][0] == "error" and f"case file {truncated}.json:" in v[truncated][1], v[truncated]
    assert v[missing][0] == "error" and f"case file {missing}.json: inputs.q is missing" in v[missing][1]
    assert all(v[i][0] == "pass" for i, _ in _judged(exported) if i not in (truncated, missing)), p.stdout
    assert "(0 FAIL, 2 error)" in p.stdout


def test_a_file_that_quits_or_fails_at_its_top_level_is_a_usage_error(scale_only, tmp_path):
    (tmp_path / "quits.R").write_text("quit(status = 0)\nf <- function(Q, K, V, mask = NULL) Q\n")
    p = _conform(scale_only, tmp_path / "quits.R", "f", tmp_path)
    assert p.returncode == 2 and "R ended while sourcing it" in p.stderr, p.stdout + p.stderr
    p = _conform(scale_only, ZOO, "attn_correct", tmp_path, r_timeout="soon")
    assert p.returncode == 2 and "REFIMPL_R_TIMEOUT=soon" in p.stderr, p.stdout + p.stderr
