# The two commands of the README:
#   make check   set the machine up if needed, then run the conformance check (refimpl check)
#   make test    set the machine up if needed, then run the test suite
HYPOTHESIS_PROFILE ?= $(if $(filter true 1,$(CI)),ci,dev)
PYTEST_ARGS ?=

.PHONY: setup check test test-slow lint regen bench mutation
setup:
	@bash tools/setup.sh

check: setup
	.venv/bin/refimpl check $(CHECK_ARGS)

# make test runs every test but the `slow` ones (kill trials, whole-run subprocesses, and what tests/slow_tests.txt
# lists: the tests of 0.6 s or more and seven parameters in eight of each sweep), spread over the cores with
# pytest-xdist when the machine has more than one; make test-slow runs those (.ci/run runs both legs).
CORES := $(shell nproc 2>/dev/null || echo 1)
XDIST ?= $(if $(filter 1,$(CORES)),,-n $(CORES))

test: setup
	HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) .venv/bin/python -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) .venv/bin/python -m pytest $(XDIST) -m slow $(PYTEST_ARGS)

# flake8 (120 columns) over the package, tools and tests; mypy over the harness
lint: setup
	.venv/bin/python -m flake8 refimpl tools tests
	.venv/bin/python -m mypy refimpl/harness

regen: setup
	.venv/bin/refimpl regen --check

bench: setup
	.venv/bin/refimpl bench

# the mutation check of the modules a change touched (git diff against BASE, default HEAD: uncommitted changes);
# harness modules are traced first (.mutation/cover.json). Its score per module is what a reviewer asks for.
BASE ?= HEAD
mutation: setup
	.venv/bin/python tools/mutation_check.py --changed $(BASE)
