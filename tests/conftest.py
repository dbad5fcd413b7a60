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


import pytest  # noqa: E402

# --- the split of make test / make test-slow: tests/slow_tests.txt (written by tools/slow_tests.py) -----------
SLOW_LIST = os.path.join(os.path.dirname(__file__), "slow_tests.txt")
SWEEP_KEEP = 8              # make test runs one parameter in SWEEP_KEEP of each listed sweep


def _slow_entries():
    out = {"sweep": set(), "slow": set()}
    with open(SLOW_LIST) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                kind, _, node = line.rstrip("\n").partition(" ")
                out[kind].add(node)
    return out


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark `slow` each listed slow test and all but one parameter in SWEEP_KEEP of each listed sweep (the first,
    then every SWEEP_KEEP-th in collection order), before `-m "not slow"` deselects. REFIMPL_SLOW_LIST=0 leaves
    the list out (the mutation tools: every test may kill a mutant)."""
    if os.environ.get("REFIMPL_SLOW_LIST", "1") == "0":
        return
    entries, seen = _slow_entries(), {}
    for item in items:
        fn = item.nodeid.split("[", 1)[0]
        if fn in entries["sweep"]:
            i = seen[fn] = seen.get(fn, -1) + 1
            if i % SWEEP_KEEP:
                item.add_marker(pytest.mark.slow)
        elif item.nodeid in entries["slow"]:
            item.add_marker(pytest.mark.slow)


# --- the `r` marker: skip with the reason, except where R is required (CI), where it fails ------


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
