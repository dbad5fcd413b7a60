"""A kernel run over the quick suite and the diagnosis it gets, as the tests of the bug models and fitted forms read
it: a forward over every family case but the long ones, a backward (``--backward``) over the grad rows of some
families."""
import warnings

from refimpl.harness.analysis.diagnosis import diagnose
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.rows.grad_cases import Backward, grad_case
from refimpl.harness.targets.target import Target

STORE = CaseStore()          # inputs and oracles made once per test process


def forward_lines(fn, api: str = "refimpl", dtype: str = "float64") -> list[str]:
    """The diagnosis lines of target ``k`` = ``fn`` over the quick suite (asserts that some case failed)."""
    target = Target("k", fn, api=api)
    results = [run_one(target, s, STORE) for s in select(None, "quick", (dtype,)) if not s.long]
    assert any(r.status == Status.FAIL for r in results), "the kernel's mistake failed no case"
    return diagnose(results, STORE, target="k")


def backward_lines(fn, families: list[str], dtype: str = "float64") -> tuple[list[Status], list[str]]:
    """(each grad row's status, the diagnosis lines) of the backward ``fn`` behind a forward that is never judged
    (the grad rows call ``fn``), over ``families``' quick cases; a kernel's own RuntimeWarnings ignored."""
    target = Target("user:forward", lambda q, k, v, mask=None, scale=None: q)
    specs = select(families, "quick", (dtype,))
    statuses, lines = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in families:
            case = grad_case(f, [s for s in specs if s.family == f], STORE, Backward("numpy", fn))
            statuses.append(case.run(target).status)
            lines += case.diagnoses.get(target.name, [])
    return statuses, lines
