# Two entry points: `make demo` and `make test`. Each creates .venv and installs
# everything it needs on a fresh machine. TORCH is installed first so that the package's own
# range (torch>=2.10) is already satisfied and pip does not pull a multi-GB CUDA build; set
# TORCH to your own build elsewhere, e.g. `make test TORCH="torch==2.10.0"`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= runs/demo

.PHONY: demo test install clean docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(BIN)/python -m pytest

demo: $(VENV)/.installed
	$(BIN)/python -m bsrnn.demo --run-dir "$(DEMO_DIR)"

docs: $(VENV)/.installed
	$(BIN)/python tools/update_readme.py

clean:
	rm -rf $(VENV) runs build src/*.egg-info
