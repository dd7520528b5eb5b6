# brainrecon: `make reproduce` runs the main job, `make test` runs every test.
# Both create .venv on first use and reinstall when requirements.txt or setup.py change.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.brainrecon-installed
NBDEV_TEST_FLAGS ?=

.PHONY: venv test check-sync nbtest nbtest-blas pytest reproduce rehearse export bench chromium proxy hub

$(STAMP): requirements.txt setup.py settings.ini
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $@

venv: $(STAMP)

## The test command: library == notebooks, clean notebooks, notebook tests (and the numerically sensitive ones again
## under other BLAS settings), then tests/.
test: venv chromium proxy
	$(BIN)/python tests/check_sync.py
	$(MAKE) nbtest nbtest-blas pytest

check-sync: venv
	$(BIN)/python tests/check_sync.py

# Experiment notebooks are run by `brainrecon reproduce` (and its fast test in tests/), not here;
# the dashboard notebook nbs/app.ipynb is served by Voila and tested in a browser by tests/test_app.py.
nbtest: venv
	$(BIN)/nbdev_test --n_workers 2 --skip_folder_re '^(_|\.|experiments)' --skip_file_re '^([_.]|app\.ipynb$$)' $(NBDEV_TEST_FLAGS)

# The chapters whose tests compare floating-point results, run again under other BLAS settings: one thread, and MKL
# (inside torch) held to its AVX2 kernels. A test that holds only for one kernel's rounding (a product assumed exactly
# symmetric, ties assumed bit-identical) fails here instead of on a user's machine.
BLAS_CHAPTERS := '^(01_data|04_decoding|05_metrics|07_solvers|08_ridge|09_rr)\.ipynb$$'
BLAS_SETTINGS := "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1" "MKL_ENABLE_INSTRUCTIONS=AVX2"
nbtest-blas: venv
	for settings in $(BLAS_SETTINGS); do \
	  echo "nbtest-blas: $$settings"; \
	  env $$settings $(BIN)/nbdev_test --n_workers 2 --skip_folder_re '^(_|\.|experiments)' --file_re $(BLAS_CHAPTERS) || exit 1; \
	done

pytest: venv
	$(BIN)/python -m pytest tests

# The dashboard's browser tests (tests/test_app.py, test_hub.py) drive Debian's Chromium with Playwright.
chromium:
	tools/apt-install chromium chromium

# The hub's proxy: configurable-http-proxy from npm (package.json, package-lock.json) into node_modules/, with
# Debian's nodejs and npm when npm is missing.
PROXY := node_modules/.bin/configurable-http-proxy
$(PROXY): package.json package-lock.json
	tools/apt-install npm nodejs npm
	npm ci --no-audit --no-fund
	touch $@

proxy: $(PROXY)

## The dashboard for a lab: JupyterHub on 127.0.0.1:$(HUB_PORT), one system account per person (needs root).
HUB_PORT ?= 8000
HUB_ADMIN ?= admin
hub: venv proxy
	$(BIN)/brainrecon hub --port $(HUB_PORT) --admin $(HUB_ADMIN)

## The main job: the papermill reproduction on the mini world, writing figures/.
reproduce: venv
	$(BIN)/brainrecon reproduce

## The rehearsal: the real study's code path at real sizes, random weights, on this CPU (~9 GB under REHEARSAL_DIR).
REHEARSAL_DIR ?= runs/rehearsal
rehearse: venv
	$(BIN)/brainrecon rehearse --out $(REHEARSAL_DIR)

## After editing nbs/: regenerate brainrecon/ and strip notebook noise.
export: venv
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean

bench: venv
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done
