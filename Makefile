# The two commands of the README: `make demo` (the main job at laptop size) and `make test` (the tests).
# Both set up everything they need on a fresh machine: a virtualenv, torch (the CPU build where there is no CUDA;
# an existing CUDA torch is kept), alloy itself, and OSMesa for headless MuJoCo rendering.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.alloy-installed
TORCH_CPU ?= torch==2.13.0
PYTEST_ARGS ?=

# Headless rendering: EGL where an NVIDIA GPU is present, OSMesa on CPU machines. Users may override.
MUJOCO_GL ?= $(shell if [ -n "$$DISPLAY" ]; then :; elif [ -e /proc/driver/nvidia/version ] && ls /dev/nvidia[0-9]* >/dev/null 2>&1; then echo egl; else echo osmesa; fi)
export MUJOCO_GL

.PHONY: setup demo test test-slow test-tour lint system-deps clean

setup: $(STAMP) system-deps

$(STAMP): pyproject.toml setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "keeping installed torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(PY) -m pip install -q torch; \
	else \
		$(PY) -m pip install -q $(TORCH_CPU); \
	fi
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

# OSMesa for headless rendering on CPU (EGL comes with the NVIDIA driver).
system-deps:
	@if [ "$(MUJOCO_GL)" = "osmesa" ] && ! ldconfig -p 2>/dev/null | grep -q libOSMesa; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "installing libosmesa6 for headless rendering"; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libosmesa6 >/dev/null; \
	fi

demo: setup
	$(VENV)/bin/alloy pipeline

test: setup
	$(PY) -m pytest -m "not slow" -q $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

test-slow: setup
	$(PY) -m pytest -m slow -q $(PYTEST_ARGS)

# every command of the README's tour, as written, at toy size (slow; CI runs it once per submission)
test-tour: setup
	$(PY) -m pytest -m slow -q tests/test_readme_tour.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
