"""Queue statistics over every pgmq queue, computed in SQL, read-only (the StatisticsJob of seed 000).

Per queue, for the window `(as_of - window, as_of]` (an hour by default):
- `depth`, `visible` (vt passed, a read would get it now), `oldest_age_s` of the live messages;
- `in_window`: messages enqueued in the window, live or archived; `out_window`: archived in it;
- enqueue -> archive latency p50/p95/p99 (`percentile_cont`, i.e. linear interpolation) over the
  messages archived in the window;
- the `read_ct` distribution over the live messages plus those archived in the window (`read_ct_2`
  and `read_ct_3_plus` are redeliveries), and the largest `read_ct`;
- `dlq_depth`: live messages in the queue's `<queue>_dlq`, when it has one.

Messages removed with `pgmq.delete` (instead of archived) leave no trace, so they count in neither
`out_window` nor the latencies. One UNION ALL statement covers up to `chunk` queues, each in a
READ ONLY transaction of its own (no writes possible, and locks on the queue tables are released
after each chunk); the archive part uses pgmq's `archived_at` index, so the cost follows the
traffic in the window, not the archive's size.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ..db import one_row
from ..names import DLQ_SUFFIX
from .inventory import existing_queues, queue_kind
from .thresholds import Thresholds

DEFAULT_WINDOW = timedelta(hours=1)
DEFAULT_CHUNK = 25  # measured: 10-25 queues per statement is fastest (bench/bench_statistics.py)
STATEMENT_TIMEOUT_MS = 60_000

# Every output column is named after its `QueueStats` field, and rows are read by name (`dict_row`):
# a column added, dropped or moved here fails loudly in `QueueStats(**row)` instead of shifting values.
_PART = sql.SQL(
    "SELECT {name}::text AS queue,"
    " l.depth AS depth, l.visible AS visible,"
    " extract(epoch FROM %(as_of)s - l.oldest)::float8 AS oldest_age_s,"
    " l.in_live + a.in_arch AS in_window, a.out_n AS out_window,"
    " a.pct[1] AS latency_p50_s, a.pct[2] AS latency_p95_s, a.pct[3] AS latency_p99_s,"
    " l.r0 + a.r0 AS read_ct_0, l.r1 + a.r1 AS read_ct_1, l.r2 + a.r2 AS read_ct_2,"
    " l.r3 + a.r3 AS read_ct_3_plus, greatest(l.maxrc, a.maxrc) AS max_read_ct"
    " FROM (SELECT count(*) AS depth, count(*) FILTER (WHERE vt <= %(as_of)s) AS visible,"
    "  min(enqueued_at) AS oldest,"
    "  count(*) FILTER (WHERE enqueued_at > %(since)s AND enqueued_at <= %(as_of)s) AS in_live,"
    "  count(*) FILTER (WHERE read_ct <= 0) AS r0, count(*) FILTER (WHERE read_ct = 1) AS r1,"
    "  count(*) FILTER (WHERE read_ct = 2) AS r2, count(*) FILTER (WHERE read_ct >= 3) AS r3,"
    "  coalesce(max(read_ct), 0) AS maxrc FROM {live}) l"
    " CROSS JOIN (SELECT count(*) AS out_n, count(*) FILTER (WHERE enqueued_at > %(since)s) AS in_arch,"
    "  percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP"
    "   (ORDER BY extract(epoch FROM archived_at - enqueued_at)::float8) AS pct,"
    "  count(*) FILTER (WHERE read_ct <= 0) AS r0, count(*) FILTER (WHERE read_ct = 1) AS r1,"
    "  count(*) FILTER (WHERE read_ct = 2) AS r2, count(*) FILTER (WHERE read_ct >= 3) AS r3,"
    "  coalesce(max(read_ct), 0) AS maxrc"
    "  FROM {archive} WHERE archived_at > %(since)s AND archived_at <= %(as_of)s) a"
)


@dataclass(frozen=True)
class QueueStats:
    queue: str
    kind: str
    depth: int
    visible: int
    oldest_age_s: float | None
    in_window: int
    out_window: int
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p99_s: float | None
    read_ct_0: int
    read_ct_1: int
    read_ct_2: int
    read_ct_3_plus: int
    max_read_ct: int
    dlq_depth: int | None = None

    @property
    def redelivered(self) -> int:
        """Messages delivered more than once (live, or archived in the window)."""
        return self.read_ct_2 + self.read_ct_3_plus


@dataclass(frozen=True)
class Breach:
    """A queue over one of its thresholds."""

    queue: str
    check: str  # depth | oldest_age | dlq
    value: float
    limit: float
    severity: str

    def describe(self) -> str:
        if self.check == "oldest_age":
            return f"`{self.queue}`: oldest message age {format_seconds(self.value)} > {format_seconds(self.limit)}"
        what = {"depth": "depth", "dlq": "dead letters"}[self.check]
        return f"`{self.queue}`: {what} {self.value:g} > {self.limit:g}"


@dataclass
class StatisticsReport:
    measured_at: datetime
    window_s: int
    queues: list[QueueStats]
    elapsed_s: float = 0.0

    def by_queue(self) -> dict[str, QueueStats]:
        return {q.queue: q for q in self.queues}

    def totals(self) -> dict[str, int]:
        def total(kind: str | None, attr: str) -> int:
            return sum(getattr(q, attr) for q in self.queues if kind is None or q.kind == kind)

        live = [q for q in self.queues if q.kind != "dlq"]
        return {
            "queues": len(self.queues),
            "depth": sum(q.depth for q in live),
            "visible": sum(q.visible for q in live),
            "in_window": sum(q.in_window for q in live),
            "out_window": sum(q.out_window for q in live),
            "redelivered": sum(q.redelivered for q in live),
            "dlq_queues": sum(1 for q in self.queues if q.kind == "dlq"),
            "dlq_messages": total("dlq", "depth"),
            "inboxes": sum(1 for q in self.queues if q.kind == "inbox"),
            "inbox_depth": total("inbox", "depth"),
        }

    def breaches(self, thresholds: Thresholds) -> list[Breach]:
        out = []
        for q in self.queues:
            t = thresholds.for_queue(q.queue)
            if t.max_depth is not None and q.depth > t.max_depth:
                out.append(Breach(q.queue, "depth", q.depth, t.max_depth, t.severity))
            if (
                t.max_oldest_age_s is not None
                and q.oldest_age_s is not None
                and q.oldest_age_s > t.max_oldest_age_s
            ):
                out.append(
                    Breach(q.queue, "oldest_age", round(q.oldest_age_s, 1), t.max_oldest_age_s, t.severity)
                )
            if t.max_dlq_depth is not None and q.dlq_depth is not None and q.dlq_depth > t.max_dlq_depth:
                out.append(Breach(q.queue, "dlq", q.dlq_depth, t.max_dlq_depth, t.dlq_severity))
        return out

    def worst_first(self, thresholds: Thresholds) -> list[QueueStats]:
        """Queues over a threshold first (most breaches first), then by oldest age, depth, DLQ depth."""
        breached: dict[str, int] = {}
        for b in self.breaches(thresholds):
            breached[b.queue] = breached.get(b.queue, 0) + 1
        return sorted(
            self.queues,
            key=lambda q: (
                -breached.get(q.queue, 0),
                -(q.oldest_age_s or 0.0),
                -q.depth,
                -(q.dlq_depth or 0),
                q.queue,
            ),
        )


def _parts(queues: list[str]) -> sql.Composed:
    return sql.SQL(" UNION ALL ").join(
        _PART.format(
            name=sql.Literal(q),
            live=sql.Identifier("pgmq", "q_" + q),
            archive=sql.Identifier("pgmq", "a_" + q),
        )
        for q in queues
    )


def _fetch(conn: psycopg.Connection, queues: list[str], params: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of `_PART` for `queues`, each a dict keyed by its column (= `QueueStats` field) name."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_parts(queues), params).fetchall()


def _read_only(conn: psycopg.Connection) -> None:
    conn.execute("SET TRANSACTION READ ONLY")
    conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(STATEMENT_TIMEOUT_MS)))


def collect_statistics(
    conn: psycopg.Connection,
    *,
    queues: Iterable[str] | None = None,
    as_of: datetime | None = None,
    window: timedelta = DEFAULT_WINDOW,
    chunk: int = DEFAULT_CHUNK,
) -> StatisticsReport:
    """Statistics of `queues` (default: every queue in pgmq.meta) at `as_of` (default: the database's now).

    Runs in read-only transactions of its own on `conn` (which must not be inside a transaction).
    """
    started = time.monotonic()
    with conn.transaction():
        _read_only(conn)
        known = existing_queues(conn)
        if as_of is None:
            (as_of,) = one_row(conn.execute("SELECT now()"), "the clock")
    if queues is None:
        selected = known
    else:
        wanted = list(dict.fromkeys(queues))
        missing = [q for q in wanted if q not in known]
        if missing:
            raise ValueError(f"queue(s) {', '.join(map(repr, missing[:5]))} do not exist in pgmq.meta")
        selected = wanted
    params = {"as_of": as_of, "since": as_of - window}
    rows: list[dict[str, Any]] = []
    for i in range(0, len(selected), chunk):
        # A transaction per chunk: its locks (a few per queue table and index) are released at once,
        # so 1,000s of queues never fill the lock table or hold off a DROP for the whole run.
        part = selected[i : i + chunk]
        try:
            with conn.transaction():
                _read_only(conn)
                rows += _fetch(conn, part, params)
        except psycopg.errors.UndefinedTable:
            # A queue was dropped since the listing (an instance retired): measure the others.
            with conn.transaction():
                _read_only(conn)
                still = set(existing_queues(conn))
            part = [q for q in part if q in still]
            if part:
                with conn.transaction():
                    _read_only(conn)
                    rows += _fetch(conn, part, params)
    stats = [QueueStats(kind=queue_kind(r["queue"]), **r) for r in rows]
    depth_of = {s.queue: s.depth for s in stats}
    known_set = set(known)
    stats = [
        QueueStats(**{**asdict(s), "dlq_depth": depth_of.get(s.queue + DLQ_SUFFIX)})
        if s.kind != "dlq" and s.queue + DLQ_SUFFIX in known_set
        else s
        for s in stats
    ]
    return StatisticsReport(
        measured_at=as_of,
        window_s=int(window.total_seconds()),
        queues=stats,
        elapsed_s=time.monotonic() - started,
    )


_HISTORY_COLUMNS = [f.name for f in fields(QueueStats)]


def save_history(conn: psycopg.Connection, report: StatisticsReport) -> int:
    """Append the report to hub.queue_statistics (one row per queue) and commit. Returns the rows written."""
    if not report.queues:
        return 0
    cols = ["measured_at", *_HISTORY_COLUMNS, "window_s"]
    stmt = sql.SQL("INSERT INTO hub.queue_statistics ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
        sql.SQL(", ").join(map(sql.Identifier, cols)), sql.SQL(", ").join(sql.Placeholder() * len(cols))
    )
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            stmt,
            [
                (report.measured_at, *[getattr(q, c) for c in _HISTORY_COLUMNS], report.window_s)
                for q in report.queues
            ],
        )
    return len(report.queues)


def format_seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.1f}m"
    if value < 172_800:
        return f"{value / 3600:.1f}h"
    return f"{value / 86_400:.1f}d"


def markdown_table(report: StatisticsReport, thresholds: Thresholds, limit: int = 25) -> str:
    """The `limit` worst queues as a markdown table (queues over a threshold marked ⚠)."""
    flagged = {b.queue for b in report.breaches(thresholds)}
    lines = [
        "| queue | kind | depth | visible | oldest | in/h | out/h | p50 | p95 | p99 | redelivered | max read_ct | DLQ |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    worst = report.worst_first(thresholds)
    for q in worst[:limit]:
        mark = " ⚠" if q.queue in flagged else ""
        lines.append(
            f"| `{q.queue}`{mark} | {q.kind} | {q.depth} | {q.visible} | {format_seconds(q.oldest_age_s)} | {q.in_window} | "
            f"{q.out_window} | {format_seconds(q.latency_p50_s)} | {format_seconds(q.latency_p95_s)} | {format_seconds(q.latency_p99_s)} | "
            f"{q.redelivered} | {q.max_read_ct} | {'–' if q.dlq_depth is None else q.dlq_depth} |"
        )
    if len(worst) > limit:
        lines.append(f"\n_{len(worst) - limit} more queues not shown (all in `hub.queue_statistics`)._")
    return "\n".join(lines)
