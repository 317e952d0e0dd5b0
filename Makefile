# welcome-mail: every new user gets a welcome email, fast and never lost.
# The two commands a newcomer needs: `make run` and `make test`.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
AMQP_URL ?= amqp://guest:guest@localhost:5672/
export AMQP_URL

RELEASE ?= welcome
NAMESPACE ?= welcome-mail
KIND_CLUSTER ?= welcome-mail
N ?= 2

.PHONY: help install system-deps broker test test-unit test-integration test-reliability run lint bench bench-report \
        helm-lint images images-build kind-up kind-load deploy scale smoke kind-down cluster-up cluster-down clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/.installed: producer-service/pyproject.toml email-service/pyproject.toml requirements-test.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e producer-service -e email-service -r requirements-test.txt
	touch $@

install: $(BIN)/.installed ## create .venv and install both services (editable) with the test tools

system-deps: ## install the Debian packages the tests use (prometheus: promtool and a server; haproxy: the cluster front; redis-server: dedup)
	deploy/local/ensure-packages.sh prometheus haproxy redis-server

broker: ## make sure RabbitMQ answers at AMQP_URL (start the local one if it is installed)
	deploy/local/ensure-rabbitmq.sh

test: install system-deps broker ## the whole suite: unit, contract, integration, observability, chart (what CI runs)
	$(BIN)/pytest

test-reliability: install system-deps broker ## the reliability suite in full: SIGKILLs, broker and SMTP failures, fuzzing, cluster failover (~8 min)
	RELIABILITY_FULL=1 $(BIN)/pytest tests/reliability tests/cluster/test_signup_failover.py -q -s

test-unit: install ## unit and contract tests only (no broker needed)
	$(BIN)/pytest tests/unit tests/contract

run: install broker ## run the pipeline locally: producer on :8000, email-service, SMTP capture into ./mail-capture
	deploy/local/run.sh

cluster-up: ## start a local 3-node RabbitMQ cluster (rc1-3@localhost, 5681-5683) behind haproxy on 127.0.0.1:5680 (as root)
	deploy/cluster/cluster.sh up

cluster-down: ## stop the local cluster and its haproxy, remove /tmp/welcome-mail-cluster
	deploy/cluster/cluster.sh down

BENCH_VENV := .venv-bench

$(BENCH_VENV)/.installed: tests/bench/requirements-bench.txt producer-service/pyproject.toml email-service/pyproject.toml
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV) || { apt-get install -y python3-venv && $(PYTHON) -m venv $(BENCH_VENV); }
	$(BENCH_VENV)/bin/pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q -r tests/bench/requirements-bench.txt -e producer-service -e email-service
	touch $@

bench: install broker $(BENCH_VENV)/.installed ## benchmarks against Celery, Dramatiq and minimal ceilings (7-9 min, not in `make test`); writes tests/bench/results.json, RESULTS.md and the README table (BENCH_ARGS=--quick: a small smoke run)
	tests/bench/ensure-tools.sh
	$(BENCH_VENV)/bin/python -m tests.bench $(BENCH_ARGS)
	$(MAKE) --no-print-directory bench-report

bench-report: ## rewrite tests/bench/RESULTS.md and the README's benchmark table (between its bench-table markers) from tests/bench/results.json
	$(PYTHON) -m tests.bench.publish

lint: install ## shellcheck the scripts, hadolint the Dockerfiles
	shellcheck deploy/local/*.sh deploy/kind/*.sh deploy/images/*.sh deploy/cluster/*.sh
	$(BIN)/hadolint producer-service/Dockerfile email-service/Dockerfile

helm-lint: install ## render the chart for several value sets; validate, lint and scan it and the Dockerfiles (no cluster)
	$(BIN)/pytest tests/helm -q

images: ## build both images with docker: localhost/welcome-mail/<service>:<appVersion>
	deploy/kind/images.sh

images-build: ## build both images without a daemon (buildah, vfs, chroot; root), then start the producer image once
	deploy/images/build.sh

kind-up: ## create the kind cluster with RabbitMQ and Mailpit in namespace $(NAMESPACE)
	KIND_CLUSTER=$(KIND_CLUSTER) NAMESPACE=$(NAMESPACE) deploy/kind/up.sh

kind-load: ## copy both images into the kind nodes (from docker, or from the images-build archives)
	KIND_CLUSTER=$(KIND_CLUSTER) deploy/kind/load.sh

deploy: ## helm upgrade --install $(RELEASE) into kind with deploy/kind/values.yaml
	KIND_CLUSTER=$(KIND_CLUSTER) NAMESPACE=$(NAMESPACE) RELEASE=$(RELEASE) deploy/kind/deploy.sh

scale: ## scale the email consumers: make scale N=4
	KIND_CLUSTER=$(KIND_CLUSTER) NAMESPACE=$(NAMESPACE) RELEASE=$(RELEASE) deploy/kind/scale.sh $(N)

smoke: ## post a signup through a port-forward and wait for the welcome mail in Mailpit
	KIND_CLUSTER=$(KIND_CLUSTER) NAMESPACE=$(NAMESPACE) RELEASE=$(RELEASE) deploy/kind/smoke.sh

kind-down: ## delete the kind cluster
	KIND_CLUSTER=$(KIND_CLUSTER) deploy/kind/down.sh

clean: ## remove the virtualenv, caches and the mail capture folder
	rm -rf $(VENV) .venv-bench mail-capture tests/helm/.cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
