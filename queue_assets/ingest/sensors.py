"""Ingest sensors: one per consumed queue. They probe, never read, and request a run with a run_key.

After consecutive failed runs of a queue's job (say, a migration missing on a replica), the sensor
waits before it asks again (`sensor_backoff.run_backoff`, shared with the enrichment sensor):
`QUEUE_ASSETS_INGEST_BACKOFF_BASE_S` after the first failure, doubled per further failure, at most
`QUEUE_ASSETS_INGEST_BACKOFF_CAP_S`, counted from the newest failed run's end; a successful run -
once the cause is gone - ends the backoff by itself.

No launch gap under steady traffic: a run ends at its cap (`QUEUE_ASSETS_RUN_MAX_SECONDS`), and
starting the next one takes a sensor tick plus a run launch (seconds). So while exactly one run is
active and messages keep arriving, the sensor requests that run's successor once the run is within
`lead` of its cap, where `lead` = one daemon sensor loop + the longest created→started of the queue's
recent runs; or at once when the visible backlog reaches two batches (the run is falling behind).
The successor's run key names its predecessor (`<queue>:after:<run id>`), so a run gets at most one
successor, and with two runs active the sensor asks for nothing: never more than two per queue
(`dagster.yaml` allows two). Two runs on one queue are safe: pgmq reads with SKIP LOCKED and the
ledger makes a repeat a no-op. On an idle queue (nothing visible, nothing arrived) nothing runs.
A run past its cap drains on until its successor has started (the asset asks the instance), so a
launch slower than the cap leaves no gap either; and when the successor's launch fails, the run
drains on and the sensor requests another successor (`<queue>:after:<run id>:<n>`).
"""

import json
import time

import dagster as dg

from ..backoff import SENSOR_BACKOFF, retry_db
from ..db import DatabaseUnavailable
from ..queues import INGEST_ASSET_FOR, REPLY_INGEST_ASSET_FOR
from ..redact import redact
from ..resources import SharedQueueResource
from ..sensor_backoff import run_backoff
from ..settings import Settings
from .assets import SUCCESSOR_OF_TAG
from .probe import VISIBLE_CAP, probe_queue

INGEST_QUEUE_TAG = "queue_assets/ingest_queue"
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


DAEMON_SENSOR_LOOP_S = 5.0
"""The daemon evaluates a sensor at most once per loop of this length, whatever its minimum interval."""
DEFAULT_LAUNCH_S = 10.0
"""Run launch (created -> started) assumed before the queue has a run that started (measured: ~8 s)."""
LAUNCH_HISTORY = 5
"""How many of the queue's newest runs the launch estimate looks at."""


def ingest_job_name(queue: str) -> str:
    return f"ingest_{queue}_job"


def build_ingest_job(queue: str, asset_name: str):
    return dg.define_asset_job(
        name=ingest_job_name(queue),
        selection=[dg.AssetKey(asset_name)],
        tags={INGEST_QUEUE_TAG: queue},
        # One asset, one step: running it in the run worker saves a second process start (and its
        # imports) on every run, which is most of the publish->stored latency (docs/reliability.md).
        executor_def=dg.in_process_executor,
        description=f"Drain pgmq queue `{queue}` (one run per queue, plus its successor near the run's cap).",
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


def launch_estimate(records) -> float:
    """The longest created -> started of these run records (run queue wait + launch), in seconds."""
    launches = [r.start_time - r.create_timestamp.timestamp() for r in records if r.start_time is not None]
    return max(launches) if launches else DEFAULT_LAUNCH_S


def successor_skip_reason(
    queue: str, active, now: float, visible: int, arrived: bool, cap_s: float, lead_s: float, backlog: int
) -> str | None:
    """Why the one active run `active` gets no successor yet, or None: request it now."""
    run = active.dagster_run.run_id[:8]
    if visible == 0 and not arrived:
        return f"ingest run {run} is draining `{queue}` and nothing arrived since the last tick: no successor"
    if active.start_time is None:
        return f"ingest run {run} for `{queue}` is still launching ({active.dagster_run.status.value}): no successor yet"
    age = now - active.start_time
    due = max(0.0, cap_s - lead_s)
    if age < due and visible < backlog:
        return (
            f"ingest run {run} for `{queue}` started {age:.0f}s ago: its successor is requested {due:.0f}s into its "
            f"{cap_s:.0f}s cap (launch lead {lead_s:.0f}s), or when {backlog} messages are visible (now {visible})"
        )
    return None


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
            probe = retry_db(
                lambda: _probe_once(shared_queue, queue),
                what=f"probe of queue `{queue}`",
                policy=SENSOR_BACKOFF,
            )
        except DatabaseUnavailable as exc:
            return dg.SkipReason(redact(f"{exc}; will try again next tick"))
        state = json.loads(context.cursor) if context.cursor else {}
        # Messages sent since the last tick, even if a running run stored them already.
        arrived = probe.sent > state["sent"] if "sent" in state else probe.visible > 0
        context.update_cursor(json.dumps({**state, "sent": probe.sent}))
        active = context.instance.get_run_records(
            filters=dg.RunsFilter(job_name=job.name, statuses=ACTIVE_STATUSES), limit=2
        )
        if len(active) >= 2:
            return dg.SkipReason(
                f"ingest runs {active[1].dagster_run.run_id[:8]} and {active[0].dagster_run.run_id[:8]} for `{queue}` "
                "are active: at most two per queue (one draining, its successor)"
            )
        settings = shared_queue.settings
        if active:
            recent = context.instance.get_run_records(
                filters=dg.RunsFilter(job_name=job.name), limit=LAUNCH_HISTORY
            )
            lead = DAEMON_SENSOR_LOOP_S + launch_estimate(recent)
            reason = successor_skip_reason(
                queue,
                active[0],
                clock(),
                probe.visible,
                arrived,
                float(settings.run_max_seconds),
                lead,
                min(VISIBLE_CAP, 2 * settings.batch_size),
            )
            if reason:
                return dg.SkipReason(reason)
        elif probe.visible == 0:
            return dg.SkipReason(f"`{queue}` has no visible messages (newest msg_id {probe.newest_msg_id})")
        backoff = run_backoff(
            context.instance,
            job.name,
            settings.ingest_backoff_base_s,
            settings.ingest_backoff_cap_s,
            kind="ingest",
            scope=queue,
        )
        if backoff is not None and clock() < backoff.next_attempt_at:
            return dg.SkipReason(backoff.reason())
        tags = {"queue_assets/visible_at_request": str(probe.visible)}
        if active:
            predecessor = active[0].dagster_run.run_id
            # The key names the predecessor: the daemon launches one run per key, so one successor per
            # run. Two runs are never active here, so an earlier successor of this run has ended: its
            # launch failed (the predecessor drains on meanwhile), and the next key asks again.
            earlier = len(
                context.instance.get_run_records(
                    filters=dg.RunsFilter(job_name=job.name, tags={SUCCESSOR_OF_TAG: predecessor})
                )
            )
            return dg.RunRequest(
                run_key=f"{queue}:after:{predecessor}" + (f":{earlier}" if earlier else ""),
                tags={**tags, SUCCESSOR_OF_TAG: predecessor},
            )
        request = next_request(queue, probe.newest_msg_id, probe.visible, context.cursor)
        if request is None:
            return dg.SkipReason(f"`{queue}` has no visible messages (newest msg_id {probe.newest_msg_id})")
        key, cursor = request
        context.update_cursor(json.dumps({**json.loads(cursor), "sent": probe.sent}))
        return dg.RunRequest(run_key=key, tags=tags)

    return _sensor


def build_ingest_jobs_and_sensors(settings: Settings):
    interval = max(1, round(settings.poll_ms / 1000))
    jobs, sensors = [], []
    for queue, asset in {**INGEST_ASSET_FOR, **REPLY_INGEST_ASSET_FOR}.items():
        job = build_ingest_job(queue, asset)
        jobs.append(job)
        sensors.append(build_ingest_sensor(queue, job, interval))
    return jobs, sensors
