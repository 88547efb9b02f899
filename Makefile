# segpipe — `make demo` and `make test` work on a fresh machine with python3, pip and make.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.segpipe-installed
PYTEST_ARGS ?=

.PHONY: install demo test test-all lint schemas bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/segpipe demo

# The default suite (< ~15 min on 2 cores). Slow tests are marked `slow` and run by `make test-all`.
test: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check segpipe tests bench
	$(VENV)/bin/mypy

schemas: $(STAMP)
	$(VENV)/bin/segpipe schemas schemas

# Benchmarks run by hand (they install the peers): see bench/RESULTS.md.
bench: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[bench]'
	@echo "run the scripts in bench/ one by one; each prints its ratios"

clean:
	rm -rf demo-out .pytest_cache .mypy_cache .ruff_cache
