# Two entry points that work on a fresh machine with only Python 3.11 and make:
#   make run   - create .venv if missing, install, start the server (EMIT_PORT=9000 make run:
#                every flag of emit serve has an EMIT_ variable, docs/cli.md)
#   make test  - the same set-up, then lint, type-check and run the whole suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/emit serve

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check actors emit tests bench
	$(BIN)/ruff format --check actors emit tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench.actors

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
