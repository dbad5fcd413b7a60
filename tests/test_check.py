"""refimpl check: exit codes, a wrong target caught, report formats, layouts, the pytest plugin."""
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from refimpl.harness.reports import report
from refimpl.cli import main

SUPPORT = str(Path(__file__).parent / "support")


@pytest.fixture(autouse=True)
def support_on_path(monkeypatch):
    monkeypatch.syspath_prepend(SUPPORT)


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_default_run_exits_0_and_prints_the_matrix(capsys):
    code, out, _ = run_cli(["check", "--suite", "quick", "--random", "20", "--quiet"], capsys)
    assert code == 0, out
    assert "fixture:cristina-mlm/general-attention" in out and "RESULT: all targets conform" in out
    assert "NumPy" in out and "attention" in out


@pytest.mark.slow
def test_wrong_user_target_exits_1_and_shows_which_cases_and_by_how_much(capsys):
    code, out, _ = run_cli(["check", "--suite", "quick", "--target", "demo_targets:wrong_scale",
                            "--only", "demo_targets:wrong_scale", "--random", "20", "--quiet"], capsys)
    assert code == 1
    assert "NON-CONFORMANCE" in out
    line = next(row for row in out.splitlines() if row.startswith("fixture:cristina-mlm/general-attention"))
    assert "FAIL" in line
    assert "fixture:cristina-mlm/general-attention x demo_targets:wrong_scale: FAIL: " in out
    assert "max abs" in out and "of tolerance" in out


@pytest.mark.slow
def test_good_user_target_with_output_only_conforms(capsys):
    code, out, _ = run_cli(["check", "--suite", "quick", "--target", "demo_targets:output_only",
                            "--only", "demo_targets:output_only", "--random", "20", "--quiet"], capsys)
    assert code == 0, out


@pytest.mark.slow
def test_bshd_layout_adapter(capsys):
    code, out, _ = run_cli(["check", "--suite", "quick", "--target", "demo_targets:bshd", "--layout", "BSHD", "--only",
                            "demo_targets:bshd", "--random", "10", "--quiet"], capsys)
    assert code == 0, out


def test_usage_errors_exit_2(capsys):
    code, _, err = run_cli(["check", "--suite", "quick", "--target", "no_such_module:fn"], capsys)
    assert code == 2 and "cannot import module" in err
    with pytest.raises(SystemExit) as e:
        main(["check", "--format", "yaml"])
    assert e.value.code == 2


@pytest.mark.slow
def test_junit_output_parses(capsys):
    code, out, _ = run_cli(["check", "--suite", "quick", "--format", "junit", "--random", "10", "--quiet"], capsys)
    root = ET.fromstring(out.split("\n", 1)[1] if out.startswith("<?xml") else out)
    suites = root.findall("testsuite")
    assert {s.get("name") for s in suites} >= {"refimpl.refimpl"}
    cases = suites[0].findall("testcase")
    assert len(cases) == int(suites[0].get("tests")) > 10


@pytest.mark.slow
def test_json_output_validates_against_its_documented_shape(capsys):
    code, out, _ = run_cli(["check", "--suite", "quick", "--format", "json", "--random", "10", "--quiet"], capsys)
    doc = json.loads(out)
    s = report.JSON_SCHEMA
    for key, typ in s["top"].items():
        assert isinstance(doc[key], typ), key
    assert doc["schema"] == "refimpl-check/1" and doc["ok"] is (code == 0)
    for case in doc["cases"]:
        for key, typ in s["case"].items():
            assert isinstance(case[key], typ), (case["id"], key)
        assert set(case["results"]) == set(doc["targets"])
        for res in case["results"].values():
            for key, typ in s["result"].items():
                assert isinstance(res[key], typ), (case["id"], key, res)
            assert res["status"] in s["statuses"]


@pytest.mark.slow
def test_html_report_has_heatmaps_for_failing_cells_only(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="heatmaps need matplotlib (Debian python3-matplotlib)")
    ok, bad = tmp_path / "ok.html", tmp_path / "bad.html"
    run_cli(["check", "--no-families", "--random", "5", "--quiet", "--only", "refimpl", "--html", str(ok)], capsys)
    assert "<table>" in ok.read_text() and ok.read_text().count("data:image/png;base64,") == 0
    run_cli(["check", "--no-families", "--random", "0", "--quiet", "--target", "demo_targets:wrong_scale", "--only",
             "demo_targets:wrong_scale", "--html", str(bad)], capsys)
    assert bad.read_text().count("data:image/png;base64,") >= 4


@pytest.mark.slow
def test_no_r_still_checks_every_fixture_and_exits_0():
    env = dict(os.environ, REFIMPL_NO_R="1")
    r = subprocess.run([sys.executable, "-m", "refimpl", "check", "--quiet", "--only", "refimpl", "--only", "r"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "target r: unavailable" in r.stdout and "REFIMPL_NO_R=1" in r.stdout
    fixtures = [row for row in r.stdout.splitlines() if row.startswith("fixture:")]
    assert len(fixtures) >= 11 and all(" pass " in row for row in fixtures), r.stdout


@pytest.mark.slow
def test_pytest_plugin_runs_the_conformance_suite_against_a_user_target():
    env = dict(os.environ, PYTHONPATH=SUPPORT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs", "refimpl.conformance"]
    good = subprocess.run(base + ["--refimpl-target", "demo_targets:good"], env=env, capture_output=True, text=True)
    assert good.returncode == 0, good.stdout[-3000:]
    bad = subprocess.run(base + ["--refimpl-target", "demo_targets:wrong_scale"], env=env, capture_output=True,
                         text=True)
    assert bad.returncode == 1 and "failed" in bad.stdout, bad.stdout[-3000:]
