# phase-client. `make test` and `make demo` do all their own set-up on Debian/Ubuntu (as root).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
BUILD ?= build

.PHONY: test-serial all deps venv test test-unit lint format clean
all: test

deps:
	@scripts/install-deps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# The whole suite: unit, integration (real HTTP, namespaces, DHT on loopback) and e2e (QEMU),
# in two lanes on two cores (scripts/run-tests.sh); `make test-serial` runs it in one.
test: deps venv libp2p-js
	scripts/run-tests.sh $(VPY) $(PYTEST_ARGS)

test-serial: deps venv libp2p-js
	$(VPY) -m pytest -q $(PYTEST_ARGS)

# Everything but the namespace (root), QEMU and slow tests.
test-unit: venv
	$(VPY) -m pytest -q -m "not netns and not qemu and not slow" $(PYTEST_ARGS)

lint: venv
	$(VPY) -m ruff check phase_client tests bench
	$(VPY) -m ruff format --check phase_client tests bench
	$(VPY) -m mypy

format: venv
	$(VPY) -m ruff format phase_client tests bench
	$(VPY) -m ruff check --fix phase_client tests bench

clean:
	rm -rf $(BUILD) .pytest_cache .ruff_cache *.egg-info

# Each area keeps its targets in its own file (zipapp/initramfs/e2e, benchmarks, demo).
-include mk/*.mk
