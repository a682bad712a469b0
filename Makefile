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

.PHONY: help tools system-tools go-tools venv checkov-venv node-images up down status demo lint fmt test test-unit \
        test-integration e2e bench clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

tools: system-tools go-tools venv checkov-venv ## provision everything: Debian packages, Go-built binaries, the venvs

system-tools: ## PostgreSQL and Redis servers from Debian's packages, when missing
	@tools/install-system.sh

go-tools: ## the control plane, kubelet, kube-proxy, kube-scheduler, kubectl, etcd, CoreDNS, helm (cached by version)
	@tools/build-tools.sh

checkov-venv: ## checkov, the chart scan of make security, in a venv of its own (cached by version)
	@PYTHON=$(PYTHON) tools/install-checkov.sh

venv: $(STAMP) ## the Python environment, from pyproject.toml

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "PayFlow needs Python 3.11+")'
	@test -x $(PY) || $(PYTHON) -I -m venv $(VENV)
	@echo "[tools] python environment: installing $(VENV) from pyproject.toml (log: $(VENV)/install.log)"
	@$(VENV)/bin/pip install --upgrade pip > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@$(VENV)/bin/pip install -e '.[dev]' >> $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $@

# The runtime lock the images install (pip --require-hashes), resolved for every Python 3.11.x at
# once, so markers such as python_full_version < "3.11.3" stay in it: Debian's python3 is 3.11.2.
# Pins already in the files are kept unless pyproject.toml needs otherwise; UPGRADE=1 moves them up.
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --only-binary :all: \
              --custom-compile-command "make lock" --quiet $(if $(UPGRADE),--upgrade)

.PHONY: lock
lock: venv ## regenerate requirements/runtime.txt and build.txt from pyproject.toml (UPGRADE=1: newer pins)
	@$(VENV)/bin/uv pip compile $(LOCK_FLAGS) --output-file requirements/runtime.txt pyproject.toml
	@$(VENV)/bin/uv pip compile $(LOCK_FLAGS) --output-file requirements/build.txt requirements/build.in
	@echo "[lock] requirements/runtime.txt, requirements/build.txt: $$(grep -c '^[a-z0-9]' requirements/runtime.txt) runtime packages"

up: tools ## start the local stack in the background; writes .payflow/env
	@$(STACK) up

down: ## stop everything `make up` started
	@if [ -x $(STACK) ]; then $(STACK) down; else echo "nothing was running"; fi

node-images: venv ## the node's images without Docker: base, app, operator, PostgreSQL, Redis, pause (cached by input hash)
	@$(STACK) images

status: ## what the local stack runs
	@$(STACK) status

demo: tools ## a newcomer's entry point: a real node, the images, the chart with its pods and load; then what to try
	@$(STACK) up --demo

lint: venv ## ruff and mypy
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy

fmt: venv ## format the code
	@$(VENV)/bin/ruff check --fix .
	@$(VENV)/bin/ruff format .

test: tools lint ## lint, then every test (unit, integration, e2e on the local node)
	@$(VENV)/bin/pytest $(PYTEST_ARGS)

test-unit: venv ## the pure tests only
	@$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

test-integration: tools ## the tests against the local stack
	@$(VENV)/bin/pytest tests/integration $(PYTEST_ARGS)

e2e: tools ## tests/e2e on the local node (make demo's stack), or on the cluster in PAYFLOW_E2E_KUBECONFIG
	@$(VENV)/bin/pytest tests/e2e tests/node $(PYTEST_ARGS)

bench: tools ## every benchmark under bench/, printing its figures (about 30 minutes; one node at a time)
	@$(PY) -m bench.stack_startup --runs 3
	@$(PY) -m bench.api
	@$(PY) -m bench.operator
	@$(PY) -m bench.node
	@$(PY) -m bench.loadgen

clean: down ## remove the venv and local state (the tool cache outside the repo stays)
	@rm -rf $(VENV) .payflow .pytest_cache .mypy_cache .ruff_cache build *.egg-info

# ---- Images and a kind cluster (docs/helm.md) ------------------------------------------------
# For a machine with Docker, kind, kubectl and helm; none of it runs on the local stack.
KIND            ?= kind
KIND_CLUSTER    ?= payflow
KIND_NODE_IMAGE ?=
KIND_NS         ?= demo
KIND_KUBECONFIG ?= $(CURDIR)/.payflow/kind-kubeconfig
DOCKER          ?= docker
APP_VERSION     := $(shell sed -n 's/^appVersion: *"\(.*\)"/\1/p' helm/payflow/Chart.yaml)
BUGGY_VERSION   := $(shell sed -n 's/^ *tag: *"\(.*\)"/\1/p' helm/payflow/values-buggy.yaml)
KK              := kubectl --kubeconfig $(KIND_KUBECONFIG)

.PHONY: images kind-up kind-demo kind-down e2e-kind

images: ## build payflow-app (also tagged as values-buggy.yaml's version) and payflow-operator
	$(DOCKER) build -f Dockerfile.app -t payflow-app:$(APP_VERSION) -t payflow-app:$(BUGGY_VERSION) .
	$(DOCKER) build -f Dockerfile.operator -t payflow-operator:$(APP_VERSION) .

kind-up: images ## kind cluster from kind/cluster.yaml, images loaded, chart installed in demo, waited for
	@mkdir -p $(dir $(KIND_KUBECONFIG))
	$(KIND) get clusters | grep -qx $(KIND_CLUSTER) || $(KIND) create cluster --name $(KIND_CLUSTER) \
	  --config kind/cluster.yaml --kubeconfig $(KIND_KUBECONFIG) $(if $(KIND_NODE_IMAGE),--image $(KIND_NODE_IMAGE))
	$(KIND) export kubeconfig --name $(KIND_CLUSTER) --kubeconfig $(KIND_KUBECONFIG)
	$(KIND) load docker-image --name $(KIND_CLUSTER) payflow-app:$(APP_VERSION) \
	  payflow-app:$(BUGGY_VERSION) payflow-operator:$(APP_VERSION)
	helm upgrade --install payflow helm/payflow --kubeconfig $(KIND_KUBECONFIG) \
	  --namespace $(KIND_NS) --create-namespace --wait --timeout 5m
	$(KK) label namespace $(KIND_NS) payflow.dev/inject=enabled --overwrite
	@echo "kind cluster $(KIND_CLUSTER) is up: export KUBECONFIG=$(KIND_KUBECONFIG); then make kind-demo"

kind-demo: ## apply the latency incident on kind, wait for it to be Active, show it
	$(KK) -n $(KIND_NS) apply -f examples/incidents/latency.yaml
	$(KK) -n $(KIND_NS) wait -f examples/incidents/latency.yaml --for=jsonpath='{.status.phase}'=Active --timeout=60s
	$(KK) -n $(KIND_NS) get pfi
	$(KK) -n $(KIND_NS) get configmap payflow-faults -o jsonpath='{.data}{"\n"}'

kind-down: ## delete the kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)
	rm -f $(KIND_KUBECONFIG)

e2e-kind: venv ## tests/e2e against the kind cluster of make kind-up
	PAYFLOW_E2E_KUBECONFIG=$(KIND_KUBECONFIG) $(VENV)/bin/pytest tests/e2e $(PYTEST_ARGS)

# ---- Fuzzing and security (docs/security.md) ---------------------------------------------------
# The same suites run in `make test` with small example budgets; these targets raise them.
FUZZ_API_EXAMPLES      ?= 200
FUZZ_INCIDENT_EXAMPLES ?= 200
FUZZ_SCHEMA_EXAMPLES   ?= 1500
FUZZ_REPORT            ?= .payflow/fuzz-report.json

.PHONY: fuzz security

fuzz: tools ## schemathesis on the app's OpenAPI, generated incidents on the operator; figures in .payflow/fuzz-report.json
	@mkdir -p $(dir $(FUZZ_REPORT)) && rm -f $(FUZZ_REPORT)
	PAYFLOW_FUZZ_EXPLORE=1 PAYFLOW_FUZZ_API_EXAMPLES=$(FUZZ_API_EXAMPLES) PAYFLOW_FUZZ_INCIDENT_EXAMPLES=$(FUZZ_INCIDENT_EXAMPLES) \
	  PAYFLOW_FUZZ_SCHEMA_EXAMPLES=$(FUZZ_SCHEMA_EXAMPLES) \
	  PAYFLOW_FUZZ_REPORT=$(CURDIR)/$(FUZZ_REPORT) $(VENV)/bin/pytest tests/fuzz --timeout 900 $(PYTEST_ARGS)
	@cat $(FUZZ_REPORT)

security: tools ## manifests, checkov on the rendered chart, no secret in outputs or logs, the RBAC matrix, the opt-in
	@$(VENV)/bin/pytest tests/security $(PYTEST_ARGS)

# ---- Resilience (docs/reliability.md) ----------------------------------------------------------
# Each suite stops or kills a part of a stack of its own and prints its figures (also written as
# JSON under RESILIENCE_REPORT). `make test` runs them all at small sizes; these run full length.
RESILIENCE_CYCLES  ?= 100
RESILIENCE_CRASHES ?= 8
RESILIENCE_SEED    ?= 7
RESILIENCE_REPORT  ?= .payflow/resilience
RESILIENCE_PYTEST  := PAYFLOW_RESILIENCE_CYCLES=$(RESILIENCE_CYCLES) PAYFLOW_RESILIENCE_CRASHES=$(RESILIENCE_CRASHES) \
  PAYFLOW_RESILIENCE_SEED=$(RESILIENCE_SEED) PAYFLOW_RESILIENCE_REPORT=$(CURDIR)/$(RESILIENCE_REPORT) \
  $(VENV)/bin/pytest -s -p no:cacheprovider --timeout 1800

.PHONY: resilience resilience-operator resilience-app resilience-db resilience-redis resilience-kube

resilience-operator: tools ## the operator SIGKILLed at random moments over RESILIENCE_CYCLES cycles (about 4 min)
	@$(RESILIENCE_PYTEST) tests/resilience/test_operator_crashes.py $(PYTEST_ARGS)

resilience-app: tools ## the app crashing RESILIENCE_CRASHES times under load: nothing acknowledged lost (about 3 min)
	@$(RESILIENCE_PYTEST) tests/resilience/test_app_crashes.py $(PYTEST_ARGS)

resilience-db: tools ## PostgreSQL stopped for 10 s under load: clear 503s, back within 5 s, nothing lost
	@$(RESILIENCE_PYTEST) tests/resilience/test_postgres_outage.py $(PYTEST_ARGS)

resilience-redis: tools ## Redis stopped under load: no 5xx
	@$(RESILIENCE_PYTEST) tests/resilience/test_redis_outage.py $(PYTEST_ARGS)

resilience-kube: tools ## kube-apiserver stopped for 10 s: faults stay, operator and watch recover alone
	@$(RESILIENCE_PYTEST) tests/resilience/test_apiserver_outage.py $(PYTEST_ARGS)

resilience: tools ## every resilience suite at full length; figures in .payflow/resilience/*.json
	@$(RESILIENCE_PYTEST) tests/resilience $(PYTEST_ARGS)
