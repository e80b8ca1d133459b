# Entry points: `make demo` runs the call-center DAG on the local stack, `make test` runs every check,
# `make airflow` starts a local Airflow UI (the Celery stack of docker-compose.yaml, as plain processes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser demo airflow test lint typecheck pytest stack bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip

$(STAMP): $(BIN)/python requirements.txt requirements-dev.txt constraints.txt pyproject.toml dev/pyproject.toml
	$(BIN)/python -m pip install -qq -r requirements-dev.txt -c constraints.txt
	$(BIN)/python -m pip install -qq --no-deps -e . -e dev/
	@touch $(STAMP)

install: $(STAMP)

# PIPELINE=product_reviews or support_tickets runs another shipped pipeline (include/pipelines/).
demo: $(STAMP)
	$(BIN)/python -m bedrock_batch_dev.demo $(if $(PIPELINE),--pipeline $(PIPELINE))

airflow: $(STAMP)
	$(BIN)/python -m bedrock_batch_dev.deployment

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The deployment tier's page test (tests/deployment/test_ui_page.py) drives headless Chromium through
# chromedriver: the Debian packages chromium and chromium-driver, installed here when missing and apt-get can
# (as root). Nothing is downloaded at test time.
BROWSER_PACKAGES := chromium chromium-driver

browser:
	@if command -v chromedriver >/dev/null 2>&1 && { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; then \
		exit 0; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing $(BROWSER_PACKAGES) for the page test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES) >/dev/null; \
	else \
		echo "The page test needs headless Chromium and its driver: chromium and chromedriver are not both on PATH." >&2; \
		echo "Install the Debian packages: sudo apt-get install -y $(BROWSER_PACKAGES)" >&2; \
		exit 1; \
	fi

# Every tier but deployment in two processes (they share nothing but the machine; most of their time is
# waiting), then the deployment tier alone: it runs a whole distributed Airflow, and its fault scenarios time
# Airflow's own reactions, which a busy machine would stretch.
pytest: $(STAMP) browser
	$(BIN)/python -m pytest -n 2 --dist worksteal -m "not perf and not deployment"
	$(BIN)/python -m pytest -m deployment

test: lint typecheck pytest

stack: $(STAMP)
	$(BIN)/python -m bedrock_batch_dev.emulator --port 5001 --s3-port 5000

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_prepare.py
	$(BIN)/python benchmarks/bench_collect.py
	$(BIN)/python benchmarks/bench_collect_publish.py
	$(BIN)/python benchmarks/bench_emulator.py
	$(BIN)/python benchmarks/bench_triggerer.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .local
