"""The setup script and the benchmark command work (figures are printed, never asserted)."""
import os
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


# --- the mutation tools' defects (review of tools/mutation_cover.py and tools/mutation_check.py) ---------------

def _mutant_of(mc, module, line=1):
    return mc.Mutant(module, 0, 0, line, 0, "x")


def test_a_fallback_run_of_whole_test_files_gets_their_traced_time_and_its_timeout_is_inconclusive(tmp_path):
    mc, cov = _mutation_tool(), _cover_tool()
    (tmp_path / "refimpl").mkdir()
    (tmp_path / "refimpl" / "m.py").write_text("X = 1\ndef f():\n    return X\n")
    cover = {"lines": {"m": {"1": ["<import>"], "3": ["tests/a.py::t1"]}},
             "durations": {"tests/a.py::t1": 30.0, "tests/a.py::t2": 50.0, "tests/b.py::t3": 1.0}}
    assert cov.seconds_of(cover, ["tests/a.py"]) == pytest.approx(80.0)      # the file's tests, not 5 s a file
    assert cov.seconds_of(cover, ["tests/a.py::t1", "tests/b.py"]) == pytest.approx(31.0)
    plan = mc._plan(_mutant_of(mc, "m", 1), cover, tmp_path)                 # line 1 ran at import only
    assert plan.fallback and plan.tests == ["tests/a.py"] and plan.timeout == pytest.approx(2 * 80.0 + 20)
    plan = mc._plan(_mutant_of(mc, "m", 3), cover, tmp_path)
    assert not plan.fallback and plan.tests == ["tests/a.py::t1"] and plan.timeout == pytest.approx(80.0)
    assert mc.status_of("timeout", True, False) == "TIMEOUT"                 # inconclusive, not killed
    assert mc.status_of("timeout", False, False) == "KILLED"                 # its own traced tests hung
    rs = [{"id": "m:1:0:x", "module": "m", "status": "TIMEOUT"}, {"id": "m:3:0:x", "module": "m", "status": "KILLED"}]
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert mc.summarise(rs, ["m"]) == 1
    assert "mutation score 50.0%: 1 killed, 0 equivalent, 0 survived of 2 mutants; not killed either: " \
           "1 inconclusive (timeout of whole test files)" in out.getvalue()


def test_a_mutant_whose_lines_no_test_runs_is_unrun_and_runs_no_pytest(tmp_path, monkeypatch, capsys):
    import hashlib
    import json
    mc = _mutation_tool()
    with monkeypatch.context() as mp:
        mp.setattr(mc.os, "fork", lambda: pytest.fail("forked with no test to run"))
        assert mc.cov.run_forked(tmp_path, [], 60, tmp_path / "log")[0] == "nocover"   # pytest would collect all
    module = "bug_model"
    mutant = mc.mutants_of(module)[0]
    cover = {"lines": {}, "durations": {"tests/test_x.py::t": 1.0}, "tests": mc.tests_digest(),
             "sources": {module: hashlib.sha256((ROOT / "refimpl" / f"{module}.py").read_bytes()).hexdigest()}}
    (tmp_path / "cover.json").write_text(json.dumps(cover))
    monkeypatch.setattr(mc, "COPY", ["refimpl", "tests"])
    monkeypatch.setattr(mc.cov, "preload", lambda: None)
    monkeypatch.setattr(mc.cov, "run_forked", lambda *a: pytest.fail(f"ran pytest on {a[1]}"))
    rc = mc.main(["--cover", str(tmp_path / "cover.json"), "--module", module, "--only", mutant.id,
                  "--work", str(tmp_path / "w"), "--json", str(tmp_path / "r.json")])
    r = json.loads((tmp_path / "r.json").read_text())[0]
    assert rc == 1 and r["status"] == "UNRUN" and r["outcome"] == "nocover", r
    assert "no test runs its lines: not run" in capsys.readouterr().out


def test_pytest_exit_4_a_stale_test_id_is_stale_not_killed(tmp_path):
    mc, cov = _mutation_tool(), _cover_tool()
    (tmp_path / "test_a.py").write_text("def test_ok():\n    assert 1\n")
    log = tmp_path / "log"
    assert cov.run_forked(tmp_path, ["test_a.py::test_gone"], 60, log)[0] == "stale"     # pytest exit 4
    assert cov.run_forked(tmp_path, ["test_gone.py"], 60, log)[0] == "stale"
    assert mc.status_of("stale", False, False) == "STALE" and mc.status_of("notests", False, False) == "UNRUN"
    (tmp_path / "conftest.py").write_text("raise ImportError('a mutant broke an import')\n")
    assert cov.run_forked(tmp_path, ["test_a.py::test_ok"], 60, log)[0] == "fail"      # exit 4 too: killed
    src = (ROOT / "tools" / "mutation_cover.py").read_text()
    assert "no test collected: a stale id" not in src                                 # exit 5 is not a stale id


def test_a_test_file_the_mutant_breaks_at_collection_kills_it_not_stale(tmp_path):
    # the ids of a file that no longer collects are "not found" (pytest exit 4), yet the mutant broke it
    cov = _cover_tool()
    (tmp_path / "test_a.py").write_text("TABLE = [] - []\n\ndef test_ok():\n    assert 1\n")
    assert cov.run_forked(tmp_path, ["test_a.py::test_ok"], 60, tmp_path / "log")[0] == "fail"


def test_a_changed_test_makes_the_cover_map_stale(tmp_path):
    import hashlib
    import json
    mc = _mutation_tool()
    (tmp_path / "refimpl").mkdir()
    (tmp_path / "tests" / "__pycache__").mkdir(parents=True)
    (tmp_path / "refimpl" / "m.py").write_text("X = 1\n")
    (tmp_path / "tests" / "test_m.py").write_text("def test_m():\n    pass\n")
    cover = {"sources": {"m": hashlib.sha256(b"X = 1\n").hexdigest()}, "tests": mc.tests_digest(tmp_path)}
    (tmp_path / "cover.json").write_text(json.dumps(cover))
    assert not mc._stale(tmp_path / "cover.json", ["m"], tmp_path)
    (tmp_path / "tests" / "__pycache__" / "test_m.pyc").write_bytes(b"cache")      # caches are not tests
    assert not mc._stale(tmp_path / "cover.json", ["m"], tmp_path)
    (tmp_path / "tests" / "test_m.py").write_text("def test_m():\n    assert 0\n")
    assert mc._stale(tmp_path / "cover.json", ["m"], tmp_path)
    (tmp_path / "tests" / "test_m.py").write_text("def test_m():\n    pass\n")
    (tmp_path / "tests" / "test_new.py").write_text("")
    assert mc._stale(tmp_path / "cover.json", ["m"], tmp_path)


def test_the_harness_list_holds_every_module_that_decides_a_verdict_bound_or_diagnosis(monkeypatch, capsys):
    mc = _mutation_tool()
    for m in ["harness/apis/flex_attention", "harness/analysis/diagnosis_kvcache", "harness/analysis/diagnosis_lse",
              "harness/reports/export", "bugs", "bug_model"] + \
            [p.stem for p in (ROOT / "refimpl").glob("bugs_*.py")] + \
            [f"harness/analysis/{p.stem}" for p in (ROOT / "refimpl" / "harness" / "analysis").glob("diagnosis*.py")]:
        assert m in mc.HARNESS, m
    assert all((ROOT / "refimpl" / f"{m}.py").is_file() for m in mc.HARNESS + list(mc.TESTS))
    assert len(set(mc.HARNESS)) == len(mc.HARNESS)

    class Done:
        stdout = "refimpl/io.py\nrefimpl/harness/reports/html.py\n"
    monkeypatch.setattr(mc.subprocess, "run", lambda *a, **k: Done())
    assert mc.main(["--changed", "main"]) == 0
    out = capsys.readouterr().out
    assert "changed since main but not measured" in out and "harness/reports/html, io" in out, out


def test_make_mutation_with_math_and_harness_changes_checks_the_map_only_for_the_harness_ones(tmp_path, monkeypatch):
    import hashlib
    import json
    import shutil
    mc = _mutation_tool()
    root = tmp_path / "root"
    for d in ("refimpl", "tests"):
        shutil.copytree(ROOT / d, root / d, ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
    module = "bug_model"
    (root / ".mutation").mkdir()
    cover = {"lines": {}, "durations": {}, "tests": mc.tests_digest(root),      # traced for bug_model only
             "sources": {module: hashlib.sha256((root / "refimpl" / f"{module}.py").read_bytes()).hexdigest()}}
    (root / ".mutation" / "cover.json").write_text(json.dumps(cover))

    class Done:
        stdout = f"refimpl/softmax.py\nrefimpl/{module}.py\n"
    monkeypatch.setattr(mc.subprocess, "run", lambda *a, **k: Done())
    monkeypatch.setattr(mc, "ROOT", root)
    monkeypatch.setattr(mc, "COPY", ["refimpl", "tests"])
    monkeypatch.setattr(mc, "trace", lambda *a: pytest.fail("traced again: the map is fresh for bug_model"))
    monkeypatch.setattr(mc.cov, "preload", lambda: None)
    monkeypatch.setattr(mc.cov, "run_forked", lambda *a: pytest.fail("bug_model has no traced test"))
    ran = []
    monkeypatch.setattr(mc, "run_tests", lambda work, mod, timeout: ran.append(mod) or ("fail", 0.1, "t::x"))
    only = [next(m.id for m in mc.mutants_of("softmax", root)), mc.mutants_of(module, root)[0].id]
    rc = mc.main(["--changed", "HEAD", "--timeout", "30", "--only", *only, "--work", str(tmp_path / "w"),
                  "--json", str(tmp_path / "r.json")])
    rs = {r["module"]: r["status"] for r in json.loads((tmp_path / "r.json").read_text())}
    assert rc == 1 and rs == {"softmax": "KILLED", module: "UNRUN"} and ran == ["softmax"], (rc, rs, ran)


def test_the_forked_child_runs_with_the_suites_environment(tmp_path, monkeypatch):
    import re
    cov = _cover_tool()
    makefile = (ROOT / "Makefile").read_text()
    ci = re.search(r"HYPOTHESIS_PROFILE \?= \$\(if \$\(filter true 1,\$\(CI\)\),(\w+),", makefile)
    assert ci and cov.ENV["HYPOTHESIS_PROFILE"] == ci.group(1) == "ci"        # the Makefile's profile on CI
    monkeypatch.setenv("HYPOTHESIS_PROFILE", "dev")
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(v, "8")
    (tmp_path / "test_env.py").write_text(
        "import os\ndef test_env():\n"
        "    got = {v: os.environ.get(v) for v in ('HYPOTHESIS_PROFILE', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS',"
        " 'MKL_NUM_THREADS', 'REFIMPL_NO_R')}\n"
        "    assert got == {'HYPOTHESIS_PROFILE': 'ci', 'OMP_NUM_THREADS': '1', 'OPENBLAS_NUM_THREADS': '1',"
        " 'MKL_NUM_THREADS': '1', 'REFIMPL_NO_R': '1'}, got\n")
    outcome, _, first = cov.run_forked(tmp_path, ["test_env.py::test_env"], 60, tmp_path / "log")
    assert outcome == "pass", (tmp_path / "log").read_text()


def test_the_forked_child_runs_the_source_on_disk_not_bytecode_cached_for_an_earlier_one(tmp_path, monkeypatch):
    """A mutant and the next one are often of the same size and written within the same second: bytecode cached
    for the first (its source's mtime and size) must not run in place of the second. The parent writes bytecode
    here, as a shell without PYTHONDONTWRITEBYTECODE (.ci/run sets it) does."""
    cov = _cover_tool()
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    (tmp_path / "pkg_m").mkdir()
    (tmp_path / "pkg_m" / "__init__.py").write_text("")
    source = tmp_path / "pkg_m" / "m.py"
    (tmp_path / "test_m.py").write_text("from pkg_m.m import X\n\n\ndef test_x():\n    assert X == 1\n")
    log = tmp_path / "log"
    source.write_text("X = 2\n")                                    # a mutant: the test fails
    os.utime(source, (1_000_000_000, 1_000_000_000))
    assert cov.run_forked(tmp_path, ["test_m.py::test_x"], 60, log)[0] == "fail"
    source.write_text("X = 1\n")                                    # the next, same size, same mtime: passes
    os.utime(source, (1_000_000_000, 1_000_000_000))
    assert cov.run_forked(tmp_path, ["test_m.py::test_x"], 60, log)[0] == "pass"
    assert not list(tmp_path.rglob("*.pyc"))                         # nothing cached beside the sources


def test_a_line_a_module_fixture_runs_goes_under_its_whole_test_file(tmp_path):
    """A module-scoped fixture runs in the first test's setup; its value is read by every test of the file, so a
    mutant of what it ran must be run against the whole file, not the first test alone."""
    import json
    (tmp_path / "refimpl").mkdir()
    (tmp_path / "refimpl" / "__init__.py").write_text("")
    (tmp_path / "refimpl" / "m.py").write_text("def made():\n    return 1\n\n\ndef used():\n    return 2\n")
    (tmp_path / "test_f.py").write_text(
        "import pytest\nfrom refimpl.m import made, used\n\n\n@pytest.fixture(scope='module')\ndef value():\n"
        "    return made()\n\n\ndef test_first(value):\n    assert used() == 2\n\n\n"
        "def test_second(value):\n    assert value == 1\n")
    out = tmp_path / "trace"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}   # (the file's name: the worker)
    env.update(PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT / 'tools'}", MUTATION_TRACE_OUT=str(out),
               MUTATION_TRACE_ROOT=str(tmp_path), MUTATION_TRACE_MODULES="m")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "mutation_cover",
                        "test_f.py"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = json.loads((out / "trace-main.json").read_text())["lines"]
    per = lines[str((tmp_path / "refimpl" / "m.py").resolve())]
    assert per["2"] == ["test_f.py"]                         # made(): run by the fixture, for the whole file
    assert per["6"] == ["test_f.py::test_first"]             # used(): run by the test itself


def test_a_file_holding_a_test_that_fails_unmutated_is_not_run_whole_for_a_fixtures_line():
    cov = _cover_tool()
    cover = {"lines": {"m": {"3": ["tests/a.py", "tests/b.py::t"]}}, "durations": {"tests/a.py::bad": 1.0}}
    left = cov.without(cover, ["tests/a.py::bad"])
    assert left["lines"]["m"]["3"] == ["tests/b.py::t"]          # a run of tests/a.py would fail with no mutant
