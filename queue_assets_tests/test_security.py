"""The producer role on a real server: every allowance and every denial, tried with a real login role.

Each instance connects as its own login role (`queue-assets grant-instance`), a member of the
`queue_assets_producer` group that `queue-assets init` creates. Roles are cluster-wide, so every test
uses instance ids of its own and drops their roles afterwards; the group role is shared and kept.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from queue_assets import cli, security
from queue_assets.fanout import fan_out, hub_message
from queue_assets.ingest.core import IngestConfig, ingest_queue
from queue_assets.names import InvalidNameError, inbox_queue_for
from queue_assets.queues import CONSUMED_QUEUES
from queue_assets.sdk import HubClient
from queue_assets_tests.conftest import _drop_db, _make_db
from queue_assets_tests.helpers import count, send_raw

PASSWORD = "producer-pw-5150"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Producers:
    """Creates instance login roles in the test database and drops them afterwards."""

    def __init__(self, db_url: str):
        self.db_url = db_url
        self.ids: list[str] = []
        with psycopg.connect(db_url) as conn:
            security.ensure_producer_role(conn)

    def new(self) -> str:
        instance_id = f"sec-{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.db_url) as conn:
            security.grant_instance(conn, instance_id, password=PASSWORD)
        self.ids.append(instance_id)
        return instance_id

    def url(self, instance_id: str, database_url: str | None = None) -> str:
        return psycopg.conninfo.make_conninfo(
            database_url or self.db_url, user=security.instance_role_for(instance_id), password=PASSWORD
        )

    def connect(self, instance_id: str) -> psycopg.Connection:
        return psycopg.connect(self.url(instance_id), autocommit=True)

    def close(self) -> None:
        with psycopg.connect(self.db_url) as conn:
            for instance_id in self.ids:
                security.drop_instance_role(conn, instance_id)


@pytest.fixture
def producers(db_url):
    p = Producers(db_url)
    yield p
    p.close()


def denied(conn: psycopg.Connection, statement: str, params=()) -> str:
    """Run `statement` and return PostgreSQL's refusal; fail if it was allowed."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
        conn.execute(statement, params).fetchall()
    return str(info.value)


# --- names ---------------------------------------------------------------------------------------


def test_instance_role_name_follows_the_inbox_mapping():
    assert security.instance_role_for("Singularity-1") == "instance_singularity_1"
    assert inbox_queue_for("Singularity-1") == "inbox_singularity_1"


@pytest.mark.parametrize("bad", ["", "-x", "a b", "x;drop role postgres", "é", "a" * 42, None])
def test_instance_role_name_refuses_unsafe_ids(bad):
    with pytest.raises(InvalidNameError):
        security.instance_role_for(bad)


# --- what init creates ---------------------------------------------------------------------------


@pytest.fixture
def dagster_db_url(server_admin_url):
    url = _make_db(server_admin_url, "qa_dagster")
    yield url
    _drop_db(server_admin_url, url)


def test_init_creates_the_producer_group_and_closes_dagsters_database(
    db_url, dagster_db_url, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("SHARED_QUEUE_DB_URL", db_url)
    monkeypatch.setenv("DAGSTER_PG_URL", dagster_db_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    monkeypatch.setenv("QUEUE_ASSETS_DATA_DIR", str(tmp_path))
    with psycopg.connect(db_url, autocommit=True) as conn:
        # The session database was bootstrapped without the role step: start with no send grants.
        if _role_exists(conn):
            for queue in CONSUMED_QUEUES:
                conn.execute(
                    sql.SQL("REVOKE ALL ON {} FROM {}").format(
                        sql.Identifier("pgmq", f"q_{queue}"), sql.Identifier(security.PRODUCER_ROLE)
                    )
                )
    assert cli.main(["init"]) == 0
    first = capsys.readouterr().out
    assert (
        "granted queue_assets_producer send on pattern_messages, learned_patterns, instance_heartbeat"
        in first
    )
    assert "revoked CONNECT on database qa_dagster_" in first
    with psycopg.connect(db_url) as conn:
        assert conn.execute(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (security.PRODUCER_ROLE,)
        ).fetchone() == (False,)
        for queue in CONSUMED_QUEUES:
            assert conn.execute(
                "SELECT has_table_privilege(%s, %s, 'INSERT')", (security.PRODUCER_ROLE, f"pgmq.q_{queue}")
            ).fetchone() == (True,)
    assert cli.main(["init"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def _role_exists(conn) -> bool:
    return (
        conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (security.PRODUCER_ROLE,)).fetchone()
        is not None
    )


def test_the_group_role_cannot_log_in(producers, db_url):
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        psycopg.connect(psycopg.conninfo.make_conninfo(db_url, user=security.PRODUCER_ROLE)).close()


# --- allowed -------------------------------------------------------------------------------------


def test_producer_sends_to_all_three_ingest_queues_through_the_sdk(producers, conn):
    me = producers.new()
    with HubClient(producers.url(me), me) as hub:
        hub.publish_patterns(
            [{"pattern_type": "framework", "name": "phoenix", "confidence": 0.9}], idempotency_key="scan-1"
        )
        hub.publish_code_analysis({"files": 3})
        hub.publish_learned_patterns(
            [{"artifact_id": "a1", "artifact_type": "template"}], usage_count=5, success_rate=0.5
        )
        hub.heartbeat(version="1.0.0")
    depths = [
        count(conn, f"pgmq.q_{q}") for q in ("pattern_messages", "learned_patterns", "instance_heartbeat")
    ]
    assert depths == [2, 1, 1]


def test_producer_reads_and_archives_fan_out_copies_in_its_own_inbox(producers, conn):
    me = producers.new()
    with HubClient(producers.url(me), me) as hub:
        hub.heartbeat()
    assert ingest_queue(conn, "instance_heartbeat", IngestConfig()).stored == 1
    result = fan_out(
        conn,
        hub_message(
            "aggregated_patterns",
            patterns=[{"pattern_type": "framework", "name": "phoenix", "rank": 1, "score": 2.0}],
        ),
        3600,
    )
    conn.commit()
    assert result.copies == 1
    with HubClient(producers.url(me), me) as hub:
        got = hub.read_inbox(limit=10, vt=30)
        assert [m.type for m in got] == ["aggregated_patterns"]
        assert hub.archive_inbox(got[0].msg_id) is True
    with producers.connect(me) as pc:
        archived = pc.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("pgmq", "a_" + inbox_queue_for(me)))
        ).fetchone()[0]
    assert archived == 1


def test_producer_deletes_and_extends_the_lease_in_its_own_inbox(producers, conn):
    me = producers.new()
    inbox = inbox_queue_for(me)
    ids = [send_raw(conn, inbox, json.dumps({"n": i})) for i in range(2)]
    with producers.connect(me) as pc:
        assert len(pc.execute("SELECT * FROM pgmq.read(%s, 30, 10)", (inbox,)).fetchall()) == 2
        assert len(pc.execute("SELECT * FROM pgmq.set_vt(%s, %s, 0)", (inbox, ids[0])).fetchall()) == 1
        assert pc.execute("SELECT pgmq.delete(%s, %s::bigint)", (inbox, ids[1])).fetchone() == (True,)
    assert count(conn, f"pgmq.q_{inbox}") == 1


# --- denied --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "queue",
    ["template_updates", "llm_requests", "job_results", "pattern_messages_dlq", "OWN_INBOX", "OTHER_INBOX"],
)
def test_producer_cannot_send_to_any_other_queue(producers, queue):
    me, other = producers.new(), producers.new()
    queue = {"OWN_INBOX": inbox_queue_for(me), "OTHER_INBOX": inbox_queue_for(other)}.get(queue, queue)
    with producers.connect(me) as pc:
        reason = denied(pc, "SELECT pgmq.send(%s, '{}'::jsonb)", (queue,))
        assert f"permission denied for table q_{queue}" in reason
        denied(pc, "SELECT pgmq.send_batch(%s, ARRAY['{}'::jsonb])", (queue,))


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM pgmq.read(%s, 0, 10)",
        "SELECT * FROM pgmq.pop(%s)",
        "SELECT message FROM pgmq.{q}",
        "SELECT pgmq.delete(%s, 1::bigint)",
        "SELECT pgmq.archive(%s, 1::bigint)",
        "SELECT * FROM pgmq.set_vt(%s, 1::bigint, 0)",
        "SELECT pgmq.purge_queue(%s)",
    ],
)
def test_producer_cannot_touch_another_instances_inbox(producers, conn, statement):
    me, other = producers.new(), producers.new()
    inbox = inbox_queue_for(other)
    send_raw(conn, inbox, json.dumps({"secret": "for the other instance"}))
    with producers.connect(me) as pc:
        if "{q}" in statement:
            denied(pc, sql.SQL(statement).format(q=sql.Identifier("q_" + inbox)))
        else:
            denied(pc, statement, (inbox,))
    assert count(conn, f"pgmq.q_{inbox}") == 1


def test_producer_cannot_read_another_instances_archive(producers, conn):
    me, other = producers.new(), producers.new()
    inbox = inbox_queue_for(other)
    msg_id = send_raw(conn, inbox, json.dumps({"n": 1}))
    conn.execute("SELECT pgmq.archive(%s, %s::bigint)", (inbox, msg_id))
    conn.commit()
    with producers.connect(me) as pc:
        reason = denied(pc, sql.SQL("SELECT * FROM {}").format(sql.Identifier("pgmq", "a_" + inbox)))
    assert f"permission denied for table a_{inbox}" in reason


@pytest.mark.parametrize("queue", CONSUMED_QUEUES)
def test_producer_cannot_read_what_others_sent_to_an_ingest_queue(producers, conn, queue):
    me = producers.new()
    send_raw(conn, queue, json.dumps({"from": "someone else"}))
    with producers.connect(me) as pc:
        denied(pc, "SELECT * FROM pgmq.read(%s, 0, 10)", (queue,))
        denied(pc, "SELECT * FROM pgmq.pop(%s)", (queue,))
        denied(pc, sql.SQL("SELECT message, headers FROM {}").format(sql.Identifier("pgmq", "q_" + queue)))
        denied(pc, sql.SQL("SELECT * FROM {}").format(sql.Identifier("pgmq", "a_" + queue)))
    assert count(conn, f"pgmq.q_{queue}") == 1


def test_producer_cannot_select_any_hub_table(producers, conn):
    me = producers.new()
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'hub' ORDER BY 1"
        ).fetchall()
    ]
    assert "instances" in tables and "ingest_ledger" in tables
    refusals = []
    with producers.connect(me) as pc:
        for table in tables:
            refusals.append(
                denied(pc, sql.SQL("SELECT * FROM {}").format(sql.Identifier("hub", table))).splitlines()[0]
            )
    assert refusals == ["permission denied for schema hub"] * len(tables)


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT pgmq.create('evil_queue')",
        "SELECT pgmq.drop_queue('pattern_messages')",
        "SELECT pgmq.purge_queue('pattern_messages')",
        "SELECT pgmq.bind_topic('hub.#', 'pattern_messages')",
        "SELECT pgmq.send_topic('hub.aggregated_patterns', '{}'::jsonb)",
        "SELECT * FROM pgmq.list_queues()",
        "SELECT * FROM pgmq.metrics_all()",
        "CREATE TABLE public.producer_was_here (x int)",
    ],
)
def test_producer_cannot_administer_queues_topics_or_schemas(producers, statement):
    me = producers.new()
    with producers.connect(me) as pc:
        denied(pc, statement)


def test_producer_cannot_connect_to_dagsters_database(producers, dagster_db_url):
    me = producers.new()
    # Before: PostgreSQL's default lets every role connect to every database.
    psycopg.connect(producers.url(me, dagster_db_url)).close()
    assert security.restrict_database_connect(dagster_db_url)
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(producers.url(me, dagster_db_url)).close()
    # Dagster's own user (here the admin that created it) still gets in.
    psycopg.connect(dagster_db_url).close()
    assert security.restrict_database_connect(dagster_db_url) == []


# --- the grants are what makes it work, and enough ----------------------------------------------


def test_sending_needs_select_on_msg_id_because_send_returns_it(producers, conn):
    me = producers.new()
    conn.execute(
        sql.SQL("REVOKE SELECT (msg_id) ON pgmq.q_instance_heartbeat FROM {}").format(
            sql.Identifier(security.PRODUCER_ROLE)
        )
    )
    conn.commit()
    try:
        with producers.connect(me) as pc:
            denied(pc, "SELECT pgmq.send('instance_heartbeat', '{}'::jsonb)")
    finally:
        security.ensure_producer_role(conn)
        conn.commit()
    with producers.connect(me) as pc:
        assert pc.execute("SELECT pgmq.send('instance_heartbeat', '{}'::jsonb)").fetchone()[0] >= 1


def test_producer_works_where_public_execute_on_pgmq_is_revoked(server_admin_url):
    """A hardened database (a DBA revoked PUBLIC's EXECUTE): the explicit grants are enough."""
    from queue_assets import bootstrap

    url = _make_db(server_admin_url, "qa_hardened")
    try:
        bootstrap.bootstrap(url)
        with psycopg.connect(url) as conn:
            conn.execute("REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pgmq FROM PUBLIC")
            conn.commit()
        p = Producers(url)
        try:
            me = p.new()
            with HubClient(p.url(me), me) as hub:
                hub.heartbeat()
                with psycopg.connect(url) as conn:
                    send_raw(conn, inbox_queue_for(me), json.dumps({"n": 1}))
                got = hub.read_inbox()
                assert len(got) == 1 and hub.archive_inbox(got[0].msg_id)
            with p.connect(me) as pc:
                denied(pc, "SELECT * FROM pgmq.metrics_all()")  # not granted: EXECUTE is really revoked
        finally:
            p.close()
    finally:
        _drop_db(server_admin_url, url)


def test_grant_inbox_access_restores_an_inbox_created_again(producers, conn):
    me = producers.new()
    inbox = inbox_queue_for(me)
    conn.execute("SELECT pgmq.drop_queue(%s)", (inbox,))
    conn.execute("SELECT pgmq.create(%s)", (inbox,))
    conn.commit()
    with producers.connect(me) as pc:
        denied(pc, "SELECT * FROM pgmq.read(%s, 0, 1)", (inbox,))
    assert security.grant_inbox_access(conn, me) is True
    conn.commit()
    with producers.connect(me) as pc:
        assert pc.execute("SELECT * FROM pgmq.read(%s, 0, 1)", (inbox,)).fetchall() == []


def test_grant_inbox_access_does_nothing_for_an_instance_without_a_role(conn):
    conn.execute("SELECT pgmq.create('inbox_no_role_here')")
    assert security.grant_inbox_access(conn, "no-role-here") is False


# --- the CLI -------------------------------------------------------------------------------------


def test_grant_instance_cli_sets_a_hashed_password_from_the_environment(
    producers, db_url, monkeypatch, capsys
):
    instance_id = f"sec-{uuid.uuid4().hex[:10]}"
    producers.ids.append(instance_id)
    monkeypatch.setenv("SHARED_QUEUE_DB_URL", db_url)
    monkeypatch.setenv("SINGULARITY_DB_PASSWORD", "cli-secret-4242")
    assert cli.main(["grant-instance", instance_id, "--password-env", "SINGULARITY_DB_PASSWORD"]) == 0
    out = capsys.readouterr()
    role = security.instance_role_for(instance_id)
    assert f"created role {role} (LOGIN)" in out.out
    assert "cli-secret-4242" not in out.out + out.err
    with psycopg.connect(db_url) as conn:
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()[0]
    assert stored.startswith("SCRAM-SHA-256$") and "cli-secret-4242" not in stored
    assert cli.main(["grant-instance", instance_id]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_grant_instance_cli_names_a_missing_password_variable(db_url, monkeypatch, capsys):
    monkeypatch.setenv("SHARED_QUEUE_DB_URL", db_url)
    monkeypatch.delenv("NO_SUCH_PASSWORD_VAR", raising=False)
    assert cli.main(["grant-instance", "sec-x", "--password-env", "NO_SUCH_PASSWORD_VAR"]) == 2
    assert (
        "--password-env NO_SUCH_PASSWORD_VAR: that environment variable is not set" in capsys.readouterr().err
    )


def test_revoke_instance_cli_drops_the_role(producers, db_url, monkeypatch, capsys):
    me = producers.new()
    monkeypatch.setenv("SHARED_QUEUE_DB_URL", db_url)
    assert cli.main(["revoke-instance", me]) == 0
    assert f"dropped role {security.instance_role_for(me)}" in capsys.readouterr().out
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(producers.url(me)).close()


def test_grant_instance_without_admin_option_on_the_group_says_what_is_missing(
    producers, db_url, server_admin_url
):
    name = f"qa_nonadmin_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_admin_url, autocommit=True) as admin:
        if admin.info.server_version < 160000:
            pytest.skip("before PostgreSQL 16, CREATEROLE may grant membership in any role")
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE").format(sql.Identifier(name)))
    try:
        with psycopg.connect(psycopg.conninfo.make_conninfo(db_url, user=name)) as conn:
            with pytest.raises(security.SecurityError, match="needs ADMIN OPTION on queue_assets_producer"):
                security.grant_instance(conn, f"sec-{uuid.uuid4().hex[:10]}")
    finally:
        with psycopg.connect(server_admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_dropping_a_role_that_holds_privileges_in_another_database_says_so(
    producers, db_url, server_admin_url
):
    """`drop_instance_role` caught `psycopg.errors.DependentObjectsStillReferenced`, a name psycopg does not
    have (SQLSTATE 2BP01 is `DependentObjectsStillExist`): the documented `SecurityError` came out as an
    AttributeError. Found by mypy; breaks if the except clause names a missing class again."""
    me = producers.new()
    role = security.instance_role_for(me)
    other = _make_db(server_admin_url, "qa_other")
    try:
        with psycopg.connect(other, autocommit=True) as admin:  # a privilege inside the other database
            admin.execute("CREATE TABLE elsewhere (id int)")
            admin.execute(sql.SQL("GRANT SELECT ON elsewhere TO {}").format(sql.Identifier(role)))
        with psycopg.connect(db_url) as conn:
            with pytest.raises(
                security.SecurityError, match=f"role '{role}' still holds privileges elsewhere"
            ):
                security.drop_instance_role(conn, me)
    finally:
        _drop_db(server_admin_url, other)  # takes the privilege with it; the fixture then drops the role
