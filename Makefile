# The two commands in the README: `make lab` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
PORT ?= 8888
export PYTHONUNBUFFERED := 1

.PHONY: lab test data notebooks bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## data: download or copy the datasets into data/ (offline: Debian's dataset-fashion-mnist)
data: $(STAMP)
	$(PY) -m ptft_helpers data

## lab: set up, then start JupyterLab on notebooks/
lab: data
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --port=$(PORT) $(LAB_ARGS)

## test: set up, lint (ruff check, ruff format --check), then the unit tests and every notebook under nbval, in fast mode
test: data
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check
	PTFT_FAST=1 $(PY) -m pytest tests $(NOTEBOOKS) --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg $(PYTEST_ARGS)

## notebooks: re-execute every notebook in full mode and store its outputs (about 30 min on 2 CPU cores)
notebooks: data
	PTFT_FAST=0 PTFT_PROGRESS=0 $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
	  --ExecutePreprocessor.timeout=3600 --ExecutePreprocessor.record_timing=False \
	  --ExecutePreprocessor.store_widget_state=False $(NOTEBOOKS)

## bench: time the training loop against the naive loop (see benchmarks/README.md)
bench: data
	$(PY) benchmarks/bench_training.py

clean:
	rm -rf $(VENV) data/checkpoints
