# yuqing: the two commands for a fresh machine are `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: system-deps setup demo test test-unit test-integration lint kafka-up kafka-down typecheck-deps clean deploy-check chaos

$(BIN)/python:
	@command -v $(PY) >/dev/null || { echo "need $(PY)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[all]'
	@touch $(STAMP)

## setup: create or update .venv with everything (torch included; the pip cache keeps reruns fast)
setup: $(STAMP)

## demo: train (if needed), export and run the main job on the embedded default store
demo: setup
	$(BIN)/yuqing demo

## test: install, start Kafka, run every test (unit + integration) and the lint gate
test: setup system-deps kafka-up typecheck-deps
	$(BIN)/python -m pytest tests -q -m "not slow"
	$(MAKE) lint

test-unit: setup
	$(BIN)/python -m pytest tests/unit -q

test-integration: setup kafka-up
	$(BIN)/python -m pytest tests/integration -q -m "not slow"

lint: setup
	$(BIN)/ruff check stream models export dashboards deploy tests
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

## chaos: a 10-minute soak on a broker of its own: random SIGKILL/SIGTERM of 3 consumers, a broker
## restart, a 30 s store outage; prints lost = 0 and duplicated = 0 or fails (tiny models: it tests delivery)
chaos: setup
	$(BIN)/python -m tests.tiny_models .cache/chaos-models >/dev/null
	$(BIN)/yuqing chaos --minutes 10 --models .cache/chaos-models/pkg-sentiment --models .cache/chaos-models/pkg-topic \
	  --json .cache/chaos-report.json

## deploy-check: offline checks of compose, Kubernetes manifests, Dockerfiles and the cluster DDL
deploy-check: setup
	$(BIN)/python deploy/validate.py

## system-deps: Debian chromium (for the brief test); checks java, mvn, node, npm
system-deps:
	bash deploy/local/system-deps.sh

kafka-up:
	bash deploy/local/kafka.sh up

kafka-down:
	bash deploy/local/kafka.sh down

## typecheck-deps: npm tools the dashboard schema check needs (tsc + @grafana/schema)
typecheck-deps:
	@if [ -f dashboards/schema_check/package.json ]; then \
	  cd dashboards/schema_check && ( [ -d node_modules ] || npm ci --no-audit --no-fund --silent ); fi

clean:
	rm -rf $(VENV) .cache/kafka/data yuqing-data
