# The two commands of the README: `make demo` runs the hub with demo traffic, `make test` runs the tests.
# Both create .venv/ from uv.lock first (uv is installed with pip if missing).
UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
# The browser tests drive Debian's Chromium (playwright's own browser download does not work here).
CHROMIUM ?= $(or $(QUEUE_ASSETS_CHROMIUM),/usr/bin/chromium)
# The second interpreter CI runs the suite on: pyenv's 3.13, else a python3.13 on PATH.
PYTHON313 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python) $(shell command -v python3.13 2>/dev/null))
# The suite without a browser, the soak or the whole-demo search (test-pg15 and test-py313 run it).
FAST := not browser and not soak and not slow

.PHONY: setup browser demo test test-slow test-pg15 test-py313 test-py313-pg15 lint soak soak-long bench bench-scale clean-data
setup: .venv/.synced

.venv/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet --user "uv==$(UV_VERSION)" || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	$$(command -v uv || echo $(HOME)/.local/bin/uv) sync --frozen --extra dev
	@touch $@

# Chromium for the browser tests: installed from Debian's packages when missing and running as root;
# otherwise stop at once with the one command to run.
browser:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "make: $(CHROMIUM) is missing; installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    || { echo "make: could not install chromium; run: apt-get install -y chromium" >&2; exit 1; }; \
	  [ -x "$(CHROMIUM)" ] || { echo "make: chromium installed but $(CHROMIUM) is missing; set QUEUE_ASSETS_CHROMIUM" >&2; exit 1; }; \
	else \
	  echo "make: the browser tests need Chromium at $(CHROMIUM). Run: sudo apt-get install -y chromium" >&2; exit 1; \
	fi

demo: setup
	.venv/bin/queue-assets dev

# Every suite: the unit, integration, dagster and browser tests and the whole-demo secret search
# (~10 min), then the CI variant of the soak-plus-faults run (a hub of its own, ~6 min).
test: setup browser
	.venv/bin/pytest -m "not soak"
	.venv/bin/pytest -q -s -m soak queue_assets_tests/soak

# The whole-demo secret search alone (~5 min).
test-slow: setup
	.venv/bin/pytest -m "slow and not soak"

# The same suite against another server, e.g. the machine's PostgreSQL 15.
test-pg15: setup
	QUEUE_ASSETS_TEST_SERVER_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/pytest -m "$(FAST)"

# The same suite on Python 3.13, in a second environment (.venv313) from the same uv.lock.
test-py313: .venv313/.synced
	.venv313/bin/pytest -m "$(FAST)"

# CI's second pass: both other targets at once, Python 3.13 against the machine's PostgreSQL 15
# (make test covers Python 3.11 on the embedded server; one pass instead of two saves ~10 minutes).
test-py313-pg15: .venv313/.synced
	QUEUE_ASSETS_TEST_SERVER_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv313/bin/pytest -m "$(FAST)"

.venv313/.synced: .venv/.synced
	@[ -n "$(PYTHON313)" ] || { echo "make: no Python 3.13 found (pyenv's or python3.13 on PATH); set PYTHON313=/path/to/python3.13" >&2; exit 1; }
	UV_PROJECT_ENVIRONMENT=.venv313 $$(command -v uv || echo $(HOME)/.local/bin/uv) sync --frozen --extra dev --python $(PYTHON313)
	@touch $@

# The quality gates CI runs: formatting, lint, types (mypy on queue_assets/, config in pyproject.toml)
# and `dg check defs` (every definition loads; a throw-away DAGSTER_HOME, as nothing runs).
lint: setup
	.venv/bin/ruff format --check queue_assets queue_assets_tests bench
	.venv/bin/ruff check queue_assets queue_assets_tests bench
	.venv/bin/mypy
	@home=$$(mktemp -d) && touch $$home/dagster.yaml && \
	  DAGSTER_HOME=$$home VIRTUAL_ENV=$(CURDIR)/.venv .venv/bin/dg check defs; rc=$$?; rm -rf $$home; exit $$rc

# The hub under sustained load and faults through the daemon (docs/reliability.md).
soak: setup
	.venv/bin/pytest -q -s -m soak queue_assets_tests/soak

soak-long: setup
	.venv/bin/python -m queue_assets_tests.soak.run --minutes 10

bench-scale: setup
	.venv/bin/python bench/bench_scale.py

bench: setup
	.venv/bin/python bench/bench_ingest.py

clean-data:
	-.venv/bin/queue-assets stop
	rm -rf .queue_assets
