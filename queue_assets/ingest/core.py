"""The ingest loop, in plain Python (no Dagster): read a batch, validate, store + archive in one transaction.

Exactly-once effects from at-least-once delivery:
- `pgmq.read` is committed on its own, so `read_ct` counts real delivery attempts;
- every message taken gets a row in `hub.ingest_ledger` keyed by (queue, msg_id), and a producer's
  idempotency key is unique per (queue, instance); data rows, dead-letter copies and the archive are
  written in the SAME transaction as the ledger rows, only for messages whose ledger insert won;
- so a crash at any instant either leaves the batch untouched (it is read again after the
  visibility timeout) or fully applied (and archived). Two consumers on one queue cannot double
  anything: the second one's ledger insert waits for the first and then finds the row.

A message that cannot be parsed, breaks the contract, or was delivered more than `max_attempts`
times goes to `<queue>_dlq` with the reason in its headers. A batch that the database refuses is
retried message by message (savepoints), and only the offending messages are dead-lettered.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ..contracts import ContractError, parse_ingest
from ..names import dlq_for, validate_queue_name
from . import rows as row_builders

MAX_IDEMPOTENCY_KEY = 200
READ_SQL = (
    "SELECT msg_id, read_ct, enqueued_at, message::text, headers::text "
    "FROM pgmq.read(queue_name => %s::text, vt => %s::integer, qty => %s::integer)"
)


@dataclass(frozen=True)
class IngestConfig:
    batch_size: int = 500
    visibility_timeout_s: int = 60
    max_attempts: int = 5
    max_message_bytes: int = 1_048_576
    max_messages: int = 200_000
    max_seconds: float = 300.0

    @classmethod
    def from_settings(cls, s) -> IngestConfig:
        return cls(
            batch_size=s.batch_size,
            visibility_timeout_s=s.visibility_timeout_s,
            max_attempts=s.max_attempts,
            max_message_bytes=s.max_message_bytes,
            max_messages=s.run_max_messages,
            max_seconds=float(s.run_max_seconds),
        )


@dataclass
class Delivery:
    """One message as read from pgmq, with what validation made of it."""

    msg_id: int
    read_ct: int
    enqueued_at: datetime
    raw: str
    headers_raw: str | None
    model: object | None = None
    instance_id: str | None = None
    message_type: str | None = None
    idempotency_key: str | None = None
    error: str | None = None
    error_kind: str | None = None


@dataclass
class IngestResult:
    queue: str
    read: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0
    vt_extensions: int = 0
    elapsed_s: float = 0.0
    stopped_by: str = "drained"
    per_instance: Counter = field(default_factory=Counter)
    dlq_reasons: Counter = field(default_factory=Counter)
    oldest_enqueued_at: datetime | None = None

    @property
    def rate(self) -> float:
        return self.read / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def add(self, other: IngestResult) -> None:
        for name in ("read", "stored", "duplicates", "dead_lettered", "batches", "vt_extensions"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.per_instance.update(other.per_instance)
        self.dlq_reasons.update(other.dlq_reasons)


def read_batch(conn: psycopg.Connection, queue: str, cfg: IngestConfig) -> list[Delivery]:
    """Lease up to `batch_size` messages and commit the lease (so read_ct counts this attempt)."""
    rows = conn.execute(READ_SQL, (queue, cfg.visibility_timeout_s, cfg.batch_size)).fetchall()
    conn.commit()
    return [Delivery(*r) for r in rows]


def validate(queue: str, d: Delivery, cfg: IngestConfig) -> None:
    """Fill in the model or the error of one delivery."""
    try:
        headers = json.loads(d.headers_raw) if d.headers_raw else None
        if headers is not None and not isinstance(headers, dict):
            raise ContractError("headers must be a JSON object", kind="bad_headers")
        key = (headers or {}).get("idempotency_key")
        if key is not None:
            if not isinstance(key, str) or not key or len(key) > MAX_IDEMPOTENCY_KEY:
                raise ContractError(
                    f"header idempotency_key = {str(key)[:80]!r}: must be a non-empty string of at most "
                    f"{MAX_IDEMPOTENCY_KEY} characters",
                    kind="bad_headers",
                )
            d.idempotency_key = key
        if d.read_ct > cfg.max_attempts:
            raise ContractError(
                f"delivered {d.read_ct} times without being stored (limit {cfg.max_attempts}); "
                "the hub gave up on it",
                kind="too_many_attempts",
            )
        model = parse_ingest(queue, d.raw, max_bytes=cfg.max_message_bytes)
    except ContractError as exc:
        d.error, d.error_kind = str(exc), getattr(exc, "kind", "invalid")
        return
    d.model = model
    d.message_type = model.type
    d.instance_id = model.instance


def _dlq_headers(queue: str, d: Delivery, reason: str, kind: str) -> str:
    try:
        original = json.loads(d.headers_raw) if d.headers_raw else {}
    except ValueError:
        original = {}
    if not isinstance(original, dict):
        original = {"original_headers": original}
    original.update(
        {
            "x-dlq-reason": reason,
            "x-dlq-kind": kind,
            "x-dlq-source-queue": queue,
            "x-dlq-source-msg-id": d.msg_id,
            "x-dlq-read-ct": d.read_ct,
            "x-dlq-enqueued-at": d.enqueued_at.isoformat(),
            "x-dlq-failed-at": datetime.now(UTC).isoformat(),
        }
    )
    return json.dumps(original)


def store_batch(conn: psycopg.Connection, queue: str, batch: list[Delivery], result: IngestResult) -> None:
    """Ledger, data rows, dead letters and archive for `batch`, inside the caller's transaction."""
    ids = [d.msg_id for d in batch]
    outcome = ["stored" if d.error is None else "dead_lettered" for d in batch]
    won = {
        r[0]
        for r in conn.execute(
            "INSERT INTO hub.ingest_ledger (queue, msg_id, message_type, instance_id, idempotency_key,"
            " outcome, enqueued_at, produced_at, read_ct)"
            " SELECT %s, * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[],"
            " %s::timestamptz[], %s::timestamptz[], %s::int[])"
            " ON CONFLICT DO NOTHING RETURNING msg_id",
            (
                queue,
                ids,
                [d.message_type for d in batch],
                [d.instance_id for d in batch],
                [d.idempotency_key if d.error is None else None for d in batch],
                outcome,
                [d.enqueued_at for d in batch],
                [getattr(d.model, "timestamp", None) for d in batch],
                [d.read_ct for d in batch],
            ),
        )
    }
    lost = [d for d in batch if d.msg_id not in won and d.error is None and d.idempotency_key]
    if lost:
        # Same idempotency key already stored: record this msg_id as a duplicate (PK conflict only
        # means another consumer already took this very message).
        conn.execute(
            "INSERT INTO hub.ingest_ledger (queue, msg_id, message_type, instance_id, idempotency_key,"
            " outcome, enqueued_at, read_ct)"
            " SELECT %s, m, t, i, k, 'duplicate', e, r FROM unnest(%s::bigint[], %s::text[], %s::text[],"
            " %s::text[], %s::timestamptz[], %s::int[]) AS u(m, t, i, k, e, r)"
            " ON CONFLICT DO NOTHING",
            (
                queue,
                [d.msg_id for d in lost],
                [d.message_type for d in lost],
                [d.instance_id for d in lost],
                [d.idempotency_key for d in lost],
                [d.enqueued_at for d in lost],
                [d.read_ct for d in lost],
            ),
        )
    fresh = [d for d in batch if d.msg_id in won and d.error is None]
    dead = [d for d in batch if d.msg_id in won and d.error is not None]
    row_builders.write_rows(conn, queue, fresh)
    if dead:
        conn.execute(
            "SELECT pgmq.send_batch(%s, %s::jsonb[], %s::jsonb[])",
            (
                dlq_for(queue),
                [d.raw for d in dead],
                [_dlq_headers(queue, d, d.error, d.error_kind) for d in dead],
            ),
        )
    conn.execute("SELECT pgmq.archive(%s, %s::bigint[])", (queue, ids))
    result.stored += len(fresh)
    result.dead_lettered += len(dead)
    result.duplicates += len(batch) - len(fresh) - len(dead)
    for d in fresh:
        result.per_instance[d.instance_id] += 1
    for d in dead:
        result.dlq_reasons[d.error_kind] += 1


def _store_one_by_one(conn: psycopg.Connection, queue: str, batch: list[Delivery], result: IngestResult) -> None:
    """The batch was refused as a whole: store each message alone, dead-letter the ones refused."""
    with conn.transaction():
        for d in batch:
            try:
                with conn.transaction():
                    store_batch(conn, queue, [d], result)
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                d.model = None
                d.error = f"the database refused to store it: {str(exc).strip().splitlines()[0][:300]}"
                d.error_kind = "store_failed"
                with conn.transaction():
                    store_batch(conn, queue, [d], result)


def extend_if_slow(conn: psycopg.Connection, queue: str, batch: list[Delivery], read_at: float,
                   cfg: IngestConfig, result: IngestResult) -> None:
    """Extend the lease when half of it is gone before the store starts."""
    if time.monotonic() - read_at > cfg.visibility_timeout_s / 2:
        conn.execute(
            "SELECT * FROM pgmq.set_vt(%s, %s::bigint[], %s)",
            (queue, [d.msg_id for d in batch], cfg.visibility_timeout_s),
        )
        conn.commit()
        result.vt_extensions += 1


def ingest_queue(
    conn: psycopg.Connection,
    queue: str,
    cfg: IngestConfig,
    *,
    on_batch: Callable[[IngestResult], None] | None = None,
) -> IngestResult:
    """Drain `queue` until it is empty or the run's cap (messages or seconds) is reached."""
    validate_queue_name(queue)
    result = IngestResult(queue=queue)
    started = time.monotonic()
    result.oldest_enqueued_at = conn.execute(
        sql.SQL("SELECT min(enqueued_at) FROM pgmq.{}").format(sql.Identifier("q_" + queue))
    ).fetchone()[0]
    conn.commit()
    while True:
        if result.read >= cfg.max_messages:
            result.stopped_by = "max_messages"
            break
        if time.monotonic() - started >= cfg.max_seconds:
            result.stopped_by = "max_seconds"
            break
        read_at = time.monotonic()
        batch = read_batch(conn, queue, cfg)
        if not batch:
            break
        for d in batch:
            validate(queue, d, cfg)
        extend_if_slow(conn, queue, batch, read_at, cfg, result)
        try:
            with conn.transaction():
                store_batch(conn, queue, batch, result)
        except psycopg.OperationalError:
            raise
        except psycopg.Error:
            _store_one_by_one(conn, queue, batch, result)
        result.read += len(batch)
        result.batches += 1
        if on_batch:
            on_batch(result)
    result.elapsed_s = time.monotonic() - started
    return result
