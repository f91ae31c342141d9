# Two commands from a fresh clone: `make repro` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --disable-pip-version-check -c constraints.txt
STAMP  := $(VENV)/.installed

export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1

.PHONY: install repro test bench clean mlflow-ui serve plots

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e ".[dev,hf,onnx,plots]"
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
	@$(BIN)/python -c 'from pipeline.tracking import ui_url; print("MLflow UI: open", ui_url(), "(the runs table; the bare address opens the GenAI pages)")'
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

# Serve a fine-tuned model: make serve RUN=<run id> [PORT=...]. The venv's bin goes on PATH because
# MLflow's model server starts uvicorn through PATH; the port is the first free one from 5001 (the UI
# has 5000). No install prerequisite: a run id exists only after `make repro` installed everything.
serve:
	@test -n "$(RUN)" || { echo "usage: make serve RUN=<run id> [PORT=5001]  (the finetune stage prints the run id)" >&2; exit 2; }
	@test -x $(BIN)/mlflow || { echo "no $(BIN)/mlflow: run make install first" >&2; exit 2; }
	@port=$(PORT); port=$${port:-$$($(BIN)/python -c 'import socket; print(next(p for p in range(5001, 5100) if socket.socket().connect_ex(("127.0.0.1", p))))')}; \
	echo "Serving runs:/$(RUN)/model on http://127.0.0.1:$$port/invocations (Ctrl-C stops it)"; \
	PATH="$(CURDIR)/$(BIN):$$PATH" MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" \
	exec $(BIN)/mlflow models serve -m runs:/$(RUN)/model --env-manager local --host 127.0.0.1 --port $$port

# The DVC plots (pre-training and fine-tuning curves, confusion matrices) as dvc_plots/index.html, with the
# chart libraries inlined so that it renders offline (plain `dvc plots show` loads them from a CDN).
plots: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pipeline.plots

clean:
	rm -rf $(VENV)
