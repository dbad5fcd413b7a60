"""The bridge itself: round trips, errors, warnings, console, RNG state, threads, availability."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from refimpl.r import bridge as rbridge
from refimpl import tolerance as tol
from refimpl.testing import assert_conforms, assert_exact

pytestmark = pytest.mark.r

IDENTITY = "function(x) x"


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (3, 2), (2, 3, 4), (1, 5), (5,)])
def test_float64_round_trip_is_exact(rb, shape):
    a = np.random.default_rng(7).normal(size=shape) * 10.0 ** np.arange(int(np.prod(shape))).reshape(shape) % 1e300
    a.reshape(-1)[0] = np.nextafter(1.0, 2.0)             # a value that needs all 53 bits
    assert_exact(rb.apply(IDENTITY, a), a, f"round trip of shape {shape}")


def test_r_sees_numpy_indices_column_major_correctly(rb):
    a = np.arange(24.0).reshape(2, 3, 4)
    assert float(np.asarray(rb.apply("function(x) x[2, 3, 4]", a)).reshape(-1)[0]) == a[1, 2, 3]
    assert float(np.asarray(rb.apply("function(x) x[2, 1, 3]", a)).reshape(-1)[0]) == a[1, 0, 2]
    assert tuple(np.asarray(rb.apply("function(x) dim(x)", a)).reshape(-1)) == (2, 3, 4)


def test_availability_reports_versions(rb):
    a = rbridge.availability()
    assert a.ok and a.reason == ""
    assert a.r_version.startswith("4.") and a.attention_version and a.rpy2_version


def test_r_error_carries_message_and_call(rb):
    with pytest.raises(rbridge.RError, match="boom"):
        rb.apply("function() stop('boom')")
    res = rb.call("attention", np.ones((3, 2)), np.ones((1, 2)), np.ones((1, 2)))
    assert res.error == "non-conformable arguments" and "%*%" in res.call
    with pytest.raises(rbridge.RError, match="non-conformable"):
        res.unwrap()


def test_batch_keeps_other_cases_when_one_fails(rb):
    good = (np.ones((2, 2)), np.ones((2, 2)), np.arange(4.0).reshape(2, 2))
    bad = (np.ones((3, 2)), np.ones((1, 2)), np.ones((1, 2)))
    res = rb.batch("attention", [good, bad, good], ("Q", "K", "V"))
    assert [r.error for r in res] == [None, "non-conformable arguments", None]
    np.testing.assert_array_equal(res[2].value[0], [[1.0, 2.0], [1.0, 2.0]])


def test_failure_in_the_middle_of_a_same_shape_group_resumes(rb):
    ok = (np.ones((2, 2)), np.ones((2, 2)))
    cases = [ok, (np.ones((2, 2)), np.full((2, 2), np.nan)), ok]
    res = rb.batch("attention", [c + (np.ones((2, 2)),) for c in cases], ("Q", "K", "V"))
    assert all(r.error is None for r in res)            # NaN is no error in R: it propagates
    assert np.isnan(res[1].value[1]).all() and not np.isnan(res[2].value[1]).any()


def test_warnings_are_captured_per_case(rb):
    q = np.ones((4, 4))
    res = rb.batch("attention", [(q, q, q, np.array([1.0, 0.0, 1.0])), (q, q, q, np.ones((4, 4)))],
                   ("Q", "K", "V", "mask"))
    assert any("multiple of shorter object length" in w for w in res[0].warnings), res[0].warnings
    assert res[1].warnings == []


def test_vignette_console_output_is_captured_not_printed(rb, capfd):
    run = rb.run_vignette("simple_attention")
    out, err = capfd.readouterr()
    assert "[1,]" not in out
    assert any("[1,]" in line for line in run.console)


def test_global_rng_state_is_restored(rb):
    before = np.asarray(rb.apply("function() { set.seed(123); runif(1) }"))
    rb.apply("function() { set.seed(123); invisible(NULL) }")
    rb.run_vignette("complete_attention")                 # calls set.seed(0) inside
    rb.batch("SoftMax", [(np.ones(3),)], ("x",))
    after = np.asarray(rb.apply("function() runif(1)"))
    assert_exact(after, before, "the stream continues as if the vignette had not run")


def test_concurrent_threads_do_not_crash_and_get_their_own_results(rb):
    errors, results = [], {}

    def work(t):
        try:
            x = np.full(3, float(t))
            for _ in range(25):
                r = rb.call("SoftMax", x + np.arange(3.0)).unwrap()[0]
            results[t] = r
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    e = np.exp(np.arange(3.0) - 2)
    for t in range(4):
        assert_conforms(results[t], e / e.sum(), tol.forward(np.float64, 5, 1.0), f"thread {t}")


def test_hiding_r_is_reported_by_availability():
    code = "from refimpl.r import bridge as rbridge; a = rbridge.availability(); print(a.ok, '|', a.reason)"
    env = dict(os.environ, REFIMPL_NO_R="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith("False |") and "REFIMPL_NO_R=1" in out
