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

.PHONY: help install lock system-deps broker test test-unit test-integration test-reliability run capture lint lint-py bench bench-report \
        helm-lint images images-build images-smoke kind-up kind-load deploy scale smoke kind-down cluster-up cluster-down clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' -v ns='$(NAMESPACE)' -v rel='$(RELEASE)' \
	  '{gsub(/\$$\(NAMESPACE\)/, ns, $$2); gsub(/\$$\(RELEASE\)/, rel, $$2); printf "  %-18s %s\n", $$1, $$2}'

# Locked dependencies (`make lock`; the test tests/unit/test_dependency_locks.py fails when they drift):
# - requirements-dev.lock: the one resolution of both services and requirements-test.txt, installed into .venv;
# - <service>/requirements.lock: that service's share of it (compiled with it as a constraint, so every package
#   the two services share is pinned alike), installed into the service's image.
# Universal resolution for CPython 3.11 (markers limit what only some targets need: async-timeout below 3.11.3),
# with the sha256 of every artefact on PyPI: pip installs them with --require-hashes on x86_64 and aarch64 alike.
LOCK_FLAGS := --universal --python-version=3.11 --generate-hashes
SERVICES := producer-service email-service
SERVICE_LOCKS := $(SERVICES:%=%/requirements.lock)
# The image platforms whose wheels `make lock` downloads, hashes checked: both architectures, any manylinux tag
# up to glibc 2.36 (Debian bookworm's; pip does not widen a --platform by itself).
IMAGE_ARCHS := x86_64 aarch64
IMAGE_GLIBC_TAGS := manylinux1 manylinux2010 manylinux2014 $(foreach minor,$(shell seq 5 36),manylinux_2_$(minor))

# The dev lock alone, hash-checked (--no-deps: the lock is the whole closure); what `make lock` needs (uv).
$(BIN)/.locked: requirements-dev.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --require-hashes --no-deps -r requirements-dev.lock
	touch $@

# Then both services, editable, with nothing more: pip check proves the lock held everything they require.
$(BIN)/.installed: $(BIN)/.locked producer-service/pyproject.toml email-service/pyproject.toml
	$(BIN)/pip install -q --no-deps $(SERVICES:%=-e %)
	$(BIN)/pip check || { echo "requirements-dev.lock no longer satisfies a pyproject.toml: run make lock" >&2; exit 1; }
	touch $@

install: $(BIN)/.installed ## create .venv: the hash-checked requirements-dev.lock, then both services editable (--no-deps)

lock: $(BIN)/.locked ## regenerate the hashed locks from the pyprojects and requirements-test.txt (UPGRADE=1: newest releases in range)
	$(BIN)/uv pip compile --quiet $(LOCK_FLAGS) $(if $(UPGRADE),--upgrade) \
	    $(SERVICES:%=%/pyproject.toml) requirements-test.txt --output-file=requirements-dev.lock
	for service in $(SERVICES); do \
	    $(BIN)/uv pip compile --quiet $(LOCK_FLAGS) --constraint=requirements-dev.lock \
	        $$service/pyproject.toml --output-file=$$service/requirements.lock || exit 1; \
	done
	@echo "downloading every service-lock wheel for Linux $(IMAGE_ARCHS), hashes checked"
	@wheels=$$(mktemp -d) && trap 'rm -rf "$$wheels"' EXIT && for arch in $(IMAGE_ARCHS); do \
	    for lock in $(SERVICE_LOCKS); do \
	        $(BIN)/pip download -q --dest "$$wheels/$$arch" --require-hashes --no-deps --only-binary=:all: \
	            $(IMAGE_GLIBC_TAGS:%=--platform=%_$$arch) --implementation=cp --python-version=3.11 -r $$lock \
	            || { echo "$$lock: no CPython 3.11 wheel with these hashes for Linux $$arch" >&2; exit 1; }; \
	    done; \
	done

system-deps: ## install the Debian packages the tests use (prometheus; haproxy: cluster front; redis-server: dedup, budget; postfix: a real relay with limits; chromium and fonts: the mail in a browser)
	deploy/local/ensure-packages.sh prometheus haproxy redis-server postfix chromium fonts-noto-cjk fonts-noto-color-emoji

broker: ## make sure RabbitMQ answers at AMQP_URL (start the local one if it is installed)
	deploy/local/ensure-rabbitmq.sh

# Two xdist workers: most of the suite waits on brokers, servers and rates, so two at once about halve its time on
# two cores; tests/conftest.py keeps the tests that start their own RabbitMQ nodes in one worker, in turn.
# TEST_WORKERS=0 runs it in one process (and prints the reliability table, which a worker cannot).
TEST_WORKERS ?= 2

test: install system-deps broker lint-py ## ruff and mypy, then the whole suite in 2 workers: unit, contract, integration, reliability (small), observability, chart (what CI runs)
	$(BIN)/pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS))

test-reliability: install system-deps broker ## the reliability suite in full: SIGKILLs, broker and SMTP failures, fuzzing, partition, cluster failover (~22 min measured on 2 busy cores)
	RELIABILITY_FULL=1 $(BIN)/pytest tests/reliability tests/cluster/test_signup_failover.py -q -s

test-unit: install ## unit and contract tests only (no broker needed)
	$(BIN)/pytest tests/unit tests/contract

run: install broker ## run the pipeline locally: producer on :8000, email-service, SMTP capture into ./mail-capture, mail viewer on :1080
	deploy/local/run.sh

capture: install ## the SMTP capture of `make run` alone (:1025 into ./mail-capture, viewer on :1080): start it again after stopping it
	$(BIN)/python deploy/local/smtp_capture.py --port $${SMTP_CAPTURE_PORT:-1025} --dir $${CAPTURE_DIR:-mail-capture} \
	    --http-port $${MAIL_VIEWER_PORT:-1080}

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

bench: install broker $(BENCH_VENV)/.installed ## benchmarks against Celery, Dramatiq and minimal ceilings (7-9 min, plus up to ~13 for provider limits; not in `make test`); writes tests/bench/results.json, RESULTS.md and the README table (BENCH_ARGS=--quick: a small smoke run)
	tests/bench/ensure-tools.sh
	$(BENCH_VENV)/bin/python -m tests.bench $(BENCH_ARGS)
	$(MAKE) --no-print-directory bench-report

bench-report: ## rewrite tests/bench/RESULTS.md and the README's benchmark table (between its bench-table markers) from tests/bench/results.json
	$(PYTHON) -m tests.bench.publish

# ruff.toml covers the whole repository: services, deploy, tests and benchmarks.
RUFF_PATHS := .

lint-py: install ## ruff (ruff.toml) and mypy (mypy.ini: both services' src/, no untyped defs)
	$(BIN)/ruff check $(RUFF_PATHS)
	$(BIN)/mypy

lint: lint-py ## lint-py, then shellcheck the scripts and hadolint the Dockerfiles
	$(BIN)/shellcheck deploy/local/*.sh deploy/kind/*.sh deploy/images/*.sh deploy/cluster/*.sh
	$(BIN)/hadolint producer-service/Dockerfile email-service/Dockerfile

helm-lint: install ## render the chart for several value sets; validate, lint and scan it and the Dockerfiles (no cluster)
	$(BIN)/pytest tests/helm -q

images: ## build both images with docker: localhost/welcome-mail/<service>:<appVersion>
	deploy/kind/images.sh

images-build: ## build both images without a daemon (buildah, chroot; root; installs buildah and debootstrap), then start the producer image once
	deploy/local/ensure-packages.sh buildah debootstrap
	deploy/images/build.sh

# The second step of CI (.ci/run). Fails, saying why, where buildah cannot run (not root, no apt): never skips.
images-smoke: install broker images-build ## run both images as the chart does (uid 10001, read-only root, the rendered env) against RabbitMQ and an SMTP capture with STARTTLS (BREAK=package-data: a broken image, which must fail)
	$(BIN)/python -m tests.images $(if $(BREAK),--break $(BREAK))

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
