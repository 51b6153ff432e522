# One command per job. Everything a target needs it installs itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help venv test lint demo bench base-image clean

help:
	@echo "make demo    start the platform, git push examples/ to it, call the function, stop"
	@echo "make test    lint, then every test (unit, runtime, end-to-end, containers)"
	@echo "make base-image  build or reuse ofc/python3-base:bookworm (\$$DOCKER_HOST, else \`ofc engine\`)"
	@echo "make bench   benchmarks; figures go to bench/results.json"

# The virtualenv is rebuilt when a requirements file changes.
$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Container tests get a private dockerd and registry for the run (scripts/with-engine
# installs the Debian packages they need, starts them, stops them by PID in its exit trap).
test: lint
	scripts/with-engine $(PY) -m pytest -q $(PYTEST_ARGS)

base-image: $(STAMP)
	bin/ofc base-image $(BASE_IMAGE_ARGS)

demo: $(STAMP)
	$(PY) scripts/demo.py $(DEMO_ARGS)

bench: $(STAMP)
	scripts/with-engine $(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
