# segpipe — `make demo` and `make test` work on a fresh machine with python3, pip and make.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.segpipe-installed
PYTEST_ARGS ?=

.PHONY: install demo test test-all lint schemas bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,geo,medical]'
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

# Benchmarks run by hand: see bench/RESULTS.md. Peers whose requirements clash with ours live in
# .venv-peers (datumaro); the others install into .venv without touching our pins.
bench: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt torchmetrics faster-coco-eval monai
	$(PY) -m pip install -q --no-deps panopticapi-lite
	@test -x .venv-peers/bin/datum || (python3 -m venv .venv-peers && .venv-peers/bin/pip install -q 'datumaro[cli]')
	@echo "run the scripts in bench/ one by one; each prints its ratios (see bench/RESULTS.md)"

clean:
	rm -rf demo-out .pytest_cache .mypy_cache .ruff_cache
