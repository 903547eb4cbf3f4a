# Set-up is two commands: `make run` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fourd-installed

# torch: the CPU wheel where no NVIDIA GPU is present, the CUDA build where one is. On the project's
# build machines `torch==2.13.0` resolves to a CPU wheel that lies on disk; any other request pulls a
# multi-GB CUDA build. Override with `make TORCH_SPEC=... test`. torch is installed once, never again.
HAVE_NVIDIA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
ifeq ($(HAVE_NVIDIA),1)
TORCH_SPEC ?= torch>=2.4
EXTRAS ?= dev,cuda
else
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
endif

.PHONY: run test test-fast bench lint format screenshots doctor clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[$(EXTRAS)]"
	@$(PY) -m studio.system_deps
	@touch $@

# Independent format readers (Khronos glTF validator, three.js, PlayCanvas splat-transform) for the export
# tests: pinned in tests/js/package-lock.json, installed once into tests/js/node_modules; skipped without npm.
JS_STAMP := tests/js/node_modules/.installed
$(JS_STAMP): tests/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		(npm ci --prefix tests/js --no-audit --no-fund --loglevel=error && touch $@) || echo "npm ci failed: the Node readers will be installed by the tests or skipped"; \
	else echo "npm not found: the export tests that use Node readers will skip"; fi

run: $(STAMP)
	$(VENV)/bin/fourd-studio $(ARGS)

test: $(STAMP) $(JS_STAMP)
	$(PY) -m ruff check .
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) $(JS_STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks $(BENCH_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

format: $(STAMP)
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

screenshots: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m studio.screenshots docs/screenshots

doctor: $(STAMP)
	$(VENV)/bin/fourd doctor

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
