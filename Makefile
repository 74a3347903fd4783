# Two commands for a new machine: `make run` and `make test`.
# Both create the virtual environment and install what is needed first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/task-service run

test: $(STAMP)
	$(BIN)/pytest -v

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy app handlers schemas

bench: $(STAMP)
	$(BIN)/python bench/bridge_publish.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
