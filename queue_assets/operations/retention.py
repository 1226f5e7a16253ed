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
  the DLQ retention;
- with a `HubRetention` (the job and the CLI always pass one): the hub's own ingest tables by
  `stored_at` (the hub's clock, never the producer's), each with its own window:
  `hub.pattern_observations`, `hub.learned_artifacts`, `hub.code_analyses`, `hub.heartbeats`, and
  `hub.ingest_ledger`. The ledger is the de-duplication window: a message re-sent with the same
  idempotency key (or redelivered) after its ledger row is gone would be stored again. So its
  window is never below `settings.dedupe_floor_s` (visibility timeout + the SDK's retry horizon),
  and a ledger row is kept, whatever its age, while its queue still holds a message enqueued less
  than the SDK's retry horizon after it: that message may be this very one (not archived yet) or a
  keyed re-send of it that is still waiting in a backlog.

The aggregated results (`hub.aggregated_patterns`, its snapshots and rank history, `hub.exports`,
`hub.aggregated_learning`) are history, not input, and never appear here.

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

from ..db import one_row
from ..horizons import SDK_RETRY_HORIZON_S
from ..names import validate_queue_name
from ..settings import dedupe_floor_s
from .inventory import existing_queues, queue_kind

DEFAULT_BATCH = 5000


@dataclass(frozen=True)
class HubRetention:
    """Days to keep each of the hub's ingest tables, by `stored_at` (`Settings` names them)."""

    ledger_days: int = 90
    observations_days: int = 365
    artifacts_days: int = 365
    code_analyses_days: int = 90
    heartbeats_days: int = 30
    visibility_timeout_s: int = 60

    @classmethod
    def from_settings(cls, s) -> HubRetention:
        return cls(
            ledger_days=s.ledger_retention_days,
            observations_days=s.observations_retention_days,
            artifacts_days=s.artifacts_retention_days,
            code_analyses_days=s.code_analyses_retention_days,
            heartbeats_days=s.heartbeats_retention_days,
            visibility_timeout_s=s.visibility_timeout_s,
        )

    def tables(self) -> dict[str, int]:
        """`hub.<table>` -> days, the ledger last (its floor depends on the live queues)."""
        return {
            "hub.pattern_observations": self.observations_days,
            "hub.learned_artifacts": self.artifacts_days,
            "hub.code_analyses": self.code_analyses_days,
            "hub.heartbeats": self.heartbeats_days,
            "hub.ingest_ledger": self.ledger_days,
        }

    def check(self) -> None:
        for label, days in self.tables().items():
            if not isinstance(days, int) or days < 1:
                raise ValueError(f"retention of {label} = {days!r} days: must be a whole number, at least 1")
        floor = dedupe_floor_s(self.visibility_timeout_s)
        if self.ledger_days * 86_400 < floor:
            raise ValueError(
                f"retention of hub.ingest_ledger = {self.ledger_days} days is shorter than the de-duplication "
                f"floor of {floor:.0f} s (visibility timeout {self.visibility_timeout_s} s + SDK retry horizon "
                f"{SDK_RETRY_HORIZON_S:.0f} s)"
            )


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
    extra: sql.Composable = field(
        default_factory=lambda: sql.SQL("")
    )  # more conditions, `AND ...`, bound by `params`
    params: tuple = ()


@dataclass
class RetentionReport:
    as_of: datetime
    archive_cutoff: datetime
    dlq_cutoff: datetime
    dry_run: bool
    removed: dict[str, int] = field(default_factory=dict)  # label -> rows (or rows that would go)
    cutoffs: dict[str, datetime] = field(default_factory=dict)  # hub tables: label -> stored_at cutoff
    ledger_protected: dict[str, datetime] = field(
        default_factory=dict
    )  # queue -> ledger kept from (enqueued_at)
    batches: int = 0
    elapsed_s: float = 0.0

    @property
    def archive_rows(self) -> int:
        return sum(n for label, n in self.removed.items() if label.startswith("pgmq.a_"))

    @property
    def dlq_live_rows(self) -> int:
        return sum(n for label, n in self.removed.items() if label.startswith("pgmq.q_"))

    @property
    def hub_rows(self) -> int:
        return sum(n for label, n in self.removed.items() if label in self.cutoffs)

    @property
    def total(self) -> int:
        return sum(self.removed.values())

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        hub = f", {self.hub_rows} of them from hub ingest tables," if self.cutoffs else ""
        return (
            f"retention {verb} {self.total} rows ({self.archive_rows} archived messages, "
            f"{self.dlq_live_rows} dead letters){hub} in {self.elapsed_s:.1f}s; archives before "
            f"{self.archive_cutoff:%Y-%m-%d %H:%M}Z, dead-letter queues before {self.dlq_cutoff:%Y-%m-%d %H:%M}Z"
        )


def plan(
    conn: psycopg.Connection, *, retention_days: int, dlq_retention_days: int, as_of: datetime | None = None
) -> tuple[datetime, list[Target]]:
    """The tables to trim and their cutoffs (reads pgmq.meta; changes nothing)."""
    for name, days in (("retention_days", retention_days), ("dlq_retention_days", dlq_retention_days)):
        if not isinstance(days, int) or days < 1:
            raise ValueError(f"{name} = {days!r}: must be a whole number of days, at least 1")
    if as_of is None:
        (as_of,) = one_row(conn.execute("SELECT now()"), "the clock")
        conn.commit()
    archive_cutoff = as_of - timedelta(days=retention_days)
    dlq_cutoff = as_of - timedelta(days=dlq_retention_days)
    msg = sql.Identifier("msg_id")
    targets = []
    for queue in existing_queues(conn):
        is_dlq = queue_kind(queue) == "dlq"
        cutoff = dlq_cutoff if is_dlq else archive_cutoff
        targets.append(
            Target(f"pgmq.a_{queue}", sql.Identifier("pgmq", "a_" + queue), "archived_at", msg, cutoff, queue)
        )
        if is_dlq:
            targets.append(
                Target(
                    f"pgmq.q_{queue}",
                    sql.Identifier("pgmq", "q_" + queue),
                    "enqueued_at",
                    msg,
                    cutoff,
                    queue,
                    live=True,
                )
            )
    conn.commit()
    targets.append(
        Target(
            "hub.queue_statistics",
            sql.Identifier("hub", "queue_statistics"),
            "measured_at",
            sql.SQL("ctid"),
            archive_cutoff,
        )
    )
    targets.append(
        Target(
            "hub.dlq_actions",
            sql.Identifier("hub", "dlq_actions"),
            "acted_at",
            sql.Identifier("id"),
            dlq_cutoff,
        )
    )
    return as_of, targets


def ledger_queues(conn: psycopg.Connection) -> list[str]:
    """The distinct queues in hub.ingest_ledger, by skipping along its primary key (not a full scan)."""
    rows = conn.execute(
        "WITH RECURSIVE q AS (SELECT min(queue) AS queue FROM hub.ingest_ledger"
        " UNION ALL SELECT (SELECT min(queue) FROM hub.ingest_ledger WHERE queue > q.queue) FROM q"
        " WHERE q.queue IS NOT NULL) SELECT queue FROM q WHERE queue IS NOT NULL"
    ).fetchall()
    conn.commit()
    return [r[0] for r in rows]


def ledger_keep_from(conn: psycopg.Connection) -> dict[str, datetime]:
    """Per queue with live messages: ledger rows enqueued at or after this time must stay.

    A live message enqueued at `E` is either a message the ledger already has (not archived yet:
    its ledger row has the same `enqueued_at`) or a re-send the SDK made at most
    `SDK_RETRY_HORIZON_S` after the original, whose ledger row is the one that makes it a duplicate.
    """
    keep = {}
    for queue in ledger_queues(conn):
        validate_queue_name(queue)
        (table,) = one_row(conn.execute("SELECT to_regclass(%s)", (f"pgmq.q_{queue}",)), "to_regclass")
        if table is None:
            continue  # the queue is gone: no message of it can come back
        (oldest,) = one_row(
            conn.execute(
                sql.SQL("SELECT min(enqueued_at) FROM {}").format(sql.Identifier("pgmq", "q_" + queue))
            ),
            f"the oldest message of {queue}",
        )
        if oldest is not None:
            keep[queue] = oldest - timedelta(seconds=SDK_RETRY_HORIZON_S)
    conn.commit()
    return keep


def hub_targets(
    conn: psycopg.Connection, hub: HubRetention, as_of: datetime, report: RetentionReport
) -> list[Target]:
    """The hub's ingest tables, by `stored_at`; the ledger also spares what its live queues may need."""
    hub.check()
    targets = []
    for label, days in hub.tables().items():
        cutoff = as_of - timedelta(days=days)
        report.cutoffs[label] = cutoff
        schema, name = label.split(".")
        t = Target(label, sql.Identifier(schema, name), "stored_at", sql.SQL("ctid"), cutoff)
        if name == "ingest_ledger":
            report.ledger_protected = ledger_keep_from(conn)
            queues, keep_from = list(report.ledger_protected), list(report.ledger_protected.values())
            t = Target(
                label,
                t.table,
                t.column,
                t.key,
                cutoff,
                extra=sql.SQL(
                    " AND NOT EXISTS (SELECT 1 FROM unnest(%s::text[], %s::timestamptz[]) AS k(queue, keep_from)"
                    " WHERE k.queue = {table}.queue AND {table}.enqueued_at >= k.keep_from)"
                ).format(table=t.table),
                params=(queues, keep_from),
            )
        targets.append(t)
    return targets


def _table_exists(conn: psycopg.Connection, t: Target) -> bool:
    label = t.label
    (found,) = one_row(
        conn.execute("SELECT to_regclass(%s) IS NOT NULL", (label,)), f"whether {label} exists"
    )
    conn.commit()
    return found


def _count(conn: psycopg.Connection, t: Target) -> int:
    (n,) = one_row(
        conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE {} < %s{}").format(
                t.table, sql.Identifier(t.column), t.extra
            ),
            (t.cutoff, *t.params),
        ),
        f"the count of {t.label}",
    )
    conn.commit()
    return n


def _delete_batch(conn: psycopg.Connection, t: Target, batch_size: int) -> int:
    stmt = sql.SQL(
        "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {col} < %s{extra} LIMIT %s)"
    ).format(table=t.table, key=t.key, col=sql.Identifier(t.column), extra=t.extra)
    with conn.transaction():
        n = conn.execute(stmt, (t.cutoff, *t.params, batch_size)).rowcount
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
    hub: HubRetention | None = None,
) -> RetentionReport:
    """Trim every archive (and DLQ), and with `hub` the hub's ingest tables, per the module docstring.

    `dry_run` only counts. One commit per batch.
    """
    if not 1 <= batch_size <= 100_000:
        raise ValueError(f"batch_size = {batch_size}: must be between 1 and 100000")
    if hub is not None:
        hub.check()
    started = time.monotonic()
    as_of, targets = plan(
        conn, retention_days=retention_days, dlq_retention_days=dlq_retention_days, as_of=as_of
    )
    report = RetentionReport(
        as_of=as_of,
        archive_cutoff=as_of - timedelta(days=retention_days),
        dlq_cutoff=as_of - timedelta(days=dlq_retention_days),
        dry_run=dry_run,
    )
    if hub is not None:
        targets += hub_targets(conn, hub, as_of, report)
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
