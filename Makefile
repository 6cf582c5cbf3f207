# HandDiffuse — one target per stage, plus setup / demo / test / bench.
# Every stage target is a thin shell over the `handdiffuse` CLI.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-stamp
HD     := $(BIN)/handdiffuse
SESSION ?= sessions/demo

# torch on these CPUs is far faster when glibc keeps large blocks instead of
# returning them to the OS after every op.
export MALLOC_MMAP_THRESHOLD_ := 1000000000
export MALLOC_TRIM_THRESHOLD_ := 1000000000
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup test test-slow demo bench clean-venv help

help:
	@echo "make setup        create .venv and install everything (idempotent)"
	@echo "make demo         run the pipeline on the built-in synthetic capture"
	@echo "make test         fast tests;  make test-slow: the slow ones"

setup: $(STAMP)

# torch first, pinned: any other spec pulls a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

clean-venv:
	rm -rf $(VENV)
