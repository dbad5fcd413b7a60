"""Shared test configuration: Hypothesis profiles and the R requirement.

Profiles (HYPOTHESIS_PROFILE): ``dev`` (default), ``ci`` (derandomized, fixed budget; .ci/run uses it),
``thorough`` (10x the examples). The example database lives in .hypothesis/ and is not committed.
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True, print_blob=True,
                          database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

from refimpl.heap import keep_freed_memory  # noqa: E402

keep_freed_memory()                 # as `refimpl check` does: the suite's large arrays are reused, not re-faulted


# --- the `r` marker: skip with the reason, except where R is required (CI), where it fails ------
import pytest  # noqa: E402


def r_required() -> bool:
    """R is required on CI (CI=true) unless R was hidden on purpose (REFIMPL_NO_R=1: the no-R leg)."""
    if os.environ.get("REFIMPL_NO_R", "") not in ("", "0"):
        return False
    return os.environ.get("REFIMPL_REQUIRE_R", os.environ.get("CI", "")).lower() in ("1", "true", "yes")


def pytest_runtest_setup(item):
    if item.get_closest_marker("r") is None:
        return
    from refimpl.r import bridge as rbridge
    a = rbridge.availability()
    if not a.ok:
        if r_required():
            pytest.fail(f"R is required here (CI) but unavailable: {a.reason}", pytrace=False)
        pytest.skip(a.reason)


@pytest.fixture(scope="session")
def rb():
    """The R bridge (tests using it must be marked `r`)."""
    from refimpl.r import bridge as rbridge
    return rbridge.require_r()


def pytest_terminal_summary(terminalreporter):
    import sys
    mod = sys.modules.get("test_fuzz") or sys.modules.get("tests.test_fuzz")
    if mod is not None and mod.CALLS["n"]:
        terminalreporter.write_line(f"fuzzing: {mod.CALLS['n']} calls of public functions, "
                                    f"each a valid result or a documented error")
