"""How an isolated target's calls are made (refimpl/harness/targets/isolation.py, ``IsolatedFunction._send``): the
call policy counts forward and gradient calls apart, the adaptive per-call limit grows with the call's work, and a
call cut by the adaptive limit says so (with the worker's own words kept). The worker is replaced by a stand-in
that returns the statuses a test scripts, so the rules are checked without waiting for a real hang."""
from types import SimpleNamespace

import numpy as np
import pytest

from refimpl.harness.cases import TargetDied
from refimpl.harness.targets.call_policy import DEFAULT_TIMEOUT, CallPolicy
from refimpl.harness.targets.isolation import IsolatedFunction


class ScriptedWorker:
    """Returns the scripted (status, seconds) for each payload and notes the limit each call was given."""

    def __init__(self, script):
        self.script = list(script)
        self.timeout = None
        self.limits, self.kinds = [], []

    def run(self, payloads):
        status, seconds = self.script.pop(0)
        self.limits.append(self.timeout)
        self.kinds.append(payloads[0][0])
        return [SimpleNamespace(status=status, seconds=seconds, value=(np.zeros(1), {}), traceback="", output_tail="",
                                error="" if status == "ok" else f"the worker's own words: {status}")]


def _function(script, timeout=None):
    f = object.__new__(IsolatedFunction)          # no worker process: the scripted one
    f.policy = CallPolicy(timeout)
    f.worker = ScriptedWorker(script)
    return f


def _qk(n):
    return np.zeros((1, 1, n, 8)), np.zeros((1, 1, n, 8))


def test_a_backward_that_keeps_hanging_stops_gradient_calls_and_leaves_forward_calls_running():
    f = _function([("timeout", 1.0)] * 3 + [("ok", 0.01)], timeout=1.0)
    for _ in range(3):
        with pytest.raises(TargetDied):
            f.grads("torch-sdpa", "bhsd", None, np.zeros(1))
    with pytest.raises(TargetDied, match="not called: the last 3 calls ended in 'timeout'"):
        f.grads("torch-sdpa", "bhsd", None, np.zeros(1))
    assert f.worker.kinds == ["grad"] * 3                 # the fourth gradient call was never made
    f(*_qk(4))                                            # a forward call still is
    assert f.worker.kinds[-1] == "call"


def test_forward_calls_that_keep_hanging_stop_forward_calls_and_leave_gradient_calls_running():
    f = _function([("timeout", 1.0)] * 3 + [("ok", 0.01)], timeout=1.0)
    for _ in range(3):
        with pytest.raises(TargetDied):
            f(*_qk(4))
    with pytest.raises(TargetDied, match="not called"):
        f(*_qk(4))
    f.grads("torch-sdpa", "bhsd", None, np.zeros(1))
    assert f.worker.kinds == ["call"] * 3 + ["grad"]


def test_the_adaptive_limit_grows_with_the_work_of_the_call():
    f = _function([("ok", 0.5), ("ok", 0.5), ("ok", 0.5)])
    f(*_qk(4))                                            # the first call: the default limit, its rate learned
    f(*_qk(4))
    f(*_qk(64))                                           # 16x the rows of q and of k
    first, same, larger = f.worker.limits
    assert first == DEFAULT_TIMEOUT
    assert same < DEFAULT_TIMEOUT                         # the rate of the same work: 20x its 0.5 s, at least 5 s
    assert same < larger                                  # more work, a longer limit (capped at the default)


def test_a_call_cut_by_the_adaptive_limit_says_so_and_keeps_the_workers_words():
    f = _function([("ok", 0.3), ("timeout", 6.0), ("timeout", DEFAULT_TIMEOUT)])
    f(*_qk(4))
    with pytest.raises(TargetDied) as cut:
        f(*_qk(4))                                        # cut at the adaptive limit, retried at the default: hangs
    assert f.worker.limits[1] < DEFAULT_TIMEOUT and f.worker.limits[2] == DEFAULT_TIMEOUT
    assert "the worker's own words: timeout" in str(cut.value)
    assert "the adaptive limit:" in str(cut.value) and "--timeout DURATION fixes it" in str(cut.value)


def test_a_call_cut_at_the_default_limit_gives_no_advice_about_the_adaptive_one():
    f = _function([("timeout", DEFAULT_TIMEOUT)])
    with pytest.raises(TargetDied) as cut:
        f(*_qk(4))                                        # no call came back yet: the default limit cut it
    assert f.worker.limits == [DEFAULT_TIMEOUT]
    assert "the worker's own words: timeout" in str(cut.value) and "adaptive" not in str(cut.value)


def test_a_fixed_timeout_gives_no_advice_about_the_adaptive_limit():
    f = _function([("ok", 0.3), ("timeout", 2.0)], timeout=2.0)
    f(*_qk(4))
    with pytest.raises(TargetDied) as cut:
        f(*_qk(4))
    assert f.worker.limits == [2.0, 2.0] and "adaptive" not in str(cut.value)
