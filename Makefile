# make test: create .venv, install the project and its pinned dependencies, run the tests (what CI runs).
# make demo: prepare the built-in demo set, train briefly on the CPU, write samples.
# make bench: the op benchmark on every available device.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

$(VENV)/.installed: requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

.PHONY: install test demo bench
install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m stylegan_cuda.build
	$(PY) -m pytest -q

demo: $(VENV)/.installed
	PYTHON=$(abspath $(PY)) bash scripts/demo.sh demo_run

bench: $(VENV)/.installed
	$(PY) -m benchmarks.ops
