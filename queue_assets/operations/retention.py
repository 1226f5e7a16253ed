"""Archive retention (seed 002's pg_cron job, done by the hub): delete old rows in bounded batches.

What goes, with `as_of` the database's time when the run starts:
- every queue's archive (`pgmq.a_<queue>`): rows archived before `as_of - SHARED_QUEUE_RETENTION_DAYS`;
- a dead-letter queue's archive (redriven and purged dead letters): rows archived before
  `as_of - SHARED_QUEUE_DLQ_RETENTION_DAYS` (longer: the record of what failed and what people did);
- a dead-letter queue's live messages: dead-lettered (enqueued on the DLQ) before the same DLQ
  cutoff. A dead letter is people's to-do list, so it stays for the whole DLQ retention; one that
  nobody redrove or purged in that time is abandoned, and keeping it forever would only hide the
  recent ones;
- `hub.queue_statistics` history older than the archive retention, `hub.dlq_actions` older than
  the DLQ retention.

The live messages of any other queue are never touched: only `a_*` tables and `q_*_dlq` tables
appear in a DELETE here. Each DELETE removes at most `batch_size` rows (located through the
`archived_at` index) and commits on its own, so locks are held for one short batch and a killed
run simply leaves less work for the next one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from psycopg import sql

from .inventory import existing_queues, queue_kind

DEFAULT_BATCH = 5000


@dataclass(frozen=True)
class Target:
    """One table retention trims: which rows, by which time column, before which cutoff."""

    label: str  # e.g. `pgmq.a_llm_requests`
    table: sql.Identifier
    column: str  # archived_at | enqueued_at | measured_at | acted_at
    key: sql.Composable  # what identifies a row in the batch sub-select
    cutoff: datetime
    queue: str | None = None
    live: bool = False  # a DLQ's live messages


@dataclass
class RetentionReport:
    as_of: datetime
    archive_cutoff: datetime
    dlq_cutoff: datetime
    dry_run: bool
    removed: dict[str, int] = field(default_factory=dict)  # label -> rows (or rows that would go)
    batches: int = 0
    elapsed_s: float = 0.0

    @property
    def archive_rows(self) -> int:
        return sum(n for label, n in self.removed.items() if label.startswith("pgmq.a_"))

    @property
    def dlq_live_rows(self) -> int:
        return sum(n for label, n in self.removed.items() if label.startswith("pgmq.q_"))

    @property
    def total(self) -> int:
        return sum(self.removed.values())

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (
            f"retention {verb} {self.total} rows ({self.archive_rows} archived messages, "
            f"{self.dlq_live_rows} dead letters) in {self.elapsed_s:.1f}s; archives before "
            f"{self.archive_cutoff:%Y-%m-%d %H:%M}Z, dead-letter queues before {self.dlq_cutoff:%Y-%m-%d %H:%M}Z"
        )


def plan(conn: psycopg.Connection, *, retention_days: int, dlq_retention_days: int,
         as_of: datetime | None = None) -> tuple[datetime, list[Target]]:
    """The tables to trim and their cutoffs (reads pgmq.meta; changes nothing)."""
    for name, days in (("retention_days", retention_days), ("dlq_retention_days", dlq_retention_days)):
        if not isinstance(days, int) or days < 1:
            raise ValueError(f"{name} = {days!r}: must be a whole number of days, at least 1")
    if as_of is None:
        as_of = conn.execute("SELECT now()").fetchone()[0]
        conn.commit()
    archive_cutoff = as_of - timedelta(days=retention_days)
    dlq_cutoff = as_of - timedelta(days=dlq_retention_days)
    msg = sql.Identifier("msg_id")
    targets = []
    for queue in existing_queues(conn):
        is_dlq = queue_kind(queue) == "dlq"
        cutoff = dlq_cutoff if is_dlq else archive_cutoff
        targets.append(Target(f"pgmq.a_{queue}", sql.Identifier("pgmq", "a_" + queue), "archived_at", msg,
                              cutoff, queue))
        if is_dlq:
            targets.append(Target(f"pgmq.q_{queue}", sql.Identifier("pgmq", "q_" + queue), "enqueued_at", msg,
                                  cutoff, queue, live=True))
    conn.commit()
    targets.append(Target("hub.queue_statistics", sql.Identifier("hub", "queue_statistics"), "measured_at",
                          sql.SQL("ctid"), archive_cutoff))
    targets.append(Target("hub.dlq_actions", sql.Identifier("hub", "dlq_actions"), "acted_at",
                          sql.Identifier("id"), dlq_cutoff))
    return as_of, targets


def _table_exists(conn: psycopg.Connection, t: Target) -> bool:
    label = t.label
    found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (label,)).fetchone()[0]
    conn.commit()
    return found


def _count(conn: psycopg.Connection, t: Target) -> int:
    n = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE {} < %s").format(t.table, sql.Identifier(t.column)), (t.cutoff,)
    ).fetchone()[0]
    conn.commit()
    return n


def _delete_batch(conn: psycopg.Connection, t: Target, batch_size: int) -> int:
    stmt = sql.SQL(
        "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {col} < %s LIMIT %s)"
    ).format(table=t.table, key=t.key, col=sql.Identifier(t.column))
    with conn.transaction():
        n = conn.execute(stmt, (t.cutoff, batch_size)).rowcount
    return n


def run_retention(
    conn: psycopg.Connection,
    *,
    retention_days: int,
    dlq_retention_days: int,
    batch_size: int = DEFAULT_BATCH,
    dry_run: bool = False,
    as_of: datetime | None = None,
    progress: Callable[[str, int, RetentionReport], None] | None = None,
) -> RetentionReport:
    """Trim every archive (and DLQ) per the module docstring; `dry_run` only counts. One commit per batch."""
    if not 1 <= batch_size <= 100_000:
        raise ValueError(f"batch_size = {batch_size}: must be between 1 and 100000")
    started = time.monotonic()
    as_of, targets = plan(conn, retention_days=retention_days, dlq_retention_days=dlq_retention_days, as_of=as_of)
    report = RetentionReport(
        as_of=as_of,
        archive_cutoff=as_of - timedelta(days=retention_days),
        dlq_cutoff=as_of - timedelta(days=dlq_retention_days),
        dry_run=dry_run,
    )
    for t in targets:
        if not _table_exists(conn, t):
            continue  # a queue dropped since the plan, or the hub schema not migrated yet
        if dry_run:
            report.removed[t.label] = _count(conn, t)
            if progress:
                progress(t.label, report.removed[t.label], report)
            continue
        removed = 0
        while True:
            n = _delete_batch(conn, t, batch_size)
            removed += n
            report.batches += 1
            if progress and n:
                progress(t.label, removed, report)
            if n < batch_size:
                break
        report.removed[t.label] = removed
    report.elapsed_s = time.monotonic() - started
    return report
