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

.PHONY: help install system-deps broker test test-unit test-integration test-reliability run lint bench \
        helm-lint images images-build kind-up kind-load deploy scale smoke kind-down cluster-up cluster-down clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/.installed: producer-service/pyproject.toml email-service/pyproject.toml requirements-test.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e producer-service -e email-service -r requirements-test.txt
	touch $@

install: $(BIN)/.installed ## create .venv and install both services (editable) with the test tools

system-deps: ## install the Debian packages the tests use (prometheus for promtool, haproxy for the cluster front)
	deploy/local/ensure-packages.sh prometheus haproxy

broker: ## make sure RabbitMQ answers at AMQP_URL (start the local one if it is installed)
	deploy/local/ensure-rabbitmq.sh

test: install system-deps broker ## the whole suite: unit, contract, integration, observability, chart (what CI runs)
	$(BIN)/pytest

test-unit: install ## unit and contract tests only (no broker needed)
	$(BIN)/pytest tests/unit tests/contract

run: install broker ## run the pipeline locally: producer on :8000, email-service, SMTP capture into ./mail-capture
	deploy/local/run.sh
