# Media Support Assistant. `make run` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Prefer Python 3.12 (on PATH or under pyenv), else any python3 >= 3.11.
PYTHON ?= $(shell for p in python3.12 $(HOME)/.pyenv/versions/3.12*/bin/python3.12 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 5000
URL ?= http://localhost:$(PORT)

.PHONY: help install run test lint clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python >= 3.11 is required"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with its dev extra (idempotent)

run: install ## Serve the API on PORT (default 5000) with the embedded defaults
	PORT=$(PORT) $(BIN)/assistant serve

test: install ## Run the test suite and the linter
	$(BIN)/python -m pytest
	$(BIN)/ruff check .

lint: install ## Lint with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check assistant tests

clean: ## Remove the virtualenv and caches (keeps data/pgdata: it holds your conversations)
	rm -rf $(VENV) .pytest_cache .ruff_cache
