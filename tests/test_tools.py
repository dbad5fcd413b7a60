"""The setup script and the benchmark command work (figures are printed, never asserted)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
                    reason="runs only under the project's own Debian setup (.venv made by tools/setup.sh), "
                           "not on the pip route, where setup.sh would try to install Debian packages")
def test_setup_is_idempotent_a_second_run_installs_nothing():
    r = subprocess.run(["bash", str(ROOT / "tools" / "setup.sh")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("[setup]")]
    assert len(lines) == 4 and not any("run:" in line for line in lines), lines
    assert "attention" in r.stdout and "Debian packages present" in r.stdout


@pytest.mark.slow
def test_bench_prints_figures():
    r = subprocess.run([sys.executable, "-m", "refimpl", "bench", "--quick", "--only", "accuracy"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "float32 max abs error vs float64 oracle" in r.stdout and "online / plain" in r.stdout


def test_bench_refuses_an_unknown_section():
    r = subprocess.run([sys.executable, "-m", "refimpl", "bench", "--only", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown section" in r.stderr


# --- tools/mutation_check.py (issue #18) ---------------------------------------------------------------

def _mutation_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "tools" / "mutation_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mutation_tool_makes_each_kind_of_mutant_from_the_syntax_tree():
    import ast
    mc = _mutation_tool()
    src = ("def f(a, b):\n    if a < b and b == 0:\n        return -a[1:b] * 2.5 + 0\n    return None\n")
    tree = ast.parse(src)
    whats = sorted(w for n in ast.walk(tree) for w, _ in mc.operators(n))
    assert whats == sorted(["+->-", "*->/", "<-><=", "==->!=", "and->or", "const 2.5->5.0", "const 0->1", "const 0->1",
                            "const 1->2", "drop unary -", "return None", "if False", "if True", "slice lower+1",
                            "slice upper-1"]), whats
    ids = subprocess.run([sys.executable, str(ROOT / "tools" / "mutation_check.py"), "--list", "--module", "softmax"],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout.splitlines()
    assert ids[-1].endswith("mutants in softmax") and len(ids) > 10
    assert all(i.startswith("softmax:") for i in ids[:-1]) and any(i.endswith(":return None") for i in ids)


def test_mutation_tool_kills_a_mutant_in_a_private_copy_and_leaves_the_tree_alone(tmp_path):
    before = (ROOT / "refimpl" / "softmax.py").read_bytes()
    ids = subprocess.run([sys.executable, str(ROOT / "tools" / "mutation_check.py"), "--list", "--module", "softmax"],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout.splitlines()
    mutant = next(i for i in ids if i.endswith(":return None"))
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "mutation_check.py"), "--module", "softmax", "--only",
                        mutant, "--timeout", "120", "--work", str(tmp_path / "w"), "--json", str(tmp_path / "r.json")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "KILLED" in r.stdout and "mutation score 100.0%: 1 killed, 0 equivalent, 0 survived of 1 mutants" in r.stdout
    import json
    assert json.loads((tmp_path / "r.json").read_text())[0]["status"] == "KILLED"
    assert (tmp_path / "w" / "refimpl" / "softmax.py").read_text() == (ROOT / "refimpl" / "softmax.py").read_text()
    assert (ROOT / "refimpl" / "softmax.py").read_bytes() == before


def test_mutation_tool_refuses_a_bad_max():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "mutation_check.py"), "--max", "0"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "--max must be a positive integer, got 0" in r.stderr


def _cover_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location("mutation_cover", ROOT / "tools" / "mutation_cover.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_mutant_runs_the_tests_that_ran_its_statement_fastest_first():
    cov = _cover_tool()
    src = "x = 1\nif x:\n    y = f(1,\n          2)\n    z = 3\n"
    cover = {"lines": {"m": {"1": ["<import>"], "3": ["t.py::slow"], "4": ["t.py::fast", "<import>"],
                             "5": ["u.py::other"]}},
             "durations": {"t.py::slow": 3.0, "t.py::fast": 0.1, "u.py::other": 1.0}}
    assert list(cov.statement_lines(src, 4)) == [3, 4]                     # the whole statement
    assert list(cov.statement_lines(src, 2)) == [2]                        # a compound statement: its header
    assert cov.tests_for(cover, "m", src, 4) == ["t.py::fast", "t.py::slow"]
    assert cov.tests_for(cover, "m", src, 1) == []                         # run only at import: no test of its own
    assert cov.files_of(cover, "m") == ["u.py", "t.py"]                # the quickest file first
    assert cov.seconds_of(cover, ["t.py::fast", "t.py::slow"]) == pytest.approx(3.1)


def test_the_forked_child_reports_pass_fail_and_timeout(tmp_path):
    cov = _cover_tool()
    (tmp_path / "test_a.py").write_text("import time\ndef test_ok():\n    assert 1\n\ndef test_bad():\n    assert 0\n\n"
                                        "def test_hang():\n    time.sleep(60)\n")
    log = tmp_path / "log"
    assert cov.run_forked(tmp_path, ["test_a.py::test_ok"], 60, log)[0] == "pass"
    outcome, _, first = cov.run_forked(tmp_path, ["test_a.py::test_ok", "test_a.py::test_bad"], 60, log)
    assert outcome == "fail" and first == "test_a.py::test_bad"
    assert cov.run_forked(tmp_path, ["test_a.py::test_hang"], 1, log)[0] == "timeout"


def test_make_mutation_picks_the_modules_git_diff_touched(monkeypatch):
    mc = _mutation_tool()

    class Done:
        stdout = "refimpl/softmax.py\nrefimpl/harness/verdicts/judge.py\nrefimpl/io.py\nREADME.md\n"
    monkeypatch.setattr(mc.subprocess, "run", lambda *a, **k: Done())
    assert mc.changed_modules("main") == ["softmax", "harness/verdicts/judge"]
    assert "mutation:" in (ROOT / "Makefile").read_text() and "--changed $(BASE)" in (ROOT / "Makefile").read_text()
