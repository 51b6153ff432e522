# One command per job. Everything a target needs it installs itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help venv test lint demo bench clean

help:
	@echo "make demo    start the platform, git push examples/ to it, call the function, stop"
	@echo "make test    lint, then every test (unit, runtime, end-to-end)"
	@echo "make bench   benchmarks; figures go to bench/results.json"

# The virtualenv is rebuilt when a requirements file changes.
$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) scripts/demo.py $(DEMO_ARGS)

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
