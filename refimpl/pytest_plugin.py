"""pytest plugin (entry point ``pytest11``): run refimpl's conformance cases against your implementation.

    pytest --pyargs refimpl.conformance --refimpl-target mypkg.attn:sdpa

``--refimpl-target`` may be given several times; without it the targets are refimpl itself. The
``refimpl_target`` fixture is parametrised over them (see ``refimpl.harness.targets`` for the protocol).
"""
from __future__ import annotations

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("refimpl", "refimpl conformance")
    group.addoption("--refimpl-target", action="append", default=[], metavar="MODULE:FUNCTION",
                    help="an attention implementation to check: a callable (q, k, v, mask=None, scale=None) "
                         "returning output or (output, weights); may be repeated")
    group.addoption("--refimpl-layout", default="SD", choices=["SD", "BHSD", "BSHD"],
                    help="tensor layout the user target expects (default SD: (..., S, D))")


def pytest_generate_tests(metafunc):
    if "refimpl_target" in metafunc.fixturenames:
        specs = metafunc.config.getoption("refimpl_target") or ["refimpl"]
        metafunc.parametrize("refimpl_target", specs, indirect=True, ids=specs, scope="session")


@pytest.fixture(scope="session")
def refimpl_target(request):
    from refimpl.harness.targets import load_target
    return load_target(request.param, layout=request.config.getoption("refimpl_layout"))
