"""The embedded PostgreSQL: a server from the `pgserver` wheel, in the project's data folder.

Used only when no database URL is configured, so a new machine needs nothing installed. The
server listens on a Unix socket inside the data folder, survives the process that started it (so
the Dagster webserver, daemon and run workers share it) and is stopped with `queue-assets stop`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from .settings import DAGSTER_DATABASE, SHARED_QUEUE_DATABASE

log = logging.getLogger(__name__)


def _server(data_dir: Path):
    import pgserver  # imported lazily: only the embedded path needs it

    pgdata = Path(data_dir) / "pg"
    pgdata.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: keep running after this process exits; other processes attach to it.
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    # get_server caches its handle per process; if the server was stopped since, start it again.
    with server._lock:
        server.ensure_postgres_running()
    return server


def socket_dir(data_dir: Path) -> str:
    server = _server(data_dir)
    return server.get_postmaster_info().socket_dir


def url_for(data_dir: Path, database: str, scheme: str = "postgresql") -> str:
    host = quote(str(socket_dir(data_dir)), safe="")
    return f"{scheme}://postgres@/{database}?host={host}"


def ensure_running(data_dir: Path) -> dict[str, str]:
    """Start (or attach to) the embedded server and make sure both databases exist.

    Returns the URLs: `shared_queue` for psycopg 3 and `dagster` for dagster-postgres (psycopg2).
    """
    server = _server(data_dir)
    admin = server.get_uri("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        existing = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        for name in (SHARED_QUEUE_DATABASE, DAGSTER_DATABASE):
            if name not in existing:
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                except psycopg.errors.DuplicateDatabase:
                    pass  # created by a concurrent process
    return {
        "shared_queue": url_for(data_dir, SHARED_QUEUE_DATABASE),
        "dagster": url_for(data_dir, DAGSTER_DATABASE, scheme="postgresql+psycopg2"),
        "admin": admin,
    }


def stop(data_dir: Path) -> bool:
    """Stop the embedded server if it runs. Returns whether one was running."""
    pgdata = Path(data_dir) / "pg"
    if not (pgdata / "postmaster.pid").exists():
        return False
    import os

    from pgserver._commands import pg_ctl  # pgserver exposes no public stop

    # As root, pgserver runs the server as its own unprivileged user, and so must pg_ctl.
    user = "pgserver" if os.geteuid() == 0 else None
    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=user)
    return True
