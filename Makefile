# vaelm — `make demo` runs the main job, `make test` the test suite; both set themselves up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test test-fast lint format s3 bench bench-quick clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: an open range here would pull a multi-GB CUDA build (docs/OPERATIONS.md)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,demo]'
	@touch $(STAMP)

setup: $(STAMP)

DEMO_CORPUS := data/demo/corpus/reviews.parquet

# written once: rewriting it would change the input fingerprint and refuse earlier outputs as stale
$(DEMO_CORPUS): | $(STAMP)
	$(BIN)/vaelm demo-corpus data/demo/corpus

demo: $(STAMP) $(DEMO_CORPUS)
	$(BIN)/vaelm run jobs/demo.yaml

test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -p no:cacheprovider -rs

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

lint: $(STAMP)
	$(BIN)/ruff check platform tests bench
	$(BIN)/ruff format --check platform tests bench
	$(BIN)/mypy
	$(BIN)/python -m yamllint -s -c .yamllint.yaml jobs k8s deploy
	$(BIN)/hadolint deploy/docker/Dockerfile deploy/docker/Dockerfile.gpu

format: $(STAMP)
	$(BIN)/ruff check --fix platform tests bench
	$(BIN)/ruff format platform tests bench

s3: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH bash deploy/local/start-s3.sh

bench: $(STAMP)
	$(BIN)/python -m bench.run --all

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf out runs .pytest_cache .mypy_cache .ruff_cache
