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
from pydantic import PrivateAttr

from .backoff import RUN_BACKOFF, Backoff, connect_with_backoff
from .db import make_pgmq, resolve_urls
from .settings import Settings


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
            self._url = self.db_url or resolve_urls(self.settings)["shared_queue"]
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
