"""Operations jobs: archive retention (daily) and dead-letter redrive (from the UI's launchpad).

Both are thin: they check their config, then call `retention.run_retention` / `dlq.redrive`, log
progress and report counts as output metadata.
"""

import dagster as dg

from ..resources import SharedQueueResource
from ..retries import retry_policy
from . import dlq as dlq_ops
from .retention import DEFAULT_BATCH as RETENTION_BATCH
from .retention import HubRetention, run_retention


class RetentionConfig(dg.Config):
    dry_run: bool = False
    """Count what would go; delete nothing."""
    batch_size: int = RETENTION_BATCH
    """Rows per DELETE (one short transaction each)."""


@dg.op(
    description="Delete archive rows older than SHARED_QUEUE_RETENTION_DAYS (DLQs: SHARED_QUEUE_DLQ_RETENTION_DAYS) "
    "and hub ingest rows older than their QUEUE_ASSETS_RETENTION_*_DAYS, in bounded batches; live messages "
    "of other queues and the aggregated results are never touched."
)
def apply_retention(
    context: dg.OpExecutionContext, config: RetentionConfig, shared_queue: SharedQueueResource
) -> None:
    settings = shared_queue.settings
    last_logged: dict[str, int] = {}

    def progress(label: str, n: int, report) -> None:
        if n - last_logged.get(label, 0) >= 50_000 or report.dry_run:
            last_logged[label] = n
            context.log.info(f"{label}: {'would remove' if report.dry_run else 'removed'} {n} rows so far")

    with shared_queue.connection() as conn:
        try:
            report = run_retention(
                conn,
                retention_days=settings.retention_days,
                dlq_retention_days=settings.dlq_retention_days,
                batch_size=config.batch_size,
                dry_run=config.dry_run,
                progress=progress,
                hub=HubRetention.from_settings(settings),
            )
        except ValueError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from None
    context.log.info(report.summary())
    table = "| table | rows |\n|---|---|\n" + "\n".join(
        f"| `{label}` | {n} |" for label, n in sorted(report.removed.items(), key=lambda kv: -kv[1]) if n
    )
    context.add_output_metadata(
        {
            "dry_run": dg.MetadataValue.bool(report.dry_run),
            "removed_total": dg.MetadataValue.int(report.total),
            "removed_archived_messages": dg.MetadataValue.int(report.archive_rows),
            "removed_dead_letters": dg.MetadataValue.int(report.dlq_live_rows),
            "retention_days": dg.MetadataValue.int(settings.retention_days),
            "dlq_retention_days": dg.MetadataValue.int(settings.dlq_retention_days),
            "archive_cutoff": dg.MetadataValue.text(report.archive_cutoff.isoformat()),
            "dlq_cutoff": dg.MetadataValue.text(report.dlq_cutoff.isoformat()),
            "batches": dg.MetadataValue.int(report.batches),
            "elapsed_seconds": dg.MetadataValue.float(round(report.elapsed_s, 3)),
            "removed": dg.MetadataValue.md(table if report.total else "_nothing to remove_"),
            "removed_hub_rows": dg.MetadataValue.int(report.hub_rows),
            # One number per hub table, so the UI plots each over runs; the cutoff says which window applied.
            **{
                f"removed.{label}": dg.MetadataValue.int(report.removed.get(label, 0))
                for label in report.cutoffs
            },
            **{
                f"cutoff.{label}": dg.MetadataValue.text(cutoff.isoformat())
                for label, cutoff in report.cutoffs.items()
            },
            "ledger_kept_for_live_queues": dg.MetadataValue.md(
                "| queue | ledger rows kept from (enqueued_at) |\n|---|---|\n"
                + "\n".join(
                    f"| `{q}` | {t.isoformat()} |" for q, t in sorted(report.ledger_protected.items())
                )
                if report.ledger_protected
                else "_no queue has live messages_"
            ),
        }
    )


@dg.job(
    description="Archive retention (seed 002's pg_cron job): trims every pgmq archive in bounded batches.",
    op_retry_policy=retry_policy("retention_job"),
)
def retention_job():
    apply_retention()


retention_schedule = dg.ScheduleDefinition(
    name="retention_schedule",
    job=retention_job,
    cron_schedule="30 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 02:30 UTC, after the 01:00 learned-pattern export.",
)


class DlqRedriveConfig(dg.Config):
    queue: str | None = None
    """A dead-letter queue or its source queue, e.g. `pattern_messages`."""
    reason: str | None = None
    """Error kind (e.g. `too_many_attempts`) or a piece of the reason text."""
    message_type: str | None = None
    older_than: str | None = None
    """Dead-lettered at least this long ago: `30m`, `2h`, `7d`."""
    newer_than: str | None = None
    limit: int | None = None
    all: bool = False
    """Required to redrive every dead letter when no filter is given."""
    dry_run: bool = False
    batch_size: int = dlq_ops.DEFAULT_BATCH


@dg.op(description="Put dead letters back on their source queues with their original headers, exactly once.")
def redrive_dead_letters(
    context: dg.OpExecutionContext, config: DlqRedriveConfig, shared_queue: SharedQueueResource
) -> None:
    try:
        f = dlq_ops.DlqFilter.from_options(
            queue=config.queue,
            reason=config.reason,
            message_type=config.message_type,
            older_than=config.older_than,
            newer_than=config.newer_than,
        )
    except ValueError as exc:  # DlqError, InvalidNameError: checked before any SQL
        raise dg.Failure(f"bad dlq_redrive_job config: {exc}") from None
    if f.empty and not config.all:
        raise dg.Failure(
            "dlq_redrive_job needs a filter (queue, reason, message_type, older_than, newer_than) "
            "or all: true to redrive every dead letter"
        )

    def progress(report: dlq_ops.DlqActionReport) -> None:
        if report.batches % 10 == 1:
            context.log.info(f"redrive: {report.total} messages in {report.batches} batches")

    with shared_queue.connection() as conn:
        try:
            report = dlq_ops.redrive(
                conn,
                f,
                actor=f"dagster:{context.run.run_id}",
                batch_size=config.batch_size,
                limit=config.limit,
                dry_run=config.dry_run,
                progress=progress,
            )
        except dlq_ops.DlqError as exc:
            raise dg.Failure(str(exc)) from None
    rows = [f"| `{q}` | {n} |" for q, n in report.moved.items() if n]
    rows += [f"| `{q}` | skipped: {why} |" for q, why in report.skipped.items()]
    context.log.info(f"{'would redrive' if report.dry_run else 'redrove'} {report.total} dead letters")
    context.add_output_metadata(
        {
            "dry_run": dg.MetadataValue.bool(report.dry_run),
            "redriven": dg.MetadataValue.int(report.total),
            "skipped_queues": dg.MetadataValue.int(len(report.skipped)),
            "batches": dg.MetadataValue.int(report.batches),
            "per_queue": dg.MetadataValue.md(
                "| dlq | messages |\n|---|---|\n" + "\n".join(rows) if rows else "_none_"
            ),
        }
    )
    if report.skipped:
        raise dg.Failure(
            "some dead-letter queues were skipped: "
            + "; ".join(f"{q}: {why}" for q, why in report.skipped.items())
        )


@dg.job(
    description="Redrive dead letters (same as `queue-assets dlq redrive`); set the filters in the launchpad."
)
def dlq_redrive_job():
    redrive_dead_letters()
