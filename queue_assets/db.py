"""Connections to the shared_queue database (psycopg 3), with errors that never show a password."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import psycopg

from .settings import redact_url

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
