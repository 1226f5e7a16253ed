"""Backoff: bounded, jittered retries of what is safe to retry, and a clear final error; never a doubled send."""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid

import dagster as dg
import psycopg
import pytest

from queue_assets import embedded
from queue_assets.backoff import (
    Backoff,
    DatabaseRetryExhausted,
    RetryExhausted,
    SendOutcomeUnknown,
    connect_with_backoff,
    retry_call,
)
from queue_assets.db import DatabaseUnavailable
from queue_assets.ingest.core import IngestConfig, ingest_queue
from queue_assets.ingest.sensors import build_ingest_jobs_and_sensors
from queue_assets.resources import SharedQueueResource
from queue_assets.sdk import HubClient
from queue_assets.settings import Settings, project_root
from queue_assets_tests.helpers import queue_depth

UNREACHABLE = "postgresql://hub:topsecret@127.0.0.1:1/shared_queue"
QUICK = Backoff(attempts=3, base_s=0.01, cap_s=0.02, deadline_s=5)


def test_full_jitter_delay_lies_between_zero_and_the_capped_exponential():
    p = Backoff(base_s=0.5, cap_s=4.0)
    assert [p.delay(i, rng=lambda: 1.0) for i in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert p.delay(3, rng=lambda: 0.0) == 0.0
    assert all(0.0 <= p.delay(2) <= 2.0 for _ in range(200))


def test_a_policy_with_no_attempts_is_refused():
    with pytest.raises(ValueError, match="attempts = 0"):
        Backoff(attempts=0)


def test_retry_call_returns_once_the_operation_succeeds():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise DatabaseUnavailable("cannot reach the shared_queue database at x: refused")
        return 7

    assert (
        retry_call(flaky, what="probe", policy=Backoff(attempts=5), sleep=sleeps.append, rng=lambda: 1.0) == 7
    )
    assert (len(calls), sleeps) == (3, [0.25, 0.5])


def test_the_final_error_names_the_operation_the_attempts_and_the_last_cause():
    def down():
        raise DatabaseUnavailable("cannot reach the shared_queue database at x: connection refused")

    with pytest.raises(RetryExhausted) as info:
        retry_call(down, what="probe of queue `pattern_messages`", policy=QUICK, sleep=lambda s: None)
    text = str(info.value)
    assert text.startswith("probe of queue `pattern_messages` failed after 3 attempts in ")
    assert text.endswith("last error: cannot reach the shared_queue database at x: connection refused")
    assert info.value.attempts == 3


def test_the_deadline_stops_retrying_before_the_attempts_run_out():
    calls = []

    def down():
        calls.append(1)
        raise DatabaseUnavailable("down")

    started = time.monotonic()
    with pytest.raises(RetryExhausted):
        retry_call(
            down,
            what="x",
            policy=Backoff(attempts=1000, base_s=0.05, cap_s=0.05, deadline_s=0.3),
            rng=lambda: 1.0,
        )
    assert 4 <= len(calls) <= 8
    assert time.monotonic() - started < 1.0


def test_errors_that_are_not_retryable_propagate_at_once():
    calls = []

    def broken():
        calls.append(1)
        raise KeyError("a bug, not an outage")

    with pytest.raises(KeyError):
        retry_call(broken, what="x", policy=QUICK)
    assert len(calls) == 1


def test_an_unreachable_server_ends_in_a_clear_error_without_the_password():
    with pytest.raises(DatabaseRetryExhausted) as info:
        connect_with_backoff(UNREACHABLE, policy=QUICK)
    assert isinstance(info.value, DatabaseUnavailable)  # callers that handle an outage keep working
    text = str(info.value)
    assert "connecting to the shared_queue database failed after 3 attempts" in text
    assert "cannot reach the shared_queue database at postgresql://hub:***@127.0.0.1:1" in text
    assert "topsecret" not in text


def test_a_missing_database_is_not_retried(server_admin_url):
    from queue_assets_tests.conftest import with_database

    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as info:
        connect_with_backoff(
            with_database(server_admin_url, "no_such_database_xyz"),
            policy=Backoff(attempts=5, base_s=1, cap_s=1, deadline_s=30),
        )
    assert not isinstance(info.value, DatabaseRetryExhausted)
    assert "does not exist" in str(info.value)
    assert time.monotonic() - started < 3


def test_a_role_that_may_not_log_in_is_not_retried(server_admin_url):
    """Breaks if 'role ... is not permitted to log in' (a NOLOGIN role, e.g. the producer group role
    used by mistake) is taken for a transient error and retried until the deadline."""
    from urllib.parse import urlsplit, urlunsplit

    role = f"qa_nologin_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" NOLOGIN')
    try:
        parts = urlsplit(server_admin_url)
        host = parts.netloc.split("@")[-1]
        url = urlunsplit((parts.scheme, f"{role}@{host}", parts.path, parts.query, parts.fragment))
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as info:
            connect_with_backoff(url, policy=Backoff(attempts=5, base_s=1, cap_s=1, deadline_s=30))
        assert not isinstance(info.value, DatabaseRetryExhausted)
        assert "not permitted to log in" in str(info.value)
        assert time.monotonic() - started < 3
    finally:
        with psycopg.connect(server_admin_url, autocommit=True) as admin:
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_a_connection_succeeds_once_the_server_comes_back():
    # Not under pytest's tmp_path: a concurrent pytest session resets /tmp/pytest-of-<user> to 0700,
    # and the embedded server (running as its own system user when we are root) could no longer
    # create its socket there.
    data = project_root() / ".queue_assets" / f"test-restart-{uuid.uuid4().hex[:8]}"
    url = embedded.ensure_running(data)["shared_queue"]
    embedded.stop(data)
    starter = threading.Timer(1.0, lambda: embedded.ensure_running(data))
    starter.start()
    try:
        with connect_with_backoff(
            url, policy=Backoff(attempts=40, base_s=0.2, cap_s=0.5, deadline_s=60)
        ) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        starter.join()
        embedded.stop(data)
        shutil.rmtree(data, ignore_errors=True)


def test_the_ingest_sensor_retries_its_probe_and_then_skips_naming_the_attempts():
    _, sensors = build_ingest_jobs_and_sensors(Settings.from_env({}))
    sensor = next(s for s in sensors if s.name == "pattern_messages_sensor")
    ctx = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(),
        resources={"shared_queue": SharedQueueResource(db_url=UNREACHABLE)},
    )
    result = sensor(ctx)
    assert isinstance(result, dg.SkipReason)
    assert "probe of queue `pattern_messages` failed after 3 attempts" in result.skip_message
    assert "topsecret" not in result.skip_message


def _sdk_backends(conn) -> list[int]:
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND application_name = 'queue_assets'"
    ).fetchall()
    conn.commit()
    return [r[0] for r in rows]


def test_a_stale_pooled_connection_is_replaced_and_the_send_goes_through_once(conn, db_url):
    with HubClient(db_url, "singularity-1") as client:
        client.heartbeat()
        for pid in _sdk_backends(conn):  # e.g. the server restarted: the pooled connection is dead
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        conn.commit()
        client.heartbeat()  # no idempotency key: only retried because nothing had been sent
    assert queue_depth(conn, "instance_heartbeat") == 2


def _send_blocked_then_cut(conn, send) -> BaseException | None:
    """Run `send` while the queue table is locked, kill its backend mid-statement, then unlock."""
    outcome: list[BaseException | None] = []

    def run():
        try:
            send()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    conn.execute("LOCK TABLE pgmq.q_instance_heartbeat IN ACCESS EXCLUSIVE MODE")
    thread = threading.Thread(target=run)
    thread.start()
    with psycopg.connect(conn.info.dsn, autocommit=True) as watcher:
        deadline = time.monotonic() + 20
        while True:
            blocked = watcher.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'queue_assets' AND wait_event_type = 'Lock'"
            ).fetchall()
            if blocked or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert blocked, "the send never reached the database"
        watcher.execute("SELECT pg_terminate_backend(%s)", (blocked[0][0],))
    time.sleep(0.2)
    conn.commit()  # releases the lock
    thread.join(timeout=30)
    return outcome[0]


def test_a_send_cut_off_after_reaching_the_database_is_not_retried_without_a_key(conn, db_url):
    with HubClient(db_url, "singularity-1") as client:
        client.heartbeat()
        error = _send_blocked_then_cut(conn, lambda: client.heartbeat(version="2"))
    assert isinstance(error, SendOutcomeUnknown)
    assert "may or may not be queued" in str(error) and "idempotency_key" in str(error)
    assert queue_depth(conn, "instance_heartbeat") == 1  # not retried: nothing more was sent


def test_a_keyed_send_cut_off_after_reaching_the_database_is_retried_and_stored_once(conn, db_url):
    with HubClient(db_url, "singularity-1") as client:
        client.heartbeat()
        error = _send_blocked_then_cut(conn, lambda: client.heartbeat(version="2", idempotency_key="hb-2"))
    assert error is None
    depth = queue_depth(conn, "instance_heartbeat")
    assert depth == 2
    result = ingest_queue(conn, "instance_heartbeat", IngestConfig())
    assert (result.stored, result.duplicates) == (2, 0)
    versions = [
        json.loads(r[0])["version"] if "version" in json.loads(r[0]) else None
        for r in conn.execute(
            "SELECT message::text FROM pgmq.a_instance_heartbeat ORDER BY msg_id"
        ).fetchall()
    ]
    assert versions == [None, "2"]
