"""Dagster resources: the shared_queue database (and, through it, pgmq).

The resource's fields are what the UI shows: the server's host, port, user and database, or the
embedded server's data folder, as plain typed values, and the secrets by name only
(`dg.EnvVar("SHARED_QUEUE_DB_URL")`, `dg.EnvVar("SHARED_QUEUE_PASSWORD")`), resolved in the run's
process. `SharedQueueResource.from_settings` builds it that way from the code location's settings.
The run's other settings (batch sizes, timeouts, retention) are read once when the run first uses
them (`settings`) and passed down from there; loading the code location never connects.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import psycopg
from pydantic import Field, PrivateAttr

from . import embedded
from .backoff import RUN_BACKOFF, Backoff, connect_with_backoff
from .db import close_pgmq, make_pgmq, resolve_urls
from .settings import SHARED_QUEUE_DATABASE, Settings, compose_db_url

if TYPE_CHECKING:  # the pgmq package (and SQLAlchemy under it) loads when a run makes a client (`make_pgmq`)
    import pgmq


class SharedQueueResource(dg.ConfigurableResource):
    """The shared_queue database: `db_url`, or `host` (with `port`, `user`, `password`, `database`),
    or the embedded server in `data_dir`. With none of them set, the environment (`SHARED_QUEUE_*`)."""

    db_url: str | None = Field(
        default=None,
        description="PostgreSQL URL; it may hold a password: give dg.EnvVar('SHARED_QUEUE_DB_URL').",
    )
    host: str | None = Field(default=None, description="Server host (SHARED_QUEUE_HOST), when no db_url.")
    port: int = Field(default=5432, description="Server port (SHARED_QUEUE_PORT).")
    user: str = Field(default="postgres", description="User (SHARED_QUEUE_USER).")
    password: str | None = Field(
        default=None, description="A secret: give dg.EnvVar('SHARED_QUEUE_PASSWORD')."
    )
    database: str = Field(default=SHARED_QUEUE_DATABASE, description="Database (SHARED_QUEUE_DATABASE).")
    data_dir: str | None = Field(
        default=None,
        description="The embedded server's data folder (QUEUE_ASSETS_DATA_DIR), when no server is set.",
    )

    _settings: Settings | None = PrivateAttr(default=None)
    _url: str | None = PrivateAttr(default=None)

    @classmethod
    def from_settings(cls, settings: Settings) -> SharedQueueResource:
        """The resource as the code location configures it: secrets as `dg.EnvVar`, the rest as values."""
        parts = settings.db_parts
        if parts is not None:
            return cls(
                host=parts.host,
                port=parts.port,
                user=parts.user,
                database=parts.database,
                password=dg.EnvVar("SHARED_QUEUE_PASSWORD") if parts.has_password else None,
            )
        if settings.db_url is not None:
            return cls(db_url=dg.EnvVar("SHARED_QUEUE_DB_URL"))
        return cls(data_dir=str(settings.data_dir))

    @property
    def settings(self) -> Settings:
        """The run's settings, read from the environment once, at the run's first use."""
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    @property
    def url(self) -> str:
        if self._url is None:
            if self.db_url:
                self._url = self.db_url
            elif self.host:
                self._url = compose_db_url(
                    self.host, self.port, self.user, self.password or "", self.database
                )
            elif self.data_dir:
                self._url = embedded.ensure_running(Path(self.data_dir))["shared_queue"]
            else:
                self._url = resolve_urls(self.settings)["shared_queue"]
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
            close_pgmq(client)
