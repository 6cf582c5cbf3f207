# HandDiffuse: one target per stage, plus setup / demo / test / bench.
# Stage targets are thin shells over the `handdiffuse` CLI:  make <stage> SESSION=path/to/session

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-stamp
HD      := $(BIN)/handdiffuse
SESSION ?= sessions/demo
RUN     ?= runs/$(notdir $(SESSION))/handdiffuse
ARGS    ?=

# torch on these CPUs is far faster when glibc keeps large blocks instead of
# returning them to the OS after every op.
export MALLOC_MMAP_THRESHOLD_ := 1000000000
export MALLOC_TRIM_THRESHOLD_ := 1000000000
export PIP_DISABLE_PIP_VERSION_CHECK := 1

STAGES := studio calibrate detect triangulate fit redetect queue annotate merge export stats train sample evaluate report

.PHONY: help setup browser test test-slow demo eval-demo all validate bench hand-model hand-model-render landmarks clean-venv \
	$(STAGES) annotation-status annotate-stop

help:
	@echo "make setup                 create .venv and install everything (idempotent)"
	@echo "make demo                  run the pipeline on the built-in synthetic capture"
	@echo "make test                  fast tests;   make test-slow: the slow ones"
	@echo "make validate SESSION=dir  check every file of a session"
	@echo "make eval-demo             train the generator, its ablations and the baseline briefly on the"
	@echo "                           demo's dataset, and print the evaluation tables"
	@echo "make all SESSION=dir       every stage in order (annotate / merge are a person's)"
	@echo "make <stage> SESSION=dir   one stage: $(STAGES)"
	@echo "                           (train / sample / evaluate: the run folder RUN=runs/<session>/handdiffuse)"
	@echo "                           (options through ARGS, e.g. make detect ARGS=--overlay);"
	@echo "                           the stages before it run first where their outputs are missing"
	@echo "make annotate-stop SESSION=dir    stop that session's Label Studio server"
	@echo "make annotation-status SESSION=dir  queued / in Label Studio / annotated / merged"
	@echo "make hand-model            regenerate the bundled open hand model (hand_model/data)"
	@echo "make hand-model-render     draw it at rest and in 6 sampled poses -> docs/hand_model.png"
	@echo "make landmarks             refit MediaPipe's landmarks on the hand model from studio renders"
	@echo "                           -> capture/detect/landmarks/mediapipe.h5 (a few minutes)"

setup: $(STAMP)

# torch first, pinned on its own: any other torch spec pulls a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(BIN)/python -m pip install -q -e '.[dev]'
	# label-studio-sdk brings opencv-python-headless: every opencv-* wheel writes cv2/, so put the
	# contrib build (ChArUco, the detectors' drawing) back on top, at the pinned version
	$(BIN)/python -m pip install -q --force-reinstall --no-deps \
		"$$(grep -E '^opencv-contrib-python==' constraints.txt)"
	touch $@

# pytest exit code 5 means it collected no test: a failure for `test`, fine for `test-slow`.
test: $(STAMP)
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# Headless Chromium for the slow test that renders the session report (Debian's package; needs root).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-slow: no slow tests"; exit 0; fi; exit $$rc

demo: $(STAMP)
	$(BIN)/python -m pipeline.demo --session $(SESSION)

validate: $(STAMP)
	$(HD) validate $(SESSION)

# ARGS go to the stage named on the command line only, not to the stages make runs before it.
STAGE_ARGS = $(if $(filter $@,$(MAKECMDGOALS)),$(ARGS))

studio: $(STAMP)
	$(HD) studio --out $(SESSION) $(STAGE_ARGS)

# Each stage needs the ones before it: `make export SESSION=x` runs whichever are missing first
# (a stage whose outputs are up to date with its inputs says so and does nothing). The default
# demo session is built by the studio when it does not exist; any other must exist.
$(SESSION)/session.toml: | $(STAMP)
	@if [ "$(SESSION)" = "sessions/demo" ]; then $(HD) studio --out $(SESSION); \
	else echo "error: $(SESSION)/session.toml not found: not a session folder" >&2; exit 1; fi

calibrate: $(SESSION)/session.toml
detect: calibrate
triangulate: detect
fit: triangulate
redetect: fit
queue: redetect
annotate: redetect
merge: $(SESSION)/session.toml
annotation-status: $(SESSION)/session.toml
annotate-stop: $(SESSION)/session.toml
export: redetect
stats: export
train: export
sample: train
evaluate: train
report: $(SESSION)/session.toml

$(filter-out studio redetect train sample evaluate report,$(STAGES)) annotation-status annotate-stop: $(STAMP)
	$(HD) $@ $(SESSION) $(STAGE_ARGS)

# The second pass: hands detected again in crops from the first fit, then triangulated and fitted
# again on the combined evidence (each of the three does nothing when its outputs are up to date).
redetect: $(STAMP)
	$(HD) redetect $(SESSION) $(STAGE_ARGS)
	$(HD) triangulate $(SESSION)
	$(HD) fit $(SESSION)

# The generator's stages work on the session's dataset and a run folder.
train: $(STAMP)
	$(HD) train --shards $(SESSION)/export --run $(RUN) $(STAGE_ARGS)

sample: $(STAMP)
	$(HD) sample --run $(RUN) $(STAGE_ARGS)

evaluate: $(STAMP)
	$(HD) evaluate --runs $(RUN) --shards $(SESSION)/export --out $(dir $(RUN))evaluation $(STAGE_ARGS)

report: $(STAMP)
	$(HD) report $(SESSION) $(if $(wildcard $(dir $(RUN))),--runs $(dir $(RUN))) $(STAGE_ARGS)

# Every stage whose inputs a session has, in order (annotate / merge wait for a person).
all: stats sample evaluate
	$(MAKE) --no-print-directory report SESSION=$(SESSION) RUN=$(RUN)

eval-demo: export
	$(BIN)/python -m pipeline.eval_demo --session $(SESSION)

# The open hand model's files are committed; this rebuilds them (deterministic, ~10 s).
hand-model: $(STAMP)
	$(BIN)/python -m hand_model.generate --out hand_model/data

# MediaPipe's landmarks on the hand model, from studio renders with ground truth (committed; ~4 min on 2 cores).
landmarks: $(STAMP)
	$(HD) landmarks $(ARGS)

hand-model-render: $(STAMP)
	mkdir -p docs
	$(BIN)/python -m hand_model.render docs/hand_model.png

# each as a module from the repository root: bench/ itself never comes first on sys.path
bench: $(STAMP)
	@for b in bench/*.py; do m=$$(basename $$b .py); [ "$$m" = __init__ ] && continue; \
		echo "== $$b"; $(BIN)/python -m bench.$$m || exit 1; done

clean-venv:
	rm -rf $(VENV)
