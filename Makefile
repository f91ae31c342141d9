# Two commands from a fresh clone: `make repro` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --disable-pip-version-check -c constraints.txt
STAMP  := $(VENV)/.installed

export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1

.PHONY: install repro test bench clean mlflow-ui

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e ".[dev,hf]"
	# Test/benchmark peer only: pysentimiento's preprocessing module needs just `emoji`; --no-deps keeps
	# its model stack (transformers, spacy, datasets) out. See twilbert/text/normalize/reference.py.
	$(PIP) --no-deps pysentimiento
	touch $(STAMP)

install: $(STAMP)

repro: $(STAMP)
	test -d .git || git init -q
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

test: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/data_pipeline.py

mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf $(VENV)
