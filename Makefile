# The two README commands: `make quickstart` (main job: the shipped model on example studies)
# and `make test`. `make quickstart-train` trains every stage from scratch instead (~10 min).
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install quickstart quickstart-train test lint clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) (Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first (a wheel on this machine's disk); a range that it satisfies installs nothing more.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0 || $(BIN)/pip install -q torch
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/echosonar quickstart --out runs/quickstart

quickstart-train: $(STAMP)
	$(BIN)/echosonar quickstart --train --out runs/quickstart-train

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q src tests

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench || true

clean:
	rm -rf $(VENV) runs .pytest_cache
