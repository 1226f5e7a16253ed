"""Shared set-up for benches: a fresh bootstrapped database on the embedded server or a given one."""

from __future__ import annotations

import argparse
import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from queue_assets import bootstrap, embedded
from queue_assets.settings import project_root


def parse_args(description: str, **extra) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--server",
        default=os.environ.get("QUEUE_ASSETS_TEST_SERVER_URL"),
        help="admin URL of the server to use (default: the embedded server)",
    )
    for name, (kind, default, help_) in extra.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default, help=help_)
    return p.parse_args()


def fresh_database(server: str | None) -> tuple[str, str, callable]:
    """(url, server label, drop) for a new bootstrapped database."""
    admin = server or embedded.ensure_running(project_root() / ".queue_assets" / "bench-pg")["admin"]
    name = f"qa_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        version = conn.execute("SHOW server_version").fetchone()[0]
    parts = urlsplit(admin)
    url = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))
    bootstrap.bootstrap(url)

    def drop():
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    label = f"PostgreSQL {version} ({'embedded pgserver' if not server else 'server at ' + (parts.hostname or 'a Unix socket')})"
    return url, label, drop
