# GNU make. `make run` executes the lessons, `make test` runs every test, `make reproduce`
# regenerates the full study (checkpoints/, results/*.json, img/) from scratch.
#
# The environment is passed through untouched: set CIFAR10_ROOT (the folder that holds
# cifar-10-batches-py/) to use a local copy of CIFAR-10; .ci/run sets it for CI. Without it the
# data is downloaded once into the repository's data/, whatever the working directory.

PY ?= python3
VENV = .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
STUDY := $(sort $(wildcard study/[0-9][0-9]_*.ipynb))
CI_DIR = build/ci
CI_NOTEBOOKS := $(patsubst %,$(CI_DIR)/%,$(NOTEBOOKS) $(STUDY))

# `make run` (scripts/run_series.py) executes the lessons one at a time, in order, each into
# build/run/ (log: build/run/series.log), and copies it over notebooks/ only when it succeeded,
# without papermill's injected-parameters cell; it records each one's run time in
# results/series.json and regenerates the provenance cells. Lessons read the committed study and
# write only to build/lessons/. `make run ONLY="03 04"` runs some lessons only.
#
# `make reproduce` runs study/ the same way: PROFILE=auto picks `full` on a CUDA GPU, else the
# long `cpu` path; then it measures the latency tables of both runtimes (results/latency.json)
# and fine-tunes the plan they choose (helpers.study.latency_plans: latency_plans in
# results/network_pruning.json); every step resumes from its state files when interrupted;
# then README.
PROFILE ?= auto
ONLY ?=
# nbval: --nbval-lax runs every cell (an exception fails the test) but compares outputs only
# of cells marked `# NBVAL_CHECK_OUTPUT`; --nbval-current-env uses this venv's kernel.
NBVAL_FLAGS = --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider
# Every non-zero pytest exit fails make, 5 ("no tests collected") included; --durations shows
# where the time of `make test` goes (budget: under 20 minutes on a fresh clone, install included).
PYTEST_FLAGS = --durations=10

.PHONY: help venv run reproduce latency test unit-test nb-test lint bench readme sync clean

help:
	@echo "make venv   - create $(VENV) from requirements.txt and install this package (editable)"
	@echo "make run    - the lessons: execute notebooks/[0-9][0-9]_*.ipynb in order (ONLY=\"03 04\")"
	@echo "make reproduce - the full study, study/*.ipynb (PROFILE=auto: full on GPU, else cpu), the latency tables and the plan chosen by them, then README"
	@echo "make latency - only the latency tables of PyTorch and ONNX Runtime (results/latency.json, about 17 min on a 2-core CPU)"
	@echo "make test   - unit tests, then the notebooks with PROFILE=ci against their committed outputs"
	@echo "make lint   - ruff check helpers tests scripts notebooks study"
	@echo "make bench  - training-speed benchmark (python -m helpers.study.bench train)"
	@echo "make readme - regenerate the README results section from results/*.json"
	@echo "make sync   - rewrite the notebooks' generated cells (badge, provenance, setup, navigation)"
	@echo "make clean  - remove build/ and caches (keeps $(VENV))"

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q -e . --no-deps
	touch $@

# Lessons change only the notebooks and results/series.json; `make readme` shows their times.
run: venv sync
	$(BIN)/python scripts/run_series.py $(if $(strip $(ONLY)),--only $(ONLY))
	$(MAKE) sync

reproduce: venv sync
	$(BIN)/python scripts/run_series.py --study --profile $(PROFILE) $(if $(strip $(ONLY)),--only $(ONLY))
	$(if $(strip $(ONLY)),,$(BIN)/python -m helpers.study.latency_tables)
	$(if $(strip $(ONLY)),,$(BIN)/python -m helpers.study.latency_plans --profile $(PROFILE))
	$(MAKE) sync readme

latency: venv
	$(BIN)/python -m helpers.study.latency_tables

test: unit-test nb-test

unit-test: venv
	$(BIN)/python -m pytest $(PYTEST_FLAGS) tests

# --prepare-only injects PROFILE=ci and keeps the committed outputs, which nbval compares against.
nb-test: venv
	@test -n "$(NOTEBOOKS)" || { echo "no notebooks/[0-9][0-9]_*.ipynb found" >&2; exit 1; }
	@test -n "$(STUDY)" || { echo "no study/[0-9][0-9]_*.ipynb found" >&2; exit 1; }
	rm -rf $(CI_DIR) && mkdir -p $(CI_DIR)/notebooks $(CI_DIR)/study
	@set -e; for nb in $(NOTEBOOKS) $(STUDY); do \
		$(BIN)/papermill --prepare-only -p PROFILE ci $$nb $(CI_DIR)/$$nb --no-progress-bar; \
	done
	$(BIN)/python -m pytest $(PYTEST_FLAGS) $(NBVAL_FLAGS) $(CI_NOTEBOOKS)

lint: venv
	$(BIN)/ruff check helpers tests scripts notebooks study

bench: venv
	$(BIN)/python -m helpers.study.bench train

readme: venv
	$(BIN)/python scripts/make_readme.py

sync: venv
	$(BIN)/python scripts/sync_notebooks.py

clean:
	rm -rf build .pytest_cache .ruff_cache *.egg-info
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -print \
		| xargs rm -rf
