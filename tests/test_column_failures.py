"""A column's failure is that column's (issue #27 item 6): the onnxruntime column's Node process dying while a case
is pending is that case's ``crash``; the column restarts its worker for later cases (at most
``MAX_RESTARTS`` times, then its remaining cases say the process keeps dying); the other columns' cells and the
RESULT line stand. A built-in column whose CPU lacks a dtype is ``n/a`` there, not ``error``."""
import os
import signal

import pytest

from refimpl.harness.cases import CheckRun, Outcome, Status
from refimpl.harness.cases.families import select
from refimpl.harness.columns import builtin_targets
from refimpl.harness.columns.torch_column import _lacking
from refimpl.harness.reports.report import result_word
from refimpl.harness.rows.family_cases import CaseStore, family_case, run_one
from refimpl.harness.rows.runner import close_targets, run_check
from refimpl.harness.runtimes import onnx_runtime as ortm

AVAILABLE, REASON = ortm.availability()
REQUIRED = os.environ.get("REFIMPL_REQUIRE_ORT", "") not in ("", "0")
needs_ort = pytest.mark.skipif(not AVAILABLE and not REQUIRED, reason=REASON)


def _row():
    """family:sizes, quick suite, float32: 14 cases the onnxruntime column runs, one Node call each."""
    specs = select(["sizes"], "quick", ("float32",))
    return family_case("sizes", specs, CaseStore()), specs


def _killing(monkeypatch, session, kill_on):
    """SIGKILL the session's Node process as the ``n``-th case's request is sent, for each n in ``kill_on``
    (the case is pending when the worker dies); returns the pids of the workers that got a case."""
    real, sent, pids = ortm._frame, [0], []

    def frame(header, payloads=()):
        if header.get("op") == "run":
            sent[0] += 1
            proc = session._proc
            if proc.pid not in pids:
                pids.append(proc.pid)
            if sent[0] in kill_on:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        return real(header, payloads)
    monkeypatch.setattr(ortm, "_frame", frame)
    return pids


def _matrix(monkeypatch, kill_on, judged=None):
    """refimpl and onnxruntime on the row, the ORT worker killed as cases ``kill_on`` are sent."""
    made = builtin_targets()
    targets = [made["refimpl"](), made["onnxruntime"]()]
    try:
        pids = _killing(monkeypatch, targets[1].fn.close.__self__, kill_on)
        case, specs = _row()
        run = run_check(targets, {}, [case])
    finally:
        close_targets(targets)
    run.judged, run.columns = judged, frozenset({"refimpl", "onnxruntime"})
    return run, run.results[(case.id, "onnxruntime")], pids


@needs_ort
def test_a_killed_ort_worker_is_its_cases_crash_and_the_run_still_conforms(monkeypatch):
    run, cell, pids = _matrix(monkeypatch, kill_on={3})
    third = cell.cases[2]
    assert third.status == Status.CRASH and "SIGKILL" in third.detail, third
    assert [r.status for r in cell.cases].count(Status.PASS) == len(cell.cases) - 1, cell.detail
    assert cell.status == Status.CRASH and "1 crash" in cell.detail, cell.detail
    assert len(pids) == 2, pids                                         # one restart, for the cases after it
    assert not run.results[("family:sizes", "refimpl")].failed                 # the other column stands
    assert run.failing() == [] and run.ok, run.failing()
    assert result_word(run) == ("all targets conform (the runtime of onnxruntime died in some cases, which are "
                                "reported, not judged)")


@needs_ort
def test_a_worker_that_keeps_dying_is_restarted_at_most_max_restarts_times(monkeypatch):
    run, cell, pids = _matrix(monkeypatch, kill_on=set(range(1, 100)))
    statuses = [r.status for r in cell.cases]
    assert statuses == [Status.CRASH] * len(statuses), cell.detail
    died = [r for r in cell.cases if "keeps dying" not in r.detail and "SIGKILL" in r.detail]
    assert len(died) == ortm.MAX_RESTARTS + 1 and len(pids) == ortm.MAX_RESTARTS + 1, (pids, cell.detail)
    rest = cell.cases[len(died):]
    assert rest and all("keeps dying" in r.detail for r in rest), rest[0].detail
    # it never answered: not excused (a column that checked nothing is not called conformant)
    assert run.failing() == ["onnxruntime"] and not run.ok and result_word(run) == "NON-CONFORMANCE"


@needs_ort
def test_a_worker_killed_between_cases_counts_as_a_restart(monkeypatch):
    """Killed while idle: the next case starts a fresh worker, and that death counts toward MAX_RESTARTS."""
    made = builtin_targets()
    target = made["onnxruntime"]()
    session = target.fn.close.__self__
    case, specs = _row()
    store, got = CaseStore(), []
    try:
        for spec in specs:
            if session._proc is not None:
                os.kill(session._proc.pid, signal.SIGKILL)
                session._proc.wait()
            got.append(run_one(target, spec, store))
    finally:
        close_targets([target])
    assert all(r.status == Status.PASS for r in got[:ortm.MAX_RESTARTS + 1]), [r.detail for r in got]
    assert got[-1].status == Status.CRASH and "keeps dying" in got[-1].detail, got[-1].detail


def test_a_built_in_columns_crash_fails_a_users_check_only_when_the_column_was_named():
    crash = Outcome(Status.CRASH, detail="the ORT worker (Node) died")
    results = {("row", "refimpl"): Outcome(Status.REFERENCE), ("row", "mine"): Outcome(Status.PASS, n_arrays=1),
               ("row", "onnxruntime"): crash, ("row2", "onnxruntime"): Outcome(Status.PASS, n_arrays=1)}
    run = CheckRun([], ["refimpl", "mine", "onnxruntime"], results, {}, 0.0,
                   columns=frozenset({"refimpl", "onnxruntime"}))
    assert run.failing() == [] and run.ok                              # the whole matrix: reported, not judged
    run.judged = ["mine"]
    assert run.ok and result_word(run) == "mine conforms"
    run.judged = ["mine", "onnxruntime"]                               # named with --with: it decides too
    assert run.failing() == ["onnxruntime"]
    run.judged, results[("row", "mine")] = None, Outcome(Status.CRASH, detail="segfault")
    assert run.failing() == ["mine"]                                   # a user's target crashing is its failure
    results[("row", "onnxruntime")] = Outcome(Status.ERROR, detail="OrtRunError: refused")
    assert run.failing() == ["mine", "onnxruntime"]                    # a column's error is still judged


def test_torch_without_a_dtypes_matmul_is_n_a_for_those_cases_not_error():
    torch = pytest.importorskip("torch")
    target = builtin_targets()["torch"]()
    lacking = _lacking(torch)
    store = CaseStore()
    for dtype in ("float16", "bfloat16"):
        spec = select(["sizes"], "quick", (dtype,))[0]
        res = run_one(target, spec, store)
        if dtype in lacking:
            assert res.status == Status.NA and "matmul" in res.detail, res
        else:
            assert res.status == Status.PASS, res

    class NoBf16:                                  # a torch whose CPU has no bfloat16 matmul either
        __version__ = "fake"

        def __getattr__(self, name):
            return getattr(torch, name)

        def ones(self, *shape, dtype):
            a = torch.ones(*shape, dtype=torch.float32)
            return _Refuses() if dtype == torch.bfloat16 else a

    class _Refuses:
        def __matmul__(self, other):
            raise RuntimeError('"addmm_impl_cpu_" not implemented for \'BFloat16\'')
    assert "bfloat16" in _lacking(NoBf16()) and "no bfloat16 matmul" in _lacking(NoBf16())["bfloat16"]


def test_a_column_whose_runtime_never_answered_is_not_called_conformant():
    """Every cell of the column its runtime dying: nothing was checked there, so it is judged (failing), and a
    column named with --only (``columns`` empty) is judged on its deaths too."""
    results = {("a", "refimpl"): Outcome(Status.PASS, n_arrays=1), ("b", "refimpl"): Outcome(Status.PASS, n_arrays=1),
               ("a", "onnxruntime"): Outcome(Status.CRASH, detail="the ORT worker (Node) died"),
               ("b", "onnxruntime"): Outcome(Status.TIMEOUT, detail="no answer within 60 s")}
    run = CheckRun([], ["refimpl", "onnxruntime"], results, {}, 0.0, columns=frozenset({"refimpl", "onnxruntime"}))
    assert run.failing() == ["onnxruntime"] and not run.ok and result_word(run) == "NON-CONFORMANCE"
    results[("b", "onnxruntime")] = Outcome(Status.PASS, n_arrays=1)             # it answered elsewhere: excused
    assert run.failing() == [] and run.ok
    run.columns = frozenset()                                                  # --only onnxruntime: its deaths count
    assert run.failing() == ["onnxruntime"]
