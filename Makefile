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

# The suite runs on the CPU: where a CPU build of the pinned torch can be installed (a local
# wheel, an index that has one), it goes in first, a few hundred MB instead of the GPU build's
# gigabytes of CUDA libraries; elsewhere the pin in pyproject.toml decides as usual.
TORCH_PIN := $(shell grep -o 'torch==[0-9.]*' pyproject.toml)

test: $(BIN)/python
	-$(BIN)/python -m pip install -q '$(TORCH_PIN)+cpu' 2>/dev/null
	$(BIN)/python -m pip install -q -e '.[test,llm]'
	bash scripts/test-prereqs.sh $(BIN)/python
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile

lint: $(BIN)/python
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	PYTHONPATH=src $(BIN)/lint-imports --no-cache
	PYTHONPATH=src $(BIN)/python scripts/import_circles.py

typecheck: $(BIN)/python
	$(BIN)/mypy

# The speed comparisons, each beside its competitors in the same run; every script makes
# the competitors' virtual environments it needs (bench/.venvs/) and rewrites its own
# section of bench/RESULTS.md. The statistical benchmarks (bench/acceptance.py,
# bench/estimate.py, bench/ct_quality.py: hours) are run on their own.
bench: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	@uptime
	$(BIN)/python bench/drift.py --whole 5
	$(BIN)/python bench/train_overhead.py
	$(BIN)/python bench/cli.py
	$(BIN)/python bench/registry.py
	$(BIN)/python bench/serve.py --mlflow --write
	$(BIN)/python bench/logs.py
	@uptime

clean:
	rm -rf $(VENV) $(DEMO_OUT) build dist src/*.egg-info
