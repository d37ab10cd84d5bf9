# receiver: `make run` serves on the embedded SQLite default; `make test` installs and checks everything.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: install run migrate test lint typecheck unit services browser demo soak bench bench-quick clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/receiver --config config/receiver.toml serve

migrate: install
	$(BIN)/receiver --config config/receiver.toml migrate

services:
	scripts/ensure-services

browser:
	scripts/ensure-browser

lint: install
	$(BIN)/ruff check receiver tests bench
	$(BIN)/ruff format --check receiver tests bench

typecheck: install
	$(BIN)/mypy receiver tests

unit: install
	$(BIN)/pytest -q

test: install services browser lint typecheck unit

soak: install services
	$(BIN)/python -m bench.soak

demo: install
	scripts/demo

# The benchmarks' own dependencies (FastAPI row, chart): the `bench` extra.
$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	bench/run

# A smoke run of every benchmark (a few seconds each, one run, 20k notifications for rss):
# reports under bench/results/quick/ (not committed).
bench-quick: $(BENCH_STAMP)
	BENCH_QUICK=1 bench/run

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache
