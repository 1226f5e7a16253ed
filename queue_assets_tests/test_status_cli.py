"""`queue-assets status`, `retention` and hostile input to the operator commands."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from datetime import timedelta

import dagster as dg
import pytest

from queue_assets import cli
from queue_assets.operations.assets import queue_statistics
from queue_assets.queues import ALL_STATIC_QUEUES
from queue_assets.resources import SharedQueueResource
from queue_assets.settings import project_root
from queue_assets_tests.conftest import _drop_db, _make_db
from queue_assets_tests.helpers import count, queue_depth
from queue_assets_tests.ops_corpus import dlq_headers, put

UNREACHABLE = "postgresql://hub:topsecret@127.0.0.1:1/shared_queue"


def _run(monkeypatch, url: str, *argv: str) -> int:
    monkeypatch.setenv("SHARED_QUEUE_DB_URL", url)
    return cli.main(list(argv))


@pytest.fixture
def hub(conn):
    now = conn.execute("SELECT now()").fetchone()[0]
    conn.commit()
    for i in range(2):
        put(conn, "pattern_messages", {"i": i}, enqueued_at=now - timedelta(hours=2))
    put(
        conn,
        "pattern_messages_dlq",
        {"type": "pattern_detection"},
        enqueued_at=now,
        headers=dlq_headers("pattern_messages", 5, kind="invalid_contract"),
    )
    for instance, age in (("singularity-1", timedelta(seconds=30)), ("singularity-2", timedelta(hours=3))):
        conn.execute(
            "INSERT INTO hub.instances (instance_id, inbox_queue, first_seen, last_seen, last_heartbeat, version,"
            " status, heartbeat_count) VALUES (%s, %s, %s, %s, %s, '1.4.0', 'ok', 1)",
            (instance, "inbox_" + instance.replace("-", "_"), now - age, now - age, now - age),
        )
    conn.commit()
    return now


def test_status_summarises_queues_instances_and_dead_letters(hub, db_url, monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert _run(monkeypatch, db_url, "status") == 0
    out = capsys.readouterr().out
    assert f"QUEUES: {len(ALL_STATIC_QUEUES)} queues, 2 messages waiting, 1 dead letters, 2 alerts" in out
    first_queue = out.splitlines()[5]
    assert first_queue.startswith("! pattern_messages ") and " 2.0h " in first_queue
    assert "INSTANCES: 2 known, 1 stale" in out
    assert any(
        line.startswith("singularity-2") and line.rstrip().endswith("STALE") for line in out.splitlines()
    )
    assert "pattern_messages_dlq: 1 (invalid_contract 1)" in out


def test_status_says_when_dagster_home_is_not_set(hub, db_url, monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert _run(monkeypatch, db_url, "status") == 0
    assert "LAST MATERIALIZATIONS: DAGSTER_HOME is not set" in capsys.readouterr().out


def test_status_shows_last_materializations_from_the_dagster_instance(
    hub, db_url, tmp_path, monkeypatch, capsys
):
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            [queue_statistics],
            instance=instance,
            resources={"shared_queue": SharedQueueResource(db_url=db_url)},
        )
    assert _run(monkeypatch, db_url, "status") == 0
    out = capsys.readouterr().out
    assert f"LAST MATERIALIZATIONS: Dagster instance at DAGSTER_HOME={home}" in out
    line = next(line for line in out.splitlines() if line.startswith("queue_statistics"))
    assert result.run_id[:8] in line


def test_status_reads_a_postgres_dagster_instance_without_importing_dagster(
    hub, db_url, server_admin_url, tmp_path, monkeypatch
):
    """The hub's own set-up: dagster.yaml with Postgres storage. Breaks when `status` imports Dagster
    to read it (1-2 s of start-up), or reads Dagster's event log wrongly (not the newest run)."""
    dagster_url = _make_db(server_admin_url, "qa_dagster")
    try:
        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copyfile(project_root() / "dagster.yaml", home / "dagster.yaml")
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv(
            "DAGSTER_PG_URL", dagster_url.replace("postgresql://", "postgresql+psycopg2://", 1)
        )
        monkeypatch.setenv("SHARED_QUEUE_DB_URL", db_url)
        with dg.DagsterInstance.get() as instance:
            runs = [
                dg.materialize(
                    [queue_statistics],
                    instance=instance,
                    resources={"shared_queue": SharedQueueResource(db_url=db_url)},
                ).run_id
                for _ in range(2)
            ]
        code = (
            "import sys\nfrom queue_assets.cli import main\nrc = main(['status'])\n"
            "print('dagster imported:', 'dagster' in sys.modules)\nsys.exit(rc)"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert f"LAST MATERIALIZATIONS: Dagster instance at DAGSTER_HOME={home}" in out
        line = next(line for line in out.splitlines() if line.startswith("queue_statistics"))
        assert runs[1][:8] in line and runs[0][:8] not in line
        assert "dagster imported: False" in out
    finally:
        _drop_db(server_admin_url, dagster_url)


def test_status_reports_an_unreadable_dagster_instance_instead_of_failing(
    hub, db_url, tmp_path, monkeypatch, capsys
):
    home = tmp_path / "broken_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_url: postgresql://u:topsecret@127.0.0.1:1/x\n"
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert _run(monkeypatch, db_url, "status") == 0
    out = capsys.readouterr().out
    assert "could not be read" in out
    assert "topsecret" not in out
    assert f"QUEUES: {len(ALL_STATIC_QUEUES)} queues" in out


def test_retention_dry_run_prints_what_would_go_and_deletes_nothing(conn, db_url, monkeypatch, capsys):
    now = conn.execute("SELECT now()").fetchone()[0]
    conn.commit()
    for _ in range(2):
        put(
            conn,
            "llm_requests",
            {"x": 1},
            enqueued_at=now - timedelta(days=100),
            archived_at=now - timedelta(days=100),
        )
    assert _run(monkeypatch, db_url, "retention", "--dry-run") == 0
    captured = capsys.readouterr()
    assert "pgmq.a_llm_requests: would remove 2 rows" in captured.err  # progress
    assert "retention would remove 2 rows (2 archived messages, 0 dead letters)" in captured.out
    assert count(conn, "pgmq.a_llm_requests") == 2


def test_retention_removes_old_archive_rows(conn, db_url, monkeypatch, capsys):
    now = conn.execute("SELECT now()").fetchone()[0]
    conn.commit()
    for days in (100, 10):
        put(
            conn,
            "llm_requests",
            {"x": days},
            enqueued_at=now - timedelta(days=days),
            archived_at=now - timedelta(days=days),
        )
    monkeypatch.setenv("SHARED_QUEUE_RETENTION_DAYS", "30")
    assert _run(monkeypatch, db_url, "retention", "--batch-size", "1") == 0
    assert "retention removed 1 rows" in capsys.readouterr().out
    assert count(conn, "pgmq.a_llm_requests") == 1


HOSTILE = [
    "x'; DROP TABLE hub.instances; --",
    "../../etc/passwd",
    'pattern_messages"',
    "pattern_messages;",
    "a b",
]
COMMANDS = [
    ["dlq", "list", "--queue"],
    ["dlq", "show", "1", "--queue"],
    ["dlq", "redrive", "--queue"],
    ["dlq", "purge", "--yes", "--queue"],
]


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_hostile_queue_names_are_refused_before_connecting(command, name, monkeypatch, capsys):
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        _run(monkeypatch, UNREACHABLE, *command, name)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --queue: queue name {name!r}" in err and "is not allowed" in err
    assert "cannot reach" not in err  # no connection was even attempted
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_queue_names_change_nothing_in_a_real_database(hub, conn, db_url, name, monkeypatch, capsys):
    for command in COMMANDS:
        with pytest.raises(SystemExit):
            _run(monkeypatch, db_url, *command, name)
    assert count(conn, "hub.instances") == 2
    assert queue_depth(conn, "pattern_messages_dlq") == 1
    assert count(conn, "hub.dlq_actions") == 0


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["dlq", "list", "--older-than", "7 days"], "argument --older-than: '7 days' is not a duration"),
        (["dlq", "list", "--type", "x;y"], "argument --type: type filter 'x;y'"),
        (["dlq", "show", "abc"], "argument id: 'abc' is not a whole number"),
        (["retention", "--batch-size", "0"], "argument --batch-size: 0 must be at least 1"),
    ],
)
def test_other_bad_options_name_the_value_and_reason_before_connecting(argv, fragment, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        _run(monkeypatch, UNREACHABLE, *argv)
    err = capsys.readouterr().err
    assert fragment in err
    assert "cannot reach" not in err
