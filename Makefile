# brainrecon: `make reproduce` runs the main job, `make test` runs every test.
# Both create .venv on first use and reinstall when requirements.txt or setup.py change.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.brainrecon-installed
NBDEV_TEST_FLAGS ?=

.PHONY: venv test check-sync nbtest pytest reproduce export bench chromium

$(STAMP): requirements.txt setup.py settings.ini
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $@

venv: $(STAMP)

## The test command: library == notebooks, clean notebooks, notebook tests, then tests/.
test: venv chromium
	$(BIN)/python tests/check_sync.py
	$(MAKE) nbtest pytest

check-sync: venv
	$(BIN)/python tests/check_sync.py

# Experiment notebooks are run by `brainrecon reproduce` (and its fast test in tests/), not here;
# the dashboard notebook nbs/app.ipynb is served by Voila and tested in a browser by tests/test_app.py.
nbtest: venv
	$(BIN)/nbdev_test --n_workers 2 --skip_folder_re '^(_|\.|experiments)' --skip_file_re '^([_.]|app\.ipynb$$)' $(NBDEV_TEST_FLAGS)

pytest: venv
	$(BIN)/python -m pytest tests

# The dashboard's browser test (tests/test_app.py) drives Debian's Chromium with Playwright.
chromium:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

## The main job: the papermill reproduction on the mini world, writing figures/.
reproduce: venv
	$(BIN)/brainrecon reproduce

## After editing nbs/: regenerate brainrecon/ and strip notebook noise.
export: venv
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean

bench: venv
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done
