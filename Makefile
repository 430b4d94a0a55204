# The two commands of the README: `make run` (set up and start the platform) and `make test`.
SHELL := /bin/bash
UV ?= uv
PY := $(UV) run --frozen python

.PHONY: setup run stop status test test-fast lint typecheck bench clean

setup:  ## install uv if missing, then every workspace package and the dev tools into .venv
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --all-packages --frozen

run: setup  ## start PostgreSQL, NATS and every service on one machine (Ctrl-C stops all)
	$(PY) -m aitrading.fleet run

stop:  ## stop a fleet started by `make run` from another shell
	$(PY) -m aitrading.fleet stop

status:  ## health of a running fleet
	$(PY) -m aitrading.fleet status

test: setup  ## lint and types, then the whole suite: unit, service, fleet and deployment tests
	$(UV) run --frozen ruff check .
	$(UV) run --frozen mypy shared/src services/*/src
	$(UV) run --frozen pytest

test-fast: setup  ## everything but the tests that start processes
	$(UV) run --frozen pytest -m "not slow"

lint: setup
	$(UV) run --frozen ruff check .

typecheck: setup
	$(UV) run --frozen mypy shared/src services/*/src

bench: setup  ## side-by-side performance harnesses (print their figures); needs nginx and wrk
	@command -v nginx >/dev/null && command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] \
		&& apt-get update -qq && apt-get install -y -qq nginx wrk >/dev/null; }
	$(PY) benchmarks/gateway/run.py --rounds 3
	$(PY) benchmarks/market_data/run.py
	$(PY) benchmarks/trading/run.py

clean:
	rm -rf .venv .pytest_cache .ruff_cache .mypy_cache
