# seqlens: two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.seqlens-installed
TEST_STAMP := $(VENV)/.seqlens-test-installed
# Every install path pins the CPU build of torch first; an unpinned torch pulls CUDA. PyPI's
# Linux torch is the CUDA build, so the CPU wheel index is added (it wins: 2.13.0+cpu sorts above
# 2.13.0); a local wheel (pip's find-links) also satisfies it. TORCH_INDEX= skips the index.
TORCH := torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INSTALL := $(PIP) install $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) $(TORCH)
# buf (protobuf lint and breaking-change checks), pinned, from npm into a project-local folder.
BUF_VERSION := 1.75.0
BUF_DIR := .tools/buf
BUF := $(BUF_DIR)/node_modules/.bin/buf
BUF_STAMP := $(BUF_DIR)/.installed-$(BUF_VERSION)

.PHONY: install install-test serve test demo protos protos-check lint typecheck bench clean buf buf-lint api-baseline

install: $(STAMP)

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(TORCH_INSTALL)
	$(PIP) install -e ./clients/python -e .
	touch $(STAMP)

install-test: $(TEST_STAMP) $(BUF_STAMP)

$(TEST_STAMP): $(STAMP)
	$(PIP) install -e '.[test]'
	touch $(TEST_STAMP)

serve: install ## build the demo models on first use, then serve them on :50051
	OPENBLAS_NUM_THREADS=1 $(VENV)/bin/seqlens serve $(ARGS)

demo: install
	$(VENV)/bin/seqlens build-demo

test: install-test
	$(PY) -m pytest -q $(PYTEST_ARGS)

protos: install-test
	$(PY) scripts/gen_protos.py

protos-check: install-test
	$(PY) scripts/gen_protos.py --check

lint: install-test
	$(VENV)/bin/ruff check service clients tests bench scripts

typecheck: install-test
	$(VENV)/bin/mypy service/seqlens clients/python/seqlens_client

bench: install-test ## side-by-side ratios (minutes; run on an otherwise idle machine)
	$(PY) bench/bench_explain.py
	$(PY) bench/bench_predict.py --rounds 5 --seconds 1.5
	$(PY) bench/bench_summaries.py --repeats 61
	$(PY) bench/bench_predict_peers.py --rounds 5 --seconds 3

buf: $(BUF_STAMP)

$(BUF_STAMP):
	mkdir -p $(BUF_DIR)
	npm install --prefix $(BUF_DIR) --no-save --no-audit --no-fund @bufbuild/buf@$(BUF_VERSION)
	touch $(BUF_STAMP)

buf-lint: buf
	$(BUF) lint

# The wire API's baseline: `buf breaking` (tests/unit/test_buf.py) compares protos/ against it.
# Regenerate it only for a deliberate, reviewed API change (see README, "API compatibility");
# indented JSON, so that the change shows in review.
api-baseline: buf
	$(BUF) build --exclude-source-info -o -#format=json | $(PYTHON) -m json.tool --indent 1 > protos/api-baseline.json

clean:
	rm -rf $(VENV) .pytest_cache .tools
