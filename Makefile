# Sender TLS Lab — `make help` lists the targets.
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
SUITE   ?= ses-2025
BACKEND ?= local

.DEFAULT_GOAL := help
.PHONY: help venv certs run-lab test lint clean docker-engine base-image

help: ## Show this list of targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'
	@echo "  variables: SUITE=$(SUITE) BACKEND=$(BACKEND) PYTHON=$(PYTHON)"

venv: $(VENV)/.installed ## Create the virtual environment with the lab and its dev tools

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

certs: venv ## Generate (or reuse) the lab CA and every receiver's certificate under certs/
	$(BIN)/tlslab certs

run-lab: venv ## Run SUITE on BACKEND and write reports/<run-id>/ (reports/latest points at it)
	$(BIN)/tlslab run --suite $(SUITE) --backend $(BACKEND)

test: venv ## Run the lab's own test suite (unit + integration on real sockets)
	$(BIN)/pytest

lint: venv ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

docker-engine: ## Install (Debian docker.io) and start a Docker engine if none answers
	lab/docker/ensure-engine.sh

base-image: docker-engine ## Build the offline base image sender-tls-lab/base:bookworm (debootstrap)
	lab/docker/build-base-image.sh

clean: ## Remove generated certificates, reports and caches (keeps their READMEs)
	find certs reports -mindepth 1 -not -name README.md -exec rm -rf {} +
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis
