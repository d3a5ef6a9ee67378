# Quick start: `make demo` and `make test`; both create .venv with python3 if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Offline copies of the manifest resources (see data_manifests/); overridable from the shell.
OMICSTWIN_DATA_PATH ?= $(abspath ../shared/data)
export OMICSTWIN_DATA_PATH

.PHONY: demo test lint bench-simulate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[all]"
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/omicstwin demo --config pipelines/demo.yaml --out demo_output

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check omicstwin tests benchmarks
	$(BIN)/ruff format --check omicstwin tests benchmarks

bench-simulate: $(VENV)/.installed
	$(BIN)/python benchmarks/simulate.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache
