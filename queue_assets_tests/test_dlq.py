"""Dead-letter tooling on real PostgreSQL + pgmq: redrive exactly once (also when killed), filters, purge."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta

import dagster as dg
import psycopg
import pytest

from queue_assets import cli
from queue_assets.ingest.core import IngestConfig, ingest_queue, read_batch
from queue_assets.operations import dlq
from queue_assets.operations.dlq import DlqError, DlqFilter
from queue_assets.operations.jobs import dlq_redrive_job
from queue_assets.resources import SharedQueueResource
from queue_assets_tests.helpers import count, pattern_message, queue_depth, send_many, send_raw
from queue_assets_tests.ops_corpus import dlq_headers, put

CFG = IngestConfig(batch_size=50, visibility_timeout_s=30, max_attempts=3)


def _bury(
    conn,
    n: int,
    *,
    start: int = 0,
    kind: str = "store_failed",
    original=lambda i: {"idempotency_key": f"k-{i}"},
):
    """`n` valid pattern messages in pattern_messages_dlq, as the ingest would have put them there."""
    raws = [pattern_message("singularity-1", start + i) for i in range(n)]
    headers = [
        dlq_headers("pattern_messages", 1000 + start + i, kind=kind, original=original(start + i))
        for i in range(n)
    ]
    send_many(conn, "pattern_messages_dlq", raws, headers)
    return raws


def _live(conn, queue: str) -> list[tuple[dict, dict | None]]:
    rows = conn.execute(f"SELECT message, headers FROM pgmq.q_{queue} ORDER BY msg_id").fetchall()
    conn.commit()
    return rows


def test_redrive_puts_back_the_original_message_and_original_headers(conn):
    [raw] = _bury(conn, 1, original=lambda i: {"idempotency_key": "k-1", "trace": "abc"})
    report = dlq.redrive(conn, DlqFilter(queue="pattern_messages"))
    assert report.total == 1
    assert _live(conn, "pattern_messages") == [(json.loads(raw), {"idempotency_key": "k-1", "trace": "abc"})]
    assert queue_depth(conn, "pattern_messages_dlq") == 0
    assert count(conn, "pgmq.a_pattern_messages_dlq") == 1  # archived, not deleted


def test_a_message_that_had_no_headers_is_redriven_without_headers(conn):
    _bury(conn, 1, original=lambda i: None)
    dlq.redrive(conn, DlqFilter(queue="pattern_messages_dlq"))
    [(_, headers)] = _live(conn, "pattern_messages")
    assert headers is None


def test_the_redrive_is_recorded_in_the_audit_table(conn):
    _bury(conn, 2)
    report = dlq.redrive(conn, DlqFilter(queue="pattern_messages"), actor="test")
    rows = conn.execute(
        "SELECT action, dlq, source_queue, original_msg_id, new_msg_id, reason_kind, actor FROM hub.dlq_actions"
        " ORDER BY id"
    ).fetchall()
    new_ids = report.new_msg_ids["pattern_messages"]
    assert rows == [
        ("redrive", "pattern_messages_dlq", "pattern_messages", 1000, new_ids[0], "store_failed", "test"),
        ("redrive", "pattern_messages_dlq", "pattern_messages", 1001, new_ids[1], "store_failed", "test"),
    ]


def test_a_message_redriven_from_the_dlq_is_processed_once_by_ingest(conn):
    send_raw(
        conn, "pattern_messages", pattern_message("singularity-1", 1, patterns=2), {"idempotency_key": "k-1"}
    )
    impatient = IngestConfig(batch_size=50, visibility_timeout_s=0, max_attempts=1)
    read_batch(conn, "pattern_messages", impatient)  # delivered once, never stored (a crashed consumer)
    first = ingest_queue(conn, "pattern_messages", impatient)  # second delivery: over the limit -> DLQ
    assert (first.stored, first.dead_lettered) == (0, 1)

    assert dlq.redrive(conn, DlqFilter(queue="pattern_messages")).total == 1
    second = ingest_queue(conn, "pattern_messages", CFG)
    assert (second.read, second.stored, second.dead_lettered) == (1, 1, 0)

    assert dlq.redrive(conn, DlqFilter(queue="pattern_messages")).total == 0
    assert ingest_queue(conn, "pattern_messages", CFG).read == 0
    assert count(conn, "hub.pattern_observations") == 2
    assert count(conn, "hub.ingest_ledger", "outcome = 'stored'") == 1
    assert queue_depth(conn, "pattern_messages_dlq") == 0


def _redrive_process(db_url: str) -> subprocess.Popen:
    env = {**os.environ, "SHARED_QUEUE_DB_URL": db_url}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "queue_assets.cli",
            "dlq",
            "redrive",
            "--queue",
            "pattern_messages",
            "--batch-size",
            "10",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _assert_each_message_in_exactly_one_place(conn, originals: list[str]) -> None:
    where = Counter()
    for queue in ("pattern_messages", "pattern_messages_dlq"):
        for (message,) in conn.execute(f"SELECT message FROM pgmq.q_{queue}").fetchall():
            where[json.dumps(message, sort_keys=True)] += 1
    conn.commit()
    expected = Counter(json.dumps(json.loads(r), sort_keys=True) for r in originals)
    assert where == expected  # nothing lost, nothing doubled
    assert count(conn, "hub.dlq_actions") == queue_depth(conn, "pattern_messages")  # the audit is exact


def test_a_redrive_killed_halfway_leaves_no_duplicates_and_no_loss(conn, db_url):
    n = 3000
    originals = _bury(conn, n)
    rng = random.Random(4)
    left_at_kills = []
    for target in (300, 900, 1500, 2100):
        proc = _redrive_process(db_url)
        deadline = time.monotonic() + 60
        while count(conn, "hub.dlq_actions") < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.02))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            left_at_kills.append(queue_depth(conn, "pattern_messages_dlq"))
        _assert_each_message_in_exactly_one_place(conn, originals)
    assert len(left_at_kills) >= 3, "the redrive finished before it could be interrupted"
    assert all(0 < left < n for left in left_at_kills), left_at_kills

    proc = _redrive_process(db_url)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    _assert_each_message_in_exactly_one_place(conn, originals)
    assert queue_depth(conn, "pattern_messages") == n
    result = ingest_queue(conn, "pattern_messages", CFG)
    assert (result.stored, result.duplicates, result.dead_lettered) == (n, 0, 0)


def test_two_redrives_at_once_move_each_message_once(conn, db_url):
    originals = _bury(conn, 600)
    reports = []

    def run():
        with psycopg.connect(db_url) as c:
            reports.append(dlq.redrive(c, DlqFilter(queue="pattern_messages"), batch_size=20))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.total for r in reports) == 600
    _assert_each_message_in_exactly_one_place(conn, originals)
    assert queue_depth(conn, "pattern_messages_dlq") == 0


@pytest.fixture
def assorted(conn):
    now = conn.execute("SELECT now()").fetchone()[0]
    conn.commit()

    def bury(queue, message, kind, reason, days):
        return put(
            conn,
            f"{queue}_dlq",
            message,
            enqueued_at=now - timedelta(days=days),
            headers=dlq_headers(queue, 1, kind=kind, reason=reason),
        )

    return {
        "bad_json": bury(
            "pattern_messages", {"raw": "{oops"}, "invalid_json", "not JSON: Expecting value", 1
        ),
        "old_contract": bury(
            "pattern_messages",
            {"type": "pattern_detection"},
            "invalid_contract",
            "field `patterns`: required",
            10,
        ),
        "heartbeat": bury(
            "instance_heartbeat",
            {"type": "heartbeat"},
            "invalid_contract",
            "field `instance_id`: required",
            2,
        ),
    }


def _listed(conn, **filters) -> set[tuple[str, int]]:
    return {(d.dlq, d.msg_id) for d in dlq.list_dead_letters(conn, DlqFilter.from_options(**filters))}


def test_filters_select_by_queue_reason_type_and_age(conn, assorted):
    a = assorted
    assert _listed(conn) == {
        ("pattern_messages_dlq", a["bad_json"]),
        ("pattern_messages_dlq", a["old_contract"]),
        ("instance_heartbeat_dlq", a["heartbeat"]),
    }
    assert _listed(conn, queue="instance_heartbeat") == {("instance_heartbeat_dlq", a["heartbeat"])}
    assert _listed(conn, reason="invalid_json") == {("pattern_messages_dlq", a["bad_json"])}
    assert _listed(conn, reason="PATTERNS`: REQ") == {("pattern_messages_dlq", a["old_contract"])}
    assert _listed(conn, message_type="heartbeat") == {("instance_heartbeat_dlq", a["heartbeat"])}
    assert _listed(conn, older_than="5d") == {("pattern_messages_dlq", a["old_contract"])}
    assert _listed(conn, newer_than="36h") == {("pattern_messages_dlq", a["bad_json"])}


def test_redrive_with_a_filter_leaves_the_other_dead_letters(conn, assorted):
    report = dlq.redrive(conn, DlqFilter.from_options(queue="pattern_messages", older_than="5d"))
    assert report.total == 1
    assert queue_depth(conn, "pattern_messages_dlq") == 1
    assert queue_depth(conn, "instance_heartbeat_dlq") == 1


def test_purge_archives_and_records(conn, assorted):
    report = dlq.purge(conn, DlqFilter.from_options(reason="invalid_contract"), actor="test")
    assert report.total == 2
    assert queue_depth(conn, "pattern_messages_dlq") == 1
    assert queue_depth(conn, "pattern_messages") == 0  # purge never sends anything back
    assert count(conn, "pgmq.a_instance_heartbeat_dlq") == 1
    assert count(conn, "hub.dlq_actions", "action = 'purge'") == 2


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"older_than": "7 days"}, "'7 days' is not a duration"),
        ({"newer_than": "-1d"}, "is not a duration"),
        ({"message_type": "x'; DROP TABLE hub.instances; --"}, "expected a message type"),
        ({"reason": ""}, None),  # empty means no filter
        ({"queue": "no_such_queue"}, "'no_such_queue_dlq' does not exist"),
    ],
)
def test_bad_filters_are_refused_with_the_value_and_the_reason(conn, options, fragment):
    if fragment is None:
        assert DlqFilter.from_options(**options).empty
        return
    with pytest.raises(DlqError, match=fragment):
        dlq.list_dead_letters(conn, DlqFilter.from_options(**options))


def _cli(monkeypatch, db_url, *argv) -> int:
    monkeypatch.setenv("SHARED_QUEUE_DB_URL", db_url)
    return cli.main(list(argv))


def test_cli_purge_asks_for_yes(conn, db_url, assorted, monkeypatch, capsys):
    assert _cli(monkeypatch, db_url, "dlq", "purge", "--queue", "pattern_messages") == 1
    assert "2 dead letters match; nothing purged. Re-run with --yes" in capsys.readouterr().out
    assert queue_depth(conn, "pattern_messages_dlq") == 2
    assert _cli(monkeypatch, db_url, "dlq", "purge", "--queue", "pattern_messages", "--yes") == 0
    assert queue_depth(conn, "pattern_messages_dlq") == 0


def test_cli_redrive_without_a_filter_needs_all(conn, db_url, assorted, monkeypatch, capsys):
    assert _cli(monkeypatch, db_url, "dlq", "redrive") == 2
    assert "needs a filter" in capsys.readouterr().err
    assert queue_depth(conn, "pattern_messages_dlq") == 2
    assert _cli(monkeypatch, db_url, "dlq", "redrive", "--all") == 0
    assert "3 dead letters redriven" in capsys.readouterr().out
    assert queue_depth(conn, "pattern_messages") == 2 and queue_depth(conn, "instance_heartbeat") == 1


def test_cli_list_and_show_print_the_reason_and_message(conn, db_url, assorted, monkeypatch, capsys):
    assert _cli(monkeypatch, db_url, "dlq", "list", "--queue", "pattern_messages") == 0
    out = capsys.readouterr().out
    assert "pattern_messages_dlq: 2 (invalid_json 1, invalid_contract 1)" in out
    assert "not JSON: Expecting value" in out
    assert (
        _cli(monkeypatch, db_url, "dlq", "show", str(assorted["bad_json"]), "--queue", "pattern_messages")
        == 0
    )
    out = capsys.readouterr().out
    assert "kind:             invalid_json" in out and '"raw": "{oops"' in out


def test_cli_show_of_a_missing_id_says_so(conn, db_url, monkeypatch, capsys):
    assert _cli(monkeypatch, db_url, "dlq", "show", "999", "--queue", "pattern_messages") == 1
    assert (
        "no dead letter with msg_id 999 in dead-letter queue 'pattern_messages_dlq'"
        in capsys.readouterr().err
    )


def _run_redrive_job(db_url: str, config: dict) -> dg.ExecuteInProcessResult:
    return dlq_redrive_job.execute_in_process(
        run_config={"ops": {"redrive_dead_letters": {"config": config}}},
        resources={"shared_queue": SharedQueueResource(db_url=db_url)},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_dlq_redrive_job_redrives_with_its_typed_config(conn, db_url, assorted):
    result = _run_redrive_job(db_url, {"queue": "pattern_messages", "reason": "invalid_json"})
    assert result.success
    [event] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
    assert event.step_output_data.metadata["redriven"].value == 1
    assert queue_depth(conn, "pattern_messages") == 1
    actor = conn.execute("SELECT actor FROM hub.dlq_actions").fetchone()[0]
    assert actor == f"dagster:{result.run_id}"


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"queue": "pattern_messages'; DROP TABLE hub.instances; --"}, "is not allowed"),
        ({"older_than": "soon"}, "is not a duration"),
        ({}, "needs a filter"),
    ],
)
def test_dlq_redrive_job_refuses_bad_config_before_any_change(conn, db_url, assorted, config, fragment):
    result = _run_redrive_job(db_url, config)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert fragment in str(failure.step_failure_data.error)
    assert queue_depth(conn, "pattern_messages_dlq") == 2
    assert count(conn, "hub.dlq_actions") == 0
