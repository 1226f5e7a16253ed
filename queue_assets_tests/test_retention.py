"""Retention on an aged corpus (rows 1, 89, 91 and 400 days old): exactly the right rows go."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest

from queue_assets.operations.jobs import retention_job
from queue_assets.operations.retention import run_retention
from queue_assets.resources import SharedQueueResource
from queue_assets_tests.helpers import count
from queue_assets_tests.ops_corpus import ids, put

AGES = (1, 89, 91, 400)


@pytest.fixture
def aged(conn):
    """{table: {age_days: msg_id}} for archives, DLQ archives, DLQ live rows and ordinary live rows."""
    now = conn.execute("SELECT now()").fetchone()[0]
    conn.commit()
    conn.execute("SELECT pgmq.create('inbox_singularity_1')")
    conn.commit()
    out: dict[str, dict[int, int]] = {}

    def age(days):
        return now - timedelta(days=days)

    for queue in ("llm_requests", "pattern_messages", "inbox_singularity_1", "pattern_messages_dlq"):
        out[f"pgmq.a_{queue}"] = {
            d: put(conn, queue, {"age": d, "where": "archive"}, enqueued_at=age(d + 0.01), archived_at=age(d))
            for d in AGES
        }
    for queue in ("llm_requests", "pattern_messages", "inbox_singularity_1", "pattern_messages_dlq"):
        out[f"pgmq.q_{queue}"] = {
            d: put(conn, queue, {"age": d, "where": "live"}, enqueued_at=age(d)) for d in AGES
        }
    return out


def _remaining(conn, aged, table):
    left = ids(conn, table)
    return sorted(d for d, msg_id in aged[table].items() if msg_id in left)


def test_archives_keep_rows_younger_than_the_retention(conn, aged):
    run_retention(conn, retention_days=90, dlq_retention_days=365)
    for queue in ("llm_requests", "pattern_messages", "inbox_singularity_1"):
        assert _remaining(conn, aged, f"pgmq.a_{queue}") == [1, 89], queue


def test_dlq_archive_and_dlq_live_messages_keep_the_longer_dlq_retention(conn, aged):
    run_retention(conn, retention_days=90, dlq_retention_days=365)
    assert _remaining(conn, aged, "pgmq.a_pattern_messages_dlq") == [1, 89, 91]
    assert _remaining(conn, aged, "pgmq.q_pattern_messages_dlq") == [1, 89, 91]


def test_live_messages_of_ordinary_queues_are_never_touched(conn, aged):
    run_retention(conn, retention_days=1, dlq_retention_days=1)
    for queue in ("llm_requests", "pattern_messages", "inbox_singularity_1"):
        assert _remaining(conn, aged, f"pgmq.q_{queue}") == [1, 89, 91, 400], queue


def test_report_counts_what_went_per_table(conn, aged):
    report = run_retention(conn, retention_days=90, dlq_retention_days=365)
    removed = {k: v for k, v in report.removed.items() if v}
    assert removed == {
        "pgmq.a_llm_requests": 2,
        "pgmq.a_pattern_messages": 2,
        "pgmq.a_inbox_singularity_1": 2,
        "pgmq.a_pattern_messages_dlq": 1,
        "pgmq.q_pattern_messages_dlq": 1,
    }
    assert (report.archive_rows, report.dlq_live_rows, report.total) == (7, 1, 8)


def test_dry_run_counts_the_same_rows_and_deletes_nothing(conn, aged):
    dry = run_retention(conn, retention_days=90, dlq_retention_days=365, dry_run=True)
    assert dry.total == 8
    for table, by_age in aged.items():
        assert _remaining(conn, aged, table) == sorted(by_age), table


def test_deletes_run_in_bounded_batches(conn):
    now = conn.execute("SELECT now()").fetchone()[0]
    conn.commit()
    for i in range(10):
        put(
            conn,
            "job_results",
            {"i": i},
            enqueued_at=now - timedelta(days=200),
            archived_at=now - timedelta(days=200),
        )
    seen = []
    report = run_retention(
        conn,
        retention_days=90,
        dlq_retention_days=365,
        batch_size=3,
        progress=lambda label, n, r: seen.append((label, n)),
    )
    assert [n for label, n in seen if label == "pgmq.a_job_results"] == [3, 6, 9, 10]
    assert report.removed["pgmq.a_job_results"] == 10


def test_statistics_history_older_than_the_retention_is_pruned(conn):
    now = conn.execute("SELECT now()").fetchone()[0]
    for days in (1, 91):
        conn.execute(
            "INSERT INTO hub.queue_statistics (measured_at, queue, kind, depth, visible, in_window, out_window,"
            " read_ct_0, read_ct_1, read_ct_2, read_ct_3_plus, max_read_ct, window_s)"
            " VALUES (%s, 'llm_requests', 'request_reply', 0, 0, 0, 0, 0, 0, 0, 0, 0, 3600)",
            (now - timedelta(days=days),),
        )
    conn.commit()
    report = run_retention(conn, retention_days=90, dlq_retention_days=365)
    assert report.removed["hub.queue_statistics"] == 1
    assert count(conn, "hub.queue_statistics") == 1


def test_bad_retention_values_are_refused(conn):
    with pytest.raises(ValueError, match="retention_days = 0"):
        run_retention(conn, retention_days=0, dlq_retention_days=365)


def test_retention_job_reports_what_it_removed(conn, aged, db_url, monkeypatch):
    monkeypatch.setenv("SHARED_QUEUE_RETENTION_DAYS", "90")
    monkeypatch.setenv("SHARED_QUEUE_DLQ_RETENTION_DAYS", "365")
    result = retention_job.execute_in_process(
        resources={"shared_queue": SharedQueueResource(db_url=db_url)},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    [event] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
    md = event.step_output_data.metadata
    assert (
        md["removed_total"].value,
        md["removed_archived_messages"].value,
        md["removed_dead_letters"].value,
    ) == (8, 7, 1)
    assert "`pgmq.a_llm_requests` | 2" in md["removed"].value
    assert _remaining(conn, aged, "pgmq.a_llm_requests") == [1, 89]
