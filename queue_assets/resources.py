"""Dagster resources: the shared_queue database (and, through it, pgmq).

Settings are read when a run or sensor starts, never at import time, so loading the code location
never touches the environment's secrets or the database.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dagster as dg
import pgmq
import psycopg
from psycopg_pool import ConnectionPool
from pydantic import PrivateAttr

from . import db, embedded
from .backoff import RUN_BACKOFF, SDK_POOL_WAIT_S, Backoff, connect_with_backoff
from .settings import Settings


def resolve_db_url(settings: Settings) -> str:
    """The shared_queue URL: the configured one, or the embedded server's (started if needed)."""
    if settings.db_url:
        return settings.db_url
    return embedded.ensure_running(settings.data_dir)["shared_queue"]


def make_pgmq(url: str, *, pool_size: int = 2) -> pgmq.PGMQueue:
    """An official pgmq client on its own small pool; never runs CREATE EXTENSION itself.

    The URL is checked first (`db.conninfo`): the pool's workers would log libpq's words about a URL
    they cannot read, and those quote it whole."""
    pool = ConnectionPool(
        db.conninfo(url),
        min_size=1,
        max_size=pool_size,
        open=True,
        timeout=SDK_POOL_WAIT_S,
        kwargs={"connect_timeout": db.CONNECT_TIMEOUT_S, "application_name": "queue_assets"},
    )
    return pgmq.PGMQueue(pool=pool, init_extension=False)


class SharedQueueResource(dg.ConfigurableResource):
    """The shared_queue database. Leave `db_url` unset to use the environment (`SHARED_QUEUE_*`)."""

    db_url: str | None = None

    _settings: Settings | None = PrivateAttr(default=None)
    _url: str | None = PrivateAttr(default=None)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = self.db_url or resolve_db_url(self.settings)
        return self._url

    @contextlib.contextmanager
    def connection(
        self, *, autocommit: bool = False, backoff: Backoff | None = RUN_BACKOFF
    ) -> Iterator[psycopg.Connection]:
        """A connection; establishing it is retried with bounded backoff (`backoff=None`: one attempt)."""
        conn = connect_with_backoff(self.url, policy=backoff, autocommit=autocommit)
        try:
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def pgmq(self) -> Iterator[pgmq.PGMQueue]:
        client = make_pgmq(self.url)
        try:
            yield client
        finally:
            client.close()
