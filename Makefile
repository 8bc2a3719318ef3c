# yolomlu — every target creates the virtual environment it needs.
# torch is installed explicitly first: a bare `torch` requirement would pull a multi-GB CUDA build.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
# Where pip would pick torch's CUDA build (gigabytes the CPU workbench never uses), take the CPU one:
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
STAMP := $(VENV)/.installed
ARGS ?=
PRESET ?= study_cpu
JOBS ?=
# make server: the MLflow tracking server (PostgreSQL store, proxied artifacts) and where it keeps its data.
SERVER_DIR ?= .cache/yolomlu/server
SERVER_HOST ?= 127.0.0.1
SERVER_PORT ?= 5000
PG_PORT ?= 5433
SERVER_ALLOWED_HOSTS ?=

.DEFAULT_GOAL := help
.PHONY: help setup run sweep report search promote gate test ui server server-stop gpu-study import demo-model clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || { echo "[setup] creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "[setup] upgrading pip"
	@$(PY) -m pip install -q --upgrade pip
	@echo "[setup] installing $(TORCH_SPEC)$(if $(TORCH_INDEX), from $(TORCH_INDEX)) (the CPU build: a minute or two)"
	@$(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	@echo "[setup] installing yolomlu (editable) with MLflow, Hydra, pycocotools, Optuna, ONNX Runtime, OpenVINO + NNCF, the PostgreSQL driver and the test tools (a few minutes)"
	@$(PY) -m pip install -q -e ".[dev,onnx,openvino,server]"
	@touch $(STAMP)
	@echo "[setup] done: use $(VENV)/bin/yolomlu, or 'source $(VENV)/bin/activate' for python -m yolomlu"

setup: $(STAMP) ## create .venv and install yolomlu (editable) with its dev tools, ONNX Runtime and OpenVINO

run: $(STAMP) ## the main job: the study's CPU variants on the demo model, one at a time, then the report
	$(PY) -m yolomlu experiments/sweep=study_cpu $(ARGS)
	$(PY) -m yolomlu task=report

sweep: $(STAMP) ## any sweep preset: PRESET=<experiments/sweep/*.yaml> (JOBS=n: parallel, untimed sweeps only)
	$(PY) -m yolomlu experiments/sweep=$(PRESET) $(if $(JOBS),hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS)) $(ARGS)

report: $(STAMP) ## comparison report of the latest sweep (HTML + Markdown in outputs/report/)
	$(PY) -m yolomlu task=report $(ARGS)

search: $(STAMP) ## multi-objective search (fps, map50_95) within an accuracy budget: SEARCH=demo, resumable
	$(PY) -m yolomlu task=search search=$(or $(SEARCH),demo) $(ARGS)

promote: $(STAMP) ## register the newest search's (or sweep's) fastest run within its budget in the Model Registry
	$(PY) -m yolomlu task=promote $(ARGS)

gate: $(STAMP) ## a candidate (source=<run id> in ARGS, else the rule) against the registered champion: exit 1 if worse
	$(PY) -m yolomlu task=gate $(ARGS)

test: $(STAMP) ## run the test suite
	$(PY) -m pytest -q $(ARGS)

ui: $(STAMP) ## open the MLflow UI on http://127.0.0.1:5000 for ./mlflow.db
	MLFLOW_DISABLE_TELEMETRY=true $(VENV)/bin/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow.db" --host 127.0.0.1 --port 5000 --workers 1

server: $(STAMP) ## MLflow tracking server for many machines (PostgreSQL store, proxied artifacts), in the background
	$(PY) -m yolomlu.tracking.server start --dir $(SERVER_DIR) --host $(SERVER_HOST) --port $(SERVER_PORT) --pg-port $(PG_PORT) \
		$(if $(SERVER_ALLOWED_HOSTS),--allowed-hosts $(SERVER_ALLOWED_HOSTS))

server-stop: ## stop what make server started (its data stays in SERVER_DIR)
	$(PY) -m yolomlu.tracking.server stop --dir $(SERVER_DIR)

# On a GPU machine that has its own torch (no tracking store needed): make gpu-study GPU_PY=python3
GPU_PY ?= $(PY)
gpu-study: ## on a CUDA machine: GPU variants (bs16, then bs1) as run records; then here: make import
	$(GPU_PY) -m yolomlu experiments/sweep=gpu_study $(ARGS); \
	$(GPU_PY) -m yolomlu experiments/sweep=gpu_latency $(ARGS)

import: $(STAMP) ## load run records made elsewhere into the store (SRC=outputs/gpu_records)
	$(PY) -m yolomlu task=import source=$(or $(SRC),outputs/gpu_records) $(ARGS)

demo-model: $(STAMP) ## retrain the demo checkpoint (about 45 minutes on 2 CPU cores)
	$(PY) -m yolomlu task=train model=yolov5n_v5 model.nc=6 train.out=yolomlu/assets/demo_yolov5n_v5.pt $(ARGS)

clean: ## remove generated state (runs, outputs, caches, the server's data); keeps .venv
	@if [ -f $(SERVER_DIR)/state.json ] && [ -x $(PY) ]; then $(PY) -m yolomlu.tracking.server stop --dir $(SERVER_DIR); fi
	rm -rf mlflow.db mlflow.db.lock mlartifacts mlruns outputs multirun .cache .pytest_cache
