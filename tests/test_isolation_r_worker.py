"""An R function as an isolated target (refimpl/harness/targets/isolation.py): what the R worker's per-call function
(``r_child_loader``) returns for a forward call and for a family row's ``("batch", datas)`` payload, and what the
proxy (:class:`IsolatedRFunction`) hands back to the rows. No embedded R: R's loader is replaced by a fake whose
``fn`` is a plain callable with a ``batch`` method, and the proxy's worker runs the loaded function in this process
(the real worker runs the same function in its own)."""
from types import SimpleNamespace

import numpy as np
import pytest

from refimpl.harness.targets import isolation as iso
from refimpl.harness.targets import r_targets
from refimpl.harness.targets.call_policy import CallPolicy
from refimpl.harness.targets.r_targets import RReturned
from refimpl.r.bridge import RError

OUT = np.arange(6.0).reshape(1, 1, 2, 3)
WEIGHTS = np.full((1, 1, 2, 5), 0.2)


class FakeR:
    """An R function as the bridge hands it: a call per 2-D slice stack, and ``batch`` for a family row whose
    second case fails in R and whose third fails in the bridge's shape check."""

    def __init__(self):
        self.calls, self.batches = [], []

    def __call__(self, q, k, v, mask=None, scale=None):
        self.calls.append((q, k, v, mask, scale))
        return np.full(tuple(q.shape[:-1]) + (v.shape[-1],), 0.5 if scale is None else scale)

    def batch(self, datas):
        self.batches.append(list(datas))
        return [RReturned(OUT, WEIGHTS, "float64", [], ["NaNs produced"]),
                RError("non-conformable arguments", "q %*% t(k)"),
                ValueError("the slices of one case returned different shapes [(2, 3), (2, 4)]")][:len(datas)]


@pytest.fixture
def r_fn(monkeypatch):
    """The fake R function the worker's loader gets in place of R's (as ``r_child_loader`` imports it)."""
    fake, loaded = FakeR(), []

    def load_r_target(spec, target_class):
        loaded.append(spec)
        return SimpleNamespace(fn=fake)
    monkeypatch.setattr(r_targets, "load_r_target", load_r_target)
    fake.loaded = loaded
    return fake


class InProcessWorker:
    """The worker, run here: each payload goes to the loaded per-call function; a raise is an "error" result."""

    def __init__(self, call):
        self.call, self.timeout, self.payloads = call, None, []

    def run(self, payloads):
        self.payloads.append(payloads[0])
        try:
            return [SimpleNamespace(status="ok", seconds=0.01, value=self.call(payloads[0]))]
        except Exception as e:
            return [SimpleNamespace(status="error", seconds=0.01, error=f"{type(e).__name__}: {e}", traceback="",
                                    output_tail="")]


def _proxy(spec="R:attn.R:attn"):
    f = object.__new__(iso.IsolatedRFunction)     # no worker process: r_child_loader's function, called here
    f.spec, f.policy = spec, CallPolicy(None)
    f.worker = InProcessWorker(iso.r_child_loader(spec))
    return f


def _qkv():
    return np.ones((1, 1, 2, 4)), np.ones((1, 1, 5, 4)), np.ones((1, 1, 5, 3))


# --- the worker's side: r_child_loader ---------------------------------------------------------------------------

def test_the_r_worker_returns_what_the_r_function_returned_for_a_call_and_no_writes(r_fn):
    call = iso.r_child_loader("R:attn.R:attn")
    q, k, v = _qkv()
    res, writes = call(("call", (q, k, v), {"scale": 0.25}))
    assert r_fn.loaded == ["R:attn.R:attn"]
    assert res.shape == (1, 1, 2, 3) and np.all(res == 0.25)       # the scale keyword reached R
    assert writes == {}                                             # R copies its arguments: nothing written
    assert len(r_fn.calls) == 1 and r_fn.calls[0][0] is q and r_fn.batches == []


def test_the_r_worker_answers_a_batch_payload_with_one_bridge_call_and_each_case_as_plain_data(r_fn):
    call = iso.r_child_loader("R:attn.R:attn")
    datas = ["case 0", "case 1", "case 2"]
    cases, writes = call(("batch", datas))
    assert r_fn.batches == [datas] and r_fn.calls == []            # one batched call, no per-case call
    assert writes == {}
    assert [c[0] for c in cases] == ["returned", "raised", "raised"]
    assert all(type(c) is tuple for c in cases)                    # plain data, not the R-side objects
    assert cases[1][1:] == ("RError", "R error in q %*% t(k): non-conformable arguments", "non-conformable arguments",
                            "q %*% t(k)")


# --- the proxy's side: IsolatedRFunction -------------------------------------------------------------------------

def test_an_r_target_batch_comes_back_as_cases_with_their_results_and_errors(r_fn):
    f = _proxy()
    got = f.batch(["case 0", "case 1", "case 2"])
    assert f.worker.payloads == [("batch", ["case 0", "case 1", "case 2"])]
    ok, r_err, shape_err = got
    assert isinstance(ok, RReturned)
    assert np.array_equal(ok.output, OUT) and np.array_equal(ok.weights, WEIGHTS)
    assert (ok.dtype, ok.mutated, ok.warnings) == ("float64", [], ["NaNs produced"])
    assert type(r_err) is RError and (r_err.r_message, r_err.r_call) == ("non-conformable arguments", "q %*% t(k)")
    assert type(shape_err) is ValueError and "different shapes" in str(shape_err)


def test_an_r_target_call_returns_the_r_output_and_reports_no_writes(r_fn):
    f = _proxy()
    q, k, v = _qkv()
    out = f(q, k, v, mask=None, scale=0.5)
    assert out.shape == (1, 1, 2, 3) and np.all(out == 0.5)
    assert f.last_writes == {}
    assert [p[0] for p in f.worker.payloads] == ["call"]
