"""What the harness trusts an isolated target's proxy for (refimpl/harness/targets/isolation.py): which side computes
a gradient case's autograd (grad_cases: the worker of a Python target; never the worker of an R function), whether
apis.call hands the case's arrays as they are and takes the worker's word for the inputs the target wrote to, and how
long a target's module may take to load. The worker is a stand-in that answers each payload as the test scripts."""
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch  # noqa: F401  (autograd_grads imports it: paid at collection, not in a test)

from refimpl.harness import apis
from refimpl.harness.cases.features import CaseData, CaseSpec
from refimpl.harness.rows import grad_cases
from refimpl.harness.targets import isolation as iso
from refimpl.harness.targets.autograd_grads import NoGraph
from refimpl.harness.targets.call_policy import CallPolicy
from refimpl.harness.targets.target import Target

README = Path(__file__).resolve().parents[1] / "README.md"


class AnsweringWorker:
    """Answers each payload with ``answer(payload)`` and notes the payloads it was sent."""

    def __init__(self, answer):
        self.answer, self.timeout, self.payloads = answer, None, []

    def run(self, payloads):
        self.payloads.append(payloads[0])
        try:
            return [SimpleNamespace(status="ok", seconds=0.01, value=self.answer(payloads[0]))]
        except Exception as e:
            return [SimpleNamespace(status="error", seconds=0.01, error=f"{type(e).__name__}: {e}", traceback="",
                                    output_tail="")]


def _proxy(cls, answer):
    f = object.__new__(cls)                       # no worker process: the answering one
    f.spec, f.policy = "kern.py:kern", CallPolicy(None)
    f.worker = AnsweringWorker(answer)
    return f


def _case():
    spec = CaseSpec("row", 0, Sq=2, Sk=3, D=4, Dv=3)
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((1, 1, 2, 4)), rng.standard_normal((1, 1, 3, 4)), rng.standard_normal((1, 1, 3, 3))
    return CaseData(spec, q, k, v, None, None, np.empty(0), np.empty(0, bool))


GRADS = {"dq": np.full((1, 1, 2, 4), 1.0), "dk": np.full((1, 1, 3, 4), 2.0), "dv": np.full((1, 1, 3, 3), 3.0)}


# --- which side computes a gradient case ---------------------------------------------------------------------------

def test_an_isolated_python_target_has_its_gradients_computed_in_its_worker():
    def answer(payload):
        assert payload[0] == "grad", "a forward call: the gradients were not asked of the worker"
        return (GRADS, "float32"), {}                               # as child_loader returns it
    f = _proxy(iso.IsolatedFunction, answer)
    data = _case()
    got = grad_cases._autograd(Target("kern.py:kern", f, layout="BHSD", torch=True), data, np.ones((1, 1, 2, 3)))
    assert [p[0] for p in f.worker.payloads] == ["grad"]             # one round trip: the whole gradient case
    assert f.worker.payloads[0][1:3] == ("refimpl", "BHSD") and f.worker.payloads[0][3] is data
    assert got.dtype == "float32"
    assert all(np.array_equal(got.grads[n], GRADS[n]) for n in GRADS)


def test_an_r_function_target_has_no_remote_gradients():
    def r_worker(payload):                                           # the R worker's reading of any payload
        args, kwargs = payload[1:]
        return np.zeros((1, 1, 2, 3)), {}
    f = _proxy(iso.IsolatedRFunction, r_worker)
    with pytest.raises(NoGraph, match="no autograd graph"):         # R's output, computed outside torch
        grad_cases._autograd(Target("R:attn.R:attn", f), _case(), np.ones((1, 1, 2, 3)))
    assert [p[0] for p in f.worker.payloads] == ["call"]             # no "grad" payload reached the R worker


# --- apis.call and the worker's copies --------------------------------------------------------------------------

def test_apis_call_hands_an_isolated_target_the_cases_arrays_and_reports_the_writes_its_worker_saw():
    written = np.full((1, 1, 2, 4), 7.0)
    f = _proxy(iso.IsolatedFunction, lambda payload: (np.zeros((1, 1, 2, 3)), {0: written}))
    data = _case()
    before = data.q.copy()
    got = apis.call(f, "refimpl", data, layout="BHSD")
    sent_q = f.worker.payloads[0][1][0]
    assert sent_q is data.q                         # no copy here: the worker has its own
    assert np.array_equal(data.q, before)           # the write happened in the worker's copy only
    assert got.mutated == ["q"]                     # ... and is reported from the worker's word


def test_apis_call_reports_no_write_when_the_worker_saw_none():
    f = _proxy(iso.IsolatedFunction, lambda payload: (np.zeros((1, 1, 2, 3)), {}))
    assert apis.call(f, "refimpl", _case(), layout="BHSD").mutated == []


# --- how long a module may take to load -----------------------------------------------------------------------------

class StartRecorder:
    def __init__(self, loader, args, *, timeout, max_memory, start_timeout):
        self.loader, self.args, self.timeout, self.start_timeout = loader, args, timeout, start_timeout
        STARTED.append(self)

    def start(self):
        pass


STARTED: list = []


@pytest.fixture
def started(monkeypatch):
    STARTED.clear()
    monkeypatch.setattr(iso, "Worker", StartRecorder)
    return STARTED


def _documented_load_seconds() -> float:
    m = re.search(r"takes longer than\s+max\(`--timeout`,\s+(\d+(?:\.\d+)?) s\)\s+to\s+load", README.read_text())
    assert m, "README.md no longer says how long a target's module may take to load"
    return float(m.group(1))


def test_a_module_gets_the_documented_load_time_when_its_call_limit_is_shorter(started):
    documented = _documented_load_seconds()
    iso.isolator(timeout=5.0, max_memory_mib=None, flag="--target")("kern.py:kern", "refimpl")
    assert started[0].timeout == 5.0                                # each call: the --timeout
    assert started[0].start_timeout == documented == iso.IsolatedFunction.LOAD_SECONDS   # loading: max(5 s, 60 s)


def test_a_module_gets_the_call_limit_to_load_when_it_is_longer(started):
    iso.isolator(timeout=300.0, max_memory_mib=None, flag="--target")("kern.py:kern", "refimpl")
    assert started[0].start_timeout == 300.0
