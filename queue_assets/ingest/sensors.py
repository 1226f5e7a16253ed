"""Ingest sensors: one per consumed queue. They probe, never read, and request a run with a run_key.

After consecutive failed runs of a queue's job (say, a migration missing on a replica), the sensor
waits before it asks again: `QUEUE_ASSETS_INGEST_BACKOFF_BASE_S` after the first failure, doubled
per further failure, at most `QUEUE_ASSETS_INGEST_BACKOFF_CAP_S`, counted from the newest failed
run's end. The failures are read from the instance's run records (the newest few finished runs of
that job), so a successful run - once the cause is gone - ends the backoff by itself.
"""


import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg

from ..backoff import SENSOR_BACKOFF, retry_db
from ..db import DatabaseUnavailable
from ..queues import INGEST_ASSET_FOR
from ..redact import redact
from ..resources import SharedQueueResource
from ..settings import Settings
from .probe import probe_queue

INGEST_QUEUE_TAG = "queue_assets/ingest_queue"
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


FINISHED_STATUSES = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]


@dataclass(frozen=True)
class RunBackoff:
    """Why a queue's sensor waits: its newest finished runs failed `failures` times in a row."""

    queue: str
    failures: int
    last_run_id: str
    last_failed_at: float
    delay_s: float
    cap_s: float

    @property
    def next_attempt_at(self) -> float:
        return self.last_failed_at + self.delay_s

    def reason(self) -> str:
        def at(ts: float) -> str:
            return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")

        return (
            f"the last {self.failures} ingest run{'s' if self.failures != 1 else ''} of `{self.queue}` failed "
            f"(newest {self.last_run_id[:8]}, ended {at(self.last_failed_at)}); backing off {self.delay_s:.0f}s "
            f"(doubling per failure, cap {self.cap_s:.0f}s): next attempt at {at(self.next_attempt_at)}. "
            "See the failed run's logs for the cause."
        )


def backoff_delay(failures: int, base_s: float, cap_s: float) -> float:
    """`base_s` after one failure, doubled per further failure, never more than `cap_s`."""
    return min(cap_s, base_s * 2 ** min(failures - 1, 62))


def failures_to_reach_cap(base_s: float, cap_s: float) -> int:
    """How many finished runs to look at: counting further cannot lengthen the delay."""
    return max(1, math.ceil(math.log2(max(cap_s / base_s, 1.0))) + 1)


def run_backoff(instance: dg.DagsterInstance, queue: str, job_name: str, base_s: float,
                cap_s: float) -> RunBackoff | None:
    """The backoff for `queue` from its newest finished runs (newest first), or None after a success."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=job_name, statuses=FINISHED_STATUSES),
        limit=failures_to_reach_cap(base_s, cap_s),
    )
    failures = 0
    for record in records:
        if record.dagster_run.status != dg.DagsterRunStatus.FAILURE:
            break
        failures += 1
    if not failures:
        return None
    newest = records[0]
    ended = newest.end_time or newest.update_timestamp.timestamp()
    return RunBackoff(queue, failures, newest.dagster_run.run_id, ended, backoff_delay(failures, base_s, cap_s), cap_s)


def ingest_job_name(queue: str) -> str:
    return f"ingest_{queue}_job"


def build_ingest_job(queue: str, asset_name: str) :
    return dg.define_asset_job(
        name=ingest_job_name(queue),
        selection=[dg.AssetKey(asset_name)],
        tags={INGEST_QUEUE_TAG: queue},
        # One asset, one step: running it in the run worker saves a second process start (and its
        # imports) on every run, which is most of the publish->stored latency (docs/reliability.md).
        executor_def=dg.in_process_executor,
        description=f"Drain pgmq queue `{queue}` (at most one run per queue at a time).",
    )


def next_request(queue: str, newest: int, visible: int, cursor: str | None) -> tuple[str, str] | None:
    """(run_key, new cursor) for a queue with visible messages, or None when there is nothing to do.

    A new newest msg_id gives a new run key; the same newest msg_id with messages still visible (a
    run hit its cap, failed, or leases expired) gives the next key in a sequence.
    """
    if visible == 0:
        return None
    state = json.loads(cursor) if cursor else {}
    seq = state.get("seq", 0) + 1 if state.get("newest") == newest else 0
    key = f"{queue}:{newest}" + (f":{seq}" if seq else "")
    return key, json.dumps({"newest": newest, "seq": seq})


def _probe_once(shared_queue: SharedQueueResource, queue: str):
    # One attempt: the sensor retries the whole probe (read-only, so safe to repeat) with SENSOR_BACKOFF.
    with shared_queue.connection(autocommit=True, backoff=None) as conn:
        return probe_queue(conn, queue)


def build_ingest_sensor(queue: str, job, interval_s: int, clock=time.time) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{queue}_sensor",
        job=job,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Probes pgmq queue `{queue}` (newest msg_id, visible count) and requests an ingest run.",
    )
    def _sensor(context: dg.SensorEvaluationContext, shared_queue: SharedQueueResource):
        if not shared_queue.settings.enabled:
            return dg.SkipReason("SHARED_QUEUE_ENABLED is false: ingestion is switched off")
        try:
            probe = retry_db(lambda: _probe_once(shared_queue, queue), what=f"probe of queue `{queue}`",
                             policy=SENSOR_BACKOFF)
        except DatabaseUnavailable as exc:
            return dg.SkipReason(redact(f"{exc}; will try again next tick"))
        if probe.visible == 0:
            return dg.SkipReason(f"`{queue}` has no visible messages (newest msg_id {probe.newest_msg_id})")
        active = context.instance.get_run_records(
            filters=dg.RunsFilter(job_name=job.name, statuses=ACTIVE_STATUSES), limit=1
        )
        if active:
            return dg.SkipReason(
                f"ingest run {active[0].dagster_run.run_id[:8]} for `{queue}` is still in progress"
            )
        settings = shared_queue.settings
        backoff = run_backoff(context.instance, queue, job.name, settings.ingest_backoff_base_s,
                              settings.ingest_backoff_cap_s)
        if backoff is not None and clock() < backoff.next_attempt_at:
            return dg.SkipReason(backoff.reason())
        key, cursor = next_request(queue, probe.newest_msg_id, probe.visible, context.cursor)
        context.update_cursor(cursor)
        return dg.RunRequest(run_key=key, tags={"queue_assets/visible_at_request": str(probe.visible)})

    return _sensor


def build_ingest_jobs_and_sensors(settings: Settings):
    interval = max(1, round(settings.poll_ms / 1000))
    jobs, sensors = [], []
    for queue, asset in INGEST_ASSET_FOR.items():
        job = build_ingest_job(queue, asset)
        jobs.append(job)
        sensors.append(build_ingest_sensor(queue, job, interval))
    return jobs, sensors
