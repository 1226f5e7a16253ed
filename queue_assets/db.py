"""Connections to the shared_queue database (psycopg 3), with errors that never show a password.

Also where the database is (`resolve_urls`: configured, or the embedded server) and an official
pgmq client on it (`make_pgmq`). This is the layer below Dagster: the producer SDK, the CLI and the
Dagster resources all start here, and it imports neither Dagster nor pandas.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import psycopg

from . import embedded
from .horizons import SDK_POOL_WAIT_S
from .settings import Settings, redact_url

if TYPE_CHECKING:
    import pgmq

CONNECT_TIMEOUT_S = 5


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached; the message is safe to show (no password)."""


def scrub(text: str, url: str | None = None) -> str:
    """Remove anything that looks like a password from an error text."""
    text = re.sub(r"(?i)(password\s*[=:]\s*)\S+", r"\1***", text)
    text = re.sub(r"(postgres(?:ql)?(?:\+\w+)?://[^:/@\s]+):[^@\s]*@", r"\1:***@", text)
    if url:
        try:
            pw = psycopg.conninfo.conninfo_to_dict(url).get("password")
        except psycopg.ProgrammingError:
            pw = None
        if pw:
            text = text.replace(str(pw), "***")
    return text


def connect(url: str, *, autocommit: bool = False, application_name: str = "queue_assets") -> psycopg.Connection:
    """Open a connection, or raise `DatabaseUnavailable` naming the (redacted) server and the reason."""
    try:
        return psycopg.connect(
            url,
            autocommit=autocommit,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=application_name,
        )
    except psycopg.OperationalError as exc:
        reason = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, url)
        raise DatabaseUnavailable(
            f"cannot reach the shared_queue database at {redact_url(url)}: {reason}"
        ) from None


@contextlib.contextmanager
def connection(url: str, **kwargs) -> Iterator[psycopg.Connection]:
    conn = connect(url, **kwargs)
    try:
        yield conn
    finally:
        conn.close()


def resolve_urls(settings: Settings) -> dict[str, str]:
    """shared_queue and dagster URLs: configured ones, or the embedded server's (started if needed)."""
    if settings.db_url:
        return {"shared_queue": settings.db_url, "dagster": settings.dagster_db_url or ""}
    urls = embedded.ensure_running(settings.data_dir)
    if settings.dagster_db_url:
        urls["dagster"] = settings.dagster_db_url
    return urls


def make_pgmq(url: str, *, pool_size: int = 2) -> pgmq.PGMQueue:
    """An official pgmq client on its own small pool; never runs CREATE EXTENSION itself."""
    # Imported here: the pgmq package imports SQLAlchemy (about half a second), which the CLI's
    # quick commands (`--help`, `status`) never need.
    import pgmq
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(
        url,
        min_size=1,
        max_size=pool_size,
        open=True,
        timeout=SDK_POOL_WAIT_S,
        kwargs={"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "queue_assets"},
    )
    return pgmq.PGMQueue(pool=pool, init_extension=False)
