"""The `queue_statistics` asset (seed 000's StatisticsJob) and the asset checks that alert on it.

The asset only reads the queues (one read-only transaction, `statistics.collect_statistics`) and
appends the figures to `hub.queue_statistics`. Its checks are non-blocking and evaluated from the
same figures: queue depth / oldest message age over a threshold (WARN), a dead-letter queue that
is not empty (ERROR), requests without a reply in time (WARN). Thresholds: `thresholds.py`.
"""

from datetime import timedelta

import dagster as dg

from ..queues import CONSUMED_QUEUES, REPLY_QUEUE_FOR
from ..resources import SharedQueueResource
from .archive import unanswered_rows
from .statistics import StatisticsReport, collect_statistics, format_seconds, markdown_table, save_history
from .thresholds import ThresholdError, Thresholds

OPERATIONS_GROUP = "operations"
# Beyond this many inboxes, per-inbox metadata keys would swamp the UI; inboxes are then reported
# as aggregates (and every queue stays in hub.queue_statistics and the table).
PER_QUEUE_INBOX_LIMIT = 50

CHECK_DEPTH = "queue_depth_and_age"
CHECK_DLQ = "dead_letter_queues_empty"
CHECK_UNANSWERED = "requests_answered"
SEVERITY = {"WARN": dg.AssetCheckSeverity.WARN, "ERROR": dg.AssetCheckSeverity.ERROR}


class StatisticsConfig(dg.Config):
    window_minutes: int = 60
    """Traffic window for in/out counts and latencies."""
    thresholds_json: str = ""
    """Threshold overrides as JSON (see docs/operations.md); merged over QUEUE_ASSETS_QUEUE_THRESHOLDS."""
    reply_lookback_hours: int = 168
    """How far back to look for unanswered requests."""
    save_history: bool = True
    """Append the figures to hub.queue_statistics."""


def statistics_metadata(report: StatisticsReport, thresholds: Thresholds, alerts: int) -> dict:
    totals = report.totals()
    md: dict = {f"total.{k}": dg.MetadataValue.int(v) for k, v in totals.items()}
    md["alerts"] = dg.MetadataValue.int(alerts)
    md["window_minutes"] = dg.MetadataValue.int(report.window_s // 60)
    md["elapsed_seconds"] = dg.MetadataValue.float(round(report.elapsed_s, 3))
    inboxes = [q for q in report.queues if q.kind == "inbox"]
    md["inbox.depth_max"] = dg.MetadataValue.int(max((q.depth for q in inboxes), default=0))
    md["inbox.oldest_age_s_max"] = dg.MetadataValue.float(
        round(max((q.oldest_age_s or 0.0 for q in inboxes), default=0.0), 3)
    )
    per_queue = [q for q in report.queues if q.kind != "inbox" or len(inboxes) <= PER_QUEUE_INBOX_LIMIT]
    for q in per_queue:
        md[f"depth.{q.queue}"] = dg.MetadataValue.int(q.depth)
        md[f"visible.{q.queue}"] = dg.MetadataValue.int(q.visible)
        md[f"oldest_age_s.{q.queue}"] = dg.MetadataValue.float(round(q.oldest_age_s or 0.0, 3))
        md[f"in_window.{q.queue}"] = dg.MetadataValue.int(q.in_window)
        md[f"out_window.{q.queue}"] = dg.MetadataValue.int(q.out_window)
        md[f"redelivered.{q.queue}"] = dg.MetadataValue.int(q.redelivered)
        for name in ("latency_p50_s", "latency_p95_s", "latency_p99_s"):
            value = getattr(q, name)
            if value is not None:  # nothing archived in the window: no point rather than a fake 0
                md[f"{name}.{q.queue}"] = dg.MetadataValue.float(round(value, 3))
        if q.dlq_depth is not None:
            md[f"dlq_depth.{q.queue}"] = dg.MetadataValue.int(q.dlq_depth)
    md["queues"] = dg.MetadataValue.md(markdown_table(report, thresholds))
    return md


def _depth_check(report: StatisticsReport, thresholds: Thresholds) -> dg.AssetCheckResult:
    found = [b for b in report.breaches(thresholds) if b.check in ("depth", "oldest_age")]
    worst = "ERROR" if any(b.severity == "ERROR" for b in found) else "WARN"
    return dg.AssetCheckResult(
        check_name=CHECK_DEPTH,
        passed=not found,
        severity=SEVERITY[worst],
        description=(f"{len(found)} queue limits exceeded" if found else "every queue within its limits"),
        metadata={
            "breaches": dg.MetadataValue.int(len(found)),
            "details": dg.MetadataValue.md(
                "\n".join(f"- {b.severity}: {b.describe()}" for b in found[:50]) or "_none_"
            ),
        },
    )


def _dlq_check(report: StatisticsReport, thresholds: Thresholds) -> dg.AssetCheckResult:
    found = [b for b in report.breaches(thresholds) if b.check == "dlq"]
    worst = "ERROR" if any(b.severity == "ERROR" for b in found) else "WARN"
    dead = sum(q.depth for q in report.queues if q.kind == "dlq")
    return dg.AssetCheckResult(
        check_name=CHECK_DLQ,
        passed=not found,
        severity=SEVERITY[worst],
        description=(
            f"{dead} dead letters wait in {len(found)} dead-letter queues: `queue-assets dlq list`"
            if found
            else "no dead letters over the limits"
        ),
        metadata={
            "dead_letters": dg.MetadataValue.int(dead),
            "details": dg.MetadataValue.md(
                "\n".join(f"- {b.severity}: {b.describe()}" for b in found) or "_none_"
            ),
        },
    )


def _unanswered_check(
    conn, report: StatisticsReport, thresholds: Thresholds, lookback: timedelta
) -> dg.AssetCheckResult:
    counts: dict[str, int] = {}
    rows = []
    severity = "WARN"
    known = report.by_queue()
    for request_queue in REPLY_QUEUE_FOR:
        t = thresholds.for_queue(request_queue)
        if t.reply_timeout_s is None:
            continue
        if request_queue not in known or REPLY_QUEUE_FOR[request_queue] not in known:
            continue  # the service's queues were never created (or were dropped) here
        n, oldest = unanswered_rows(
            conn,
            request_queue,
            timeout=timedelta(seconds=t.reply_timeout_s),
            lookback=lookback,
            as_of=report.measured_at,
        )
        conn.commit()
        counts[request_queue] = n
        if n and t.severity == "ERROR":
            severity = "ERROR"
        for _queue, request_id, _msg_id, requested_at, _live, instance_id in oldest:
            age = (report.measured_at - requested_at).total_seconds()
            rows.append(
                f"| `{request_queue}` | `{request_id}` | {instance_id or '–'} | {format_seconds(age)} |"
            )
    total = sum(counts.values())
    md: dict[str, dg.MetadataValue] = {f"unanswered.{q}": dg.MetadataValue.int(n) for q, n in counts.items()}
    md["unanswered"] = dg.MetadataValue.int(total)
    md["oldest"] = dg.MetadataValue.md(
        "| queue | request_id | instance | age |\n|---|---|---|---|\n" + "\n".join(rows) if rows else "_none_"
    )
    return dg.AssetCheckResult(
        check_name=CHECK_UNANSWERED,
        passed=total == 0,
        severity=SEVERITY[severity],
        description=f"{total} requests without a reply in time"
        if total
        else "every request answered in time",
        metadata=md,
    )


@dg.asset(
    name="queue_statistics",
    group_name=OPERATIONS_GROUP,
    kinds={"postgres"},
    deps=[dg.AssetKey(["pgmq", q]) for q in CONSUMED_QUEUES],
    description=(
        "Health of every pgmq queue (request/reply, hub, inboxes, dead-letter queues), read-only: depth, "
        "visible depth, oldest message age, messages in/out over the last hour, enqueue->archive latency "
        "p50/p95/p99, redeliveries, DLQ size. History in hub.queue_statistics."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_DEPTH,
            asset="queue_statistics",
            blocking=False,
            description="Queue depth and oldest-message age within each queue's thresholds.",
        ),
        dg.AssetCheckSpec(
            CHECK_DLQ,
            asset="queue_statistics",
            blocking=False,
            description="Dead-letter queues hold no more than their limit (default: empty).",
        ),
        dg.AssetCheckSpec(
            CHECK_UNANSWERED,
            asset="queue_statistics",
            blocking=False,
            description="Every request (llm, approval, question, job) got a reply within its timeout.",
        ),
    ],
)
def queue_statistics(
    context: dg.AssetExecutionContext, config: StatisticsConfig, shared_queue: SharedQueueResource
) -> dg.MaterializeResult:
    if config.window_minutes < 1 or config.reply_lookback_hours < 1:
        raise dg.Failure(
            f"window_minutes = {config.window_minutes}, reply_lookback_hours = {config.reply_lookback_hours}: "
            "both must be at least 1"
        )
    try:
        thresholds = Thresholds.load(config.thresholds_json, env_json=shared_queue.settings.queue_thresholds)
    except ThresholdError as exc:
        raise dg.Failure(str(exc)) from None
    with shared_queue.connection() as conn:
        report = collect_statistics(conn, window=timedelta(minutes=config.window_minutes))
        checks = [
            _depth_check(report, thresholds),
            _dlq_check(report, thresholds),
            _unanswered_check(conn, report, thresholds, timedelta(hours=config.reply_lookback_hours)),
        ]
        if config.save_history:
            save_history(conn, report)
    alerts = sum(1 for c in checks if not c.passed)
    context.log.info(
        f"{len(report.queues)} queues measured in {report.elapsed_s:.2f}s; {alerts} checks failing"
    )
    return dg.MaterializeResult(
        metadata=statistics_metadata(report, thresholds, alerts), check_results=checks
    )
