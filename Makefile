# Two entry points: `make run` (serve + demo call) and `make test` (everything CI checks).
# Both (re)build .venv from the package registries, idempotently: the stamp depends on pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The dashboard tests drive Debian's Chromium (never a downloaded browser); installed when missing.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint typecheck unit bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mise serve --demo

lint: $(STAMP)
	$(BIN)/ruff check engine actors api models tests bench
	$(BIN)/ruff format --check engine actors api models tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null

test: lint typecheck $(CHROMIUM)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .mise-data .pytest_cache .mypy_cache .ruff_cache
