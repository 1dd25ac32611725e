# Two entry points: `make run` (serve + demo call) and `make test` (everything CI checks).
# Both (re)build .venv from the package registries, idempotently: the stamp depends on pyproject.toml (and the
# compiled kernels' source).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The dashboard tests drive Debian's Chromium (never a downloaded browser); installed when missing.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# A real OpenSearch node for tests and benches (tests/opensearch_node.py starts it on loopback): the minimal
# distribution (no bundled JDK: Debian's OpenJDK 17) plus its analysis-common module (pattern tokenizer,
# asciifolding, ...), both from Maven Central, unpacked once into a cache outside git. OpenSearch refuses to run
# as root, so as root the node runs as OPENSEARCH_USER, and the cache is under /var/cache (root's home is 0700).
OPENSEARCH_VERSION ?= 2.19.6
OPENSEARCH_USER ?= mise-os
OPENSEARCH_CACHE ?= $(if $(SUDO),$(or $(XDG_CACHE_HOME),$(HOME)/.cache),/var/cache)/mise/opensearch-$(OPENSEARCH_VERSION)
OPENSEARCH_HOME := $(OPENSEARCH_CACHE)/opensearch-$(OPENSEARCH_VERSION)
OPENSEARCH_STAMP := $(OPENSEARCH_HOME)/.mise-ready
MVN_COPY := mvn -q -B dependency:copy -DoutputDirectory=$(OPENSEARCH_CACHE)

# A real S3-compatible server for the recordings' object-storage test: SeaweedFS (Apache-2.0), built once from the
# Go module proxy into a cache outside git (~10 minutes on 2 cores; Go from Debian when missing, which fetches the
# toolchain SeaweedFS asks for). Its module has replace directives, so it is built in a copy of its source.
SEAWEEDFS_VERSION ?= v0.0.0-20261109003541-7506e5f91cd6
SEAWEEDFS_CACHE ?= $(if $(SUDO),$(or $(XDG_CACHE_HOME),$(HOME)/.cache),/var/cache)/mise/seaweedfs-$(SEAWEEDFS_VERSION)
SEAWEEDFS := $(SEAWEEDFS_CACHE)/weed
GO ?= $(or $(shell command -v go),$(wildcard /usr/local/go/bin/go),go)

.PHONY: run test lint typecheck unit bench soak clean venv opensearch opensearch-prereqs test-prereqs seaweedfs

venv: $(STAMP)

# engine/csrc/ is compiled at install: a C compiler and Python's headers, from apt when missing.
$(STAMP): pyproject.toml $(wildcard engine/csrc/*)
	@command -v cc >/dev/null && [ -f "$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] || { \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc python3-dev >/dev/null; }
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

# Idempotent: Java, Maven and unzip from apt when missing; the node's user when root; the fetch and unpack once.
opensearch: $(OPENSEARCH_STAMP)

opensearch-prereqs:
	@command -v java >/dev/null && command -v mvn >/dev/null && command -v unzip >/dev/null || { \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless maven unzip >/dev/null; }
	@[ -n "$(SUDO)" ] || id -u $(OPENSEARCH_USER) >/dev/null 2>&1 || \
		useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin $(OPENSEARCH_USER)

$(OPENSEARCH_STAMP): | opensearch-prereqs
	mkdir -p $(OPENSEARCH_CACHE)
	$(MVN_COPY) -Dartifact=org.opensearch.distribution.integ-test-zip:opensearch:$(OPENSEARCH_VERSION):zip
	$(MVN_COPY) -Dartifact=org.opensearch.plugin:analysis-common:$(OPENSEARCH_VERSION):jar
	rm -rf $(OPENSEARCH_CACHE)/unpack $(OPENSEARCH_HOME)
	unzip -q $(OPENSEARCH_CACHE)/opensearch-$(OPENSEARCH_VERSION).zip -d $(OPENSEARCH_CACHE)/unpack
	mkdir $(OPENSEARCH_CACHE)/unpack/opensearch-$(OPENSEARCH_VERSION)/modules/analysis-common
	cp $(OPENSEARCH_CACHE)/analysis-common-$(OPENSEARCH_VERSION).jar \
		$(OPENSEARCH_CACHE)/unpack/opensearch-$(OPENSEARCH_VERSION)/modules/analysis-common/
	printf '%s\n' 'description=Adds built-in analyzers (from Maven Central, by make opensearch)' \
		'version=$(OPENSEARCH_VERSION)' 'name=analysis-common' \
		'classname=org.opensearch.analysis.common.CommonAnalysisPlugin' 'java.version=11' \
		'opensearch.version=$(OPENSEARCH_VERSION)' 'custom.foldername=' 'extended.plugins=' \
		'has.native.controller=false' \
		> $(OPENSEARCH_CACHE)/unpack/opensearch-$(OPENSEARCH_VERSION)/modules/analysis-common/plugin-descriptor.properties
	mv $(OPENSEARCH_CACHE)/unpack/opensearch-$(OPENSEARCH_VERSION) $(OPENSEARCH_HOME)
	rmdir $(OPENSEARCH_CACHE)/unpack
	rm $(OPENSEARCH_CACHE)/opensearch-$(OPENSEARCH_VERSION).zip $(OPENSEARCH_CACHE)/analysis-common-$(OPENSEARCH_VERSION).jar
	chmod -R a+rX $(OPENSEARCH_CACHE)
	chmod a+x $(dir $(OPENSEARCH_CACHE))
	touch $@

seaweedfs: $(SEAWEEDFS)

$(SEAWEEDFS):
	@command -v $(GO) >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null; }
	mkdir -p $(SEAWEEDFS_CACHE)
	rm -rf $(SEAWEEDFS_CACHE)/src
	cp -r "$$($(GO) mod download -json github.com/seaweedfs/seaweedfs@$(SEAWEEDFS_VERSION) | \
		python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')" $(SEAWEEDFS_CACHE)/src
	chmod -R u+w $(SEAWEEDFS_CACHE)/src
	cd $(SEAWEEDFS_CACHE)/src && $(GO) build -o $(SEAWEEDFS).tmp ./weed
	mv $(SEAWEEDFS).tmp $(SEAWEEDFS)
	rm -rf $(SEAWEEDFS_CACHE)/src

# Test tools from Debian, not shipped: the two-node cluster test puts its second Ray node in a network namespace
# (iproute2's `ip`); the redaction test has a caller read out a card number (espeak-ng, GPL: a test tool only).
test-prereqs:
	@{ command -v ip && command -v espeak-ng; } >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 espeak-ng >/dev/null; }

test: lint typecheck $(CHROMIUM) opensearch seaweedfs test-prereqs
	MISE_OPENSEARCH_HOME=$(OPENSEARCH_HOME) MISE_SEAWEEDFS=$(SEAWEEDFS) $(BIN)/python -m pytest

bench: $(STAMP) opensearch
	MISE_OPENSEARCH_HOME=$(OPENSEARCH_HOME) $(BIN)/python bench/ingest.py

# Not in `make test`: 30 minutes of real-time calls at half the largest level bench/load.py passed on this
# machine (docs/load.md), calls coming and going, nothing lost, memory and latency over time.
SOAK_CALLS ?= 15
soak: $(STAMP)
	$(BIN)/python bench/load.py --calls $(SOAK_CALLS) --minutes 30

clean:
	rm -rf $(VENV) .mise-data .pytest_cache .mypy_cache .ruff_cache
