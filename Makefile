# flagstream developer entry points. `make test` is THE test command (README, .ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Re-install only when pyproject.toml changed since the last successful install.
STAMP := $(VENV)/.flagstream-installed
# importlib import mode: test files in different directories may share a basename
# (tests/relay/test_app.py, tests/publisher/test_app.py); tests/conftest.py puts the test
# directories on sys.path so their helper modules still import by plain name.
PYTEST_ARGS ?=

.PHONY: help venv stack-up stack-down stack-status browser browser-sdk ops-tools image lint format typecheck tf-check test run

help:
	@echo "make run           run flagstream (embedded mode: publisher + relay, no services)"
	@echo "make test          venv + local stack + lint + typecheck + tf-check + all tests"
	@echo "make venv          create .venv and install the project with its dev extras"
	@echo "make stack-up      start the local Kafka + Redis (reuses a running one)"
	@echo "make stack-down    stop them"
	@echo "make stack-status  show what runs where"
	@echo "make browser       install chromium if missing (for the examples page test)"
	@echo "make ops-tools     install prometheus/promtool, mmdebstrap, buildah, podman, runc if missing"
	@echo "make image         build the container image localhost/flagstream:dev (buildah, no Docker)"
	@echo "make browser-sdk   install LaunchDarkly's browser SDK from npm (tests/browser, cached)"
	@echo "make lint | format | typecheck | tf-check"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
		echo "creating $(VENV) with $(PYTHON)"; \
		$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
			|| { echo "error: Python >= 3.11 needed (found $(PYTHON)); install python3.11" >&2; exit 1; }; \
		$(PYTHON) -m venv $(VENV); \
	fi
	@echo "installing flagstream[dev] into $(VENV)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

stack-up: venv
	@$(BIN)/flagstream stack up

stack-down: venv
	@$(BIN)/flagstream stack down

stack-status: venv
	@$(BIN)/flagstream stack status

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .

typecheck: venv
	$(BIN)/mypy

tf-check:
	@if [ -f deploy/terraform/check.sh ]; then \
		bash deploy/terraform/check.sh; \
	else \
		echo "tf-check: deploy/terraform/check.sh not present, skipped"; \
	fi

# The examples' EventSource page is tested in a real headless browser (Debian's chromium).
browser:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing chromium with apt-get (browser test of examples/)"; \
			apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "error: chromium is missing: apt-get install -y chromium" >&2; exit 1; \
		fi; }

# The operability tests (tests/deploy): promtool and a real Prometheus check the alert rules
# and dashboard; mmdebstrap assembles the image's base from Debian's archive, buildah builds
# the Dockerfile, podman (with runc) runs it. ~1 min of apt-get on a fresh machine.
OPS_TOOLS := prometheus promtool mmdebstrap buildah podman runc
OPS_PACKAGES := prometheus mmdebstrap buildah podman runc

ops-tools:
	@missing="$$(for t in $(OPS_TOOLS); do command -v $$t >/dev/null || echo $$t; done)"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing $(OPS_PACKAGES) with apt-get (missing: $$(echo $$missing))"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				--no-install-recommends $(OPS_PACKAGES) >/dev/null; \
		else \
			echo "error: missing $$(echo $$missing): apt-get install -y $(OPS_PACKAGES)" >&2; exit 1; \
		fi; \
	fi

# The image on a base assembled from Debian's archive (docs/operations.md, "Container image").
image: ops-tools
	bash deploy/image/build-base.sh localhost/flagstream-base:bookworm
	buildah bud --format docker --layers=false --isolation chroot \
		--build-arg BASE_IMAGE=localhost/flagstream-base:bookworm \
		$$(ca="$${PIP_CERT:-$${REQUESTS_CA_BUNDLE:-}}"; [ -n "$$ca" ] && echo "--secret id=pip-ca,src=$$ca") \
		-t localhost/flagstream:dev .

# LaunchDarkly's browser SDK for the client-side browser test, pinned by the lockfile and
# installed once into the git-ignored tests/browser/node_modules (again when the lock changes).
BROWSER_SDK := tests/browser/node_modules/.flagstream-installed

browser-sdk: $(BROWSER_SDK)

$(BROWSER_SDK): tests/browser/package-lock.json | $(STAMP)
	@command -v npm >/dev/null || { echo "error: npm is missing: apt-get install -y npm" >&2; exit 1; }
	npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
	@# Source maps, metafiles, READMEs and comments point into the authors' monorepos
	@# (their shared sources); no test reads them (tests/relay/npm_prune.py).
	$(BIN)/python tests/relay/npm_prune.py tests/browser/node_modules
	@touch $@

test: venv stack-up browser browser-sdk ops-tools lint typecheck tf-check
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest --import-mode=importlib $(PYTEST_ARGS)
	$(BIN)/coverage report --include='protocol/*' --fail-under=100

run: venv
	$(BIN)/flagstream dev
