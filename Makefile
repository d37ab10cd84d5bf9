# receiver: `make run` serves on the embedded SQLite default; `make test` installs and checks everything.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run migrate test lint typecheck unit services browser demo soak bench clean

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
	$(BIN)/mypy receiver

unit: install
	$(BIN)/pytest -q

test: install services browser lint typecheck unit

soak: install services
	$(BIN)/python -m tests.soak

demo: install
	scripts/demo

bench: install
	bench/run

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache
