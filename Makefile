# The two commands of the README:
#   make check   set the machine up if needed, then run the conformance check (refimpl check)
#   make test    set the machine up if needed, then run the test suite
HYPOTHESIS_PROFILE ?= $(if $(filter true 1,$(CI)),ci,dev)
PYTEST_ARGS ?=

.PHONY: setup check test regen bench
setup:
	@bash tools/setup.sh

check: setup
	.venv/bin/refimpl check $(CHECK_ARGS)

test: setup
	HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) .venv/bin/python -m pytest $(PYTEST_ARGS)

regen: setup
	.venv/bin/refimpl regen --check

bench: setup
	.venv/bin/refimpl bench
