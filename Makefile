# parse: set up, run, test and measure the OCR service.
#   make setup        .venv from requirements.txt, plus the verified weights (idempotent)
#   make test         setup, then the whole test suite (what .ci/run calls)
#   make bench-model  both model families on the SROIE dev pages, 2 threads

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Root installs system packages directly; anyone else goes through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The ONNX reader is needed only to convert PP-OCR weights, never to serve.
ONNX_REQ := onnx==1.23.2

.PHONY: setup system-deps weights test bench-model

setup: $(VENV)/.installed weights

# What a fresh Debian/Ubuntu lacks to build the venv and uWSGI (C compiler, Python headers, venv).
system-deps:
	@missing=""; \
	$(PYTHON) -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	[ -f "$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] || missing="$$missing python3-dev"; \
	command -v gcc >/dev/null || missing="$$missing build-essential"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -q && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

$(VENV)/.installed: requirements.txt
	$(MAKE) --no-print-directory system-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

weights: $(VENV)/.installed
	$(PY) -m service.weights fetch weights

test: setup
	$(PY) -m pytest -q tests

bench-model: setup
	$(PY) -m tests.devset --family easyocr --subset sroie --threads 2
	$(PY) -m tests.devset --family ppocr --subset sroie --threads 2
