# Sender TLS Lab — `make help` lists the targets.
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
SUITE   ?= ses-2025
BACKEND ?= local

.DEFAULT_GOAL := help
.PHONY: help venv bytecode certs run-lab test lint bench clean docker-engine base-image docker-ready system-deps down scoreboard

# BACKEND=docker needs an engine and a base image before the run
RUN_DEPS := $(if $(filter docker,$(BACKEND)),docker-ready)

help: ## Show this list of targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'
	@echo "  variables: SUITE=$(SUITE) BACKEND=$(BACKEND) PYTHON=$(PYTHON)"

venv: $(VENV)/.installed ## Create the virtual environment with the lab and its dev tools

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@
	@$(MAKE) --no-print-directory bytecode

bytecode: ## Byte-compile the lab's modules (an editable install leaves them to each run)
	$(BIN)/python -m compileall -q harness lab bench

certs: venv ## Generate (or reuse) the lab CA and every receiver's certificate under certs/
	$(BIN)/tlslab certs

run-lab: venv $(RUN_DEPS) ## Run SUITE on BACKEND and write reports/<run-id>/ (reports/latest points at it)
	$(BIN)/tlslab run --suite $(SUITE) --backend $(BACKEND)

scoreboard: venv docker-ready ## Every receiver state x every real sender and policy model (docker) into reports/scoreboard/
	$(BIN)/tlslab scoreboard --backend docker $(SCOREBOARD_ARGS)

test: venv ## Run the lab's own test suite (unit + integration on real sockets)
	$(BIN)/pytest

lint: venv ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: venv bytecode ## Benchmarks (a few minutes; BENCH_ARGS=--quick for a smoke run) into reports/bench/
	@test -x /usr/sbin/smtp-source || [ "$$(id -u)" != 0 ] || \
	  { echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postfix; }
	$(BIN)/python -m bench $(BENCH_ARGS)

docker-engine: ## Install (Debian docker.io) and start a Docker engine if none answers
	lab/docker/ensure-engine.sh

base-image: docker-engine ## Build the offline base image sender-tls-lab/base:bookworm (debootstrap)
	lab/docker/build-base-image.sh

docker-ready: docker-engine ## Engine up plus a base image (LAB_BASE_IMAGE, a local python:3.12-slim, or base-image)
	@if [ -n "$$LAB_BASE_IMAGE" ]; then echo "base image: $$LAB_BASE_IMAGE (LAB_BASE_IMAGE)"; \
	elif docker image inspect python:3.12-slim >/dev/null 2>&1; then echo "base image: python:3.12-slim"; \
	else lab/docker/build-base-image.sh; fi

down: venv ## Remove Docker containers and networks any lab run left behind
	$(BIN)/tlslab down

system-deps: ## Install what the tests drive unless it works: openssl, swaks with TLS, Postfix, gnutls-cli, chromium
	@.ci/system-deps

clean: ## Remove generated certificates, reports and caches (keeps their READMEs)
	find certs reports -mindepth 1 -not -name README.md -exec rm -rf {} +
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis
