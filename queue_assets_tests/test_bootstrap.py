"""`queue-assets init`: pgmq, queues and migrations, idempotently; settings fail clearly."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from queue_assets import bootstrap
from queue_assets.queues import ALL_STATIC_QUEUES
from queue_assets.settings import Settings, SettingsError


def test_init_installs_pgmq_queues_and_migrations_on_an_empty_database(fresh_db_url):
    report = bootstrap.bootstrap(fresh_db_url)
    with psycopg.connect(fresh_db_url) as conn:
        queues = {r[0] for r in conn.execute("SELECT queue_name FROM pgmq.meta")}
        applied = [r[0] for r in conn.execute("SELECT version FROM hub.schema_migrations ORDER BY version")]
    assert queues == set(ALL_STATIC_QUEUES)
    # + pattern_discovery + DLQ (issue 11), hub_llm_results and hub_approval_responses + DLQs (issue 12)
    assert len(ALL_STATIC_QUEUES) == 8 + 4 + 3 + 2 + 2 + 2
    assert {
        "hub_llm_results",
        "hub_llm_results_dlq",
        "hub_approval_responses",
        "hub_approval_responses_dlq",
    } <= queues
    assert applied == [v for v, _, _ in bootstrap.load_migrations()]
    assert report.pgmq_version >= "1.11"
    assert any("pgmq" in a for a in report.actions)


def test_init_twice_changes_nothing_and_says_so(fresh_db_url):
    bootstrap.bootstrap(fresh_db_url)
    second = bootstrap.bootstrap(fresh_db_url)
    assert second.actions == []
    assert "nothing to do" in second.summary()


def test_cli_init_twice_reports_nothing_to_do(fresh_db_url):
    env = {**os.environ, "SHARED_QUEUE_DB_URL": fresh_db_url}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "queue_assets.cli", "init"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    first, second = run(), run()
    assert first.returncode == 0, first.stderr
    assert "created queue pattern_messages" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout


def test_pgmq_older_than_1_11_is_refused_with_a_clear_message(fresh_db_url):
    with psycopg.connect(fresh_db_url) as conn:
        # What an old pgmq leaves behind: a pgmq schema without topic functions.
        conn.execute("CREATE SCHEMA pgmq")
        conn.execute("CREATE TABLE pgmq.meta (queue_name text)")
    with pytest.raises(bootstrap.BootstrapError, match=r"older than pgmq 1\.11.*send_topic"):
        bootstrap.bootstrap(fresh_db_url)


def test_version_check_rejects_old_extension_versions():
    with pytest.raises(bootstrap.BootstrapError, match=r"pgmq 1\.10\.2 .* too old"):
        bootstrap._check_version("1.10.2", "installed extension")
    bootstrap._check_version("1.11.0", "installed extension")


def test_a_changed_migration_is_refused(fresh_db_url):
    bootstrap.bootstrap(fresh_db_url)
    with psycopg.connect(fresh_db_url) as conn:
        conn.execute("UPDATE hub.schema_migrations SET checksum = 'x' WHERE version = '001_hub_schema'")
    with pytest.raises(bootstrap.BootstrapError, match="001_hub_schema was changed"):
        bootstrap.bootstrap(fresh_db_url)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("SHARED_QUEUE_BATCH_SIZE", "lots", "SHARED_QUEUE_BATCH_SIZE='lots': expected a whole number"),
        ("SHARED_QUEUE_BATCH_SIZE", "0", "must be between 1 and 10000"),
        ("SHARED_QUEUE_POLL_MS", "-5", "SHARED_QUEUE_POLL_MS='-5': must be between"),
        ("SHARED_QUEUE_ENABLED", "maybe", "SHARED_QUEUE_ENABLED='maybe': expected true or false"),
        ("SHARED_QUEUE_RETENTION_DAYS", "1.5", "SHARED_QUEUE_RETENTION_DAYS='1.5': expected a whole number"),
        ("SHARED_QUEUE_DB_URL", "mysql://x@h/db", "scheme 'mysql' is not PostgreSQL"),
        ("SHARED_QUEUE_DB_URL", "postgresql://u@h:99999/db", "port"),
        ("SHARED_QUEUE_PORT", "http", "SHARED_QUEUE_PORT='http': expected a whole number"),
    ],
)
def test_bad_setting_names_the_variable_and_the_reason(name, value, expected):
    env = {name: value}
    if name == "SHARED_QUEUE_PORT":
        env["SHARED_QUEUE_HOST"] = "db.internal"
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert expected in str(err.value)


def test_all_bad_settings_are_reported_together():
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"SHARED_QUEUE_BATCH_SIZE": "x", "SHARED_QUEUE_POLL_MS": "y"})
    assert len(err.value.problems) == 2


def test_password_never_appears_in_settings_or_their_errors():
    secret = "s3cr3t-Passw0rd"
    s = Settings.from_env(
        {"SHARED_QUEUE_HOST": "db", "SHARED_QUEUE_USER": "hub", "SHARED_QUEUE_PASSWORD": secret}
    )
    assert secret in s.db_url  # it is used ...
    assert secret not in str(s.describe()) and secret not in repr(s.describe())  # ... but never shown
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"SHARED_QUEUE_DB_URL": f"mysql://hub:{secret}@db/x"})
    assert secret not in str(err.value)


def test_host_port_user_password_build_the_url():
    s = Settings.from_env(
        {
            "SHARED_QUEUE_HOST": "db.internal",
            "SHARED_QUEUE_PORT": "6543",
            "SHARED_QUEUE_USER": "hub",
            "SHARED_QUEUE_PASSWORD": "p@ss",
        }
    )
    assert s.db_url == "postgresql://hub:p%40ss@db.internal:6543/shared_queue"
