# The two commands of the README:
#   make reproduce   set up .venv, generate the built-in benchmark, execute every notebook (smoke profile)
#   make test        the same set-up, then the test suite and the nbval notebook checks
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data
PROFILE ?= smoke
STAMP := $(VENV)/.adlib-installed
LOCK := requirements.lock
# pip prints a warning for every local package index it cannot open; they are noise here.
QUIET_PIP := grep -v "^WARNING: Location" || true

.PHONY: setup data reproduce rehearse test test-fast notebooks clean help lock lint format

help:
	@echo "make reproduce | make test | make rehearse (the paper profile on miniature data) | make test-fast | make lint | make format | make notebooks (refresh committed smoke outputs) | make lock | make clean"

setup: $(STAMP)

# Every dependency at the exact version of requirements.lock (a complete lock: installed as it is, with
# no dependency resolution, in three pip processes side by side, the torch stack in one and the rest
# split between the other two), then adlib itself; `pip check` fails on a lock that does not satisfy its own packages'
# requirements. `make lock` refreshes the lock.
TORCH_STACK := ^(torch|torchvision|triton|nvidia-)
PIP_LOCKED := $(BIN)/python -m pip install -q --disable-pip-version-check --no-deps
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing the locked dependencies ($(LOCK)) and adlib into $(VENV) ..."
	grep -E '$(TORCH_STACK)' $(LOCK) > $(VENV)/lock-torch.txt
	grep -vE '$(TORCH_STACK)|^#' $(LOCK) | awk 'NR % 2 == 1' > $(VENV)/lock-rest1.txt
	grep -vE '$(TORCH_STACK)|^#' $(LOCK) | awk 'NR % 2 == 0' > $(VENV)/lock-rest2.txt
	$(PIP_LOCKED) -r $(VENV)/lock-torch.txt 2>&1 | { $(QUIET_PIP); } & pid=$$!; \
		$(PIP_LOCKED) -r $(VENV)/lock-rest1.txt 2>&1 | { $(QUIET_PIP); } & pid1=$$!; \
		$(PIP_LOCKED) -r $(VENV)/lock-rest2.txt 2>&1 | { $(QUIET_PIP); }; wait $$pid; wait $$pid1
	$(PIP_LOCKED) -e . 2>&1 | { $(QUIET_PIP); }
	$(BIN)/python -m pip check
	$(BIN)/ruff --version >/dev/null
	@touch $@

data: setup
	$(BIN)/adlib data synth --out $(DATA)

# Two notebooks at a time, longest first (the numbers do not depend on it; runs they share are trained once).
PARALLEL ?= 2

# The paper profile's fast paths (adlib.fastpath; refused for the smoke profile, whose numbers are pinned):
#   ADLIB_DATA=/data make reproduce PROFILE=paper FAST=bf16,channels-last,features,smoothing,bf16-heads
FAST ?=

reproduce: data
	$(BIN)/adlib reproduce --profile $(PROFILE) --parallel $(PARALLEL)$(if $(FAST), --fast $(FAST))

# The paper profile rehearsed (adlib.rehearsal): every notebook under profile=paper with the papers' configurations,
# on miniature datasets written in each real layout, random-init weights, small images and schedules; outputs
# (executed notebooks, HTML, tables, figures) under runs/rehearsal, each stamped "rehearsal: ... not results".
# It checks code paths, not numbers, so adlib.rehearsal runs its kernels on the machine's own CPU numerics (oneDNN on; the reference
# numerics switch oneDNN off and take about twice as long: adlib.numerics).
rehearse: setup
	$(BIN)/adlib reproduce --profile paper --rehearsal --parallel $(PARALLEL)

# Refresh the executed smoke-profile notebooks that are committed and the regression references their
# checks compare against (notebooks/references/smoke.json; adlib.checks).
notebooks: data
	ADLIB_UPDATE_REFERENCES=1 $(BIN)/adlib reproduce --profile smoke --inplace --parallel $(PARALLEL)

# Both steps use the two cores (pytest-xdist); the notebooks go whole to one worker each, longest first.
test: data lint
	$(BIN)/python -m pytest -n $(PARALLEL) --durations=15 tests
	$(BIN)/python -m pytest -n $(PARALLEL) --dist loadfile --nbval-lax --nbval-current-env --nbval-sanitize-with .ci/nbval-sanitize.cfg \
		-p no:cacheprovider notebooks

# The test suite without the slow tests (minutes; no notebook checks).
test-fast: data lint
	$(BIN)/python -m pytest -n $(PARALLEL) -m "not slow" tests

# ruff (configured in pyproject.toml): lint, and the code formatted as `make format` leaves it.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Re-resolve pyproject.toml's ranges in a fresh venv and write requirements.lock and environment.yml's pins.
lock:
	$(PYTHON) tools/lock.py

clean:
	rm -rf runs .pytest_cache
