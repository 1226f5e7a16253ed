"""The ingest sensor requests a run's successor before the run reaches its cap (issue 13, item 1).

The runs are real: the queue's ingest job runs in a thread on a real instance and lingers on its
queue (`QUEUE_ASSETS_RUN_LINGER_S`), so the sensor sees real run records with real start times. A
test transaction holds the queue's messages `FOR UPDATE`, as a second consumer would: the runs'
`pgmq.read` skips them (SKIP LOCKED) while the sensor's probe still counts them visible.
"""

from __future__ import annotations

import re
import threading
import time
import uuid

import dagster as dg
import psycopg
import pytest

from queue_assets.definitions import defs
from queue_assets.ingest.assets import SUCCESSOR_OF_TAG
from queue_assets.ingest.core import IngestConfig, ingest_queue
from queue_assets.ingest.sensors import ACTIVE_STATUSES, build_ingest_sensor
from queue_assets.resources import SharedQueueResource
from queue_assets_tests.helpers import count, pattern_message

QUEUE = "pattern_messages"
JOB = f"ingest_{QUEUE}_job"


@pytest.fixture
def run_env(monkeypatch):
    monkeypatch.setenv("QUEUE_ASSETS_RUN_MAX_SECONDS", "30")
    monkeypatch.setenv("QUEUE_ASSETS_RUN_LINGER_S", "20")  # a run on an empty queue stays active 20 s
    monkeypatch.setenv("SHARED_QUEUE_BATCH_SIZE", "2")  # a backlog is 2 batches: 4 visible messages


class Sensor:
    """The queue's sensor, ticked by hand with its cursor carried over, like the daemon does."""

    def __init__(self, instance: dg.DagsterInstance, url: str):
        self.instance, self.url, self.cursor = instance, url, None

    def tick(self, *, later_s: float = 0.0):
        sensor = build_ingest_sensor(QUEUE, defs.resolve_job_def(JOB), 1, clock=lambda: time.time() + later_s)
        ctx = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            resources={"shared_queue": SharedQueueResource(db_url=self.url)},
        )
        result = sensor(ctx)
        self.cursor = ctx.cursor
        return result


def _start_run(instance: dg.DagsterInstance, url: str) -> threading.Thread:
    def run():
        result = defs.resolve_job_def(JOB).execute_in_process(
            instance=instance, resources={"shared_queue": SharedQueueResource(db_url=url)}
        )
        assert result.success

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _send_held(conn: psycopg.Connection, holder: psycopg.Connection, numbers: range) -> None:
    """Send messages that the lingering runs never get: sent invisible (1 s delay), locked by `holder`
    (held until it commits), then waited for until the probe can see them."""
    conn.execute(
        "SELECT pgmq.send_batch(%s, %s::jsonb[], 1)",
        (QUEUE, [pattern_message("singularity-1", i) for i in numbers]),
    )
    conn.commit()
    holder.execute(f"SELECT msg_id FROM pgmq.q_{QUEUE} FOR UPDATE")
    deadline = time.monotonic() + 30
    while count(conn, f"pgmq.q_{QUEUE}", "vt <= clock_timestamp()") < numbers.stop:
        assert time.monotonic() < deadline, "the held messages never became visible"
        time.sleep(0.1)


def _wait_started(instance: dg.DagsterInstance, n: int) -> list[dg.RunRecord]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        active = instance.get_run_records(filters=dg.RunsFilter(job_name=JOB, statuses=ACTIVE_STATUSES))
        if len(active) == n and all(r.start_time is not None for r in active):
            return active
        time.sleep(0.05)
    raise AssertionError(f"{n} run(s) of {JOB} did not start within 60 s")


def _wait_step_started(instance: dg.DagsterInstance, run_id: str) -> None:
    deadline = time.monotonic() + 60
    while not instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records:
        assert time.monotonic() < deadline, f"run {run_id} did not start its step within 60 s"
        time.sleep(0.05)


def test_successor_is_requested_near_the_cap_or_on_a_backlog_and_never_a_third_run(conn, db_url, run_env):
    """Breaks if the sensor waits for the active run to end (the launch gap), requests a successor for
    a young run, for an idle queue, or with two runs active, or if the successor's key does not name
    its predecessor (then one run could get several successors)."""
    with dg.instance_for_test() as instance:
        sensor = Sensor(instance, db_url)
        idle = sensor.tick()
        assert isinstance(idle, dg.SkipReason) and "no visible messages" in idle.skip_message  # idle: no run

        first = _start_run(instance, db_url)
        [a] = _wait_started(instance, 1)
        a_id = a.dagster_run.run_id
        lingering = sensor.tick(later_s=100)  # an old run, but nothing arrives: no successor
        assert isinstance(lingering, dg.SkipReason)
        assert f"ingest run {a_id[:8]} is draining `{QUEUE}` and nothing arrived" in lingering.skip_message

        with psycopg.connect(db_url) as other_consumer:
            _send_held(conn, other_consumer, range(3))

            young = sensor.tick()
            assert isinstance(young, dg.SkipReason)
            assert re.search(
                rf"ingest run {a_id[:8]} for `{QUEUE}` started \d+s ago: its successor is requested \d+s into its "
                r"30s cap \(launch lead \d+s\), or when 4 messages are visible \(now 3\)",
                young.skip_message,
            ), young.skip_message

            old = sensor.tick(later_s=30)  # within the launch lead of its cap
            assert isinstance(old, dg.RunRequest)
            assert old.run_key == f"{QUEUE}:after:{a_id}"
            assert old.tags["queue_assets/successor_of"] == a_id

            _send_held(conn, other_consumer, range(3, 5))
            backlog = sensor.tick()  # young, but 5 visible >= 2 batches
            assert isinstance(backlog, dg.RunRequest) and backlog.run_key == f"{QUEUE}:after:{a_id}"

            second = _start_run(instance, db_url)  # the successor, as the daemon would launch it
            _wait_started(instance, 2)
            full = sensor.tick(later_s=100)
            assert isinstance(full, dg.SkipReason)
            assert "are active: at most two per queue" in full.skip_message
            other_consumer.commit()  # the two runs share the 5 messages

        first.join(60)
        second.join(60)
        assert not first.is_alive() and not second.is_alive()
        assert count(conn, "hub.ingest_ledger", f"queue = '{QUEUE}'") == 5  # two runs, each message once
        after = sensor.tick()
        assert isinstance(after, dg.SkipReason) and "no visible messages" in after.skip_message


def test_a_run_past_its_cap_drains_on_until_its_successor_starts(conn, db_url):
    """Breaks if a run ends at its cap while its successor is still waiting to launch (the queue is
    then left without a consumer for the rest of the launch), or if the handover outlives lingering:
    a run with nothing left to do still ends after `linger_s`."""
    cfg = IngestConfig(max_seconds=0.5, linger_s=6.0)
    handover_until = time.monotonic() + 3.0
    result = ingest_queue(conn, QUEUE, cfg, successor_pending=lambda: time.monotonic() < handover_until)
    assert result.stopped_by == "max_seconds"
    assert 3.0 <= result.elapsed_s < 6.0  # past the 0.5 s cap until the successor "started"

    result = ingest_queue(conn, QUEUE, cfg, successor_pending=lambda: True)  # never starts, queue idle
    assert result.stopped_by == "drained" and 6.0 <= result.elapsed_s < 9.0


def test_the_ingest_asset_asks_the_instance_whether_its_successor_has_started(conn, db_url, monkeypatch):
    """Breaks if the asset ignores a queued successor run (tag `queue_assets/successor_of` naming it):
    the run must stay past its cap while that run is queued, and end once it is gone."""
    monkeypatch.setenv("QUEUE_ASSETS_RUN_MAX_SECONDS", "1")
    monkeypatch.setenv("QUEUE_ASSETS_RUN_LINGER_S", "30")
    job = defs.resolve_job_def(JOB)
    with dg.instance_for_test() as instance:
        predecessor_id = str(uuid.uuid4())
        successor = instance.create_run_for_job(
            job, status=dg.DagsterRunStatus.NOT_STARTED, tags={SUCCESSOR_OF_TAG: predecessor_id}
        )
        results = []

        def run():
            results.append(
                job.execute_in_process(
                    instance=instance,
                    run_id=predecessor_id,
                    resources={"shared_queue": SharedQueueResource(db_url=db_url)},
                )
            )

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        time.sleep(4.0)
        assert thread.is_alive()  # 1 s cap, but its successor has not started
        instance.delete_run(successor.run_id)
        thread.join(60)
        assert not thread.is_alive()
        [result] = results
        [mat] = result.asset_materializations_for_node(result.job_def.nodes_in_topological_order[0].name)
        assert mat.metadata["stopped_by"].value == "max_seconds"


def test_when_a_successors_launch_failed_the_sensor_asks_again_under_a_new_key(conn, db_url, run_env):
    """Breaks if the sensor repeats the failed successor's run key (the daemon launches a key once,
    so the queue would get no successor until its run ends and a fresh run launches)."""
    job = defs.resolve_job_def(JOB)
    with dg.instance_for_test() as instance:
        sensor = Sensor(instance, db_url)
        first = _start_run(instance, db_url)
        [a] = _wait_started(instance, 1)
        a_id = a.dagster_run.run_id
        with psycopg.connect(db_url) as other_consumer:
            _send_held(conn, other_consumer, range(3))
            request = sensor.tick(later_s=30)
            assert isinstance(request, dg.RunRequest) and request.run_key == f"{QUEUE}:after:{a_id}"
            # The daemon could not launch it (e.g. the code server's StartRun timed out): it failed unstarted.
            instance.create_run_for_job(job, status=dg.DagsterRunStatus.FAILURE, tags=request.tags)
            again = sensor.tick(later_s=60)  # past the sensor's backoff after one failed run
            assert isinstance(again, dg.RunRequest), again
            assert again.run_key == f"{QUEUE}:after:{a_id}:1"
            assert again.tags[SUCCESSOR_OF_TAG] == a_id
            other_consumer.commit()
        first.join(60)
        assert not first.is_alive()


def test_a_run_whose_successor_failed_to_launch_drains_on_until_another_one_starts(conn, db_url, monkeypatch):
    """Breaks if a run past its cap ends because its successor's launch failed: the queue would then
    wait for a whole new launch (seen in the soak on an overloaded machine: 2-3 minutes)."""
    monkeypatch.setenv("QUEUE_ASSETS_RUN_MAX_SECONDS", "1")
    monkeypatch.setenv("QUEUE_ASSETS_RUN_LINGER_S", "30")
    job = defs.resolve_job_def(JOB)
    with dg.instance_for_test() as instance:
        predecessor_id = str(uuid.uuid4())
        instance.create_run_for_job(
            job, status=dg.DagsterRunStatus.FAILURE, tags={SUCCESSOR_OF_TAG: predecessor_id}
        )
        results = []

        def run():
            results.append(
                job.execute_in_process(
                    instance=instance,
                    run_id=predecessor_id,
                    resources={"shared_queue": SharedQueueResource(db_url=db_url)},
                )
            )

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        _wait_step_started(instance, predecessor_id)  # the cap counts from here, however slow the run's start
        time.sleep(4.0)
        assert thread.is_alive()  # 1 s cap, but the only successor failed unstarted
        instance.create_run_for_job(
            job, status=dg.DagsterRunStatus.STARTED, tags={SUCCESSOR_OF_TAG: predecessor_id}
        )
        thread.join(30)
        assert not thread.is_alive()  # handed over to the successor that started
        [result] = results
        [mat] = result.asset_materializations_for_node(result.job_def.nodes_in_topological_order[0].name)
        assert mat.metadata["stopped_by"].value == "max_seconds"
