"""Dead-letter tooling in plain Python: list, show, redrive and purge dead letters.

A dead letter is a message the ingest moved to `<queue>_dlq`: the original body, and the original
headers plus `x-dlq-*` headers saying why (`ingest.core._dlq_headers`).

Redrive puts the original message with its original headers (the `x-dlq-*` ones removed) back on
its source queue, exactly once even if interrupted: for each batch, ONE transaction locks the dead
letters (`FOR UPDATE`), sends them to the source queue (`pgmq.send_batch`), archives them from the
DLQ (`pgmq.archive`) and records the move in `hub.dlq_actions`. A kill at any instant leaves each
message either back on its queue and archived from the DLQ, or still only in the DLQ. Two redrives
at once serialise on the row locks; the second finds the rows gone and skips them.

Purge archives dead letters (into `pgmq.a_<queue>_dlq`, kept for SHARED_QUEUE_DLQ_RETENTION_DAYS,
then removed by retention) and records it in `hub.dlq_actions`; nothing is deleted outright.

Every filter is checked before any SQL runs; values are bound as parameters and queue names are
validated, then composed with `sql.Identifier`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from psycopg import sql

from ..names import DLQ_SUFFIX, InvalidNameError, dlq_for, validate_queue_name
from .inventory import dead_letter_queues, source_of

DLQ_HEADER_PREFIX = "x-dlq-"
DEFAULT_BATCH = 100
MAX_REASON_FILTER = 200
_DURATION_RE = re.compile(r"^\s*(\d{1,7})\s*(s|sec|m|min|h|d|w)\s*$")
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400, "w": 604_800}
_TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")


class DlqError(ValueError):
    """A bad dead-letter request (filter, id, queue); the message names the value and the reason."""


def parse_duration(text: str, *, option: str | None = None) -> timedelta:
    """`30s`, `15m`, `2h`, `7d`, `1w` -> timedelta; `option` names the setting in the error."""
    prefix = f"{option} " if option else ""
    if not isinstance(text, str):
        raise DlqError(f"{prefix}{text!r}: expected a duration such as 30m, 2h or 7d")
    m = _DURATION_RE.match(text)
    if not m:
        raise DlqError(
            f"{prefix}{text[:40]!r} is not a duration: use a number and a unit s, m, h, d or w (e.g. 7d)"
        )
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def dlq_name(queue: str) -> str:
    """A validated DLQ name from either the DLQ's name or its source queue's name."""
    validate_queue_name(queue)
    return queue if queue.endswith(DLQ_SUFFIX) else dlq_for(queue)


@dataclass(frozen=True)
class DlqFilter:
    """Which dead letters: all fields are optional and combine with AND."""

    queue: str | None = None
    """A DLQ or its source queue (`pattern_messages` and `pattern_messages_dlq` mean the same)."""
    reason: str | None = None
    """Matches the error kind exactly (`x-dlq-kind`, e.g. `invalid_json`) or a substring of the reason."""
    message_type: str | None = None
    older_than: timedelta | None = None
    """Dead-lettered at least this long ago."""
    newer_than: timedelta | None = None
    """Dead-lettered less than this long ago."""

    def __post_init__(self) -> None:
        if self.queue is not None:
            object.__setattr__(self, "queue", dlq_name(self.queue))
        if self.reason is not None and (not self.reason.strip() or len(self.reason) > MAX_REASON_FILTER):
            raise DlqError(f"reason filter {self.reason[:60]!r}: must be 1 to {MAX_REASON_FILTER} characters")
        if self.message_type is not None and not _TYPE_RE.match(self.message_type):
            raise DlqError(
                f"type filter {self.message_type[:60]!r}: expected a message type such as pattern_detection "
                "(letters, digits, '_', '.', '-')"
            )
        for name in ("older_than", "newer_than"):
            value = getattr(self, name)
            if value is not None and value < timedelta(0):
                raise DlqError(f"{name} = {value}: must not be negative")

    @classmethod
    def from_options(cls, *, queue=None, reason=None, message_type=None, older_than=None, newer_than=None):
        """Build from text options (CLI, run config): durations like `7d`."""
        return cls(
            queue=queue or None,
            reason=reason or None,
            message_type=message_type or None,
            older_than=parse_duration(older_than, option="older_than") if older_than else None,
            newer_than=parse_duration(newer_than, option="newer_than") if newer_than else None,
        )

    @property
    def empty(self) -> bool:
        return not any((self.queue, self.reason, self.message_type, self.older_than, self.newer_than))

    def where(self) -> tuple[sql.Composable, dict]:
        """The WHERE clause (without the queue, which picks the table) and its parameters."""
        return (
            sql.SQL(
                "(%(kind)s::text IS NULL OR headers->>'x-dlq-kind' = %(kind)s"
                " OR strpos(lower(headers->>'x-dlq-reason'), lower(%(kind)s)) > 0)"
                " AND (%(type)s::text IS NULL OR message->>'type' = %(type)s)"
                " AND (%(older)s::interval IS NULL OR enqueued_at <= now() - %(older)s)"
                " AND (%(newer)s::interval IS NULL OR enqueued_at > now() - %(newer)s)"
            ),
            {
                "kind": self.reason,
                "type": self.message_type,
                "older": self.older_than,
                "newer": self.newer_than,
            },
        )


@dataclass(frozen=True)
class DeadLetter:
    dlq: str
    msg_id: int
    dead_lettered_at: datetime
    read_ct: int
    message: object
    headers: dict | None

    @property
    def kind(self) -> str | None:
        return (self.headers or {}).get("x-dlq-kind")

    @property
    def reason(self) -> str | None:
        return (self.headers or {}).get("x-dlq-reason")

    @property
    def message_type(self) -> str | None:
        return self.message.get("type") if isinstance(self.message, dict) else None

    @property
    def source_queue(self) -> str:
        return source_of(self.dlq)

    @property
    def original_msg_id(self) -> int | None:
        value = (self.headers or {}).get("x-dlq-source-msg-id")
        return value if isinstance(value, int) else None

    @property
    def original_headers(self) -> dict | None:
        return original_headers(self.headers)


def original_headers(headers: dict | None) -> dict | None:
    """The headers a message had before the ingest dead-lettered it (`x-dlq-*` removed).

    The ingest stores a non-object original header value as `{"original_headers": value}`, and
    no headers at all as an object holding only `x-dlq-*` keys; both are undone here.
    """
    if headers is None:
        return None
    if not isinstance(headers, dict):
        return headers
    kept = {k: v for k, v in headers.items() if not k.startswith(DLQ_HEADER_PREFIX)}
    if not kept:
        return None
    if list(kept) == ["original_headers"] and not isinstance(kept["original_headers"], dict):
        return kept["original_headers"]
    return kept


def _targets(conn: psycopg.Connection, f: DlqFilter) -> list[str]:
    existing = dead_letter_queues(conn)
    if f.queue is None:
        return existing
    if f.queue not in existing:
        raise DlqError(
            f"dead-letter queue {f.queue!r} does not exist; existing: {', '.join(existing) or '(none)'}"
        )
    return [f.queue]


def _select(dlq: str, f: DlqFilter, *, extra: str = "", lock: bool = False) -> tuple[sql.Composed, dict]:
    where, params = f.where()
    stmt = sql.SQL(
        "SELECT msg_id, enqueued_at, read_ct, message, headers FROM {table} WHERE {where}{extra}"
        " ORDER BY msg_id LIMIT %(limit)s{lock}"
    ).format(
        table=sql.Identifier("pgmq", "q_" + dlq),
        where=where,
        extra=sql.SQL(extra),
        lock=sql.SQL(" FOR UPDATE") if lock else sql.SQL(""),
    )
    return stmt, params


def list_dead_letters(conn: psycopg.Connection, f: DlqFilter, *, limit: int = 100) -> list[DeadLetter]:
    """Dead letters matching `f`, oldest msg_id first per DLQ, at most `limit` in all."""
    out: list[DeadLetter] = []
    for dlq in _targets(conn, f):
        if len(out) >= limit:
            break
        stmt, params = _select(dlq, f)
        rows = conn.execute(stmt, {**params, "limit": limit - len(out)}).fetchall()
        out += [DeadLetter(dlq, *r) for r in rows]
    conn.commit()
    return out


def count_dead_letters(conn: psycopg.Connection, f: DlqFilter) -> dict[str, dict[str, int]]:
    """{dlq: {kind: messages}} for the dead letters matching `f`."""
    out: dict[str, dict[str, int]] = {}
    where, params = f.where()
    for dlq in _targets(conn, f):
        rows = conn.execute(
            sql.SQL(
                "SELECT coalesce(headers->>'x-dlq-kind', '(none)'), count(*) FROM {} WHERE {} GROUP BY 1 ORDER BY 2 DESC"
            ).format(sql.Identifier("pgmq", "q_" + dlq), where),
            params,
        ).fetchall()
        out[dlq] = dict(rows)
    conn.commit()
    return out


def get_dead_letter(conn: psycopg.Connection, msg_id: int, *, queue: str | None = None) -> list[DeadLetter]:
    """The dead letter(s) with `msg_id` (msg_ids are per queue, so several DLQs may have one)."""
    if isinstance(msg_id, bool) or not isinstance(msg_id, int) or msg_id < 1:
        raise DlqError(f"message id {msg_id!r}: expected a positive whole number")
    f = DlqFilter(queue=queue)
    out = []
    for dlq in _targets(conn, f):
        row = conn.execute(
            sql.SQL("SELECT msg_id, enqueued_at, read_ct, message, headers FROM {} WHERE msg_id = %s").format(
                sql.Identifier("pgmq", "q_" + dlq)
            ),
            (msg_id,),
        ).fetchone()
        if row:
            out.append(DeadLetter(dlq, *row))
    conn.commit()
    return out


@dataclass
class DlqActionReport:
    action: str
    dry_run: bool = False
    moved: dict[str, int] = field(default_factory=dict)  # dlq -> messages redriven / purged
    skipped: dict[str, str] = field(default_factory=dict)  # dlq -> why nothing was done
    new_msg_ids: dict[str, list[int]] = field(default_factory=dict)  # redrive: source queue -> ids
    batches: int = 0

    @property
    def total(self) -> int:
        return sum(self.moved.values())


def _source_exists(conn: psycopg.Connection, queue: str) -> bool:
    return conn.execute("SELECT 1 FROM pgmq.meta WHERE queue_name = %s", (queue,)).fetchone() is not None


def _process(
    conn: psycopg.Connection,
    f: DlqFilter,
    action: str,
    *,
    actor: str,
    batch_size: int,
    limit: int | None,
    dry_run: bool,
    progress: Callable[[DlqActionReport], None] | None,
) -> DlqActionReport:
    if not 1 <= batch_size <= 10_000:
        raise DlqError(f"batch size {batch_size}: must be between 1 and 10000")
    if limit is not None and limit < 1:
        raise DlqError(f"limit {limit}: must be at least 1")
    report = DlqActionReport(action=action, dry_run=dry_run)
    targets = _targets(conn, f)
    conn.commit()
    for dlq in targets:
        source = source_of(dlq)
        if action == "redrive":
            try:
                validate_queue_name(source)
            except InvalidNameError as exc:
                report.skipped[dlq] = str(exc)
                continue
            exists = _source_exists(conn, source)
            conn.commit()  # each batch below must be a transaction of its own, not a savepoint
            if not exists:
                report.skipped[dlq] = f"its source queue {source!r} does not exist; nothing was redriven"
                continue
        after = 0
        report.moved[dlq] = 0
        while limit is None or report.total < limit:
            want = batch_size if limit is None else min(batch_size, limit - report.total)
            stmt, params = _select(dlq, f, extra=" AND msg_id > %(after)s", lock=not dry_run)
            with conn.transaction():
                rows = conn.execute(stmt, {**params, "after": after, "limit": want}).fetchall()
                if not rows:
                    break
                letters = [DeadLetter(dlq, *r) for r in rows]
                after = letters[-1].msg_id
                if not dry_run:
                    _apply(conn, dlq, source, letters, action, actor, report)
            report.moved[dlq] += len(letters)
            report.batches += 1
            if progress:
                progress(report)
    return report


def _apply(
    conn, dlq: str, source: str, letters: list[DeadLetter], action: str, actor: str, report: DlqActionReport
) -> None:
    """Inside the caller's transaction: move `letters` (locked) and record the move."""
    ids = [d.msg_id for d in letters]
    new_ids: list[int | None] = [None] * len(letters)
    if action == "redrive":
        sent: list[int] = [
            r[0]
            for r in conn.execute(
                "SELECT * FROM pgmq.send_batch(%s, %s::jsonb[], %s::jsonb[])",
                (
                    source,
                    [json.dumps(d.message) for d in letters],
                    [None if d.original_headers is None else json.dumps(d.original_headers) for d in letters],
                ),
            ).fetchall()
        ]
        report.new_msg_ids.setdefault(source, []).extend(sent)
        new_ids = [*sent]
    archived = conn.execute("SELECT * FROM pgmq.archive(%s, %s::bigint[])", (dlq, ids)).fetchall()
    if len(archived) != len(ids):
        # The rows are locked by this transaction, so this cannot happen; if it did, roll back the sends.
        raise RuntimeError(f"archived {len(archived)} of {len(ids)} dead letters from {dlq}; rolled back")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO hub.dlq_actions (action, dlq, dlq_msg_id, source_queue, original_msg_id, new_msg_id,"
            " reason_kind, actor) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (action, dlq, d.msg_id, source, d.original_msg_id, new_id, d.kind, actor)
                for d, new_id in zip(letters, new_ids, strict=True)
            ],
        )


def redrive(
    conn: psycopg.Connection,
    f: DlqFilter,
    *,
    actor: str = "cli",
    batch_size: int = DEFAULT_BATCH,
    limit: int | None = None,
    dry_run: bool = False,
    progress: Callable[[DlqActionReport], None] | None = None,
) -> DlqActionReport:
    """Put the dead letters matching `f` back on their source queues, exactly once (see module doc)."""
    return _process(
        conn,
        f,
        "redrive",
        actor=actor,
        batch_size=batch_size,
        limit=limit,
        dry_run=dry_run,
        progress=progress,
    )


def purge(
    conn: psycopg.Connection,
    f: DlqFilter,
    *,
    actor: str = "cli",
    batch_size: int = DEFAULT_BATCH,
    limit: int | None = None,
    dry_run: bool = False,
    progress: Callable[[DlqActionReport], None] | None = None,
) -> DlqActionReport:
    """Archive the dead letters matching `f` out of their DLQs (see module doc)."""
    return _process(
        conn, f, "purge", actor=actor, batch_size=batch_size, limit=limit, dry_run=dry_run, progress=progress
    )
