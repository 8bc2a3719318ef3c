# yolomlu — every target creates the virtual environment it needs.
# torch is installed explicitly first: a bare `torch` requirement would pull a multi-GB CUDA build.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup run test ui clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install yolomlu (editable) with its dev tools

run: $(STAMP) ## run the main job on the embedded default (ARGS= adds Hydra overrides)
	$(PY) -m yolomlu $(ARGS)

test: $(STAMP) ## run the test suite
	$(PY) -m pytest -q $(ARGS)

ui: $(STAMP) ## open the MLflow UI on http://127.0.0.1:5000 for ./mlflow.db
	$(VENV)/bin/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow.db" --host 127.0.0.1 --port 5000 --workers 1

clean: ## remove generated state (runs, outputs, caches); keeps .venv
	rm -rf mlflow.db mlartifacts mlruns outputs multirun .cache .pytest_cache
