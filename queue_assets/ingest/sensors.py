"""Ingest sensors: one per consumed queue. They probe, never read, and request a run with a run_key."""


import json

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


def build_ingest_sensor(queue: str, job, interval_s: int) -> dg.SensorDefinition:
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
