"""R functions as targets (``R:file.R:fn``, ``R:pkg::fn``) and r_reference/conform.R, on the R zoo
(tests/zoo/r/attention_impls.R: one correct function in two return styles, five broken ones)."""
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from refimpl.attention import scaled_dot_product_attention
from refimpl.errors import UsageError
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, family_case
from refimpl.harness.targets.r_targets import parse_spec
from refimpl.harness.target_spec import load_target

ROOT = Path(__file__).resolve().parents[1]
ZOO = "tests/zoo/r/attention_impls.R"
FAMILIES = ["sizes", "bool-mask", "causal", "window", "scale", "masked-rows", "gqa"]


@pytest.fixture(scope="module")
def rows():
    """Family rows of the quick suite in float64 (one shared store: inputs made once)."""
    specs = select(FAMILIES, "quick", ("float64",))
    store = CaseStore()
    return {f: family_case(f, [s for s in specs if s.family == f], store) for f in FAMILIES}


def _target(fn):
    return load_target(f"R:{ROOT / ZOO}:{fn}")


def _cases(rows, target):
    return {r.id: r for f in FAMILIES for r in rows[f].run(target).cases}


def test_malformed_specs_are_usage_errors_naming_the_spec(tmp_path):
    with pytest.raises(UsageError, match=r"R:nofunction.*R:path/to/file.R:function or R:package::function"):
        parse_spec("R:nofunction")
    with pytest.raises(UsageError, match=r"no file .*missing.R"):
        parse_spec(f"R:{tmp_path}/missing.R:f")
    (tmp_path / "f.R").write_text("g <- function(Q, K, V, mask = NULL) Q\n")
    assert parse_spec(f"R:{tmp_path}/f.R:g") == (str(tmp_path / "f.R"), None, "g")
    assert parse_spec("R:attention::attention") == (None, "attention", "attention")


@pytest.mark.r
def test_a_missing_function_or_package_is_a_usage_error(tmp_path):
    (tmp_path / "f.R").write_text("g <- function(Q, K, V, mask = NULL) Q\n")
    with pytest.raises(UsageError, match=r"defines no object 'h' \(it defines: g\)"):
        load_target(f"R:{tmp_path}/f.R:h")
    with pytest.raises(UsageError, match=r"exports no 'nope'"):
        load_target("R:attention::nope")
    (tmp_path / "bad.R").write_text("g <- function(Q, K, V, mask = NULL) {\n")
    with pytest.raises(UsageError, match=r"cannot load the R function"):
        load_target(f"R:{tmp_path}/bad.R:g")


@pytest.mark.r
@pytest.mark.parametrize("fn", ["attn_correct", "attn_correct_list"])
def test_the_correct_r_function_conforms(rows, fn):
    t = _target(fn)
    for f in FAMILIES:
        out = rows[f].run(t)
        assert out.status == (Status.NA if f == "gqa" else Status.PASS), (f, out.detail)
    assert all(r.returned_weights == (fn == "attn_correct_list") for r in out.cases if r.status == Status.PASS)


@pytest.mark.r
def test_single_calls_slice_batch_dims_and_prescale_q():
    t = _target("attn_correct_list")
    rng = np.random.default_rng(3)
    q, k, v = rng.normal(size=(2, 3, 5, 4)), rng.normal(size=(2, 3, 7, 4)), rng.normal(size=(2, 3, 7, 6))
    keep = rng.uniform(size=(2, 1, 5, 7)) < 0.7
    keep[..., 0] = True
    out, w = t.fn(q, k, v, mask=keep, scale=0.3)
    want, want_w = scaled_dot_product_attention(q, k, v, mask=keep, scale=0.3)
    assert out.shape == (2, 3, 5, 6) and w.shape == (2, 3, 5, 7)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(w, want_w, rtol=0, atol=1e-12)


@pytest.mark.r
def test_one_r_round_trip_per_shape_group_not_per_case(rows, monkeypatch):
    t = _target("attn_correct")
    calls = []
    real = t.fn._rb.batch_function
    monkeypatch.setattr(t.fn._rb, "batch_function", lambda h, arrays: calls.append(len(arrays[0])) or real(h, arrays))
    base = rows["bool-mask"].specs
    specs = base + [replace(s, index=s.index + 1000) for s in base]     # same shapes, other inputs
    res = family_case("bool-mask", specs, CaseStore()).run(t)
    groups = {(s.Sq, s.Sk, s.D, s.Dv) for s in specs}
    assert res.status == Status.PASS
    assert len(calls) == len(groups) < len(specs)
    assert sum(calls) == sum(s.B * s.Hq for s in specs)      # every (b, h) slice exactly once


@pytest.mark.r
def test_wrong_scale_and_mask_polarity_fail(rows):
    scale = _cases(rows, _target("attn_wrong_scale"))
    assert scale["sizes/0000-float64"].status == Status.FAIL
    assert "output:" in scale["sizes/0000-float64"].detail
    polarity = _cases(rows, _target("attn_mask_polarity"))
    masked = [r for i, r in polarity.items() if i.startswith(("bool-mask", "causal"))]
    assert masked and all(r.status == Status.FAIL for r in masked)
    assert all(r.status == Status.PASS for i, r in polarity.items() if i.startswith("sizes"))   # no mask: no bug


@pytest.mark.r
def test_the_one_key_bug_is_an_error_with_rs_message_only_where_sk_is_1(rows):
    res = _cases(rows, _target("attn_one_key_bug"))
    specs = {s.id: s for f in FAMILIES for s in rows[f].specs}
    hit = [i for i in res if specs[i].Sk == 1 and specs[i].Sq > 1 and res[i].status != Status.NA]
    assert hit
    for i, r in res.items():
        if i in hit:
            assert r.status == Status.ERROR and "non-conformable arguments" in r.detail, (i, r.detail)
        else:
            assert r.status in (Status.PASS, Status.NA), (i, r.detail)


@pytest.mark.r
def test_an_r_error_fails_its_case_and_the_rest_of_the_batch_goes_on(rows):
    res = _cases(rows, _target("attn_errors"))
    specs = {s.id: s for f in FAMILIES for s in rows[f].specs}
    big = [i for i, r in res.items() if r.status != Status.NA and specs[i].Sq > 4]
    small = [i for i, r in res.items() if r.status != Status.NA and specs[i].Sq <= 4]
    assert big and small
    for i in big:
        assert res[i].status == Status.ERROR
        assert f"at most 4 queries are supported, got Sq = {specs[i].Sq}" in res[i].detail
    assert all(res[i].status == Status.PASS for i in small)


@pytest.mark.r
def test_r_warnings_are_reported_per_case(rows):
    t = _target("attn_warns")
    out = rows["bool-mask"].run(t)
    assert out.status == Status.PASS and "R warnings in" in out.detail
    assert all("R warnings: attn_warns: masks are experimental" in r.detail for r in out.cases)
    plain = rows["sizes"].run(t)                          # no mask: no warning
    assert plain.status == Status.PASS and not any("R warnings" in r.detail for r in plain.cases)


# --- conform.R: the same verdicts with no Python involved ------------------------------------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from refimpl.harness.reports.export import export
    out = tmp_path_factory.mktemp("export") / "cases"
    export(["scale", "bool-mask", "gqa"], out, suite="quick", dtypes=("float64",))
    return out


def _conform(directory, fn):
    rscript = shutil.which("Rscript")
    if rscript is None:
        pytest.skip("Rscript is not on PATH")
    return subprocess.run([rscript, str(ROOT / "r_reference/conform.R"), str(directory), str(ROOT / ZOO), fn],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.r
def test_conform_r_passes_the_correct_function_on_an_export_and_on_the_fixtures(exported):
    p = _conform(exported, "attn_correct")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "RESULT: all targets conform" in p.stdout and " 0 failed" in p.stdout
    assert "gqa/0000-float64" in p.stdout and "n/a" in p.stdout
    f = _conform(ROOT / "fixtures", "attn_correct_list")
    assert f.returncode == 0 and "r-attention/simple-vignette" in f.stdout, f.stdout + f.stderr


@pytest.mark.slow
@pytest.mark.r
@pytest.mark.parametrize("fn,word,text", [("attn_mask_polarity", "FAIL", "is not less than 1"),
                                          ("attn_errors", "error", "at most 4 queries are supported")])
def test_conform_r_catches_broken_functions(exported, fn, word, text):
    p = _conform(exported, fn)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "RESULT: NON-CONFORMANCE" in p.stdout
    lines = [ln for ln in p.stdout.splitlines() if f" {word} " in ln]
    assert lines and text in lines[0]
    assert " pass " in p.stdout                             # the other cases still ran


@pytest.mark.r
def test_conform_r_usage_errors_exit_2_naming_the_argument(exported):
    p = _conform(exported, "no_such_fn")
    assert p.returncode == 2 and "fn no_such_fn:" in p.stderr and "defines no function" in p.stderr


@pytest.mark.slow
@pytest.mark.r
def test_an_r_function_that_quits_or_hangs_gets_its_verdict_in_the_worker(tmp_path):
    """R runs embedded in the target's worker process: quit() or a hang ends that call, not the run. No verdict
    here races the clock: the hang sleeps 1000 s against a 3 s limit, quit() needs none, and the correct R
    function (the control) runs in a run of its own without a per-call limit (it once timed out at 3 s on a
    loaded machine, 1 run in 3)."""
    import json
    import subprocess
    import sys
    src = tmp_path / "hostile.R"
    src.write_text("r_quits <- function(Q, K, V, mask = NULL) quit(save = 'no', status = 3)\n"
                   "r_hangs <- function(Q, K, V, mask = NULL) { Sys.sleep(1000); Q }\n")
    good = "R:tests/zoo/r/attention_impls.R:attn_correct"
    base = [sys.executable, "-m", "refimpl", "check", "--random", "0", "--suite", "quick", "--family", "sizes",
            "--quiet", "--format", "json"]
    hostile = base + ["--timeout", "3"]
    for fn in ("r_quits", "r_hangs"):
        hostile += ["--target", f"R:{src}:{fn}", "--only", f"R:{src}:{fn}"]
    root = Path(__file__).parents[1]
    control = subprocess.Popen(base + ["--target", good, "--only", good], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=root)
    p = subprocess.run(hostile, capture_output=True, text=True, timeout=240, cwd=root)
    out, err = control.communicate(timeout=240)
    assert p.returncode == 1, p.stderr[-1500:]
    fam = next(c for c in json.loads(p.stdout)["cases"] if c["id"] == "family:sizes")["results"]
    assert fam[f"R:{src}:r_quits"]["status"] == "crash"
    assert fam[f"R:{src}:r_hangs"]["status"] == "timeout"
    assert control.returncode == 0, err[-1500:]
    assert next(c for c in json.loads(out)["cases"] if c["id"] == "family:sizes")["results"][good]["status"] == "pass"


@pytest.mark.slow
@pytest.mark.r
@pytest.mark.parametrize("fn", ["attn_correct", "attn_wrong_scale", "attn_mask_polarity", "attn_one_key_bug"])
def test_conform_r_gives_the_python_runs_verdict_case_by_case(exported, fn):
    """An export judged by R alone (conform.R) and the same cases judged by refimpl check's rows through the
    R target: the same pass / FAIL / n/a on every case (export, R, Python: one contract)."""
    p = _conform(exported, fn)
    assert p.returncode in (0, 1), p.stdout + p.stderr
    r_side = {line.split()[0]: line.split()[1] for line in p.stdout.splitlines()
              if len(line.split()) > 1 and "/" in line.split()[0] and line.split()[1] in ("pass", "FAIL", "n/a",
                                                                                          "error")}
    families = ["scale", "bool-mask", "gqa"]
    specs = select(families, "quick", ("float64",))
    store, target = CaseStore(), _target(fn)
    py = {r.id: r.status for f in families
          for r in family_case(f, [s for s in specs if s.family == f], store).run(target).cases}
    word = {Status.PASS: "pass", Status.FAIL: "FAIL", Status.NA: "n/a", Status.ERROR: "error"}
    assert r_side and set(r_side) == set(py)
    assert r_side == {i: word.get(Status(s), str(s)) for i, s in py.items()}
