# GNU make. `make run` executes the lessons, `make test` runs every test, `make reproduce`
# regenerates the full study (checkpoints/, results/*.json, img/) from scratch, `make record`
# (maintainers) re-records the lessons' committed outputs.
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
# build/run/ (log: build/run/series.log), and records each one's run time in
# results/series.json: the only file of the repository it changes (notebooks/ stay as
# committed; open build/run/*.ipynb for the executed ones). Lessons read the committed study
# and write only to build/lessons/. `make run ONLY="03 04"` runs some lessons only.
# `make record` (maintainers) does the same, then copies each lesson that succeeded over
# notebooks/ (cleaned: no injected-parameters cell, no progress bars, no absolute paths) and
# regenerates the generated cells (`make sync`) and the README.
#
# `make reproduce` runs study/ the same way, copying each study notebook back: PROFILE=auto
# picks `full` on a CUDA GPU, else the long `cpu` path. Study notebooks 02-05 first; then it
# measures the latency tables of both runtimes (results/latency.json) and fine-tunes the plan
# they choose (helpers.study.latency_plans: latency_plans in results/network_pruning.json);
# then the committed networks in int8 (helpers.study.int8: results/int8.json) and the plan
# chosen by an int8 latency table (helpers.study.int8_plan: results/int8_plan.json); then
# study/06 (LATENCY_STUDY), which reads the latency results; every step resumes from its state
# files when interrupted; then `make sync readme`. `make reproduce ONLY="03 04"` runs those study notebooks
# only (no latency step).
PROFILE ?= auto
ONLY ?=
# study/06 reads results/latency.json and latency_plans' results: it runs after those steps.
LATENCY_STUDY = 06
STUDY_NUMBERS := $(foreach nb,$(STUDY),$(firstword $(subst _, ,$(notdir $(nb)))))
STUDY_BEFORE := $(filter-out $(LATENCY_STUDY),$(STUDY_NUMBERS))
STUDY_AFTER := $(filter $(LATENCY_STUDY),$(STUDY_NUMBERS))
RUN_STUDY = $(BIN)/python scripts/run_series.py --study --profile $(PROFILE)
# nbval: --nbval-lax runs every cell (an exception fails the test) but compares outputs only
# of cells marked `# NBVAL_CHECK_OUTPUT`; --nbval-current-env uses this venv's kernel.
NBVAL_FLAGS = --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider
# Every non-zero pytest exit fails make, 5 ("no tests collected") included; --durations shows
# where the time of `make test` goes (budget: under 20 minutes on a fresh clone, install included).
PYTEST_FLAGS = --durations=10

.PHONY: help venv run record reproduce latency test unit-test nb-test lint bench readme sync site site-test clean

help:
	@echo "make venv   - create $(VENV) from requirements.txt and install this package (editable)"
	@echo "make run    - the lessons: execute notebooks/[0-9][0-9]_*.ipynb in order into build/run/ (ONLY=\"03 04\"); changes only results/series.json"
	@echo "make record - maintainers: make run, then copy the executed lessons over notebooks/, make sync readme"
	@echo "make reproduce - the full study (PROFILE=auto: full on GPU, else cpu): study/02-05, the latency tables and the plan chosen by them, int8 (helpers.study.int8, int8_plan), study/06, then sync and README (ONLY=\"03 04\": those only)"
	@echo "make latency - only the latency tables of PyTorch and ONNX Runtime (results/latency.json, about 17 min on a 2-core CPU)"
	@echo "make test   - unit tests, then the notebooks with PROFILE=ci against their committed outputs"
	@echo "make lint   - ruff check helpers tests scripts notebooks study site"
	@echo "make bench  - training-speed benchmark (python -m helpers.study.bench train)"
	@echo "make readme - regenerate README.md, RESULTS.md and img/headline.png from results/*.json (make record and make reproduce do)"
	@echo "make site   - the notebooks as a static website in build/site/ (offline; then python -m http.server -d build/site)"
	@echo "make site-test - check every page of the site in chromium (apt-get install chromium)"
	@echo "make sync   - rewrite the notebooks' generated cells (badge, provenance, setup, navigation)"
	@echo "make clean  - remove build/ and caches (keeps $(VENV))"

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q -e . --no-deps
	touch $@

# A learner's run changes only results/series.json (`git status` shows nothing else).
run: venv
	$(BIN)/python scripts/run_series.py $(if $(strip $(ONLY)),--only $(ONLY))

# The maintainers' run: the lessons' committed outputs, provenance cells and README run times.
record: venv
	$(BIN)/python scripts/run_series.py --copy $(if $(strip $(ONLY)),--only $(ONLY))
	$(MAKE) sync readme

reproduce: venv sync
ifeq ($(strip $(ONLY)),)
	$(RUN_STUDY) --only $(STUDY_BEFORE)
	$(BIN)/python -m helpers.study.latency_tables
	$(BIN)/python -m helpers.study.latency_plans --profile $(PROFILE)
	$(BIN)/python -m helpers.study.int8
	$(BIN)/python -m helpers.study.int8_plan --profile $(PROFILE)
	$(if $(STUDY_AFTER),$(RUN_STUDY) --only $(STUDY_AFTER))
else
	$(RUN_STUDY) --only $(ONLY)
endif
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
	$(BIN)/ruff check helpers tests scripts notebooks study site

bench: venv
	$(BIN)/python -m helpers.study.bench train

readme: venv
	$(BIN)/python scripts/make_readme.py

sync: venv
	$(BIN)/python scripts/sync_notebooks.py

# The website (issue 28): Sphinx + myst-nb from the committed notebooks, offline and strict, in its
# own venv (site/requirements.txt, no torch); site-test checks every page in Debian's chromium.
site:
	PY=$(PY) scripts/site.sh build

site-test: site
	PY=$(PY) scripts/site.sh test

clean:
	rm -rf build .pytest_cache .ruff_cache *.egg-info
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -print \
		| xargs rm -rf
