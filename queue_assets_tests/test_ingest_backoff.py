"""The ingest sensor backs off per queue after failed runs, and recovers by itself (issue 9, item 7).

Failed runs are real: the queue's ingest job runs against a database that has no pgmq and no hub
schema (a replica whose migrations are missing) and fails; the sensor probes the healthy database.
"""

from __future__ import annotations

import time

import dagster as dg
import pytest

from queue_assets.definitions import defs
from queue_assets.ingest.sensors import build_ingest_sensor
from queue_assets.resources import SharedQueueResource
from queue_assets.sensor_backoff import backoff_delay, failures_to_reach_cap
from queue_assets_tests.helpers import pattern_message, send_many

QUEUE = "pattern_messages"
JOB = f"ingest_{QUEUE}_job"


@pytest.fixture
def backoff_env(monkeypatch):
    monkeypatch.setenv("QUEUE_ASSETS_INGEST_BACKOFF_BASE_S", "60")
    monkeypatch.setenv("QUEUE_ASSETS_INGEST_BACKOFF_CAP_S", "300")


def _run_job(instance: dg.DagsterInstance, url: str) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(JOB).execute_in_process(
        instance=instance, resources={"shared_queue": SharedQueueResource(db_url=url)}, raise_on_error=False
    )


def _tick(instance: dg.DagsterInstance, url: str, *, later_s: float = 0.0):
    """One evaluation of the queue's sensor, `later_s` seconds from now."""
    job = defs.resolve_job_def(JOB)
    sensor = build_ingest_sensor(QUEUE, job, 1, clock=lambda: time.time() + later_s)
    ctx = dg.build_sensor_context(
        instance=instance, resources={"shared_queue": SharedQueueResource(db_url=url)}
    )
    return sensor(ctx)


def test_delay_doubles_per_failure_up_to_the_cap():
    assert [backoff_delay(n, 10, 600) for n in (1, 2, 3, 6, 7, 50)] == [10, 20, 40, 320, 600, 600]
    assert (
        failures_to_reach_cap(10, 600) == 7
    )  # the 7th failure waits 10 * 2**6 = 640 -> 600: 7 records, not all
    assert failures_to_reach_cap(5, 5) == 1


def test_sensor_backs_off_after_failed_runs_and_recovers_after_a_success(
    conn, db_url, fresh_db_url, backoff_env
):
    """Breaks if the sensor requests a run right after failures (the run storm), if the delay does not
    grow, if it never asks again, or if a success leaves it backing off."""
    send_many(conn, QUEUE, [pattern_message("singularity-1", i) for i in range(3)])
    instance = dg.DagsterInstance.ephemeral()
    assert isinstance(_tick(instance, db_url), dg.RunRequest)  # no history: no backoff

    failed = _run_job(instance, fresh_db_url)  # the replica without migrations
    assert not failed.success
    skip = _tick(instance, db_url)
    assert isinstance(skip, dg.SkipReason)
    assert f"the last 1 ingest run of `{QUEUE}` failed (newest {failed.run_id[:8]}" in skip.skip_message
    assert "backing off 60s (doubling per failure, cap 300s): next attempt at " in skip.skip_message

    for _ in range(3):
        assert not _run_job(instance, fresh_db_url).success
    skip = _tick(instance, db_url, later_s=290)
    assert isinstance(skip, dg.SkipReason)
    assert "the last 4 ingest runs" in skip.skip_message and "backing off 300s" in skip.skip_message  # capped

    assert isinstance(_tick(instance, db_url, later_s=301), dg.RunRequest)  # the cap has passed: try again

    ok = _run_job(instance, db_url)  # the cause is gone
    assert ok.success
    send_many(conn, QUEUE, [pattern_message("singularity-1", 9)])
    assert isinstance(_tick(instance, db_url), dg.RunRequest)  # a success ends the backoff at once


def test_backoff_is_per_queue(conn, db_url, fresh_db_url, backoff_env):
    """Breaks if failures of one queue's job hold back another queue."""
    send_many(conn, QUEUE, [pattern_message("singularity-1", 1)])
    send_many(
        conn,
        "instance_heartbeat",
        ['{"type": "heartbeat", "instance_id": "singularity-1", "timestamp": "2025-10-25T12:00:00Z"}'],
    )
    instance = dg.DagsterInstance.ephemeral()
    assert not _run_job(instance, fresh_db_url).success
    assert isinstance(_tick(instance, db_url), dg.SkipReason)
    heartbeat = defs.resolve_sensor_def("instance_heartbeat_sensor")
    ctx = dg.build_sensor_context(
        instance=instance, resources={"shared_queue": SharedQueueResource(db_url=db_url)}, definitions=defs
    )
    assert isinstance(heartbeat(ctx), dg.RunRequest)
