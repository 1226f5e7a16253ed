"""Connections to the shared_queue database (psycopg 3), with errors that never show a password.

Also where the database is (`resolve_urls`: configured, or the embedded server) and an official
pgmq client on it (`make_pgmq`). This is the layer below Dagster: the producer SDK, the CLI and the
Dagster resources all start here, and it imports neither Dagster nor pandas.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, TypeVar

import psycopg

from . import embedded
from .horizons import SDK_POOL_WAIT_S
from .redact import redact, register_secret, secrets_in
from .settings import Settings, libpq_url

if TYPE_CHECKING:
    import pgmq

CONNECT_TIMEOUT_S = 5

_Row = TypeVar("_Row")


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached; the message is safe to show (no password)."""


class InvalidDatabaseUrl(DatabaseUnavailable):
    """libpq cannot read the URL, so no attempt can succeed; the message is redacted like the rest."""


def _first_line(exc: BaseException, url: str) -> str:
    text = str(exc).strip()
    return redact(text.splitlines()[0] if text else type(exc).__name__, secrets_in(url))


def conninfo(url: str) -> str:
    """`url` as psycopg takes it (`libpq_url`), checked; raises `InvalidDatabaseUrl` (redacted).

    Its passwords are registered with `redact` first: from here on no text this process shows
    holds them, in whatever form libpq or a driver echoes them."""
    register_secret(*secrets_in(url))
    url = libpq_url(url)
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:  # libpq quotes what it cannot parse: the URL, password and all
        raise InvalidDatabaseUrl(
            f"the database URL {redact(url)} is not valid: {_first_line(exc, url)}"
        ) from None
    return url


def connect(
    url: str, *, autocommit: bool = False, application_name: str = "queue_assets"
) -> psycopg.Connection:
    """Open a connection, or raise `DatabaseUnavailable` naming the (redacted) server and the reason."""
    url = conninfo(url)
    try:
        return psycopg.connect(
            url,
            autocommit=autocommit,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=application_name,
        )
    except psycopg.Error as exc:
        raise DatabaseUnavailable(
            f"cannot reach the shared_queue database at {redact(url)}: {_first_line(exc, url)}"
        ) from None


@contextlib.contextmanager
def connection(url: str, **kwargs) -> Iterator[psycopg.Connection]:
    conn = connect(url, **kwargs)
    try:
        yield conn
    finally:
        conn.close()


def one_row(cur: psycopg.Cursor[_Row], what: str) -> _Row:
    """The row of a statement that always returns one (an aggregate, INSERT ... RETURNING).

    psycopg types `fetchone()` as optional; a missing row here means the database broke that
    promise, so it raises rather than letting a `None` travel on as data."""
    row = cur.fetchone()
    if row is None:
        raise RuntimeError(f"the database returned no row for {what}")
    return row


def resolve_urls(settings: Settings) -> dict[str, str]:
    """shared_queue and dagster URLs: configured ones, or the embedded server's (started if needed)."""
    if settings.db_url:
        return {"shared_queue": settings.db_url, "dagster": settings.dagster_db_url or ""}
    urls = embedded.ensure_running(settings.data_dir)
    if settings.dagster_db_url:
        urls["dagster"] = settings.dagster_db_url
    return urls


def make_pgmq(url: str, *, pool_size: int = 2) -> pgmq.PGMQueue:
    """An official pgmq client on its own small pool; never runs CREATE EXTENSION itself.

    The URL is checked first (`conninfo`): the pool's workers would log libpq's words about a URL
    they cannot read, and those quote it whole."""
    # Imported here: the pgmq package imports SQLAlchemy (about half a second), which the CLI's
    # quick commands (`--help`, `status`) never need.
    import pgmq
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(
        conninfo(url),
        min_size=1,
        max_size=pool_size,
        open=True,
        timeout=SDK_POOL_WAIT_S,
        kwargs={"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "queue_assets"},
    )
    return pgmq.PGMQueue(pool=pool, init_extension=False)


def close_pgmq(client: pgmq.PGMQueue) -> None:
    """Close a `make_pgmq` client and its pool: the official client closes only a pool it made
    itself, so `client.close()` alone leaves this one's worker threads to a garbage collector
    (psycopg_pool then warns "cannot join current thread")."""
    pool = client.pool
    client.close()
    if pool is not None:
        pool.close()
