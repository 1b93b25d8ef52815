# The two commands of the README: `make run` and `make test`.
# Both install what is missing first: the MariaDB server (when no mariadbd/mysqld is found),
# the `mariadb` client and sysbench from the system's packages, and a virtualenv with grproxy.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSTEM_PACKAGES := mariadb-server mariadb-client sysbench
export PATH := /usr/sbin:/usr/local/sbin:$(PATH)

.PHONY: run test install system-deps bench bench-deps clean

run: install
	$(BIN)/grproxy sandbox $(ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: system-deps $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
	  { echo "grproxy needs Python >= 3.11 (found: $$($(PYTHON) --version 2>&1))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

# Installs only what is missing. Needs root (or sudo) and apt-get; otherwise says what to do.
system-deps:
	@missing=""; \
	if ! command -v mariadbd >/dev/null && ! command -v mysqld >/dev/null; then missing="$$missing mariadb-server"; fi; \
	if ! command -v mariadb >/dev/null && ! command -v mysql >/dev/null; then missing="$$missing mariadb-client"; fi; \
	if ! command -v sysbench >/dev/null; then missing="$$missing sysbench"; fi; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo -n"; \
	  if command -v apt-get >/dev/null && { [ -z "$$sudo" ] || $$sudo true 2>/dev/null; }; then \
	    echo "Installing system packages:$$missing"; \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else \
	    echo "Missing:$$missing. Install them with your package manager, for example:"; \
	    echo "  sudo apt-get install$$missing"; \
	    exit 1; \
	  fi; \
	fi

# Benchmarks also compare against a MariaDB Galera cluster.
bench-deps: install
	@command -v galera_recovery >/dev/null || [ -e /usr/lib/galera/libgalera_smm.so ] || \
	  { sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo -n"; $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q galera-4; }

bench: bench-deps
	$(BIN)/python -m bench.proxy_overhead
	$(BIN)/python -m bench.read_scaling

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# Chaos runs (tests/chaos): fixed fault scenarios (pytest; known engine bugs xfail), then the
# matrix: one seed -> 31 seeded runs of 60-90 s against a real 3-member group, every link
# through fault-injecting relays: 10 without faults, 21 with (partitions, kills, pauses, a
# coordinated crash + `grproxy reboot`, majority loss + force_members, clients that give up
# mid-commit, all mixed), single- and multi-primary; histories checked (bank, list-append after
# Elle, lost writes, stale reads per consistency level, convergence). About an hour on 2 cores.
# The seed is printed; replay with CHAOS_ARGS="--matrix --seed N", one run of it with
# CHAOS_ARGS="--matrix --seed N --only 7". Summary (markdown, a plot per run):
# $TMPDIR/grproxy-chaos/seed-N/summary.md (--out DIR).
# Then fuzzing (tests/chaos/fuzz.py): FUZZ_INPUTS (1,000,000) seeded random and mutated MySQL
# packets and group-port frames against the parsers and the core in process and against a
# sandbox's router, member port and group port; 0 crashes, 0 hangs, nothing from a non-member
# delivered, and the sandbox still serving. About 10 minutes; the seed is printed, replay with
# FUZZ_ARGS="--seed N" (one input: FUZZ_ARGS="--seed N --replay TARGET:INDEX").
CHAOS_ARGS ?= --matrix
FUZZ_INPUTS ?= 1000000
FUZZ_ARGS ?=
.PHONY: chaos
chaos: install
	@status=0; \
	GRPROXY_CHAOS_FAULTS=1 $(BIN)/python -m pytest -p no:cacheprovider tests/chaos/test_chaos_faults.py || status=1; \
	$(BIN)/python -m tests.chaos.runner $(CHAOS_ARGS) || status=1; \
	$(BIN)/python -m tests.chaos.fuzz --inputs $(FUZZ_INPUTS) $(FUZZ_ARGS) || status=1; \
	exit $$status
