"""Which tests run which line, and a fork server that runs only those tests on a mutant.

The harness's modules are called from a thousand tests; running them all (or a hand-kept list) for each of
two thousand mutants takes hours on two cores. So mutation_check.py can instead:

1. ``trace``: run the ``-m "not slow"`` suite once under a line tracer limited to the mutated modules, and
   write ``{file: {line: [test node ids]}}`` (lines run outside any test, at import or collection, go
   under the node id ``<import>``; lines run while a test's fixtures are set up, under its whole test file, which
   a child runs whole) with each test's duration;
2. for each mutant, run only the tests that executed the lines of its statement, in a child forked from a
   process that has already imported pytest, NumPy, torch and Hypothesis (refimpl itself is imported fresh
   in the child, from the private copy holding the mutant); ``-x`` stops at the first failure.

A mutant in a statement no test executed in process (module-level code, or code only a worker process
runs) is run against every test file that executes any line of its module (``files_of``), with a timeout
from those files' traced times (``seconds_of`` sums a file's tests); a mutant whose module no test executed
at all is not run (an empty list of ids would make pytest collect the whole suite). The child runs with
``TRACE_ENV`` (the Hypothesis profile, single-thread settings and hidden R the trace ran with). Nothing here
decides a verdict: ``outcome_of`` maps pytest's exit status to pass / fail / stale (exit 4: an id of the map
no longer exists) / notests (exit 5: nothing collected), and mutation_check.py decides what each counts as.
"""
from __future__ import annotations

import ast
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

IMPORT = "<import>"
# The environment every run of the suite by the mutation tools gets (the child of ``run_forked``, the trace,
# and mutation_check.run_tests): Hypothesis's ``ci`` profile (derandomized, a fixed budget: what CI and the
# Makefile's test target use on CI), one thread per numeric library (one core per run), no .pyc files, and
# tests/slow_tests.txt not applied (REFIMPL_SLOW_LIST=0): every sweep parameter and every listed test may kill a
# mutant; `-m "not slow"` leaves out the kill trials and whole-run subprocesses alone, as before the list.
ENV = {"HYPOTHESIS_PROFILE": "ci", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "PYTHONDONTWRITEBYTECODE": "1", "REFIMPL_SLOW_LIST": "0"}
# ... and the trace hides R (its ids and times are those of the no-R suite): the forked child matches it.
TRACE_ENV = {**ENV, "REFIMPL_NO_R": "1"}
TEST_SECONDS = 5.0          # a test id the trace has no time for
FILE_SECONDS = 60.0         # a test file the trace has no time for (the fallback runs whole files)


# --- 1. the tracer (a pytest plugin: ``-p mutation_cover`` with tools/ on sys.path) ----------------------

class _Tracer:
    def __init__(self, files: set[str]):
        self.files = files
        self.test = IMPORT
        self.lines: dict[str, dict[int, set[str]]] = {}
        self.durations: dict[str, float] = {}

    def global_trace(self, frame, event, arg):
        fn = frame.f_code.co_filename
        if fn in self.files:
            return self.local_trace
        return None

    def local_trace(self, frame, event, arg):
        if event == "line" or event == "call":
            self.lines.setdefault(frame.f_code.co_filename, {}).setdefault(frame.f_lineno, set()).add(self.test)
        return self.local_trace


_TRACER: _Tracer | None = None


def pytest_configure(config):
    global _TRACER
    out = os.environ.get("MUTATION_TRACE_OUT")
    if not out:
        return
    root = Path(os.environ["MUTATION_TRACE_ROOT"])
    files = {str((root / "refimpl" / f"{m}.py").resolve()) for m in os.environ["MUTATION_TRACE_MODULES"].split(",")}
    _TRACER = _Tracer(files)
    sys.settrace(_TRACER.global_trace)
    threading.settrace(_TRACER.global_trace)


def pytest_runtest_protocol(item, nextitem):
    if _TRACER is not None:
        _TRACER.test = item.nodeid
        sys.settrace(_TRACER.global_trace)          # a test may have replaced it (Hypothesis does, for coverage)
        item._mutation_t0 = time.monotonic()


def pytest_runtest_setup(item):
    """Fixtures: a line run while a test's fixtures are set up goes under its whole file (the value of a module-scoped
    fixture is read by every later test of the file, not only the first that set it up; a session fixture's by other
    files too, which this does not link)."""
    if _TRACER is not None:
        _TRACER.test = item.nodeid.split("::")[0]


def pytest_runtest_call(item):
    if _TRACER is not None:
        _TRACER.test = item.nodeid


pytest_runtest_setup.tryfirst = True        # (pluggy's legacy marks: ahead of the setup that runs the fixtures,
pytest_runtest_call.tryfirst = True         # ahead of the call; this module imports no pytest of its own)


def pytest_runtest_logfinish(nodeid, location):
    if _TRACER is not None:
        t0 = getattr(_TRACER, "_t0", None)
        _TRACER.durations[nodeid] = _TRACER.durations.get(nodeid, 0.0) + (time.monotonic() - t0 if t0 else 0.0)
        _TRACER.test = IMPORT


def pytest_runtest_logstart(nodeid, location):
    if _TRACER is not None:
        _TRACER._t0 = time.monotonic()


def pytest_unconfigure(config):
    if _TRACER is None:
        return
    sys.settrace(None)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    path = Path(os.environ["MUTATION_TRACE_OUT"]) / f"trace-{worker}.json"
    lines = {f: {str(n): sorted(t) for n, t in d.items()} for f, d in _TRACER.lines.items()}
    path.write_text(json.dumps({"lines": lines, "durations": _TRACER.durations}))


def merge(directory: Path, root: Path) -> dict:
    """The trace files of every xdist worker as one map ``{module: {line: [tests]}}`` + durations."""
    lines: dict[str, dict[int, set[str]]] = {}
    durations: dict[str, float] = {}
    for p in sorted(directory.glob("trace-*.json")):
        d = json.loads(p.read_text())
        durations.update(d["durations"])
        for f, per in d["lines"].items():
            mod = str(Path(f).resolve().relative_to((root / "refimpl").resolve()).with_suffix(""))
            for n, tests in per.items():
                lines.setdefault(mod, {}).setdefault(int(n), set()).update(tests)
    return {"lines": {m: {str(n): sorted(t) for n, t in d.items()} for m, d in lines.items()},
            "durations": durations}


def without(cover: dict, tests: list[str]) -> dict:
    """``cover`` with ``tests`` (node ids, or ``file::name`` prefixes of parametrised ids) left out of every line, and
    the whole-file ids (a fixture's lines) of the files that hold one: a run of that file would fail unmutated."""
    gone = set(tests)
    files = {t.split("::")[0] for t in gone}

    def kept(t: str) -> bool:
        return t not in gone and t.split("[")[0] not in gone and t not in files

    lines = {m: {n: [t for t in ts if kept(t)] for n, ts in per.items()} for m, per in cover["lines"].items()}
    return {**cover, "lines": lines, "durations": {t: d for t, d in cover["durations"].items() if kept(t)},
            "left_out": sorted(gone)}


# --- 2. which tests a mutant needs --------------------------------------------------------------------

def statement_lines(source: str, line: int) -> range:
    """The lines of the innermost statement holding ``line`` (a compound statement: its header only)."""
    best: tuple[int, int] | None = None
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.stmt):
            continue
        lo, hi = node.lineno, node.end_lineno or node.lineno
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and not isinstance(node, ast.ClassDef):
            hi = max(lo, body[0].lineno - 1)                   # the header of if/for/while/def/with/try
        if lo <= line <= hi and (best is None or hi - lo < best[1] - best[0]):
            best = (lo, hi)
    return range(best[0], best[1] + 1) if best else range(line, line + 1)


def tests_for(cover: dict, module: str, source: str, line: int) -> list[str]:
    """The test node ids that ran the statement of ``line`` inside a test ([] if none did)."""
    per = cover["lines"].get(module, {})
    found: set[str] = set()
    for n in statement_lines(source, line):
        found.update(per.get(str(n), ()))
    found.discard(IMPORT)
    dur = cover["durations"]
    return sorted(found, key=lambda t: (dur.get(t, 1.0), t))          # fastest first: -x stops early


def file_seconds(cover: dict) -> dict[str, float]:
    """``{test file: traced seconds of all its tests}`` (the time a run of the whole file takes, roughly)."""
    per: dict[str, float] = {}
    for t, secs in cover["durations"].items():
        f = t.split("::")[0]
        per[f] = per.get(f, 0.0) + secs
    return per


def files_of(cover: dict, module: str) -> list[str]:
    """Every test file that ran a line of ``module`` (the fallback for statements no test ran)."""
    files = {t.split("::")[0] for tests in cover["lines"].get(module, {}).values() for t in tests if t != IMPORT}
    per = file_seconds(cover)
    return sorted(files, key=lambda f: (per.get(f, FILE_SECONDS), f))   # the quickest files first (a --budget)


def seconds_of(cover: dict, tests: list[str]) -> float:
    """The traced seconds of ``tests``: node ids (``file::name``) and whole files (``files_of``'s), each a file
    counted as the sum of its tests' times, so that a fallback run of whole files gets a timeout to match."""
    dur, per = cover["durations"], None
    total = 0.0
    for t in tests:
        if "::" in t:
            total += dur.get(t, TEST_SECONDS)
        else:
            per = per if per is not None else file_seconds(cover)
            total += per.get(t, FILE_SECONDS)
    return total


# --- 3. the fork server --------------------------------------------------------------------------------

def preload() -> None:
    """Import what every child needs and refimpl does not own, once, in the parent: after setting ``ENV``, whose
    thread counts OpenBLAS and OpenMP read when they are loaded (the children inherit the loaded libraries)."""
    os.environ.update(ENV)
    import numpy  # noqa: F401
    import pytest  # noqa: F401
    import hypothesis  # noqa: F401
    try:
        import torch  # noqa: F401
    except ImportError:
        pass


def outcome_of(rc: int, out: str) -> str:
    """The outcome of a pytest run from its exit status and output: "pass" (0), "stale" (4, a usage error:
    ``ERROR: not found`` for a node id or file the cover map names that no longer exists), "notests" (5: no
    test collected, e.g. all deselected), else "fail" (1 a test failed, 2 a collection error or interruption,
    3 an internal error; and 4 when a conftest.py failed to import, or a test file failed to collect so that its
    node ids are "not found": the mutant broke an import or a table computed at collection)."""
    if rc == 0:
        return "pass"
    broke = "ImportError while loading conftest" in out or re.search(r"^ERROR \S+\.py - ", out, re.M)
    if rc == 4 and not broke:
        return "stale"
    if rc == 5:
        return "notests"
    return "fail"


def first_failure(out: str) -> str:
    first = re.search(r"^(?:FAILED|ERROR) (\S+)", out, re.M)
    return first.group(1) if first else out[-200:]


def run_forked(work: Path, args: list[str], timeout: float, log: Path) -> tuple[str, float, str]:
    """Run ``pytest.main(args)`` in a forked child (cwd ``work``, ``TRACE_ENV`` set); ``(outcome, seconds,
    first failure)``, outcome as :func:`outcome_of`, "timeout", or "nocover" when ``args`` names no test (then
    nothing is run: pytest given no ids would collect the whole suite)."""
    if not args:
        return "nocover", 0.0, ""
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:                                                     # the child
        try:
            os.setsid()
            fd = os.open(str(log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = open(1, "w", closefd=False)         # not a capture object the parent may have set
            sys.stderr = open(2, "w", closefd=False)
            os.environ.update(TRACE_ENV)
            sys.dont_write_bytecode = True        # (the variable is read at start only) a mutant's bytecode cached
            #                                       beside it would be taken for the next mutant of the same size
            #                                       written in the same second: the source's mtime and size match
            os.chdir(work)
            sys.path.insert(0, str(work))
            import pytest
            rc = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-m", "not slow", *args])
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(rc))
        except BaseException:
            os._exit(99)
    deadline = t0 + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - t0, ""
        time.sleep(0.02)
    secs = time.monotonic() - t0
    rc = os.waitstatus_to_exitcode(status)
    out = log.read_text(errors="replace") if log.exists() else ""
    outcome = outcome_of(rc, out)
    return outcome, secs, first_failure(out) if outcome == "fail" else out[-300:] if outcome != "pass" else ""
