# The two commands of the README: `make demo` runs the hub with demo traffic, `make test` runs the tests.
# Both create .venv/ from uv.lock first (uv is installed with pip if missing).
UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)

.PHONY: setup demo test test-slow test-pg15 soak soak-long bench bench-scale clean-data
setup: .venv/.synced

.venv/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet --user "uv==$(UV_VERSION)" || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	$$(command -v uv || echo $(HOME)/.local/bin/uv) sync --frozen --extra dev
	@touch $@

demo: setup
	.venv/bin/queue-assets dev

# Every suite: the unit, integration, dagster and browser tests and the whole-demo secret search
# (~10 min), then the CI variant of the soak-plus-faults run (a hub of its own, ~6 min).
test: setup
	.venv/bin/pytest -m "not soak"
	.venv/bin/pytest -q -s -m soak queue_assets_tests/soak

# The whole-demo secret search alone (~5 min).
test-slow: setup
	.venv/bin/pytest -m "slow and not soak"

# The same suite against another server, e.g. the machine's PostgreSQL 15.
test-pg15: setup
	QUEUE_ASSETS_TEST_SERVER_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/pytest -m "not browser and not soak and not slow"

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
