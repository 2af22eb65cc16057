# The README's two set-up commands are `make demo` and `make test`; both create .venv first.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# Without CUDA, pin torch to a CPU build (constraints/cpu.txt); with it, let pip pick.
CONSTRAINTS ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,-c constraints/cpu.txt)
STAMP := $(VENV)/.installed
# llama-cpp-python (dev extra) builds from source: portable flags, and no llava (about 200 s)
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF

.PHONY: install demo test lint typecheck pytest bench clean litgpt-venv

# what pipeline=demo runs (export=onnx_int8, step=serve): no llama.cpp build, no test tools
DEMO_STAMP := $(VENV)/.installed-demo

install: $(STAMP)

$(STAMP): pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP) $(DEMO_STAMP)

# dev holds every demo extra: a full install serves the demo too
$(DEMO_STAMP): pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(CONSTRAINTS) -e '.[export,serve]'
	touch $(DEMO_STAMP)

# LitGPT in a virtual environment of its own, for bench/pretrain_vs_litgpt.py (never a Quark
# dependency: it pins its own lightning and jsonargparse)
LITGPT_VENV := bench/.venv-litgpt
litgpt-venv: $(LITGPT_VENV)/bin/litgpt

$(LITGPT_VENV)/bin/litgpt:
	$(PYTHON) -m venv $(LITGPT_VENV)
	$(LITGPT_VENV)/bin/pip install --quiet $(CONSTRAINTS) 'litgpt==0.5.13' litdata pyyaml

demo: $(DEMO_STAMP)
	$(PY) launch.py pipeline=demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench launch.py
	$(VENV)/bin/ruff format --check src tests bench launch.py

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(STAMP)
	$(PY) bench/cli_startup.py
	$(PY) bench/plan_activation_memory.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
