# PayFlow: every command a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Console scripts, not `python -m`: with -m the repo root would come first on sys.path.
STACK  := $(VENV)/bin/payflow-stack
PYTEST_ARGS ?=

.PHONY: help tools system-tools go-tools venv up down status demo lint fmt test test-unit \
        test-integration e2e bench clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

tools: system-tools go-tools venv ## provision everything: Debian packages, Go-built binaries, the venv

system-tools: ## PostgreSQL and Redis servers from Debian's packages, when missing
	@tools/install-system.sh

go-tools: ## kube-apiserver, kube-controller-manager, kubectl, etcd, helm (cached by version)
	@tools/build-tools.sh

venv: $(STAMP) ## the Python environment, from pyproject.toml

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "PayFlow needs Python 3.11+")'
	@test -x $(PY) || $(PYTHON) -I -m venv $(VENV)
	@echo "[tools] python environment: installing $(VENV) from pyproject.toml (log: $(VENV)/install.log)"
	@$(VENV)/bin/pip install --upgrade pip > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@$(VENV)/bin/pip install -e '.[dev]' >> $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $@

up: tools ## start the local stack in the background; writes .payflow/env
	@$(STACK) up

down: ## stop everything `make up` started
	@if [ -x $(STACK) ]; then $(STACK) down; else echo "nothing was running"; fi

status: ## what the local stack runs
	@$(STACK) status

demo: up ## a newcomer's entry point: the whole local stack, then what to try
	@echo
	@echo "The local stack runs (a real kube-apiserver, etcd, kube-controller-manager, PostgreSQL, Redis)."
	@echo "  source .payflow/env && kubectl get ns"
	@echo "  make status        # what runs"
	@echo "  make down          # stop it all"

lint: venv ## ruff and mypy
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy

fmt: venv ## format the code
	@$(VENV)/bin/ruff check --fix .
	@$(VENV)/bin/ruff format .

test: tools lint ## lint, then every test (unit, integration; e2e only with a cluster)
	@$(VENV)/bin/pytest $(PYTEST_ARGS)

test-unit: venv ## the pure tests only
	@$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

test-integration: tools ## the tests against the local stack
	@$(VENV)/bin/pytest tests/integration $(PYTEST_ARGS)

e2e: venv ## tests/e2e against the cluster in PAYFLOW_E2E_KUBECONFIG
	@$(VENV)/bin/pytest tests/e2e $(PYTEST_ARGS)

bench: tools ## every benchmark under bench/, printing its figures
	@$(PY) bench/stack_startup.py

clean: down ## remove the venv and local state (the tool cache outside the repo stays)
	@rm -rf $(VENV) .payflow .pytest_cache .mypy_cache .ruff_cache build *.egg-info
