"""#27 item 4: when a worker-backed target stops being called (the run's deadline, deaths in a row, a high death
rate) and how long one call may take (a fixed --timeout, or the adaptive limit). The rules are pure
bookkeeping (refimpl/harness/targets/call_policy.py), so they are tested without a clock or a process; one CLI run
proves the periodic crasher gets its verdicts and the RESULT line."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from refimpl.harness.targets import call_policy as cp
from refimpl.harness.targets.call_policy import CallPolicy, work_of

ZOO = Path(__file__).resolve().parent / "zoo"


def _feed(policy, statuses, kind="call"):
    """Record ``statuses`` one by one; return the index of the first call the policy refuses (None: none)."""
    for i, s in enumerate(statuses):
        if policy.refuse(kind) is not None:
            return i
        policy.record(kind, s, 0.01, 100.0)
    return None if policy.refuse(kind) is None else len(statuses)


def test_a_target_dying_on_every_third_call_is_stopped_by_the_rate_rule():
    p = CallPolicy(None)
    assert _feed(p, ["ok", "ok", "crash"] * 20) == 9          # the 3rd death, at a rate of 1/3
    died = p.refuse("call")
    assert died.status == "crash" and "3 of its last 9 calls died" in str(died) and "20%" in str(died)


def test_exits_are_crashes_and_hangs_timeouts_in_the_verdict():
    p = CallPolicy(None)
    _feed(p, ["ok", "ok", "exit"] * 3)
    assert p.refuse("call").status == "crash"
    p = CallPolicy(None)
    _feed(p, ["ok", "ok", "timeout"] * 3)
    assert p.refuse("call").status == "timeout"


def test_a_rare_death_does_not_stop_a_target():
    p = CallPolicy(None)
    assert _feed(p, (["ok"] * 19 + ["crash"]) * 10) is None    # 5% of calls: below the rate, never stopped


def test_a_correct_target_is_never_stopped_and_errors_are_not_deaths():
    p = CallPolicy(None)
    assert _feed(p, ["ok"] * 500 + ["error"] * 50) is None


def test_three_timeouts_in_a_row_stop_that_kind_of_call_only():
    p = CallPolicy(None)
    assert _feed(p, ["ok"] * 40 + ["timeout"] * 3, kind="grad") == 43
    assert "last 3 calls ended in 'timeout'" in str(p.refuse("grad")) and p.refuse("call") is None


def test_the_deadline_refuses_every_call_once_it_passed():
    assert CallPolicy(None, deadline=time.monotonic() + 3600, deadline_text="1h").refuse("call") is None
    late = CallPolicy(None, deadline=time.monotonic() - 1, deadline_text="90s").refuse("call")
    assert late.status == "not run" and "the run's --deadline of 90s passed" in str(late)   # no verdict, not a timeout


def test_an_explicit_timeout_is_a_fixed_limit():
    p = CallPolicy(7.5)
    p.record("call", "ok", 0.001, 10.0)
    assert p.limit(1e9) == 7.5 and p.limit(1.0) == 7.5 and p.limit(None) == 7.5


def test_the_adaptive_limit_scales_with_the_slowest_call_and_the_work():
    p = CallPolicy(None)
    assert p.limit(1e6) == cp.DEFAULT_TIMEOUT                   # nothing measured yet
    p.record("call", "ok", 0.5, 1e6)                            # 0.5 us per unit of work
    assert p.limit(1e6) == pytest.approx(cp.ADAPT_FACTOR * 0.5)  # 20 x 0.5 s = 10 s
    assert p.limit(10.0) == cp.ADAPT_FLOOR                      # a tiny call still gets the floor
    assert p.limit(1e9) == cp.DEFAULT_TIMEOUT                   # never above the default cap
    assert p.limit(None) == cp.DEFAULT_TIMEOUT                  # a batch or a gradient call: the cap
    p.record("call", "ok", 0.1, 1e6)                            # a faster call does not tighten it
    assert p.limit(1e6) == pytest.approx(10.0)


def test_the_adaptive_limit_proves_itself_on_its_first_cut():
    p = CallPolicy(None)
    p.record("call", "ok", 0.01, 1e3)
    assert p.retry(p.limit(1e3)) and p.limit(1e3) < cp.DEFAULT_TIMEOUT    # unproven: the first cut is retried
    p.retried("ok")                                                     # the retry came back: the guess was wrong
    assert p.limit(1e3) == cp.DEFAULT_TIMEOUT and not p.retry(cp.DEFAULT_TIMEOUT)
    q = CallPolicy(None)
    q.record("call", "ok", 0.01, 1e3)
    q.retried("timeout")                                                # it hung at the default limit too
    assert q.limit(1e3) < cp.DEFAULT_TIMEOUT and not q.retry(q.limit(1e3))   # later cuts are verdicts at once
    assert not CallPolicy(2.0).retry(2.0)                               # an explicit --timeout is never retried


def test_a_correct_kernel_paused_past_the_adaptive_limit_is_retried_and_passes(tmp_path, monkeypatch):
    """In a real worker: the adaptive limit (floor lowered to 0.3 s) cuts the paused 3rd call; the retry at the
    default limit returns the right output, and the limit is the default from then on."""
    from refimpl.harness.targets import isolation
    from refimpl.attention import scaled_dot_product_attention
    monkeypatch.setattr(cp, "ADAPT_FLOOR", 0.3)
    monkeypatch.setenv("PERIODIC_COUNTER", str(tmp_path / "count"))
    monkeypatch.setenv("PERIODIC_PAUSE", "1.5")
    fn = isolation.isolated(f"{ZOO / 'periodic.py'}:pauses_on_the_3rd")
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 4, 8)) for _ in range(3))
    try:
        outs = [fn(q.copy(), k.copy(), v.copy()) for _ in range(4)]
    finally:
        fn.close()
    want = scaled_dot_product_attention(q, k, v)[0]
    assert all(np.allclose(o, want) for o in outs)
    assert fn.policy.adaptive == "off" and fn.policy.limit(1.0) == cp.DEFAULT_TIMEOUT


def test_work_grows_with_query_and_key_lengths():
    q, k = np.zeros((1, 2, 64, 16)), np.zeros((1, 2, 64, 16))
    small = work_of((q, k, k), {"mask": None})
    big = work_of((np.zeros((1, 2, 640, 16)), np.zeros((1, 2, 640, 16)), np.zeros((1, 2, 640, 16))), {})
    assert big > 90 * small                                     # 10x Sq and 10x Sk: ~100x the scores
    assert work_of((), {}) == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("fn, verdict", [("segfault_every_3rd", "crash"), ("sys_exit_every_3rd", "crash")])
def test_a_periodic_dier_gets_its_verdicts_and_the_result_line(tmp_path, fn, verdict):
    env = dict(os.environ, PERIODIC_COUNTER=str(tmp_path / "count"))
    p = subprocess.run([sys.executable, "-m", "refimpl", "check", "--target", f"{ZOO / 'periodic.py'}:{fn}",
                        "--family", "sizes", "--family", "causal", "--suite", "quick", "--random", "0", "--quiet"],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert p.returncode == 1, p.stderr[-2000:]
    assert f"RESULT: NON-CONFORMANCE: {ZOO / 'periodic.py'}:{fn} does not conform" in p.stdout
    assert f"{verdict}: not called: 3 of its last 9 calls died" in p.stdout, p.stdout[-3000:]
    calls = int((tmp_path / "count").read_text())
    assert calls < 30, calls                                   # stopped, not called on every case
