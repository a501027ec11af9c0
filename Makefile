# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO_OUT ?= demo-out

.PHONY: demo test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

demo: $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	rm -rf $(DEMO_OUT)
	$(BIN)/evertrain demo --out $(DEMO_OUT)

test: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,llm]'
	bash scripts/test-prereqs.sh $(BIN)/python
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(BIN)/python
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	PYTHONPATH=src $(BIN)/lint-imports --no-cache
	PYTHONPATH=src $(BIN)/python scripts/import_circles.py

typecheck: $(BIN)/python
	$(BIN)/mypy

bench: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	@echo "each script in bench/ creates the environments of the tools it compares against; results: bench/RESULTS.md"

clean:
	rm -rf $(VENV) $(DEMO_OUT) build dist src/*.egg-info
