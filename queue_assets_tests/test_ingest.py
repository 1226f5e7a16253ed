"""Ingest on real PostgreSQL + pgmq: exactly-once effects, dead letters, idempotency, concurrency."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

import psycopg
import pytest

from queue_assets.ingest.core import (
    IngestConfig,
    IngestError,
    IngestResult,
    ingest_queue,
    read_batch,
    store_batch,
    validate,
)
from queue_assets_tests.corpus import BAD_INPUT_CORPUS, VALID_SAMPLES
from queue_assets_tests.helpers import count, dlq_messages, pattern_message, queue_depth, send_many, send_raw

CFG = IngestConfig(batch_size=50, visibility_timeout_s=30, max_attempts=3, max_message_bytes=4096)


def test_valid_pattern_detection_is_stored_one_row_per_pattern(conn):
    send_raw(conn, "pattern_messages", pattern_message("singularity-1", 1, patterns=3))
    result = ingest_queue(conn, "pattern_messages", CFG)
    assert (result.read, result.stored, result.dead_lettered) == (1, 1, 0)
    assert count(conn, "hub.pattern_observations") == 3
    assert count(conn, "hub.ingest_ledger", "outcome = 'stored'") == 1
    assert queue_depth(conn, "pattern_messages") == 0
    assert count(conn, "pgmq.a_pattern_messages") == 1


def test_unknown_extra_fields_are_kept(conn):
    send_raw(conn, "pattern_messages", pattern_message("singularity-1", 1, patterns=1))
    ingest_queue(conn, "pattern_messages", CFG)
    attrs = conn.execute("SELECT attributes FROM hub.pattern_observations").fetchone()[0]
    assert attrs["seq"] == 1


def test_stored_times_and_queue_columns_are_exact(conn):
    """Rows carry datetimes as orjson writes them and the queue columns from the statement: breaks if
    an offset, the microseconds, the incarnation or a row's queue were lost on the way."""
    msg = json.loads(pattern_message("singularity-1", 1, patterns=2))
    msg["timestamp"] = "2025-10-25T14:00:00.123456+02:00"
    send_raw(conn, "pattern_messages", json.dumps(msg))
    enqueued, created = conn.execute(
        "SELECT q.enqueued_at, m.created_at FROM pgmq.q_pattern_messages q, pgmq.meta m"
        " WHERE m.queue_name = 'pattern_messages'"
    ).fetchone()
    assert ingest_queue(conn, "pattern_messages", CFG).stored == 1
    ledger = conn.execute(
        "SELECT queue, queue_created_at, enqueued_at, produced_at FROM hub.ingest_ledger"
    ).fetchall()
    produced = datetime(2025, 10, 25, 12, 0, 0, 123456, tzinfo=UTC)
    assert ledger == [("pattern_messages", created, enqueued, produced)]
    observations = conn.execute(
        "SELECT queue, queue_created_at, ordinal, observed_at FROM hub.pattern_observations ORDER BY ordinal"
    ).fetchall()
    assert observations == [("pattern_messages", created, i, produced) for i in range(2)]


def test_every_valid_sample_is_stored_in_its_table(conn):
    queues = {
        "pattern_detection": "pattern_messages",
        "code_analysis": "pattern_messages",
        "learned_patterns": "learned_patterns",
        "learned_artifacts": "learned_patterns",
        "heartbeat": "instance_heartbeat",
    }
    for raw in VALID_SAMPLES:
        send_raw(conn, queues[json.loads(raw)["type"]], raw)
    for q in ("pattern_messages", "learned_patterns", "instance_heartbeat"):
        r = ingest_queue(conn, q, CFG)
        assert r.dead_lettered == 0, dlq_messages(conn, q)
    assert count(conn, "hub.ingest_ledger", "outcome = 'stored'") == len(VALID_SAMPLES)
    assert count(conn, "hub.instances") >= 1


def test_bad_input_corpus_is_dead_lettered_with_reasons_and_valid_messages_in_the_batch_are_stored(conn):
    kinds = {k for k, _ in BAD_INPUT_CORPUS}
    assert len(kinds) >= 10
    raws = []
    for i, (_, raw) in enumerate(BAD_INPUT_CORPUS):
        raws += [pattern_message("singularity-1", i), raw]
    send_many(conn, "pattern_messages", raws)
    result = ingest_queue(conn, "pattern_messages", CFG)
    assert result.stored == len(BAD_INPUT_CORPUS)
    assert result.dead_lettered == len(BAD_INPUT_CORPUS)
    dead = dlq_messages(conn, "pattern_messages")
    assert len(dead) == len(BAD_INPUT_CORPUS)
    sent = [json.loads(raw) for _, raw in BAD_INPUT_CORPUS]
    for (message, headers), original in zip(dead, sent, strict=True):
        assert message == original  # the original message, unchanged
        assert headers["x-dlq-source-queue"] == "pattern_messages"
        assert len(headers["x-dlq-reason"]) > 10
    assert queue_depth(conn, "pattern_messages") == 0


def test_idempotency_key_from_the_same_instance_is_stored_once(conn):
    raw = pattern_message("singularity-1", 1)
    send_many(conn, "pattern_messages", [raw, raw, raw], [{"idempotency_key": "k1"}] * 3)
    send_raw(conn, "pattern_messages", pattern_message("singularity-2", 1), {"idempotency_key": "k1"})
    result = ingest_queue(conn, "pattern_messages", CFG)
    assert (result.stored, result.duplicates) == (2, 2)
    assert count(conn, "hub.ingest_ledger", "outcome = 'duplicate'") == 2


def test_a_batch_read_but_never_stored_is_stored_once_after_the_lease_expires(conn):
    send_many(conn, "pattern_messages", [pattern_message("singularity-1", i) for i in range(5)])
    short = IngestConfig(batch_size=50, visibility_timeout_s=1, max_attempts=3)
    assert len(read_batch(conn, "pattern_messages", short)) == 5  # the "crashed" consumer
    assert ingest_queue(conn, "pattern_messages", short).read == 0  # still leased
    time.sleep(1.2)
    result = ingest_queue(conn, "pattern_messages", short)
    assert (result.read, result.stored) == (5, 5)
    assert conn.execute("SELECT min(read_ct) FROM hub.ingest_ledger").fetchone()[0] == 2


def test_a_message_over_the_attempt_limit_goes_to_the_dlq(conn):
    send_raw(conn, "pattern_messages", pattern_message("singularity-1", 1))
    short = IngestConfig(batch_size=10, visibility_timeout_s=0, max_attempts=2)
    for _ in range(2):
        read_batch(conn, "pattern_messages", short)
    result = ingest_queue(conn, "pattern_messages", short)
    assert (result.stored, result.dead_lettered) == (0, 1)
    [(_, headers)] = dlq_messages(conn, "pattern_messages")
    assert "delivered 3 times" in headers["x-dlq-reason"]


def test_a_message_the_database_refuses_is_dead_lettered_alone(conn):
    # Two instance ids that map to the same inbox queue: the second is refused by hub.instances.
    send_many(
        conn,
        "instance_heartbeat",
        [
            json.dumps({"type": "heartbeat", "instance_id": "node-a", "timestamp": "2025-10-25T12:00:00Z"}),
            json.dumps({"type": "heartbeat", "instance_id": "node_a", "timestamp": "2025-10-25T12:00:01Z"}),
            json.dumps({"type": "heartbeat", "instance_id": "node-b", "timestamp": "2025-10-25T12:00:02Z"}),
        ],
    )
    result = ingest_queue(conn, "instance_heartbeat", CFG)
    assert (result.stored, result.dead_lettered) == (2, 1)
    [(message, headers)] = dlq_messages(conn, "instance_heartbeat")
    assert message["instance_id"] in ("node-a", "node_a")
    assert "database refused" in headers["x-dlq-reason"]


def _backend_waits_on_a_lock(conn: psycopg.Connection, pid: int) -> bool:
    row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    conn.commit()
    return row is not None and row[0] == "Lock"


def test_two_concurrent_consumers_on_one_queue_store_each_message_once(db_url):
    """Real contention: consumer A leases a batch and pauses before storing it; its lease (1 s)
    expires and consumer B reads the very same messages again. A then writes its ledger and data rows
    and, before it commits, B stores the same batch: B's ledger insert waits on A's uncommitted rows
    (seen in pg_stat_activity) and, once A commits, takes the conflict path: B stores nothing and
    reports every message as a ledger conflict. Then both run the full ingest loop side by side on
    3,000 more messages with a lease shorter than their pauses, so they keep re-reading each other's
    batches. Each message is stored exactly once, nothing is lost.

    Fails if the ledger conflict stops holding a repeat off (e.g. the ledger insert without its
    ON CONFLICT, or data rows written for messages whose ledger row lost): B doubles or errors.
    """
    short = IngestConfig(batch_size=100, visibility_timeout_s=1, max_attempts=50)
    with psycopg.connect(db_url) as a, psycopg.connect(db_url) as b, psycopg.connect(db_url) as watch:
        send_many(a, "pattern_messages", [pattern_message(f"singularity-{i % 3}", i) for i in range(100)])
        batch_a = read_batch(a, "pattern_messages", short)
        time.sleep(1.2)  # A is paused between read and store; its lease runs out
        batch_b = read_batch(b, "pattern_messages", short)
        assert [d.msg_id for d in batch_b] == [d.msg_id for d in batch_a]  # both hold the same messages
        assert {d.read_ct for d in batch_b} == {2}
        for d in batch_a + batch_b:
            validate("pattern_messages", d, short)
        res_a, res_b = IngestResult(queue="pattern_messages"), IngestResult(queue="pattern_messages")
        b_pid = b.info.backend_pid

        def store_b():
            with b.transaction():
                store_batch(b, "pattern_messages", batch_b, res_b, IngestConfig())

        with a.transaction():
            store_batch(
                a, "pattern_messages", batch_a, res_a, IngestConfig()
            )  # A's rows written, not committed
            t = threading.Thread(target=store_b)
            t.start()
            deadline = time.monotonic() + 10
            while not _backend_waits_on_a_lock(watch, b_pid):
                assert time.monotonic() < deadline, "consumer B never waited for consumer A's ledger rows"
                time.sleep(0.01)
        t.join(timeout=30)
        assert (res_a.stored, res_a.ledger_conflicts) == (100, 0)
        assert (res_b.stored, res_b.duplicates, res_b.ledger_conflicts) == (0, 100, 100)
        assert count(watch, "hub.ingest_ledger") == 100 and count(watch, "hub.pattern_observations") == 200

        # The full loop, two consumers at once, each pausing 1.5 s after a batch (longer than the lease),
        # so the batch its prefetcher already leased is read again by the other consumer meanwhile.
        send_many(a, "pattern_messages", [pattern_message(f"singularity-{i % 3}", i) for i in range(3000)])
    results = []

    def consume():
        with psycopg.connect(db_url) as c:
            results.append(
                ingest_queue(
                    c,
                    "pattern_messages",
                    short,
                    prefetch_url=db_url,
                    on_batch=lambda r: time.sleep(1.5) if r.batches <= 3 else None,
                )
            )

    threads = [threading.Thread(target=consume) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with psycopg.connect(db_url) as c:
        assert count(c, "hub.ingest_ledger") == 3100
        assert count(c, "hub.pattern_observations") == 6200
        assert (
            c.execute(
                "SELECT count(*) FROM (SELECT msg_id FROM hub.pattern_observations GROUP BY msg_id, ordinal"
                " HAVING count(*) > 1) d"
            ).fetchone()[0]
            == 0
        )
        assert queue_depth(c, "pattern_messages") == 0
        assert count(c, "pgmq.a_pattern_messages") == 3100
    assert sum(r.stored for r in results) == 3000
    assert all(r.read > 0 for r in results)  # both really consumed
    print(
        f"loop: {sum(r.read for r in results)} read, {sum(r.ledger_conflicts for r in results)} ledger conflicts"
    )


def test_heartbeats_register_instances_with_latest_state(conn):
    for ts, status in (
        ("2025-10-25T12:00:00Z", "ok"),
        ("2025-10-25T12:05:00Z", "degraded"),
        ("2025-10-25T12:01:00Z", "late"),
    ):
        send_raw(
            conn,
            "instance_heartbeat",
            json.dumps(
                {
                    "type": "heartbeat",
                    "instance_id": "singularity-3",
                    "timestamp": ts,
                    "version": "1.4.0",
                    "status": status,
                }
            ),
        )
    ingest_queue(conn, "instance_heartbeat", CFG)
    row = conn.execute("SELECT status, heartbeat_count, inbox_queue FROM hub.instances").fetchone()
    assert row == ("degraded", 3, "inbox_singularity_3")


@pytest.mark.parametrize("cap", [7])
def test_a_run_stops_at_its_cap_and_leaves_the_rest(conn, cap):
    send_many(conn, "pattern_messages", [pattern_message("singularity-1", i) for i in range(20)])
    result = ingest_queue(conn, "pattern_messages", IngestConfig(batch_size=5, max_messages=cap))
    assert result.stopped_by == "max_messages"
    assert result.read == 10  # whole batches: the cap is checked between batches
    assert queue_depth(conn, "pattern_messages") == 10


def test_a_long_batch_gets_its_lease_extended(conn):
    from queue_assets.ingest.core import IngestResult, extend_if_slow

    send_raw(conn, "pattern_messages", pattern_message("singularity-1", 1))
    cfg = IngestConfig(visibility_timeout_s=30)
    batch = read_batch(conn, "pattern_messages", cfg)
    vt_before = conn.execute("SELECT vt FROM pgmq.q_pattern_messages").fetchone()[0]
    result = IngestResult(queue="pattern_messages")
    extend_if_slow(conn, "pattern_messages", batch, time.monotonic(), cfg, result)  # fresh: no extension
    assert result.vt_extensions == 0
    extend_if_slow(conn, "pattern_messages", batch, time.monotonic() - 20, cfg, result)  # 20 s of 30 gone
    vt_after = conn.execute("SELECT vt FROM pgmq.q_pattern_messages").fetchone()[0]
    assert result.vt_extensions == 1
    assert vt_after > vt_before


def test_a_lingering_run_picks_up_messages_that_arrive_after_the_queue_ran_dry(conn, db_url):
    send_raw(conn, "pattern_messages", pattern_message("singularity-1", 1))

    def late_producer():
        time.sleep(1.0)
        with psycopg.connect(db_url) as c:
            send_raw(c, "pattern_messages", pattern_message("singularity-1", 2))

    t = threading.Thread(target=late_producer)
    t.start()
    result = ingest_queue(conn, "pattern_messages", IngestConfig(linger_s=3.0), prefetch_url=db_url)
    t.join()
    assert (result.stored, result.stopped_by) == (2, "drained")
    assert result.elapsed_s >= 3.0


def test_a_run_without_linger_ends_as_soon_as_the_queue_is_empty(conn, db_url):
    send_raw(conn, "pattern_messages", pattern_message("singularity-1", 1))
    result = ingest_queue(conn, "pattern_messages", IngestConfig(linger_s=0.0), prefetch_url=db_url)
    assert result.stored == 1
    assert result.elapsed_s < 3.0


def _recreate_queue(conn: psycopg.Connection, queue: str) -> None:
    """What an operator does to clear a queue (pgmq's docs): its msg_ids start again at 1."""
    conn.execute("SELECT pgmq.drop_queue(%s)", (queue,))
    conn.execute("SELECT pgmq.create(%s)", (queue,))
    conn.commit()


def test_a_recreated_queue_whose_msg_ids_start_again_has_every_new_message_stored(conn):
    """1,000 messages taken, the queue dropped and created again (msg_ids 1..1,000 once more), 1,000
    new messages: all 1,000 are stored with their data, none taken for a duplicate.

    Fails on a ledger keyed on (queue, msg_id) alone: the new messages hit the old ledger rows, are
    counted as duplicates and archived with no data stored (stored 0, ledger 1,000, observations 2,000).
    """
    send_many(
        conn,
        "pattern_messages",
        [pattern_message(f"singularity-{i % 4}", i, patterns=1) for i in range(1000)],
    )
    first = ingest_queue(conn, "pattern_messages", CFG)
    assert (first.read, first.stored) == (1000, 1000)
    _recreate_queue(conn, "pattern_messages")
    send_many(
        conn,
        "pattern_messages",
        [pattern_message(f"singularity-{i % 4}", 10_000 + i, patterns=2) for i in range(1000)],
    )
    assert conn.execute("SELECT min(msg_id), max(msg_id) FROM pgmq.q_pattern_messages").fetchone() == (
        1,
        1000,
    )

    second = ingest_queue(conn, "pattern_messages", CFG)
    assert (second.read, second.stored, second.duplicates, second.dead_lettered) == (1000, 1000, 0, 0)
    assert second.ledger_conflicts == 0
    assert count(conn, "hub.ingest_ledger", "outcome = 'stored'") == 2000
    assert count(conn, "hub.pattern_observations") == 1000 + 2 * 1000
    seqs = {
        r[0]
        for r in conn.execute(
            "SELECT (attributes->>'seq')::int FROM hub.pattern_observations o JOIN pgmq.meta m"
            " ON m.queue_name = o.queue AND m.created_at = o.queue_created_at"
        ).fetchall()
    }
    assert seqs == set(range(10_000, 11_000))  # the new queue's rows are the new messages' data
    assert count(conn, "pgmq.a_pattern_messages") == 1000 and queue_depth(conn, "pattern_messages") == 0


def test_a_batch_read_before_its_queue_was_recreated_is_stored_but_never_archives_the_new_queue(conn):
    """A batch leased from the old queue is stored under the old incarnation after the queue was
    dropped and created again; its archive must not take the new queue's messages with the same ids.

    Fails when the archive ignores the incarnation: the 5 new messages are archived unread.
    """
    send_many(conn, "pattern_messages", [pattern_message("singularity-1", i) for i in range(5)])
    batch = read_batch(conn, "pattern_messages", CFG)
    for d in batch:
        validate("pattern_messages", d, CFG)
    _recreate_queue(conn, "pattern_messages")
    send_many(conn, "pattern_messages", [pattern_message("singularity-2", 100 + i) for i in range(5)])
    result = IngestResult(queue="pattern_messages")
    with conn.transaction():
        store_batch(conn, "pattern_messages", batch, result, IngestConfig())
    assert result.stored == 5
    assert queue_depth(conn, "pattern_messages") == 5  # the new messages are still there, unread
    assert ingest_queue(conn, "pattern_messages", CFG).stored == 5
    assert count(conn, "hub.pattern_observations") == 20


def test_migration_005_backfills_the_incarnation_and_keeps_an_earlier_queues_rows_apart(fresh_db_url):
    """A database at migration 004 whose ledger holds a message of an earlier incarnation of the queue
    (enqueued before the queue was created) and one of the current one: migration 005 (applied twice,
    it is idempotent) gives the current one the queue's created_at and leaves the earlier one at
    the epoch, so the current queue's msg_id 1 is stored, not taken for the earlier msg_id 1.

    Fails if the backfill gives every row the current incarnation (the new msg_id 1 is a "duplicate").
    """
    from queue_assets import bootstrap
    from queue_assets.queues import ALL_STATIC_QUEUES

    migrations = bootstrap.load_migrations()
    assert [v for v, _, _ in migrations if v.startswith("005")] == ["005_queue_incarnation"]
    with psycopg.connect(fresh_db_url) as c:
        report = bootstrap.BootstrapReport()
        bootstrap.ensure_pgmq(c, report)
        bootstrap.ensure_queues(c, ALL_STATIC_QUEUES, report)
        for version, _, text in migrations:
            if version < "005":
                c.execute(text)
        created = c.execute(
            "SELECT created_at FROM pgmq.meta WHERE queue_name = 'pattern_messages'"
        ).fetchone()[0]
        for msg_id, enqueued in ((1, "-1 day"), (7, "+1 second")):
            c.execute(
                "INSERT INTO hub.ingest_ledger (queue, msg_id, outcome, enqueued_at, read_ct)"
                " VALUES ('pattern_messages', %s, 'stored', %s::timestamptz + %s::interval, 1)",
                (msg_id, created, enqueued),
            )
            c.execute(
                "INSERT INTO hub.pattern_observations (queue, msg_id, ordinal, instance_id, pattern_type, name,"
                " observed_at) VALUES ('pattern_messages', %s, 0, 'old', 'framework', 'x', now())",
                (msg_id,),
            )
        text_005 = next(t for v, _, t in migrations if v == "005_queue_incarnation")
        c.execute(text_005)
        c.execute(text_005)
        c.commit()
        for table in ("ingest_ledger", "pattern_observations"):
            got = c.execute(f"SELECT msg_id, queue_created_at FROM hub.{table} ORDER BY msg_id").fetchall()
            assert got == [(1, _epoch()), (7, created)], table
        pk = c.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'hub.ingest_ledger'::regclass"
            " AND contype = 'p'"
        ).fetchone()[0]
        assert pk == "PRIMARY KEY (queue, queue_created_at, msg_id)"
        for (
            version,
            _,
            text,
        ) in migrations:  # the rest of the schema today's ingest writes to (sql/010: catalogue)
            if version > "005":
                c.execute(text)
        c.commit()
        assert send_raw(c, "pattern_messages", pattern_message("singularity-1", 1)) == 1
        result = ingest_queue(c, "pattern_messages", CFG)
        assert (result.stored, result.duplicates) == (1, 0)
        assert count(c, "hub.pattern_observations") == 4


def _epoch():
    """The incarnation of rows from an earlier, gone queue ('epoch')."""
    from datetime import UTC, datetime

    return datetime(1970, 1, 1, tzinfo=UTC)


def test_msg_ids_restarted_without_a_new_incarnation_stop_the_run_instead_of_dropping_data(conn):
    """TRUNCATE ... RESTART IDENTITY numbers a queue from 1 again under the same pgmq.meta row (and
    with the old archived rows gone, say by archive retention, pgmq.archive does not object): the
    ledger cannot tell the incarnations apart, so the run must fail loudly, store and archive nothing
    of the batch, and leave the messages in the queue.

    Fails without the enqueued_at check on ledger conflicts: the 3 new messages are archived as
    duplicates with no data stored.
    """
    send_many(conn, "pattern_messages", [pattern_message("singularity-1", i) for i in range(3)])
    assert ingest_queue(conn, "pattern_messages", CFG).stored == 3
    conn.execute("TRUNCATE pgmq.q_pattern_messages RESTART IDENTITY")
    conn.execute("TRUNCATE pgmq.a_pattern_messages")  # archive retention took the old archived rows
    conn.commit()
    send_many(conn, "pattern_messages", [pattern_message("singularity-2", 100 + i) for i in range(3)])
    with pytest.raises(
        IngestError, match=r"msg_id\(s\) 1, 2, 3 are in hub.ingest_ledger from other messages"
    ):
        ingest_queue(conn, "pattern_messages", CFG)
    conn.rollback()
    assert queue_depth(conn, "pattern_messages") == 3 and count(conn, "pgmq.a_pattern_messages") == 0
    assert count(conn, "hub.ingest_ledger") == 3 and count(conn, "hub.pattern_observations") == 6
