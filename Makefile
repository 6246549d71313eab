# lookalike — the commands a person and CI run.
#
#   make demo   set up .venv, train a small CLIP on the sample (if no encoder is given),
#               index the sample images, serve the API and web page on http://127.0.0.1:8000
#   make test   set up .venv (with the dev extras), lint (make lint) and run the whole test suite
#   make lint   ruff, and lint-imports for the layering and import cycles (pyproject.toml's [tool.importlinter])

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
DATA    ?= data
SAMPLE  ?= samples/emoji/metadata.jsonl
ENCODER ?= $(DATA)/encoder.safetensors
INDEX   ?= $(DATA)/index
DATABASE_URL ?= sqlite:///$(abspath $(DATA))/catalog.db
HOST    ?= 127.0.0.1
PORT    ?= 8000
STEPS   ?= 200
PYTEST_ARGS ?=

# FAISS: cpu (faiss-cpu) or gpu (faiss-gpu-cu12, for CUDA machines). Both provide the same
# module; to switch, start from a fresh venv: rm -rf .venv && make install FAISS=gpu
# The venv remembers its choice (.venv/.faiss), so a later reinstall keeps it.
FAISS   ?= $(or $(shell cat $(VENV)/.faiss 2>/dev/null),cpu)
ifeq ($(filter $(FAISS),cpu gpu),)
$(error FAISS must be cpu or gpu, not '$(FAISS)')
endif

# torch comes first and pinned: pip takes this release from the local wheel cache
# where there is one, and it is the one the tests were run against.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install install-dev demo train index serve lint test clean device-wheels

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml
	$(PIP) install $(TORCH)
	@if [ -f $(VENV)/.faiss ] && [ "$$(cat $(VENV)/.faiss)" != "$(FAISS)" ]; then \
		echo "$(VENV) has FAISS=$$(cat $(VENV)/.faiss); for FAISS=$(FAISS) start afresh: rm -rf $(VENV)" >&2; exit 1; fi
	$(PIP) install -e '.[postgres,$(FAISS)]'
	echo $(FAISS) > $(VENV)/.faiss
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Train only when the default encoder file is missing; `make demo ENCODER=...` uses yours
# (a file from `python -m training`, or open_clip:MODEL/TAG_OR_CHECKPOINT).
$(DATA)/encoder.safetensors: | $(VENV)/.installed
	$(PY) -m training clip --data $(SAMPLE) --image-key file --caption-key name \
		--out $@ --steps $(STEPS)

train: $(DATA)/encoder.safetensors

index: $(VENV)/.installed $(if $(filter $(DATA)/encoder.safetensors,$(ENCODER)),$(ENCODER))
	$(PY) -m index build --encoder '$(ENCODER)' --source $(SAMPLE) --out $(INDEX) \
		--database-url '$(DATABASE_URL)'

serve: $(VENV)/.installed
	$(PY) -m service --encoder '$(ENCODER)' --index $(INDEX) --database-url '$(DATABASE_URL)' \
		--host $(HOST) --port $(PORT)

demo: index
	@echo "serving on http://$(HOST):$(PORT)  (web page at /, API docs at /docs; Ctrl-C stops)"
	$(MAKE) --no-print-directory serve

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

# The wheels that bench/device_check.sh needs on the GPU machine (Python 3.12, no package index), into .whl/
device-wheels:
	bench/device_wheels.sh .whl

clean:
	rm -rf $(DATA) .pytest_cache
