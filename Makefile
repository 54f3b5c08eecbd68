# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
MODEL_DIR ?= models/default

.PHONY: install install-dev serve train test lint typecheck unit lock benchmarks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.runtime: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

$(MODEL_DIR)/model.json: | $(VENV)/.runtime
	$(BIN)/python -m training train --out $(MODEL_DIR)

train: $(VENV)/.runtime
	$(BIN)/python -m training train --out $(MODEL_DIR)

serve: $(VENV)/.runtime $(MODEL_DIR)/model.json
	LOOKALIKE_MODEL_DIR=$(MODEL_DIR) $(BIN)/python -m app serve

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy

unit: $(VENV)/.dev
	$(BIN)/pytest

test: lint typecheck unit

lock: $(BIN)/python
	$(PIP) install -q -e '.[dev]'
	{ head -n 2 constraints.txt; $(PIP) freeze --exclude-editable; } > constraints.tmp
	mv constraints.tmp constraints.txt

benchmarks: $(VENV)/.dev
	$(BIN)/python -m benchmarks.search

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
