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

import gc
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import psycopg
from psycopg import sql

from .. import db, fanout
from ..contracts import ContractError, IngestMessage, parse_ingest
from ..contracts.approval import HubApprovalResponse
from ..contracts.enrichment import HubLlmResult
from ..names import dlq_for, validate_queue_name
from ..patterns import approval, catalogue, enrichment
from ..queues import HUB_APPROVAL_RESPONSES, HUB_LLM_RESULTS
from . import rows as row_builders

MAX_IDEMPOTENCY_KEY = 200
# Replies to the hub's own requests: no hub.* data rows of their own; their effect is applied by
# patterns.enrichment / patterns.approval in the ledger's transaction.
REPLY_QUEUES = (HUB_LLM_RESULTS, HUB_APPROVAL_RESPONSES)
# The queue's incarnation (`pgmq.meta.created_at`) comes with every row of the read, from the
# statement's own snapshot: one statement, one round trip.
READ_SQL = (
    "SELECT r.msg_id, r.read_ct, r.enqueued_at, r.message::text, r.headers::text,"
    " (SELECT m.created_at FROM pgmq.meta m WHERE m.queue_name = %(queue)s) "
    "FROM pgmq.read(queue_name => %(queue)s::text, vt => %(vt)s::integer, qty => %(qty)s::integer) r"
)
# While lingering on an empty queue, pgmq polls server-side instead of us spinning. The poll runs up
# to a second, longer than its statement's snapshot should stand for the incarnation: that is looked
# up after it (INCARNATION_SQL, a fresh snapshot), as before.
READ_WITH_POLL_SQL = (
    "SELECT msg_id, read_ct, enqueued_at, message::text, headers::text, NULL::timestamptz "
    "FROM pgmq.read_with_poll(queue_name => %(queue)s::text, vt => %(vt)s::integer, qty => %(qty)s::integer,"
    " max_poll_seconds => 1, poll_interval_ms => 100)"
)
INCARNATION_SQL = "SELECT created_at FROM pgmq.meta WHERE queue_name = %s"

# Archive only while the queue is still the incarnation the batch was read from: archiving the same
# msg_ids in a re-created queue would take its (unread) messages away.
ARCHIVE_SQL = (
    "SELECT pgmq.archive(m.queue_name::text, %s::bigint[]) FROM pgmq.meta m"
    " WHERE m.queue_name = %s AND m.created_at = %s"
)


@dataclass(frozen=True)
class IngestConfig:
    batch_size: int = 500
    visibility_timeout_s: int = 60
    max_attempts: int = 5
    max_message_bytes: int = 1_048_576
    max_messages: int = 200_000
    max_seconds: float = 300.0
    linger_s: float = 0.0
    """After the queue runs dry, keep polling this long before ending the run (saves run launches)."""
    stale_after_s: int = 3600
    """Instances silent this long get no inbox copy of what storing a batch fans out (QUEUE_ASSETS_STALE_AFTER_S)."""
    pattern_approval: str = "off"
    """QUEUE_ASSETS_PATTERN_APPROVAL: `required` holds enriched patterns for a person's decision."""
    enrich_new_keys: enrichment.EnrichmentConfig | None = None
    """Set (provider `queue`): pattern_messages' ingest sends the `llm_request` for a key it sees for
    the first time in the transaction that stores it (`enrichment.send_for_new_keys`), so a new key
    needs no enrichment run. None: the `pattern_enrichment` run sends it."""

    @classmethod
    def from_settings(cls, s) -> IngestConfig:
        llm = enrichment.EnrichmentConfig.from_settings(s)
        return cls(
            batch_size=s.batch_size,
            visibility_timeout_s=s.visibility_timeout_s,
            max_attempts=s.max_attempts,
            max_message_bytes=s.max_message_bytes,
            max_messages=s.run_max_messages,
            max_seconds=float(s.run_max_seconds),
            linger_s=float(s.run_linger_s),
            stale_after_s=s.stale_after_s,
            pattern_approval=s.pattern_approval,
            enrich_new_keys=llm if llm.provider == "queue" else None,
        )


@dataclass
class Delivery:
    """One message as read from pgmq, with what validation made of it."""

    msg_id: int
    read_ct: int
    enqueued_at: datetime
    raw: str
    headers_raw: str | None
    model: IngestMessage | HubLlmResult | HubApprovalResponse | None = None
    instance_id: str | None = None
    message_type: str | None = None
    idempotency_key: str | None = None
    error: str | None = None
    error_kind: str | None = None
    queue_created_at: datetime | None = None
    """The incarnation of the queue it was read from (`pgmq.meta.created_at`, one object per batch)."""
    request_id: str | None = None
    """On `hub_llm_results`: the request a reply answers (also kept when the reply is invalid)."""


class IngestError(RuntimeError):
    """The ingest cannot go on safely (the message says why and what to do)."""


@dataclass
class IngestResult:
    queue: str
    read: int = 0
    stored: int = 0
    duplicates: int = 0
    ledger_conflicts: int = 0
    """Of `duplicates`: messages whose own ledger row was already there (another consumer took the
    very same message, its lease having expired); the rest repeated a stored idempotency key."""
    dead_lettered: int = 0
    batches: int = 0
    vt_extensions: int = 0
    elapsed_s: float = 0.0
    stopped_by: str = "drained"
    per_instance: Counter = field(default_factory=Counter)
    dlq_reasons: Counter = field(default_factory=Counter)
    oldest_enqueued_at: datetime | None = None
    llm_requests: list[str] = field(default_factory=list)
    """Ids of the `llm_request`s this ingest sent for new keys (`IngestConfig.enrich_new_keys`)."""

    @property
    def rate(self) -> float:
        return self.read / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def add(self, other: IngestResult) -> None:
        for name in (
            "read",
            "stored",
            "duplicates",
            "ledger_conflicts",
            "dead_lettered",
            "batches",
            "vt_extensions",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.per_instance.update(other.per_instance)
        self.dlq_reasons.update(other.dlq_reasons)
        self.llm_requests.extend(other.llm_requests)


def read_batch(
    conn: psycopg.Connection, queue: str, cfg: IngestConfig, *, poll: bool = False
) -> list[Delivery]:
    """Lease up to `batch_size` messages and commit the lease (so read_ct counts this attempt).

    With `poll`, wait up to a second server-side for messages to arrive. Every delivery carries the
    queue's incarnation (`pgmq.meta.created_at`), looked up in the read's statement (after a poll: in
    its transaction):
    a dropped and re-created queue numbers its messages from 1 again, and the ledger keeps the two
    queues' msg_ids apart by it.
    """
    # A lease lost in a server crash only makes read_ct one lower: no need to wait for the WAL flush.
    # Pipelined: BEGIN, SET, read and COMMIT cost one round trip, not four.
    params = {"queue": queue, "vt": cfg.visibility_timeout_s, "qty": cfg.batch_size}
    with conn.pipeline():
        conn.execute("SET LOCAL synchronous_commit = off")
        if poll:
            rows = conn.execute(READ_WITH_POLL_SQL, params).fetchall()
            meta = conn.execute(INCARNATION_SQL, (queue,)).fetchone() if rows else None
            rows = [(*r[:5], meta[0] if meta else None) for r in rows]
            conn.commit()
        else:
            cur = conn.execute(READ_SQL, params)
            conn.commit()
    if not poll:
        rows = cur.fetchall()
    if rows and rows[0][5] is None:
        raise IngestError(
            f"queue {queue!r} is not in pgmq.meta (dropped while it was read?); run the ingest again"
        )
    return [Delivery(r[0], r[1], r[2], r[3], r[4], queue_created_at=r[5]) for r in rows]


def validate(queue: str, d: Delivery, cfg: IngestConfig) -> None:
    """Fill in the model or the error of one delivery."""
    model: IngestMessage | HubLlmResult | HubApprovalResponse | None
    try:
        headers = json.loads(d.headers_raw) if d.headers_raw else None
        if headers is not None and not isinstance(headers, dict):
            raise ContractError("bad_headers", "headers must be a JSON object")
        key = (headers or {}).get("idempotency_key")
        if key is not None:
            if not isinstance(key, str) or not key or len(key) > MAX_IDEMPOTENCY_KEY:
                raise ContractError(
                    "bad_headers",
                    f"header idempotency_key = {str(key)[:80]!r}: must be a non-empty string of at most "
                    f"{MAX_IDEMPOTENCY_KEY} characters",
                )
            d.idempotency_key = key
        if d.read_ct > cfg.max_attempts:
            raise ContractError(
                "too_many_attempts",
                f"delivered {d.read_ct} times without being stored (limit {cfg.max_attempts}); "
                "the hub gave up on it",
            )
        if queue == HUB_LLM_RESULTS:
            model, d.request_id, error = enrichment.parse_reply(d.raw, cfg.max_message_bytes)
            if error is not None:
                raise error
            # one stored reply per request: a duplicate reply is a ledger duplicate
            d.idempotency_key = f"llm_result:{d.request_id}"
        elif queue == HUB_APPROVAL_RESPONSES:
            model, key, error = approval.parse_response(d.raw, cfg.max_message_bytes)
            if error is not None:
                raise error
            d.idempotency_key = key  # the same decision delivered twice is a ledger duplicate
        else:
            model = parse_ingest(queue, d.raw, max_bytes=cfg.max_message_bytes)
    except ContractError as exc:
        d.error, d.error_kind = exc.reason, exc.kind
        return
    if model is None:  # the reply/response parsers return a model or an error, never neither
        raise IngestError(f"message {d.msg_id} on {queue!r} was parsed to neither a model nor an error")
    d.model = model
    d.message_type = model.type
    d.instance_id = model.instance


def _dlq_headers(queue: str, d: Delivery) -> str:
    if d.error is None or d.error_kind is None:
        raise IngestError(f"message {d.msg_id} on {queue!r} has no error to dead-letter it with")
    try:
        original = json.loads(d.headers_raw) if d.headers_raw else {}
    except ValueError:
        original = {}
    if not isinstance(original, dict):
        original = {"original_headers": original}
    original.update(
        {
            "x-dlq-reason": d.error,
            "x-dlq-kind": d.error_kind,
            "x-dlq-source-queue": queue,
            "x-dlq-source-msg-id": d.msg_id,
            "x-dlq-read-ct": d.read_ct,
            "x-dlq-enqueued-at": d.enqueued_at.isoformat(),
            "x-dlq-failed-at": datetime.now(UTC).isoformat(),
        }
    )
    return json.dumps(original)


_LEDGER_COLS = (
    "msg_id bigint, message_type text, instance_id text, idempotency_key text, outcome text,"
    " enqueued_at timestamptz, produced_at timestamptz, read_ct int"
)


def _store_sql() -> str:
    """One statement: ledger rows, and the data rows of exactly the messages whose ledger row won."""
    parts = [
        "WITH won AS (INSERT INTO hub.ingest_ledger (queue, queue_created_at, msg_id, message_type,"
        " instance_id, idempotency_key, outcome, enqueued_at, produced_at, read_ct)"
        f" SELECT %(queue)s, %(created_at)s, x.* FROM json_to_recordset(%(ledger)s::json) AS x({_LEDGER_COLS})"
        " ON CONFLICT DO NOTHING RETURNING msg_id, outcome)"
    ]
    for table, cols in row_builders.TABLES.items():
        names = ", ".join(c.split()[0] for c in cols.split(","))
        parts.append(
            f", ins_{table} AS (INSERT INTO hub.{table} (queue, queue_created_at, {names})"
            " SELECT %(queue)s, %(created_at)s, x.* FROM"
            f" json_to_recordset(%({table})s::json) AS x({cols})"
            " WHERE x.msg_id IN (SELECT msg_id FROM won WHERE outcome = 'stored'))"
        )
    return "".join(parts) + " SELECT msg_id FROM won"


STORE_SQL = _store_sql()


def _dumps(value) -> str:
    # orjson: ~5x faster than json for the row documents, and it encodes datetimes itself.
    return orjson.dumps(value).decode()


def store_batch(
    conn: psycopg.Connection,
    queue: str,
    batch: list[Delivery],
    result: IngestResult,
    cfg: IngestConfig,
    prepared: catalogue.PreparedSummary | None = None,
) -> None:
    """Ledger, data rows, dead letters and archive for `batch`, inside the caller's transaction.
    From `cfg`: `stale_after_s` (who gets a broadcast), `pattern_approval` (`required` holds an
    enriched pattern for a person's decision instead of publishing it) and `enrich_new_keys`.
    `prepared`: the catalogue summary of the batch's valid messages, built ahead (`prepare_batch`)."""
    ids = [d.msg_id for d in batch]
    created_at = batch[0].queue_created_at
    if created_at is None or any(d.queue_created_at != created_at for d in batch):
        raise IngestError(
            f"queue {queue!r}: a batch to store must come from one read (one queue incarnation)"
        )
    if queue == HUB_LLM_RESULTS:
        enrichment.screen_replies(conn, [d for d in batch if d.error is None])
    elif queue == HUB_APPROVAL_RESPONSES:
        approval.screen_responses(conn, [d for d in batch if d.error is None])
    valid = [d for d in batch if d.error is None]
    ledger = [
        {
            "msg_id": d.msg_id,
            "message_type": d.message_type,
            "instance_id": d.instance_id,
            "idempotency_key": d.idempotency_key if d.error is None else None,
            "outcome": "stored" if d.error is None else "dead_lettered",
            "enqueued_at": d.enqueued_at,  # datetimes: orjson writes them (RFC 3339)
            "produced_at": d.model.timestamp if d.model is not None else None,
            "read_ct": d.read_ct,
        }
        for d in batch
    ]
    # Safe to skip the WAL flush wait: the rows, dead letters and archive commit atomically, so a
    # server crash that loses this commit loses all of it, and the batch is simply read again.
    conn.execute("SET LOCAL synchronous_commit = off")
    params = {"queue": queue, "created_at": created_at, "ledger": _dumps(ledger)}
    row_sources = [] if queue in REPLY_QUEUES else valid  # replies have no hub.* data rows of their own
    params.update({t: _dumps(rows) for t, rows in row_builders.build_rows(row_sources).items()})
    won = {r[0] for r in conn.execute(STORE_SQL, params)}
    lost = [
        row
        for row, d in zip(ledger, batch, strict=True)
        if d.msg_id not in won and d.error is None and d.idempotency_key
    ]
    if len(won) < len(batch):
        _refuse_reused_msg_ids(conn, queue, created_at, [d for d in batch if d.msg_id not in won])
    fresh = [d for d in valid if d.msg_id in won]
    dead = [d for d in batch if d.msg_id in won and d.error is not None]
    dup_cur = None
    with conn.pipeline():
        if lost:
            # Same idempotency key already stored: record this msg_id as a duplicate (a conflict on
            # the primary key instead means another consumer already took this very message).
            for row in lost:
                row["outcome"] = "duplicate"
            dup_cur = conn.execute(
                "INSERT INTO hub.ingest_ledger (queue, queue_created_at, msg_id, message_type, instance_id,"
                " idempotency_key, outcome, enqueued_at, produced_at, read_ct)"
                f" SELECT %s, %s, x.* FROM jsonb_to_recordset(%s::jsonb) AS x({_LEDGER_COLS})"
                " ON CONFLICT DO NOTHING RETURNING msg_id",
                (queue, created_at, _dumps(lost)),
            )
        if queue in REPLY_QUEUES:
            pass
        elif fresh:
            row_builders.upsert_instances(conn, row_builders.instance_summary(fresh))
            # the pattern catalogue, same transaction
            observed = catalogue.observe_batch(conn, fresh, prepared)
            if observed and cfg.enrich_new_keys is not None and queue == "pattern_messages":
                result.llm_requests.extend(enrichment.send_for_new_keys(conn, cfg.enrich_new_keys))
        if dead:
            conn.execute(
                "SELECT pgmq.send_batch(%s, %s::jsonb[], %s::jsonb[])",
                (
                    dlq_for(queue),
                    [d.raw for d in dead],
                    [_dlq_headers(queue, d) for d in dead],
                ),
            )
        conn.execute(ARCHIVE_SQL, (ids, queue, created_at))
    key_duplicates = {r[0] for r in dup_cur.fetchall()} if dup_cur is not None else set()
    if queue == HUB_LLM_RESULTS and (fresh or dead):
        hold = approval.hold_for_approval if cfg.pattern_approval == "required" else None
        enrichment.apply_replies(conn, fresh, dead, stale_after_s=cfg.stale_after_s, hold=hold)
    elif queue == HUB_APPROVAL_RESPONSES and fresh:
        approval.apply_responses(conn, fresh, stale_after_s=cfg.stale_after_s)
    elif fresh and queue == "pattern_messages":
        enrichment.broadcast_confirmed(conn, stale_after_s=cfg.stale_after_s)
    conflicts = [d for d in batch if d.msg_id not in won and d.msg_id not in key_duplicates]
    result.stored += len(fresh)
    result.dead_lettered += len(dead)
    result.duplicates += len(batch) - len(fresh) - len(dead)
    result.ledger_conflicts += len(conflicts)
    for d in fresh:
        result.per_instance[d.instance_id] += 1
    for d in dead:
        result.dlq_reasons[d.error_kind] += 1


def _refuse_reused_msg_ids(
    conn: psycopg.Connection, queue: str, created_at: datetime, lost: list[Delivery]
) -> None:
    """Of the messages whose ledger insert lost, one whose msg_id is in the ledger with another
    enqueued_at is not a re-read of the same message (another consumer took it) but a msg_id the
    queue handed out again without a new incarnation (its identity restarted by hand): storing
    nothing and archiving it would drop its data, so refuse loudly. (Losing on the idempotency key
    leaves no ledger row under the message's own msg_id.)"""
    reused = conn.execute(
        "SELECT l.msg_id FROM hub.ingest_ledger l"
        " JOIN unnest(%s::bigint[], %s::timestamptz[]) AS m(msg_id, enqueued_at) ON m.msg_id = l.msg_id"
        " WHERE l.queue = %s AND l.queue_created_at = %s AND l.enqueued_at <> m.enqueued_at"
        " ORDER BY 1 LIMIT 5",
        ([d.msg_id for d in lost], [d.enqueued_at for d in lost], queue, created_at),
    ).fetchall()
    if reused:
        raise IngestError(
            f"queue {queue!r}: msg_id(s) {', '.join(str(r[0]) for r in reused)} are in hub.ingest_ledger from "
            "other messages of this same queue: its msg_ids were restarted without re-creating it (e.g. "
            "TRUNCATE ... RESTART IDENTITY). Nothing of this batch was stored or archived. Save its messages, "
            "re-create the queue (pgmq.drop_queue + pgmq.create: a new incarnation) and send them again."
        )


def _store_one_by_one(
    conn: psycopg.Connection,
    queue: str,
    batch: list[Delivery],
    result: IngestResult,
    cfg: IngestConfig,
) -> None:
    """The batch was refused as a whole: store each message alone, dead-letter the ones refused."""
    with conn.transaction():
        for d in batch:
            try:
                with conn.transaction():
                    store_batch(conn, queue, [d], result, cfg)
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                d.model = None
                d.error = f"the database refused to store it: {str(exc).strip().splitlines()[0][:300]}"
                d.error_kind = "store_failed"
                with conn.transaction():
                    store_batch(conn, queue, [d], result, cfg)


def extend_if_slow(
    conn: psycopg.Connection,
    queue: str,
    batch: list[Delivery],
    read_at: float,
    cfg: IngestConfig,
    result: IngestResult,
) -> None:
    """Extend the lease when half of it is gone before the store starts."""
    if time.monotonic() - read_at > cfg.visibility_timeout_s / 2:
        conn.execute(
            "SELECT * FROM pgmq.set_vt(%s, %s::bigint[], %s)",
            (queue, [d.msg_id for d in batch], cfg.visibility_timeout_s),
        )
        conn.commit()
        result.vt_extensions += 1


def prepare_batch(queue: str, batch: list[Delivery]) -> catalogue.PreparedSummary | None:
    """What the prefetch thread can build of the store's work ahead, while the previous batch is being
    stored: the catalogue summary of a pattern_messages batch (Python work that would otherwise hold
    up the storing thread; `catalogue.observe_batch` uses it when every valid message was stored)."""
    if queue != "pattern_messages" or not batch:
        return None
    return catalogue.prepare([d for d in batch if d.error is None])


class _Prefetcher:
    """Reads and validates the next batch on a second connection while the current one is stored.

    Validation is Python CPU work and storing is mostly database work, so overlapping them is what
    lets ingest keep pace with a bare read/archive loop. On stop, a prefetched batch that will not
    be stored is made visible again at once (`set_vt` 0) instead of waiting out its lease.
    """

    def __init__(self, url: str, queue: str, cfg: IngestConfig, *, keep_polling: bool = False):
        import queue as stdlib_queue

        self.queue, self.cfg = queue, cfg
        # poll on past a dry read (the consumer decides when to stop): lingering, or `wait_while`
        self.keep_polling = keep_polling or cfg.linger_s > 0
        self.conn = db.connect(url, application_name="queue_assets-prefetch")
        self.out: stdlib_queue.Queue = stdlib_queue.Queue(maxsize=1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"ingest-prefetch-{queue}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            poll = False
            while not self.stop.is_set():
                read_at = time.monotonic()
                batch = read_batch(self.conn, self.queue, self.cfg, poll=poll)
                for i, d in enumerate(batch):
                    validate(self.queue, d, self.cfg)
                    if i % 16 == 15:
                        # Hand the GIL over: the storing thread, back from a round trip, would
                        # otherwise wait out the interpreter's 5 ms switch interval each time.
                        time.sleep(0)
                self.out.put((batch, read_at, prepare_batch(self.queue, batch)))
                if not batch and not self.keep_polling:
                    return
                poll = not batch  # lingering: the consumer decides when to stop
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self.out.put(exc)

    def get(self) -> tuple[list[Delivery], float, catalogue.PreparedSummary | None]:
        item = self.out.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stop.set()
        leftover = []
        while self.thread.is_alive() or not self.out.empty():
            try:
                item = self.out.get(timeout=0.1)
            except Exception:
                continue
            if isinstance(item, tuple):
                leftover += item[0]
        if leftover and not self.conn.closed:
            try:
                self.conn.execute(
                    "SELECT * FROM pgmq.set_vt(%s, %s::bigint[], 0)",
                    (self.queue, [d.msg_id for d in leftover]),
                )
                self.conn.commit()
            except psycopg.Error:
                pass  # the lease simply expires
        self.conn.close()


# The cyclic garbage collector runs a young-generation pass every 700 net container allocations:
# ingest allocates ~30 per message (models, rows, dicts) that reference counting frees anyway, and
# those passes (with the older generations they promote into) took a third of the Python time per
# message. While any ingest runs, the young threshold is raised; the old one is restored after.
GC_YOUNG_THRESHOLD = 50_000
_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, ...] = ()


@contextmanager
def fewer_gc_passes() -> Iterator[None]:
    """Raise the collector's young-generation threshold for the duration (nests, thread-safe)."""
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(max(GC_YOUNG_THRESHOLD, _gc_saved[0]), *_gc_saved[1:])
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0:
                gc.set_threshold(*_gc_saved)


def ingest_queue(
    conn: psycopg.Connection,
    queue: str,
    cfg: IngestConfig,
    *,
    on_batch: Callable[[IngestResult], None] | None = None,
    prefetch_url: str | None = None,
    successor_pending: Callable[[], bool] | None = None,
    wait_while: Callable[[], bool] | None = None,
) -> IngestResult:
    """Drain `queue` until it is empty or the run's cap (messages or seconds) is reached.

    With `prefetch_url`, the next batch is read and validated on a second connection while the
    current one is stored (see `_Prefetcher`). With `successor_pending`, a run past its time cap goes
    on draining while it returns True (its successor run is requested but not started yet, asked at
    most once a second), so the queue is never left without a consumer; lingering still ends it.
    With `wait_while`, a dry queue is polled on while it returns True (asked once per empty poll,
    which waits up to a second server-side), as with `linger_s`: `replies.ReplyWaiter` waits so for
    the replies to the requests its run sent.
    """
    with fewer_gc_passes():
        return _ingest_queue(
            conn,
            queue,
            cfg,
            on_batch=on_batch,
            prefetch_url=prefetch_url,
            successor_pending=successor_pending,
            wait_while=wait_while,
        )


def _ingest_queue(
    conn: psycopg.Connection,
    queue: str,
    cfg: IngestConfig,
    *,
    on_batch: Callable[[IngestResult], None] | None,
    prefetch_url: str | None,
    successor_pending: Callable[[], bool] | None,
    wait_while: Callable[[], bool] | None,
) -> IngestResult:
    validate_queue_name(queue)
    result = IngestResult(queue=queue)
    started = time.monotonic()
    (result.oldest_enqueued_at,) = db.one_row(
        conn.execute(sql.SQL("SELECT min(enqueued_at) FROM pgmq.{}").format(sql.Identifier("q_" + queue))),
        f"the oldest message of {queue}",
    )
    conn.commit()
    fetcher = (
        _Prefetcher(prefetch_url, queue, cfg, keep_polling=wait_while is not None) if prefetch_url else None
    )
    last_data = started
    poll = False
    handover_checked, handing_over = float("-inf"), False
    try:
        while True:
            if result.read >= cfg.max_messages:
                result.stopped_by = "max_messages"
                break
            if time.monotonic() - started >= cfg.max_seconds:
                if successor_pending and time.monotonic() - handover_checked >= 1.0:
                    handover_checked = time.monotonic()
                    handing_over = successor_pending()
                if not (successor_pending and handing_over):
                    result.stopped_by = "max_seconds"
                    break
            if fetcher:
                batch, read_at, prepared = fetcher.get()
            else:
                read_at = time.monotonic()
                batch = read_batch(conn, queue, cfg, poll=poll)
                for d in batch:
                    validate(queue, d, cfg)
                prepared = None  # summarised in the store: no thread to overlap it with
            if not batch:
                if time.monotonic() - last_data < cfg.linger_s or (wait_while is not None and wait_while()):
                    poll = True
                    continue
                break
            last_data, poll = time.monotonic(), False
            extend_if_slow(conn, queue, batch, read_at, cfg, result)
            if queue in REPLY_QUEUES:
                # A reply's `pattern_learned` broadcast syncs the inboxes inside the store's
                # transaction, which holds at most fanout.CREATE_BATCH new ones: create any missing
                # inbox first, in transactions of their own (a reply queue's batches are few).
                fanout.sync_inboxes(conn, cfg.stale_after_s)
            try:
                # Pipelined: BEGIN, SET and the store statement go out in one round trip.
                with conn.pipeline(), conn.transaction():
                    store_batch(conn, queue, batch, result, cfg, prepared)
            except psycopg.OperationalError:
                raise
            except psycopg.Error:
                _store_one_by_one(conn, queue, batch, result, cfg)
            result.read += len(batch)
            result.batches += 1
            if on_batch:
                on_batch(result)
    finally:
        if fetcher:
            fetcher.close()
    result.elapsed_s = time.monotonic() - started
    return result
