"""Retention of the hub's ingest tables (issue 9, item 5): each table keeps its window, the ledger
keeps the de-duplication window and whatever its live queues may still need, the aggregated results
keep their history."""

from __future__ import annotations

import json
from datetime import timedelta

import dagster as dg
import pytest

from queue_assets.ingest.core import IngestConfig, ingest_queue
from queue_assets.operations.jobs import retention_job
from queue_assets.operations.retention import HubRetention, run_retention
from queue_assets.resources import SharedQueueResource
from queue_assets.settings import Settings, SettingsError
from queue_assets_tests.helpers import count, pattern_message, send_raw

HUB = HubRetention(
    ledger_days=90, observations_days=365, artifacts_days=180, code_analyses_days=60, heartbeats_days=30
)
CFG = IngestConfig(batch_size=50, visibility_timeout_s=30)
# Per table: its window, and rows one day inside and one day outside it (ages in days).
WINDOWS = {
    "hub.pattern_observations": 365,
    "hub.learned_artifacts": 180,
    "hub.code_analyses": 60,
    "hub.heartbeats": 30,
    "hub.ingest_ledger": 90,
}


def _insert(conn, table: str, msg_id: int, stored_at) -> None:
    common = {"queue": "q_retention", "msg_id": msg_id, "stored_at": stored_at}
    if table == "hub.pattern_observations":
        conn.execute(
            "INSERT INTO hub.pattern_observations (queue, msg_id, ordinal, instance_id, pattern_type,"
            " name, observed_at, stored_at) VALUES (%(queue)s, %(msg_id)s, 0, 'singularity-1', 'framework',"
            " 'phoenix', %(stored_at)s, %(stored_at)s)",
            common,
        )
    elif table == "hub.learned_artifacts":
        conn.execute(
            "INSERT INTO hub.learned_artifacts (queue, msg_id, ordinal, instance_id, artifact_id,"
            " usage_count, success_rate, observed_at, stored_at) VALUES (%(queue)s, %(msg_id)s, 0,"
            " 'singularity-1', 'tmpl-a', 1, 0.5, %(stored_at)s, %(stored_at)s)",
            common,
        )
    elif table == "hub.code_analyses":
        conn.execute(
            "INSERT INTO hub.code_analyses (queue, msg_id, instance_id, analysis, observed_at, stored_at)"
            " VALUES (%(queue)s, %(msg_id)s, 'singularity-1', '{}', %(stored_at)s, %(stored_at)s)",
            common,
        )
    elif table == "hub.heartbeats":
        conn.execute(
            "INSERT INTO hub.heartbeats (queue, msg_id, instance_id, observed_at, stored_at)"
            " VALUES (%(queue)s, %(msg_id)s, 'singularity-1', %(stored_at)s, %(stored_at)s)",
            common,
        )
    else:
        conn.execute(
            "INSERT INTO hub.ingest_ledger (queue, msg_id, outcome, enqueued_at, stored_at, read_ct)"
            " VALUES (%(queue)s, %(msg_id)s, 'stored', %(stored_at)s, %(stored_at)s, 1)",
            common,
        )


@pytest.fixture
def aged_hub(conn):
    """{table: {age_days: msg_id}}: per table, rows 1 day, window-1 days and window+1 days old."""
    now = conn.execute("SELECT now()").fetchone()[0]
    out = {}
    for table, window in WINDOWS.items():
        out[table] = {}
        for i, age in enumerate((1, window - 1, window + 1, window + 400)):
            _insert(conn, table, i + 1, now - timedelta(days=age))
            out[table][age] = i + 1
    conn.commit()
    return out


def _left(conn, aged, table):
    schema, name = table.split(".")
    ids = {r[0] for r in conn.execute(f"SELECT msg_id FROM {schema}.{name}").fetchall()}  # noqa: S608 - test's own names
    conn.commit()
    return sorted(age for age, msg_id in aged[table].items() if msg_id in ids)


def test_each_hub_table_loses_exactly_its_rows_older_than_its_window(conn, aged_hub):
    """Breaks if a table is not trimmed, trimmed by another table's window, or trimmed by the wrong column."""
    report = run_retention(conn, retention_days=90, dlq_retention_days=365, hub=HUB)
    for table, window in WINDOWS.items():
        assert _left(conn, aged_hub, table) == [1, window - 1], table
        assert report.removed[table] == 2, table
    assert report.hub_rows == 10


def test_hub_rows_go_in_bounded_batches_and_dry_run_deletes_nothing(conn, aged_hub):
    """Breaks if the hub tables are deleted in one statement, or a dry run deletes."""
    dry = run_retention(conn, retention_days=90, dlq_retention_days=365, hub=HUB, dry_run=True)
    assert dry.hub_rows == 10 and count(conn, "hub.heartbeats") == 4
    seen = []
    run_retention(
        conn,
        retention_days=90,
        dlq_retention_days=365,
        hub=HUB,
        batch_size=1,
        progress=lambda label, n, r: seen.append((label, n)),
    )
    assert [n for label, n in seen if label == "hub.heartbeats"] == [1, 2]


def test_aggregated_results_keep_their_history(conn, aged_hub):
    """Breaks if hub retention trims the ranking, its snapshots or the exports."""
    old = conn.execute("SELECT now() - interval '1000 days'").fetchone()[0]
    run_id = conn.execute(
        "INSERT INTO hub.aggregation_runs (started_at, finished_at) VALUES (%s, %s) RETURNING run_id",
        (old, old),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO hub.aggregated_pattern_snapshots (run_id, snapshot_at, pattern_type, name, rank, score,"
        " instance_count, observation_count) VALUES (%s, %s, 'framework', 'phoenix', 1, 0.9, 1, 1)",
        (run_id, old),
    )
    conn.execute(
        "INSERT INTO hub.exports (cycle_date, branch, base_branch, remote_url, artifact_count, status,"
        " created_at, updated_at) VALUES (%s::date, 'feature/learned-patterns-x', 'main', '/r', 0,"
        " 'no_diff', %s, %s)",
        (old, old, old),
    )
    conn.commit()
    run_retention(
        conn,
        retention_days=1,
        dlq_retention_days=1,
        hub=HubRetention(
            ledger_days=1, observations_days=1, artifacts_days=1, code_analyses_days=1, heartbeats_days=1
        ),
    )
    assert count(conn, "hub.pattern_observations") == 0  # the input did go
    for table in ("hub.aggregation_runs", "hub.aggregated_pattern_snapshots", "hub.exports"):
        assert count(conn, table) == 1, table


def test_a_ledger_window_below_the_dedupe_floor_fails_settings_validation():
    """Breaks if a ledger window shorter than visibility timeout + SDK retry horizon is accepted."""
    with pytest.raises(SettingsError) as err:
        Settings.from_env(
            {"QUEUE_ASSETS_VISIBILITY_TIMEOUT_S": "86400", "QUEUE_ASSETS_RETENTION_LEDGER_DAYS": "1"}
        )
    [problem] = err.value.problems
    assert problem.startswith(
        "QUEUE_ASSETS_RETENTION_LEDGER_DAYS=1: the ingest ledger is the de-duplication window"
    )
    assert "QUEUE_ASSETS_VISIBILITY_TIMEOUT_S" in problem and "at least 2 days" in problem
    ok = Settings.from_env(
        {"QUEUE_ASSETS_VISIBILITY_TIMEOUT_S": "86400", "QUEUE_ASSETS_RETENTION_LEDGER_DAYS": "2"}
    )
    assert ok.ledger_retention_days == 2
    with pytest.raises(ValueError, match="shorter than the de-duplication floor"):
        HubRetention(ledger_days=1, visibility_timeout_s=86_400).check()


def _ingest_keyed(conn, key: str, n: int) -> int:
    send_raw(conn, "pattern_messages", pattern_message("singularity-1", n), {"idempotency_key": key})
    return ingest_queue(conn, "pattern_messages", CFG).stored


def _age_ledger(conn, days: float) -> None:
    conn.execute(
        "UPDATE hub.ingest_ledger SET stored_at = stored_at - make_interval(days => %s),"
        " enqueued_at = enqueued_at - make_interval(days => %s)",
        (days, days),
    )
    conn.commit()


def test_a_resend_inside_the_ledger_window_is_still_a_duplicate(conn):
    """Breaks if retention trims ledger rows younger than QUEUE_ASSETS_RETENTION_LEDGER_DAYS."""
    assert _ingest_keyed(conn, "k-inside", 1) == 1
    _age_ledger(conn, 89)
    report = run_retention(conn, retention_days=90, dlq_retention_days=365, hub=HUB)
    assert report.removed["hub.ingest_ledger"] == 0
    assert _ingest_keyed(conn, "k-inside", 2) == 0
    assert count(conn, "hub.ingest_ledger", "outcome = 'duplicate'") == 1
    assert count(conn, "hub.pattern_observations") == 2  # the first message's two patterns only


def test_a_resend_after_the_ledger_window_is_stored_again(conn):
    """The window is real: past it the ledger row is gone and the same key is new again (documented)."""
    assert _ingest_keyed(conn, "k-outside", 1) == 1
    _age_ledger(conn, 91)
    report = run_retention(conn, retention_days=90, dlq_retention_days=365, hub=HUB)
    assert report.removed["hub.ingest_ledger"] == 1
    assert _ingest_keyed(conn, "k-outside", 2) == 1


def test_the_ledger_keeps_rows_a_waiting_resend_still_needs(conn):
    """A keyed re-send that has waited in a backlog since just after the original must still be a duplicate.

    Breaks if the ledger is trimmed by age alone (drop the NOT EXISTS condition of `hub_targets`):
    the original's row goes and the re-send is stored a second time.
    """
    assert _ingest_keyed(conn, "k-backlog", 1) == 1
    _age_ledger(conn, 100)
    original_enqueued = conn.execute("SELECT enqueued_at FROM hub.ingest_ledger").fetchone()[0]
    resend = send_raw(
        conn, "pattern_messages", pattern_message("singularity-1", 2), {"idempotency_key": "k-backlog"}
    )
    # The SDK re-sent it 10 s after the first attempt; the hub has not read it since.
    conn.execute(
        "UPDATE pgmq.q_pattern_messages SET enqueued_at = %s WHERE msg_id = %s",
        (original_enqueued + timedelta(seconds=10), resend),
    )
    conn.commit()
    report = run_retention(conn, retention_days=90, dlq_retention_days=365, hub=HUB)
    assert report.removed["hub.ingest_ledger"] == 0
    assert "pattern_messages" in report.ledger_protected
    assert ingest_queue(conn, "pattern_messages", CFG).duplicates == 1
    assert count(conn, "hub.pattern_observations") == 2


def test_the_ledger_keeps_the_row_of_a_message_still_in_its_queue(conn, aged_hub):
    """A ledger row whose message was never archived stays, however old; an old row of a drained queue goes.

    Breaks if the ledger is trimmed by age alone: the message would be stored again when read.
    """
    now = conn.execute("SELECT now()").fetchone()[0]
    live = send_raw(conn, "learned_patterns", json.dumps({"type": "heartbeat"}))
    conn.execute(
        "UPDATE pgmq.q_learned_patterns SET enqueued_at = %s WHERE msg_id = %s",
        (now - timedelta(days=200), live),
    )
    conn.execute(
        "INSERT INTO hub.ingest_ledger (queue, msg_id, outcome, enqueued_at, stored_at, read_ct)"
        " VALUES ('learned_patterns', %s, 'stored', %s, %s, 1)",
        (live, now - timedelta(days=200), now - timedelta(days=200)),
    )
    conn.commit()
    report = run_retention(conn, retention_days=90, dlq_retention_days=365, hub=HUB)
    assert count(conn, "hub.ingest_ledger", f"queue = 'learned_patterns' AND msg_id = {live}") == 1
    assert _left(conn, aged_hub, "hub.ingest_ledger") == [1, 89]  # q_retention has no queue: trimmed by age
    assert report.removed["hub.ingest_ledger"] == 2


def test_retention_job_reports_each_hub_table(conn, aged_hub, db_url, monkeypatch):
    """Breaks if the job does not pass the hub settings or does not report per table."""
    for name, days in (
        ("LEDGER", 90),
        ("OBSERVATIONS", 365),
        ("ARTIFACTS", 180),
        ("CODE_ANALYSES", 60),
        ("HEARTBEATS", 30),
    ):
        monkeypatch.setenv(f"QUEUE_ASSETS_RETENTION_{name}_DAYS", str(days))
    result = retention_job.execute_in_process(
        resources={"shared_queue": SharedQueueResource(db_url=db_url)},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    [event] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
    md = event.step_output_data.metadata
    for table in WINDOWS:
        assert md[f"removed.{table}"].value == 2, table
        assert f"cutoff.{table}" in md
    assert md["removed_hub_rows"].value == 10
    assert "`hub.heartbeats` | 2" in md["removed"].value
