"""Connections to the shared_queue database (psycopg 3), with errors that never show a password."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg

from .redact import redact, register_secret, secrets_in
from .settings import libpq_url

CONNECT_TIMEOUT_S = 5


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
