"""pytest plugin (entry point ``pytest11``): run refimpl's conformance cases against your implementation.

    pytest --pyargs refimpl.conformance --refimpl-target mypkg.attn:sdpa
    pytest --pyargs refimpl.conformance --refimpl-target kern:sdpa --refimpl-api torch-sdpa \
           --refimpl-dtype float32,bfloat16 --refimpl-family causal --refimpl-shard 2/4 -n 2

One parametrised test per family case (ids ``family/case``, e.g. ``causal/0007-float32``) plus the fixtures and
invariants. ``--refimpl-shard K/N`` keeps a deterministic K-th of N of the family cases, so a CI matrix can spread
the suite across runners (pytest-xdist spreads it across the cores of one).

``--refimpl-target`` may be given several times; without it the targets are refimpl itself. The
``refimpl_target`` fixture is parametrised over them (see ``refimpl.harness.target_spec`` for the protocol).
As in ``refimpl check``, a target runs in a worker process of its own (``refimpl.harness.targets.isolation``): a
segfault, ``os._exit``, ``sys.exit``, a hang past ``--refimpl-timeout`` or memory past ``--refimpl-max-memory``
fails that case's test with ``crash``/``timeout``/``oom`` and the session goes on (R function targets,
``R:file.R:fn``, get embedded R in their worker); ``--refimpl-no-isolation`` calls it in pytest's process.

As in ``refimpl check``, a failing family case's message ends with the target's ``diagnosis`` (the bug model
that explains its failing cases) and ``localisation`` (the condition they share) lines: the target's family
cases are judged once per session (:func:`refimpl_verdicts`), then each test reports its own case.
``--refimpl-repro-dir DIR`` writes the same reproduction scripts as ``refimpl check --repro-dir``.
"""
from __future__ import annotations

import pytest


def pytest_addoption(parser):
    from refimpl.options import add_to_pytest
    group = parser.getgroup("refimpl", "refimpl conformance")
    group.addoption("--refimpl-target", action="append", default=[], metavar="MODULE:FUNCTION",
                    help="an attention implementation to check: a callable (q, k, v, mask=None, scale=None) "
                         "returning output or (output, weights); may be repeated")
    add_to_pytest(group)                        # the options refimpl check shares (refimpl.options)


def family_specs(config):
    """The family cases the options select (shard applied), in a deterministic order."""
    from refimpl.harness.cases.families import parse_shard, select, shard
    dtypes = config.getoption("refimpl_dtype")
    specs = select(config.getoption("refimpl_family"), config.getoption("refimpl_suite"), dtypes)
    if config.getoption("refimpl_shard"):
        keep = shard([s.id for s in specs], *parse_shard(config.getoption("refimpl_shard")))
        specs = [s for s in specs if s.id in keep]
    return specs


def pytest_generate_tests(metafunc):
    if "refimpl_target" in metafunc.fixturenames:
        specs = metafunc.config.getoption("refimpl_target") or ["refimpl"]
        metafunc.parametrize("refimpl_target", specs, indirect=True, ids=specs, scope="session")
    if "refimpl_case" in metafunc.fixturenames:
        cases = family_specs(metafunc.config)
        metafunc.parametrize("refimpl_case", cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def refimpl_target(request):
    from refimpl.harness.target_spec import builtin_targets, load_target
    c = request.config
    isolate = None
    if not c.getoption("refimpl_no_isolation") and request.param not in builtin_targets():
        import time
        from refimpl.check import deadline_text
        from refimpl.harness.targets.isolation import isolator
        seconds = c.getoption("refimpl_deadline")           # counted from this target's start
        isolate = isolator(timeout=c.getoption("refimpl_timeout"), max_memory_mib=c.getoption("refimpl_max_memory"),
                           flag="--refimpl-target", deadline=time.monotonic() + seconds,
                           deadline_text=deadline_text(seconds))
    target = load_target(request.param, layout=c.getoption("refimpl_layout"),
                         torch=c.getoption("refimpl_torch_tensors"), api=c.getoption("refimpl_api"), isolate=isolate,
                         lse=c.getoption("refimpl_lse"), dropout=c.getoption("refimpl_dropout"))
    target.repeat = c.getoption("refimpl_repeat")
    try:
        yield target
    finally:
        if isolate is not None and hasattr(target.fn, "close"):
            target.fn.close()                                # its worker


@pytest.fixture(scope="session")
def refimpl_verdicts(refimpl_target, refimpl_store, request):
    """``(results by case id, lines)`` for the target: every selected family case judged once, and the diagnosis
    and localisation lines when some failed (the reproduction scripts written with ``--refimpl-repro-dir``)."""
    from refimpl.harness.cases import Status
    from refimpl.harness.analysis.diagnosis import diagnose, localise
    from refimpl.harness.rows.family_cases import run_one
    c = request.config
    specs = family_specs(c)
    results = [run_one(refimpl_target, s, refimpl_store, c.getoption("refimpl_masked_rows")) for s in specs]
    lines = []
    failing = [r for r in results if r.status == Status.FAIL]
    if failing:
        name, by_id = refimpl_target.name, {s.id: s for s in specs}
        lines = diagnose(results, refimpl_store, target=name, specs=by_id)
        lines.append(f"localisation {name}: {localise(results, by_id)}")
        if c.getoption("refimpl_repro_dir") and ":" in name:
            from refimpl.harness.analysis.repro import write_target_repros
            paths = write_target_repros(refimpl_target, [(by_id[r.id], refimpl_store) for r in failing],
                                        c.getoption("refimpl_repro_dir"), c.getoption("refimpl_masked_rows"))
            lines.append(f"reproductions {name}: {len(paths)} scripts in {c.getoption('refimpl_repro_dir')}")
    return {r.id: r for r in results}, lines


@pytest.fixture(scope="session")
def refimpl_store():
    from refimpl.harness.rows.family_cases import CaseStore
    return CaseStore()
