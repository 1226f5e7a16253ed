"""The installed package: a wheel carries its migrations, and `init` without any fails loudly.

The top-level `sql/` is the migrations' source; the wheel ships a copy as `queue_assets/sql`
(`[tool.hatch.build.targets.wheel.force-include]` in pyproject.toml).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from queue_assets import bootstrap
from queue_assets.settings import project_root

ROOT = project_root()


def _hub_objects(url: str) -> dict[str, set[str]]:
    """Tables, views and functions of schema `hub`, and the applied migrations."""
    with psycopg.connect(url) as conn:
        relations = conn.execute(
            "SELECT c.relkind::text, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'hub' AND c.relkind IN ('r', 'p', 'v', 'm')"
        ).fetchall()
        functions = conn.execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'hub'"
        ).fetchall()
        migrations = conn.execute("SELECT version FROM hub.schema_migrations").fetchall()
    return {
        "tables": {name for kind, name in relations if kind in ("r", "p")},
        "views": {name for kind, name in relations if kind in ("v", "m")},
        "functions": {name for (name,) in functions},
        "migrations": {version for (version,) in migrations},
    }


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that points back into the checkout or its virtual environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(extra)
    return env


def test_init_without_migrations_fails_before_touching_the_database(fresh_db_url, tmp_path):
    """Breaks if `load_migrations` returns an empty list again: bootstrap then "succeeds" with no hub schema."""
    with pytest.raises(bootstrap.BootstrapError, match="no migrations") as caught:
        bootstrap.bootstrap(fresh_db_url, migrations=tmp_path)
    assert str(tmp_path) in str(caught.value)
    with psycopg.connect(fresh_db_url) as conn:
        touched = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname IN ('pgmq', 'hub')").fetchall()
    assert touched == [], "init must stop before installing anything"


def test_cli_init_of_a_package_without_its_sql_exits_non_zero_and_says_why(fresh_db_url, tmp_path):
    """What a wheel without `sql/` did: `init` printed pgmq and queues, applied nothing, and exited 0.

    The package is copied alone (no `sql/` beside it, no packaged copy) and run from there.
    Breaks if the zero-migrations check in `load_migrations` is removed.
    """
    shutil.copytree(
        ROOT / "queue_assets", tmp_path / "queue_assets", ignore=shutil.ignore_patterns("__pycache__", "sql")
    )
    run = subprocess.run(
        [sys.executable, "-m", "queue_assets.cli", "init"],
        cwd=tmp_path,
        env=_clean_env(SHARED_QUEUE_DB_URL=fresh_db_url, PYTHONPATH=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode != 0, run.stdout
    assert "no migrations" in run.stderr and str(tmp_path / "sql") in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def _uv() -> str:
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    if not Path(uv).exists():
        pytest.fail("uv is needed to build the wheel: run `make setup` (it installs uv) first")
    return uv


@pytest.mark.packaging
def test_wheel_install_outside_the_checkout_applies_every_migration(fresh_db_url, session_db_url, tmp_path):
    """Build the wheel, install it (with the locked dependencies) into a fresh virtual environment in a
    temporary folder, run its `queue-assets init` on an empty database from there, and compare the hub
    schema with the one a checkout bootstrap made. Breaks if the wheel loses `queue_assets/sql`
    (remove the force-include from pyproject.toml: init then fails with "no migrations")."""
    uv = _uv()
    env = _clean_env(UV_NO_PROGRESS="1")
    dist = tmp_path / "dist"
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(dist), str(ROOT)],
        check=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (wheel,) = dist.glob("queue_assets-*.whl")
    requirements = tmp_path / "requirements.txt"
    subprocess.run(
        [
            uv,
            "export",
            "--frozen",
            "--no-dev",
            "--no-emit-project",
            "--no-hashes",
            "--project",
            str(ROOT),
            "--output-file",
            str(requirements),
        ],
        check=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    venv = tmp_path / "venv"
    subprocess.run(
        [uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
        check=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            "-r",
            str(requirements),
            str(wheel),
        ],
        check=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )

    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import queue_assets; print(queue_assets.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip().startswith(str(venv)), where.stdout

    work = tmp_path / "elsewhere"
    work.mkdir()
    init = subprocess.run(
        [str(venv / "bin" / "queue-assets"), "init"],
        cwd=work,
        env=_clean_env(SHARED_QUEUE_DB_URL=fresh_db_url, TEMPLATES_REPO_URL=""),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert init.returncode == 0, init.stderr
    versions = [v for v, _, _ in bootstrap.load_migrations()]
    for version in versions:
        assert f"applied migration {version}" in init.stdout, init.stdout

    installed, checkout = _hub_objects(fresh_db_url), _hub_objects(session_db_url)
    assert installed["migrations"] == set(versions)
    assert installed == checkout
    assert {"ingest_ledger", "instances", "pattern_observations", "heartbeats"} <= installed["tables"]
