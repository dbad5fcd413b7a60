"""The CI configuration: the GitHub workflow parses and only calls what exists; .ci/run runs the README's
test command; a broken fixture value fails both the Python and the R leg."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from refimpl import fixtures as fx_mod
from refimpl.cli_args import parser as _parser

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def test_workflow_parses_and_has_the_matrix():
    wf = yaml.safe_load(WORKFLOW.read_text())
    matrix = wf["jobs"]["test"]["strategy"]["matrix"]
    assert matrix["python"] == ["3.10", "3.11", "3.12", "3.13"]
    assert matrix["r"] == ["release", "oldrel", "none"]
    assert "drift" in wf["jobs"]


def test_workflow_commands_exist_in_the_project():
    wf = yaml.safe_load(WORKFLOW.read_text())
    runs = "\n".join(step.get("run", "") for job in wf["jobs"].values() for step in job["steps"])
    try:
        import tomllib
    except ImportError:                       # Python 3.10
        tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml on Python 3.10 needs tomli")
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for spec in re.findall(r'-e "?\.\[([a-z,]+)\]', runs):
        assert set(spec.split(",")) <= extras, f"unknown extras {spec}"
    for path in re.findall(r"(r_reference/\S+\.R)", runs):
        assert (ROOT / path).is_file(), path
    sub = _parser()._subparsers._group_actions[0].choices
    for cmd in re.findall(r"^\s*refimpl (\w+)", runs, re.M):
        assert cmd in sub, f"refimpl {cmd} does not exist"
    for args in re.findall(r"^\s*refimpl (.+)$", runs, re.M):
        sub[args.split()[0]].parse_args(args.split()[1:])      # the options exist too
    assert "pytest" in runs and "install.packages" in runs


def test_ci_run_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make check" in readme
    assert re.search(r"^leg full\s+make .*\btest\b", ci, re.M)
    assert re.search(r"^leg main\s+make .*\bcheck\b", ci, re.M)


@pytest.fixture
def broken(tmp_path):
    root = tmp_path / "fixtures"
    shutil.copytree(fx_mod.fixtures_dir(), root)
    p = root / "r-attention" / "complete-vignette.json"
    obj = json.loads(p.read_text())
    obj["expected"]["weights"][1]["value"]["values"][0][2] = 0.8                 # R's value was 0.842901...
    p.write_text(json.dumps(obj))
    return root


def test_a_broken_fixture_value_fails_the_python_leg(broken):
    env = dict(os.environ, REFIMPL_FIXTURES=str(broken), REFIMPL_INNER_RUN="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(ROOT / "tests" / "test_fixtures.py")],
                       env=env, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and "complete-vignette.json: weights [r]" in r.stdout, r.stdout[-1500:]


@pytest.mark.r
def test_a_broken_fixture_value_fails_the_r_leg(broken, rb):
    env = dict(os.environ, REFIMPL_FIXTURES=str(broken))
    r = subprocess.run(["Rscript", str(ROOT / "r_reference" / "tests" / "testthat.R")], env=env,
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1, r.stdout[-1500:]
    assert "complete-vignette.json: weights [r]" in r.stdout and "R side:" in r.stdout


def test_every_entry_of_the_slow_list_names_a_test_that_exists():
    """tests/slow_tests.txt splits make test from make test-slow by test id: an entry whose file or function was
    renamed would silently put its test back in the fast leg, so each must name a test function of its file."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("slow_tests_tool", ROOT / "tools" / "slow_tests.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    entries = tool.read_entries(ROOT / "tests" / "slow_tests.txt")
    assert {k for k, _ in entries} == {"sweep", "slow"}
    missing = []
    for kind, node in entries:
        path, _, test = node.partition("::")
        fn = test.split("[", 1)[0]
        if not (ROOT / path).is_file() or not re.search(rf"^def {re.escape(fn)}\(", (ROOT / path).read_text(), re.M):
            missing.append(f"{kind} {node}")
        if kind == "sweep":
            assert "[" not in test, f"a sweep names a function, not one of its parameters: {node}"
    assert not missing, "entries naming no test (renamed or removed? rerun tools/slow_tests.py):\n" + "\n".join(missing)


@pytest.mark.slow          # a collection of the whole suite (~15 s)
def test_every_slow_entry_is_a_collected_test_id():
    """The function check above cannot see a renamed parameter: collect the whole suite (the list not applied) and
    require each `slow` entry's exact id and each sweep's function among the collected ids."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("slow_tests_tool", ROOT / "tools" / "slow_tests.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "", "-p", "no:cacheprovider"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env=dict(os.environ, REFIMPL_SLOW_LIST="0"))
    ids = {line for line in out.stdout.splitlines() if "::" in line}
    functions = {i.split("[", 1)[0] for i in ids}
    assert len(ids) > 1000, out.stdout[-2000:] + out.stderr[-2000:]
    stale = [f"{k} {n}" for k, n in tool.read_entries(ROOT / "tests" / "slow_tests.txt")
             if (n not in ids if k == "slow" else n not in functions)]
    assert not stale, "entries naming no collected test (rerun tools/slow_tests.py, delete these):\n" + "\n".join(stale)


def test_the_slow_list_marks_each_listed_test_and_samples_each_sweep(tmp_path):
    """Collected with -m 'not slow', a listed slow test is deselected, and of a sweep one parameter in eight stays."""
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "slow_tests.txt").write_text("# x\nsweep test_s.py::test_sweep\nslow test_s.py::test_one[2]\n")
    (tmp_path / "test_s.py").write_text("import pytest\n\n\n@pytest.mark.parametrize('i', range(17))\n"
                                        "def test_sweep(i):\n    pass\n\n\n@pytest.mark.parametrize('i', range(3))\n"
                                        "def test_one(i):\n    pass\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "not slow", "-p",
                          "no:cacheprovider", "-c", os.devnull, "--rootdir", str(tmp_path), str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "REFIMPL_SLOW_LIST"})
    ids = sorted(line.split("::", 1)[1] for line in out.stdout.splitlines() if "::" in line)
    assert ids == ["test_one[0]", "test_one[1]", "test_sweep[0]", "test_sweep[16]", "test_sweep[8]"], out.stdout
