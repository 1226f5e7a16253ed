"""The exact accounting of a soak: what the instances published against what the hub stored.

Published (valid) messages are the fleet's records, one per idempotency key. The hub's side is
`hub.ingest_ledger` (one row per msg_id taken: stored, duplicate or dead_lettered), the
dead-letter queues (whose messages keep their original headers, so a valid message that was
dead-lettered is found by its key and a malformed one by its `soak_bad_id`), and the data tables.

The pass condition, asserted exactly:
- every message an instance made was sent (none left in its buffer);
- every published key is stored or dead-lettered, never both, never missing;
- nothing is stored that was not published;
- no message is taken for a duplicate of a key the hub never stored (its data would be dropped);
- every malformed message is in a dead-letter queue exactly once;
- the data tables hold exactly the rows the stored messages make (no row doubled by a retry);
- `hub.instances.heartbeat_count`, an additive counter no key guards, equals each instance's
  stored heartbeats (a retry applied twice would count twice).

"A key stored twice" is not among them: the ledger's unique index on (queue, instance_id,
idempotency_key) for stored rows makes it impossible, so counting it could never fail.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from queue_assets.names import dlq_for
from queue_assets.queues import CONSUMED_QUEUES

from .publisher import Record

TABLE_OF_KIND = {
    "pattern_detection": "pattern_observations",
    "code_analysis": "code_analyses",
    "learned_patterns": "learned_artifacts",
    "heartbeat": "heartbeats",
}


@dataclass(frozen=True)
class LedgerRow:
    queue: str
    msg_id: int
    key: str | None
    outcome: str
    enqueued: float
    stored: float


@dataclass
class Accounting:
    published: int = 0
    unsent: int = 0
    stored: int = 0
    dead_lettered_valid: int = 0
    dead_lettered_valid_reasons: list[str] = field(default_factory=list)
    """For each valid message in a dead-letter queue (up to 10): its key, kind, reason and read_ct."""
    stored_and_dead_lettered: int = 0
    missing: list[str] = field(default_factory=list)
    """Published, not stored, not dead-lettered, and no longer in its queue: lost."""
    pending: int = 0
    """Published and still in its queue (not yet ingested): not lost, not yet done."""
    stored_unpublished: int = 0
    duplicate_deliveries: int = 0
    """Ledger rows with outcome `duplicate`: a producer retry the hub recognised by its key."""
    duplicates_never_stored: list[str] = field(default_factory=list)
    """Keys the ledger took for a duplicate while no message with that key is stored: data dropped."""
    heartbeats_expected: dict[str, int] = field(default_factory=dict)
    """Per instance: its stored heartbeat messages."""
    heartbeats_counted: dict[str, int] = field(default_factory=dict)
    """Per instance: `hub.instances.heartbeat_count`."""
    bad_sent: int = 0
    bad_in_dlq: int = 0
    bad_in_dlq_twice: int = 0
    bad_stored: int = 0
    rows_expected: dict[str, int] = field(default_factory=dict)
    rows_actual: dict[str, int] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        out = []
        if self.unsent:
            out.append(f"{self.unsent} messages were never sent")
        if self.missing:
            out.append(
                f"{len(self.missing)} published messages are neither stored, dead-lettered nor queued: "
                f"lost (e.g. {self.missing[:5]})"
            )
        if self.duplicates_never_stored:
            out.append(
                f"{len(self.duplicates_never_stored)} messages taken for duplicates of a key that is not "
                f"stored: their data was dropped (e.g. {self.duplicates_never_stored[:5]})"
            )
        if self.stored_and_dead_lettered:
            out.append(f"{self.stored_and_dead_lettered} keys both stored and dead-lettered")
        if self.stored_unpublished:
            out.append(f"{self.stored_unpublished} stored keys that no instance published")
        if self.published != self.stored + self.dead_lettered_valid + self.pending:
            out.append(
                f"published {self.published} != stored {self.stored} + dead-lettered "
                f"{self.dead_lettered_valid} + still queued {self.pending}"
            )
        if self.bad_in_dlq != self.bad_sent or self.bad_in_dlq_twice or self.bad_stored:
            out.append(
                f"malformed: {self.bad_sent} sent, {self.bad_in_dlq} in the DLQs "
                f"({self.bad_in_dlq_twice} twice), {self.bad_stored} stored"
            )
        for table, n in self.rows_expected.items():
            if self.rows_actual.get(table) != n:
                out.append(f"hub.{table} holds {self.rows_actual.get(table)} rows, expected {n}")
        wrong = {
            i: (self.heartbeats_counted.get(i, 0), n)
            for i, n in self.heartbeats_expected.items()
            if self.heartbeats_counted.get(i, 0) != n
        }
        wrong |= {
            i: (n, 0) for i, n in self.heartbeats_counted.items() if n and i not in self.heartbeats_expected
        }
        if wrong:
            out.append(
                "hub.instances.heartbeat_count differs from the stored heartbeats (counted, stored): "
                + ", ".join(f"{i} {c}" for i, c in sorted(wrong.items())[:5])
            )
        return out

    def final_problems(self) -> list[str]:
        """`problems`, and also every message still queued (at the end, everything must be done)."""
        out = self.problems
        if self.pending:
            out.append(f"{self.pending} published messages are still waiting in their queues")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict:
        return {
            "published": self.published,
            "unsent": self.unsent,
            "stored": self.stored,
            "dead_lettered_valid": self.dead_lettered_valid,
            "dead_lettered_valid_reasons": self.dead_lettered_valid_reasons,
            "missing": len(self.missing),
            "pending": self.pending,
            "duplicate_deliveries_dropped": self.duplicate_deliveries,
            "duplicates_never_stored": len(self.duplicates_never_stored),
            "heartbeats_stored": sum(self.heartbeats_expected.values()),
            "heartbeats_counted": sum(self.heartbeats_counted.values()),
            "malformed_sent": self.bad_sent,
            "malformed_in_dlq": self.bad_in_dlq,
            "rows_expected": self.rows_expected,
            "rows_actual": self.rows_actual,
            "problems": self.problems,
            "final_problems": self.final_problems(),
        }


def fetch_ledger(conn: psycopg.Connection) -> list[LedgerRow]:
    rows = fetch_ledger_in_tx(conn)
    conn.commit()
    return rows


def fetch_ledger_in_tx(conn: psycopg.Connection) -> list[LedgerRow]:
    rows = conn.execute(
        "SELECT queue, msg_id, idempotency_key, outcome, extract(epoch FROM enqueued_at)::float8,"
        " extract(epoch FROM stored_at)::float8 FROM hub.ingest_ledger"
    ).fetchall()
    return [LedgerRow(*r) for r in rows]


def stored_keys(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT idempotency_key FROM hub.ingest_ledger WHERE outcome = 'stored' AND idempotency_key IS NOT NULL"
    ).fetchall()
    conn.commit()
    return {r[0] for r in rows}


def dead_letter_headers(conn: psycopg.Connection) -> tuple[collections.Counter, collections.Counter]:
    """(idempotency keys, soak_bad_ids) of every message in the consumed queues' DLQs (live and archived)."""
    out = dead_letter_headers_in_tx(conn)
    conn.commit()
    return out


def dead_letter_headers_in_tx(conn: psycopg.Connection) -> tuple[collections.Counter, collections.Counter]:
    keys, bad, _ = dead_letters_in_tx(conn)
    return keys, bad


def dead_letters_in_tx(
    conn: psycopg.Connection,
) -> tuple[collections.Counter, collections.Counter, dict[str, str]]:
    """(idempotency keys, soak_bad_ids, key -> why the hub dead-lettered it) of the consumed queues' DLQs."""
    keys: collections.Counter = collections.Counter()
    bad: collections.Counter = collections.Counter()
    reasons: dict[str, str] = {}
    for queue in CONSUMED_QUEUES:
        dlq = dlq_for(queue)
        for prefix in ("q_", "a_"):
            rows = conn.execute(
                sql.SQL(
                    "SELECT headers->>'idempotency_key', headers->>'soak_bad_id', headers->>'x-dlq-kind',"
                    " headers->>'x-dlq-reason', headers->>'x-dlq-read-ct', headers->>'x-dlq-failed-at'"
                    " FROM pgmq.{}"
                ).format(sql.Identifier(prefix + dlq))
            ).fetchall()
            for key, bad_id, kind, reason, read_ct, failed_at in rows:
                if bad_id:
                    bad[bad_id] += 1
                elif key:
                    keys[key] += 1
                    reasons[key] = f"{queue}: {kind}: {reason} (read_ct {read_ct}, at {failed_at})"
    return keys, bad, reasons


def table_rows_in_tx(conn: psycopg.Connection) -> dict[str, int]:
    out = {}
    for table in TABLE_OF_KIND.values():
        out[table] = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("hub", table))
        ).fetchone()[0]
    return out


@dataclass(frozen=True)
class HubState:
    """What the hub holds, read in one snapshot: the input of `tally`."""

    ledger: list[LedgerRow]
    dlq_keys: collections.Counter
    """Idempotency keys of the valid messages in the dead-letter queues."""
    dlq_reasons: dict[str, str]
    """Idempotency key -> the hub's reason for dead-lettering it."""
    bad_in_dlq: collections.Counter
    """`soak_bad_id`s of the malformed messages in the dead-letter queues."""
    rows_actual: dict[str, int]
    queued: set[tuple[str, int]]
    heartbeat_counts: dict[str, int]
    """`hub.instances.heartbeat_count` per instance."""


def account(
    conn: psycopg.Connection, records: list[Record], bad_sent: int, *, upto: float | None = None
) -> Accounting:
    """The accounting of the records made up to `upto` (default: all of them).

    Everything is read in one REPEATABLE READ snapshot, so the ledger, the dead-letter queues, the
    data tables and the instances agree with each other while ingest goes on.
    """
    conn.commit()
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        dlq_keys, bad, reasons = dead_letters_in_tx(conn)
        state = HubState(
            ledger=fetch_ledger_in_tx(conn),
            dlq_keys=dlq_keys,
            dlq_reasons=reasons,
            bad_in_dlq=bad,
            rows_actual=table_rows_in_tx(conn),
            queued=queued_ids_in_tx(conn),
            heartbeat_counts=dict(
                conn.execute("SELECT instance_id, heartbeat_count FROM hub.instances").fetchall()
            ),
        )
    finally:
        conn.commit()
        conn.isolation_level = None
    return tally(records, state, bad_sent, upto=upto)


def tally(records: list[Record], hub: HubState, bad_sent: int, *, upto: float | None = None) -> Accounting:
    """Compare the instances' records with what the hub holds (pure: no database).

    Expected data rows and heartbeat counts are computed over every stored key (records made after
    `upto` included), so they match the snapshot exactly.
    """
    all_records = {r.key: r for r in records}
    subject = {k: r for k, r in all_records.items() if upto is None or r.created <= upto}
    published = {k: r for k, r in subject.items() if r.msg_id is not None}
    stored = {row.key for row in hub.ledger if row.outcome == "stored" and row.key}
    dlq_keys = hub.dlq_keys
    acc = Accounting(published=len(published), unsent=len(subject) - len(published))
    acc.stored = sum(1 for k in published if k in stored)
    acc.stored_unpublished = sum(1 for k in stored if k not in all_records)
    dead_valid = [k for k in published if k in dlq_keys and k not in stored]
    acc.dead_lettered_valid = len(dead_valid)
    acc.dead_lettered_valid_reasons = [f"{k}: {hub.dlq_reasons.get(k)}" for k in sorted(dead_valid)[:10]]
    acc.stored_and_dead_lettered = sum(1 for k in dlq_keys if k in stored)
    not_done = [r for k, r in published.items() if k not in stored and k not in dlq_keys]
    acc.pending = sum(1 for r in not_done if (r.queue, r.msg_id) in hub.queued)
    acc.missing = sorted(r.key for r in not_done if (r.queue, r.msg_id) not in hub.queued)
    duplicates = [row.key for row in hub.ledger if row.outcome == "duplicate"]
    acc.duplicate_deliveries = len(duplicates)
    acc.duplicates_never_stored = sorted({k for k in duplicates if k and k not in stored})
    acc.bad_sent = bad_sent
    acc.bad_in_dlq = len(hub.bad_in_dlq)
    acc.bad_in_dlq_twice = sum(1 for n in hub.bad_in_dlq.values() if n > 1)
    expected = dict.fromkeys(TABLE_OF_KIND.values(), 0)
    heartbeats: collections.Counter = collections.Counter()
    for key in stored:
        rec = all_records.get(key)
        if rec is not None:
            expected[TABLE_OF_KIND[rec.kind]] += rec.rows
            if rec.kind == "heartbeat":
                heartbeats[rec.instance] += 1
    acc.rows_expected = expected
    acc.rows_actual = hub.rows_actual
    acc.heartbeats_expected = dict(heartbeats)
    acc.heartbeats_counted = dict(hub.heartbeat_counts)
    return acc


def queued_ids_in_tx(conn: psycopg.Connection) -> set[tuple[str, int]]:
    """(queue, msg_id) of every message still in a consumed queue."""
    out = set()
    for queue in CONSUMED_QUEUES:
        rows = conn.execute(
            sql.SQL("SELECT msg_id FROM pgmq.{}").format(sql.Identifier("q_" + queue))
        ).fetchall()
        out.update((queue, r[0]) for r in rows)
    return out


def unaccounted(conn: psycopg.Connection, records: list[Record]) -> int:
    """How many of `records` are not yet stored or dead-lettered (unsent ones included)."""
    if not records:
        return 0
    done = stored_keys(conn)
    keys, _ = dead_letter_headers(conn)
    return sum(1 for r in records if r.key not in done and r.key not in keys)
