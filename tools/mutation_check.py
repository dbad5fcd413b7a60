"""Mutation check: break the math on purpose, one syntax-tree mutant at a time, and count the tests that notice.

    .venv/bin/python tools/mutation_check.py [--module softmax] [--list] [--max N] [--only ID ...] [--rerun JSON]

Mutants are made from each module's syntax tree (``ast``), never from its text:

    arith     +  <-> -,  *  <-> /,  & <-> |          (binary operators and augmented assignments)
    compare   <  <-> <=, >  <-> >=, == <-> !=, is <-> is not
    bool      and <-> or
    const     0 -> 1, 1 -> 2, other ints n -> n+1, floats c -> 2c (0.0 -> 1.0), True <-> False
    unary     -x -> x,  not x -> x
    return    ``return value`` -> ``return None`` (functions that return a value)
    guard     ``if cond:`` -> ``if False:`` and ``if True:``
    slice     ``a[lo:hi]`` -> ``a[lo+1:hi]`` and ``a[lo:hi-1]``

Nodes inside docstrings, f-strings, ``raise`` statements (the error messages) and ``__all__`` are not
mutated: a changed message is not a changed result. A mutant's id is ``module:line:col:what`` and is stable
as long as the module is.

Each mutant is unparsed (``ast.unparse``) into a private copy of the checkout under ``--work`` (default
a fresh temporary directory; the working tree is never touched), then the module's test files (``TESTS``,
fastest first) run there with ``pytest -x -q -p no:cacheprovider -m "not slow"``, HYPOTHESIS_PROFILE=ci,
one process (one core). A mutant is KILLED when a test fails or errors, or when the run exceeds the
module's timeout (2 x the unmutated run + 20 s); otherwise it SURVIVED, unless docs/mutation.md lists its
id as equivalent (a row ``| `id` | equivalent | reason |``).

With a cover map (``--cover``, the harness modules), each mutant runs the traced tests of its statement
(mutation_cover.py); besides KILLED and SURVIVED a mutant can then be

    UNRUN    no test runs its lines (nothing is run) or pytest collected no test (exit 5)
    STALE    pytest exit 4: a test id of the cover map no longer exists (trace again)
    TIMEOUT  its statement ran in no test, so whole test files ran, and they outlived their traced time
             (2 x + 20 s): inconclusive, not killed

None of these is killed. Exit status 1 if any mutant is neither killed nor equivalent.

    score = killed / (mutants - equivalent)
"""
from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mutation_cover as cov  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "mutation.md"

# module -> test files, fastest and most specific first (-x stops at the first failure)
_COMMON = ["test_math_against_independent_values.py", "test_math_edges_and_messages.py", "test_kernel_pieces.py",
           "test_core.py",
           "test_math_faults.py", "test_reliability.py"]
TESTS: dict[str, list[str]] = {
    "softmax": _COMMON + ["test_features.py", "test_properties.py"],
    "attention": _COMMON + ["test_features.py", "test_online.py", "test_fixtures.py", "test_properties.py"],
    "masks": _COMMON + ["test_features.py", "test_properties.py"],
    "multihead": _COMMON + ["test_fixtures.py", "test_properties.py"],
    "online": _COMMON + ["test_online.py", "test_features.py", "test_properties.py"],
    "family": ["test_family_against_loops.py"] + _COMMON + ["test_family.py", "test_fixtures.py"],
    "_checks": _COMMON + ["test_fuzz.py", "test_features.py", "test_fixtures.py", "test_properties.py"],
    "_kernel": _COMMON + ["test_features.py", "test_online.py", "test_fixtures.py", "test_properties.py"],
    "tolerance_gradients": ["test_judge_tolerance.py", "test_backward.py"] + _COMMON,
    "tolerance": ["test_judge_tolerance.py"] + _COMMON + ["test_features.py", "test_online.py", "test_fixtures.py",
                                                          "test_properties.py", "test_backward.py"],
}
# The harness modules that decide a verdict, a bound, a ratio, a convention, a diagnosis or a repro bound
# (issue #24). Their tests are found by tracing (``--trace``, then ``--cover``), not listed by hand.
HARNESS = ["harness/verdicts/judge", "harness/verdicts/grad_judge", "harness/verdicts/lse_judge",
           "harness/verdicts/dropout_judge", "harness/verdicts/determinism", "harness/analysis/diagnosis",
           "harness/analysis/fitting", "harness/analysis/repro", "harness/apis/base", "harness/apis/__init__",
           "harness/apis/torch_sdpa", "harness/apis/flash_attn", "harness/apis/flash_attn_varlen",
           "harness/apis/flash_attn_kvcache", "harness/apis/jax_api", "harness/apis/hf_api",
           "harness/apis/refimpl_protocol", "harness/apis/c_abi", "harness/apis/native",
           "harness/apis/flex_attention", "harness/rows/family_cases", "harness/rows/grad_cases",
           "harness/targets/probe", "harness/targets/isolation", "harness/analysis/diagnosis_kvcache",
           "harness/analysis/diagnosis_lse", "harness/reports/export",
           # the bug models the diagnoses fit (a wrong model names the wrong bug), and their fit tolerance
           "bug_model", "bugs", "bugs_backward", "bugs_kvcache", "bugs_lse", "bugs_packed", "bugs_scores",
           "harness/analysis/fitted_forms", "harness/analysis/conditions", "harness/analysis/localisation",
           "harness/verdicts/grad_placement", "harness/verdicts/grad_scale", "harness/cases/scale_formulas",
           "harness/analysis/judged_rows"]
# ... and every bug model, diagnosis and fit written since (refimpl/bugs_*.py, harness/analysis/diagnosis_*.py,
# fitting_*.py, precision_*.py)
HARNESS += sorted({str(p.relative_to(ROOT / "refimpl").with_suffix("")) for pattern in (
    "bugs_*.py", "harness/analysis/diagnosis_*.py", "harness/analysis/fitting_*.py", "harness/analysis/precision_*.py",
    "harness/verdicts/grad_*.py")
    for p in (ROOT / "refimpl").glob(pattern)} - set(HARNESS))
COPY = ["refimpl", "tests", "fixtures", "r_reference", "pyproject.toml", "tools", "docs", "README.md", "Makefile",
        ".ci", ".github"]


class Mutant(NamedTuple):
    module: str
    index: int          # position of the mutated node in ast.walk order
    variant: int        # which of the node's mutations
    line: int
    col: int
    what: str
    nth: int = 1        # 2, 3, ...: nodes sharing a position (e.g. the inner `a * b` of `a * b * c`)

    @property
    def id(self) -> str:
        return f"{self.module}:{self.line}:{self.col}:{self.what}" + (f"#{self.nth}" if self.nth > 1 else "")


# --- mutation operators: each maps a node to [(description, apply(node) -> replacement node)] -------------

_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.BitAnd: ast.BitOr,
         ast.BitOr: ast.BitAnd, ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
         ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.And: ast.Or, ast.Or: ast.And}
_SYM = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.BitAnd: "&", ast.BitOr: "|", ast.Lt: "<",
        ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is", ast.IsNot: "is-not",
        ast.And: "and", ast.Or: "or"}
Op = Callable[[ast.AST], ast.AST]


def _set(node: ast.AST, **fields) -> ast.AST:
    for k, v in fields.items():
        setattr(node, k, v)
    return node


def _plus(expr: ast.expr, n: int) -> ast.expr:
    return ast.BinOp(expr, ast.Add() if n > 0 else ast.Sub(), ast.Constant(abs(n)))


def operators(node: ast.AST) -> list[tuple[str, Op]]:
    """The mutations of one node (the node itself is replaced by what ``apply`` returns)."""
    out: list[tuple[str, Op]] = []
    t = type(node)
    if t in (ast.BinOp, ast.AugAssign) and type(node.op) in _SWAP:
        new = _SWAP[type(node.op)]
        out.append((f"{_SYM[type(node.op)]}->{_SYM[new]}", lambda n, new=new: _set(n, op=new())))
    elif t is ast.Compare and len(node.ops) == 1 and type(node.ops[0]) in _SWAP:
        new = _SWAP[type(node.ops[0])]
        out.append((f"{_SYM[type(node.ops[0])]}->{_SYM[new]}", lambda n, new=new: _set(n, ops=[new()])))
    elif t is ast.BoolOp:
        new = _SWAP[type(node.op)]
        out.append((f"{_SYM[type(node.op)]}->{_SYM[new]}", lambda n, new=new: _set(n, op=new())))
    elif t is ast.Constant and type(node.value) in (int, float, bool):
        v = node.value
        if isinstance(v, bool):
            new_v: object = not v
        elif isinstance(v, int):
            new_v = 1 if v == 0 else 2 if v == 1 else v + 1
        else:
            new_v = 1.0 if v == 0 else v * 2
        out.append((f"const {v!r}->{new_v!r}", lambda n, new_v=new_v: _set(n, value=new_v)))
    elif t is ast.UnaryOp and isinstance(node.op, (ast.USub, ast.Not)):
        out.append(("drop unary " + ("-" if isinstance(node.op, ast.USub) else "not"), lambda n: n.operand))
    elif t is ast.Return and node.value is not None and not (isinstance(node.value, ast.Constant)
                                                             and node.value.value is None):
        out.append(("return None", lambda n: _set(n, value=ast.Constant(None))))
    elif t is ast.If:
        out.append(("if False", lambda n: _set(n, test=ast.Constant(False))))
        out.append(("if True", lambda n: _set(n, test=ast.Constant(True))))
    elif t is ast.Slice:
        if node.lower is not None:
            out.append(("slice lower+1", lambda n: _set(n, lower=_plus(n.lower, 1))))
        if node.upper is not None:
            out.append(("slice upper-1", lambda n: _set(n, upper=_plus(n.upper, -1))))
    return out


def _skipped(tree: ast.Module) -> set[int]:
    """ids of nodes not to mutate: docstrings, f-strings, raise statements, __all__, annotations."""
    skip: set[int] = set()

    def all_below(n: ast.AST) -> None:
        skip.update(id(x) for x in ast.walk(n))

    for n in ast.walk(tree):
        if isinstance(n, (ast.JoinedStr, ast.Raise)):
            all_below(n)
        elif isinstance(n, (ast.Assign, ast.AugAssign)) and any(
                isinstance(t, ast.Name) and t.id == "__all__"
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target])):
            all_below(n)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for a in n.args.args + n.args.kwonlyargs + n.args.posonlyargs:
                if a.annotation is not None:
                    all_below(a.annotation)
            if n.returns is not None:
                all_below(n.returns)
        elif isinstance(n, ast.AnnAssign):
            all_below(n.annotation)
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body and isinstance(n.body[0], ast.Expr) \
                and isinstance(getattr(n.body[0], "value", None), ast.Constant):
            all_below(n.body[0])
    return skip


def mutants_of(module: str, base: Path = ROOT) -> list[Mutant]:
    tree = ast.parse((base / "refimpl" / f"{module}.py").read_text())
    skip = _skipped(tree)
    out: list[Mutant] = []
    seen: dict[tuple, int] = {}
    for i, node in enumerate(ast.walk(tree)):
        if id(node) in skip:
            continue
        for j, (what, _) in enumerate(operators(node)):
            key = (getattr(node, "lineno", 0), getattr(node, "col_offset", 0), what)
            seen[key] = seen.get(key, 0) + 1
            out.append(Mutant(module, i, j, *key, nth=seen[key]))
    return out


def mutated_source(m: Mutant, base: Path = ROOT) -> str:
    """The module's source with mutant ``m`` applied (``base``: the checkout whose module is read)."""
    tree = ast.parse((base / "refimpl" / f"{m.module}.py").read_text())
    nodes = list(ast.walk(tree))
    target = nodes[m.index]
    _, apply = operators(target)[m.variant]
    new = apply(copy.deepcopy(target))
    for parent in nodes:                                   # put the replacement where the node was
        for field, value in ast.iter_fields(parent):
            if value is target:
                setattr(parent, field, new)
            elif isinstance(value, list) and any(v is target for v in value):
                value[[k for k, v in enumerate(value) if v is target][0]] = new
    return ast.unparse(ast.fix_missing_locations(tree))


# --- running ------------------------------------------------------------------------------------------

def equivalents() -> dict[str, str]:
    """``{id: reason}`` from the rows ``| `id` | equivalent | reason |`` of docs/mutation.md (a ``|`` inside a
    cell is written ``\\|``, as Markdown tables need)."""
    if not DOC.exists():
        return {}
    rows = re.findall(r"^\|\s*`([^`]+)`\s*\|\s*equivalent\s*\|\s*(.*?)\s*\|\s*$", DOC.read_text(), re.M)
    return {i.replace("\\|", "|"): reason.replace("\\|", "|") for i, reason in rows}


def make_copy(work: Path) -> None:
    for name in COPY:
        src, dst = ROOT / name, work / name
        if dst.exists():
            shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
        elif src.exists():
            shutil.copy2(src, dst)


def run_tests(work: Path, module: str, timeout: float) -> tuple[str, float, str]:
    """``(outcome, seconds, first failing test)``; outcome "timeout", "nocover" (no test file of ``TESTS``
    exists: nothing is run) or as :func:`mutation_cover.outcome_of`."""
    env = dict(os.environ, **cov.ENV, PYTHONPATH=str(work))
    files = [f"tests/{f}" for f in TESTS[module] if (work / "tests" / f).exists()]
    if not files:                                          # pytest given no file would collect the whole suite
        return "nocover", 0.0, ""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", *files]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return "timeout", time.monotonic() - t0, ""
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    outcome = cov.outcome_of(proc.returncode, out)
    return outcome, time.monotonic() - t0, cov.first_failure(out) if outcome == "fail" else out[-300:]


def select(mods: list[str], only: list[str], n_max: int | None, seed: int, base: Path = ROOT) -> list[Mutant]:
    ms = [m for mod in mods for m in mutants_of(mod, base)]
    if only:
        unknown = sorted(set(only) - {m.id for m in ms})
        if unknown:                                        # the module changed since, or a typo
            print(f"warning: {len(unknown)} mutant id(s) not found (module edited since?): {unknown[:5]}",
                  file=sys.stderr)
        ms = [m for m in ms if m.id in only]
    if n_max is not None and len(ms) > n_max:              # a fixed-seed sample, every module in proportion
        ms = sorted(random.Random(seed).sample(ms, n_max), key=lambda m: (mods.index(m.module), m.index, m.variant))
    return ms


def trace(mods: list[str], out: Path, work: Path) -> int:
    """Run the suite once in ``work`` under the line tracer; write the cover map of ``mods`` to ``out``."""
    tdir = work / ".trace"
    shutil.rmtree(tdir, ignore_errors=True)
    tdir.mkdir()
    env = dict(os.environ, **cov.TRACE_ENV, PYTHONPATH=f"{work}{os.pathsep}{work / 'tools'}",
               MUTATION_TRACE_OUT=str(tdir), MUTATION_TRACE_ROOT=str(work), MUTATION_TRACE_MODULES=",".join(mods))
    n = os.cpu_count() or 1
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "mutation_cover", "-m", "not slow",
           *(["-n", str(n)] if n > 1 else []), "tests"]
    t0 = time.monotonic()
    log = out.with_suffix(".log")               # pytest's output: which test failed under the tracer, if any
    with open(log, "w") as f:
        rc = subprocess.call(cmd, cwd=work, env=env, stdout=f, stderr=subprocess.STDOUT)
    cover = cov.merge(tdir, work)
    failed = [ln.split()[1] for ln in log.read_text().splitlines()
              if ln.startswith(("FAILED ", "ERROR ")) and len(ln.split()) > 1]
    cover = cov.without(cover, failed)          # a test failing unmutated would "kill" every mutant it runs for
    cover["sources"] = {m: hashlib.sha256((work / "refimpl" / f"{m}.py").read_bytes()).hexdigest() for m in mods}
    cover["tests"] = tests_digest(work)
    out.write_text(json.dumps(cover))
    ran = {m: len(cover["lines"].get(m, {})) for m in mods}
    print(f"traced in {time.monotonic() - t0:.0f} s (pytest exit {rc}); lines run per module: {ran}")
    if failed:
        print(f"left out of the map: {len(failed)} test(s) that failed unmutated under the tracer (see {log}):",
              *failed[:20], sep="\n  ", file=sys.stderr)
    return 0 if rc == 0 or (rc == 1 and failed) else 2


def touched_modules(ref: str) -> list[str]:
    """The Python modules under refimpl/ (``harness/verdicts/judge``) that ``git diff REF`` (the working tree
    against REF) touches, or that are new and not yet added (untracked), and that still exist."""
    try:
        out = "\n".join(subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
                        for cmd in (["git", "diff", "--name-only", ref, "--", "refimpl"],
                                    ["git", "ls-files", "--others", "--exclude-standard", "--", "refimpl"]))
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"--changed {ref!r}: git diff failed ({e})")
    return sorted({str(Path(f).relative_to("refimpl").with_suffix("")) for f in out.split()
                   if f.endswith(".py") and (ROOT / f).exists()})


def changed_modules(ref: str, touched: list[str] | None = None) -> list[str]:
    """The modules of TESTS and HARNESS whose files ``git diff REF`` touches (``touched``: given already)."""
    touched = touched_modules(ref) if touched is None else touched
    return [m for m in list(TESTS) + HARNESS if m in touched]


_NOT_TESTS = {"__pycache__", ".hypothesis", ".pytest_cache"}


def tests_digest(base: Path | None = None) -> str:
    """One hash of every file under ``base``/tests (default: the checkout's; names and contents, caches left
    out): a cover map traced on other tests names other ids and lines, so it is stale too."""
    base = ROOT if base is None else base
    h = hashlib.sha256()
    for p in sorted((base / "tests").rglob("*")):
        rel = p.relative_to(base / "tests")
        if p.is_file() and not _NOT_TESTS.intersection(rel.parts):
            h.update(rel.as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _stale(cover_path: Path, mods: list[str], base: Path | None = None) -> bool:
    """Whether the cover map at ``cover_path`` is missing or was traced on other sources of ``mods`` or other
    tests than those of ``base`` (default: the checkout)."""
    base = ROOT if base is None else base
    try:
        cover = json.loads(cover_path.read_text())
    except (OSError, ValueError):
        return True
    return cover.get("tests") != tests_digest(base) or _stale_sources(cover, mods, base) != []


def _stale_sources(cover: dict, mods: list[str], base: Path) -> list[str]:
    """The modules of ``mods`` whose source in ``base`` is not the one the cover map was traced on."""
    sources = cover.get("sources", {})
    return [m for m in mods
            if sources.get(m) != hashlib.sha256((base / "refimpl" / f"{m}.py").read_bytes()).hexdigest()]


class Plan(NamedTuple):
    tests: list[str]        # pytest arguments: node ids, or whole test files (the fallback); [] nothing to run
    timeout: float
    fallback: bool          # no test ran the statement: its module's test files run (a timeout is inconclusive)


def _plan(m: Mutant, cover: dict, work: Path, budget: float = 0.0) -> Plan:
    """What to run for one mutant: the traced tests of its statement, else (``fallback``) every test file that
    ran a line of its module, else nothing; ``budget`` > 0: only the fastest whose traced times add up to it.
    The timeout is 2 x their traced time + 20 s (a file's: the sum of its tests')."""
    src = (work / "refimpl" / f"{m.module}.py").read_text()
    tests = cov.tests_for(cover, m.module, src, m.line)
    fallback = not tests
    if fallback:
        tests = cov.files_of(cover, m.module)
    if budget > 0:
        kept: list[str] = []
        used = 0.0
        for t in tests:
            used += cov.seconds_of(cover, [t])
            if kept and used > budget:
                break
            kept.append(t)
        tests = kept
    return Plan(tests, 2 * cov.seconds_of(cover, tests) + 20, fallback)


def status_of(outcome: str, fallback: bool, equivalent: bool) -> str:
    """A mutant's status from its run's outcome (see the module's docstring)."""
    if outcome == "pass":
        return "EQUIV" if equivalent else "SURVIVED"
    if outcome == "timeout":
        return "TIMEOUT" if fallback else "KILLED"
    return {"fail": "KILLED", "stale": "STALE", "nocover": "UNRUN", "notests": "UNRUN"}[outcome]


def run_mutant(m: Mutant, plan: Plan | None, work: Path, timeout: float) -> tuple[str, float, str]:
    """Write mutant ``m`` into ``work``, run its tests and put the module back: ``plan``'s in a forked child
    (``timeout`` 0: the plan's), or with no plan its module's TESTS. A plan with no test: "nocover", and
    nothing is written or run."""
    if plan is not None and not plan.tests:
        return "nocover", 0.0, ""
    path = work / "refimpl" / f"{m.module}.py"
    original = path.read_text()
    for cached in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):   # bytecode of another mutant (or of
        cached.unlink()                                                       # the original) of the same size and
    #                                                                           second would be run in its place
    try:
        path.write_text(mutated_source(m, work))
        if plan is None:
            return run_tests(work, m.module, timeout)
        return cov.run_forked(work, plan.tests, timeout or plan.timeout, work / f".mutant-{os.getpid()}.log")
    finally:
        path.write_text(original)


_TAIL = {"timeout": "  (timeout)", "nocover": "  (no test runs its lines: not run)",
         "notests": "  (no test collected)", "stale": "  (pytest exit 4: a test id no longer exists; trace again)"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--module", action="append", choices=sorted(TESTS) + HARNESS,
                    help="only this module (repeatable; default: the math modules, or HARNESS with --cover)")
    ap.add_argument("--harness", action="store_true", help="every module of HARNESS")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--max", type=int, default=None, help="run a fixed-seed sample of at most N mutants")
    ap.add_argument("--seed", type=int, default=0, help="seed of the --max sample (default 0)")
    ap.add_argument("--only", nargs="+", default=[], help="run only these mutant ids (quote them: they hold spaces)")
    ap.add_argument("--rerun", type=Path, default=None, metavar="JSON",
                    help="run only the mutants that SURVIVED in this earlier --json file")
    ap.add_argument("--work", type=Path, default=None, help="directory for the private copy (default: a temp dir)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per mutant run; skips the unmutated baseline runs (default: 2 x baseline + 20)")
    ap.add_argument("--json", type=Path, default=None, help="write every mutant's result here")
    ap.add_argument("--trace", type=Path, default=None, metavar="COVER",
                    help="trace which tests run which lines of the modules, write the map to COVER and exit")
    ap.add_argument("--cover", type=Path, default=None, metavar="COVER",
                    help="run each mutant's traced tests only, in a forked child (a map written by --trace)")
    ap.add_argument("--budget", type=float, default=0.0, metavar="S",
                    help="with --cover: run only the fastest traced tests adding up to S seconds (a first pass; "
                         "rerun the survivors without it)")
    ap.add_argument("--changed", default=None, metavar="REF",
                    help="the modules (math or HARNESS) that `git diff REF` touches; harness modules are traced "
                         "first into .mutation/cover.json when that map is missing or older (make mutation)")
    ap.add_argument("--shard", default="1/1", metavar="K/N", help="run every N-th mutant from the K-th (1-based)")
    args = ap.parse_args(argv)
    if args.max is not None and args.max < 1:
        ap.error(f"--max must be a positive integer, got {args.max}")
    try:
        k_shard, n_shard = (int(x) for x in args.shard.split("/"))
        assert 1 <= k_shard <= n_shard
    except (ValueError, AssertionError):
        ap.error(f"--shard takes K/N with 1 <= K <= N, got {args.shard!r}")
    mods = args.module or (HARNESS if args.harness or args.cover or args.trace else list(TESTS))
    cover_mods: list[str] = []          # the modules whose mutants run the tests the cover map traced
    if args.changed is not None:
        touched = touched_modules(args.changed)
        mods = changed_modules(args.changed, touched)
        unmeasured = [m for m in touched if m not in mods]
        if unmeasured:
            print(f"changed since {args.changed} but not measured (in neither TESTS nor HARNESS of "
                  f"tools/mutation_check.py): {', '.join(unmeasured)}", flush=True)
        if not mods:
            print(f"no module the mutation check covers is changed since {args.changed}")
            return 0
        print(f"changed since {args.changed}: {', '.join(mods)}", flush=True)
        cover_mods = [m for m in mods if m not in TESTS]        # the math modules run their TESTS, as without
        if cover_mods:
            args.cover = ROOT / ".mutation" / "cover.json"
            if _stale(args.cover, cover_mods):
                args.cover.parent.mkdir(exist_ok=True)
                rc = main(["--trace", str(args.cover), *sum((["--module", m] for m in cover_mods), [])])
                if rc:
                    return rc
    elif args.cover is not None:
        cover_mods = mods
    cover = None
    if args.cover is not None:
        try:
            cover = json.loads(args.cover.read_text())
        except (OSError, ValueError) as e:
            ap.error(f"--cover must name a map written by --trace, got {str(args.cover)!r} ({e})")
    elif any(m not in TESTS for m in mods) and not (args.trace or args.list):
        ap.error("the harness modules have no hand-kept test list: trace them first (--trace COVER), then --cover")
    if args.rerun is not None:
        try:
            args.only += [r["id"] for r in json.loads(args.rerun.read_text())
                          if r["status"] not in ("KILLED", "EQUIV")]
        except (OSError, ValueError, KeyError, TypeError) as e:
            ap.error(f"--rerun must name a JSON file written by --json, got {str(args.rerun)!r} ({e})")
        if not args.only:
            print("no mutant to rerun: all were killed or equivalent")
            return 0
    if args.list:
        ms = select(mods, args.only, args.max, args.seed)
        for m in ms:
            print(m.id)
        print(f"{len(ms)} mutants in {', '.join(mods)}")
        return 0
    eq = equivalents()
    work = args.work or Path(tempfile.mkdtemp(prefix="refimpl-mut-"))
    work.mkdir(parents=True, exist_ok=True)
    make_copy(work)                 # a snapshot: the mutants come from it, so edits made meanwhile do not shift them
    if args.trace is not None:
        try:
            return trace(mods, args.trace, work)
        finally:
            if args.work is None:
                shutil.rmtree(work, ignore_errors=True)
    if cover is not None and cover_mods:
        stale = _stale_sources(cover, cover_mods, work)
        if stale:
            print(f"the cover map is older than {', '.join(stale)}: run --trace again", file=sys.stderr)
            return 2
        if cover.get("tests") != tests_digest(work):
            print("warning: the tests changed since the cover map was traced (a new test is not run, a removed "
                  "one reads STALE): run --trace again", file=sys.stderr)
        cov.preload()
    ms = select(mods, args.only, args.max, args.seed, work)[k_shard - 1::n_shard]
    results, timeouts, interrupted = [], {}, False
    try:
        for mod in dict.fromkeys(m.module for m in ms):      # the unmutated run: must pass; sets the timeout
            if args.timeout is not None or mod in cover_mods:
                timeouts[mod] = args.timeout or 0.0
                continue
            outcome, secs, first = run_tests(work, mod, 1800)
            if outcome != "pass":
                print(f"the unmutated tests of {mod} do not pass ({first}); fix that first", file=sys.stderr)
                return 2
            timeouts[mod] = 2 * secs + 20
            print(f"[{mod}] baseline {secs:.1f} s, timeout {timeouts[mod]:.0f} s", flush=True)
        for k, m in enumerate(ms, 1):
            plan = _plan(m, cover, work, args.budget) if cover is not None and m.module in cover_mods else None
            outcome, secs, first = run_mutant(m, plan, work, timeouts[m.module])
            status = status_of(outcome, plan is not None and plan.fallback, m.id in eq)
            results.append({"id": m.id, "module": m.module, "status": status, "outcome": outcome,
                            "seconds": round(secs, 1), "by": first if outcome == "fail" else ""})
            tail = f"  <- {first}" if outcome == "fail" else _TAIL.get(outcome, "")
            if status == "TIMEOUT":
                tail = "  (timeout running whole test files, no test ran its statement: inconclusive)"
            print(f"{k:4d}/{len(ms)} {status:8s} {secs:5.1f}s {m.id}" + tail, flush=True)
    except KeyboardInterrupt:
        print("interrupted: partial figures below", file=sys.stderr)
        interrupted = True
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    rc = summarise(results, mods)
    return 130 if interrupted else rc


_OTHER = {"UNRUN": "unrun (no test runs them)", "STALE": "stale (a test id gone: trace again)",
          "TIMEOUT": "inconclusive (timeout of whole test files)"}


def summarise(results: list[dict], mods: list[str]) -> int:
    """The table per module and the score; exit status 1 if a mutant is neither killed nor equivalent. UNRUN,
    STALE and TIMEOUT are counted apart from the survivors, and none of them as killed."""
    def count(rs: list[dict], status: str) -> int:
        return sum(r["status"] == status for r in rs)

    print(f"\n{'module':36s} {'mutants':>7s} {'killed':>7s} {'equiv':>6s} {'survived':>8s} {'unrun':>6s} "
          f"{'stale':>6s} {'timeout':>7s} {'score':>7s}")
    for mod in mods + ["total"]:
        rs = [r for r in results if mod in ("total", r["module"])]
        if not rs:
            continue
        n, k, e = len(rs), count(rs, "KILLED"), count(rs, "EQUIV")
        score = 100.0 * k / (n - e) if n > e else 100.0
        print(f"{mod:36s} {n:7d} {k:7d} {e:6d} {count(rs, 'SURVIVED'):8d} {count(rs, 'UNRUN'):6d} "
              f"{count(rs, 'STALE'):6d} {count(rs, 'TIMEOUT'):7d} {score:6.1f}%")
    for r in results:
        if r["status"] in ("SURVIVED", *_OTHER):
            print(f"{r['status']} {r['id']}")
    n = len(results)
    k, e, sv = count(results, "KILLED"), count(results, "EQUIV"), count(results, "SURVIVED")
    other = ", ".join(f"{count(results, st)} {what}" for st, what in _OTHER.items() if count(results, st))
    print(f"mutation score {100.0 * k / max(n - e, 1):.1f}%: {k} killed, {e} equivalent, {sv} survived "
          f"of {n} mutants" + (f"; not killed either: {other}" if other else ""))
    return 1 if n - k - e else 0


if __name__ == "__main__":
    raise SystemExit(main())
