"""queue_statistics on real PostgreSQL + pgmq: figures on a known corpus match hand-computed values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg
import pytest

from queue_assets.operations.assets import CHECK_DEPTH, CHECK_DLQ, CHECK_UNANSWERED, queue_statistics
from queue_assets.operations.statistics import collect_statistics, save_history
from queue_assets.operations.thresholds import ThresholdError, Thresholds
from queue_assets.queues import ALL_STATIC_QUEUES
from queue_assets.resources import SharedQueueResource
from queue_assets.settings import Settings
from queue_assets_tests.helpers import count
from queue_assets_tests.ops_corpus import put

T = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)  # the measurement time; every timestamp is set relative to it


def s(seconds: float) -> datetime:
    return T - timedelta(seconds=seconds)


@pytest.fixture
def corpus(conn):
    """llm_requests with a known mix of live and archived messages (see the expected values in each test)."""
    q = "llm_requests"
    # live: ages 10 s, 100 s, 1000 s, 2 h; read_ct 0, 1, 2, 5; the last two leased (vt in the future)
    put(conn, q, {"n": 1}, enqueued_at=s(10), read_ct=0, vt=s(1))
    put(conn, q, {"n": 2}, enqueued_at=s(100), read_ct=1, vt=s(1))
    put(conn, q, {"n": 3}, enqueued_at=s(1000), read_ct=2, vt=T + timedelta(seconds=60))
    put(conn, q, {"n": 4}, enqueued_at=s(7200), read_ct=5, vt=T + timedelta(seconds=60))
    # archived in the window with latencies 1, 2, 3, 4, 100 s (enqueued in the window too)
    for k, (latency, reads) in enumerate([(1, 1), (2, 1), (3, 1), (4, 2), (100, 3)]):
        archived = s(60 * (k + 1))
        put(
            conn,
            q,
            {"a": k},
            enqueued_at=archived - timedelta(seconds=latency),
            read_ct=reads,
            archived_at=archived,
        )
    # archived in the window, enqueued before it: latency 5000 s
    put(conn, q, {"a": "old"}, enqueued_at=s(5100), read_ct=1, archived_at=s(100))
    # archived before the window: counted nowhere
    for k in range(2):
        put(conn, q, {"b": k}, enqueued_at=s(9000), read_ct=7, archived_at=s(7200 + k))
    return q


def test_depth_visible_and_oldest_age_match_the_corpus(conn, corpus):
    st = collect_statistics(conn, as_of=T).by_queue()[corpus]
    assert (st.depth, st.visible, st.oldest_age_s) == (4, 2, 7200.0)


def test_in_and_out_counts_cover_only_the_window(conn, corpus):
    st = collect_statistics(conn, as_of=T).by_queue()[corpus]
    # in: 3 live (10 s, 100 s, 1000 s) + 5 archived enqueued in the window; out: 6 archived in the window
    assert (st.in_window, st.out_window) == (8, 6)


def test_latency_percentiles_match_linear_interpolation(conn, corpus):
    st = collect_statistics(conn, as_of=T).by_queue()[corpus]
    # sorted latencies [1, 2, 3, 4, 100, 5000], n = 6, position p * (n - 1):
    # p50 -> 2.5 -> 3 + 0.5 * (4 - 3) = 3.5; p95 -> 4.75 -> 100 + 0.75 * 4900 = 3775; p99 -> 4.95 -> 4755
    assert st.latency_p50_s == pytest.approx(3.5)
    assert st.latency_p95_s == pytest.approx(3775.0)
    assert st.latency_p99_s == pytest.approx(4755.0)


def test_read_ct_distribution_counts_redeliveries(conn, corpus):
    st = collect_statistics(conn, as_of=T).by_queue()[corpus]
    # live 0, 1, 2, 5 + archived in window 1, 1, 1, 2, 3, 1 (the read_ct 7 rows are outside the window)
    assert (st.read_ct_0, st.read_ct_1, st.read_ct_2, st.read_ct_3_plus) == (1, 5, 2, 2)
    assert (st.redelivered, st.max_read_ct) == (4, 5)


def test_a_queue_with_nothing_archived_has_no_latency(conn):
    put(conn, "job_requests", {"n": 1}, enqueued_at=s(30))
    st = collect_statistics(conn, as_of=T).by_queue()["job_requests"]
    assert (st.depth, st.out_window, st.latency_p50_s, st.oldest_age_s) == (1, 0, None, 30.0)


def test_dlq_size_is_reported_on_its_source_queue(conn):
    for i in range(3):
        put(conn, "pattern_messages_dlq", {"bad": i}, enqueued_at=s(50))
    report = collect_statistics(conn, as_of=T).by_queue()
    assert report["pattern_messages"].dlq_depth == 3
    assert report["pattern_messages_dlq"].depth == 3
    assert report["learned_patterns"].dlq_depth == 0
    assert report["llm_requests"].dlq_depth is None  # has no DLQ


def test_every_kind_of_queue_is_measured(conn):
    conn.execute("SELECT pgmq.create('inbox_singularity_1')")
    conn.commit()
    kinds = {q.queue: q.kind for q in collect_statistics(conn, as_of=T).queues}
    assert kinds["inbox_singularity_1"] == "inbox"
    assert kinds["pattern_messages_dlq"] == "dlq"
    assert kinds["llm_results"] == "request_reply"
    assert kinds["template_updates"] == "hub"
    assert set(kinds) == {*ALL_STATIC_QUEUES, "inbox_singularity_1"}  # every queue bootstrap makes
    assert kinds["pattern_discovery"] == "hub"


def test_statistics_columns_are_named_after_the_fields_they_fill(conn, corpus):
    """Rows are mapped by column name, not position. Breaks when a column of the statement loses its
    name (an unnamed `?column?`) or is named differently from its `QueueStats` field."""
    from dataclasses import fields

    from queue_assets.operations.statistics import QueueStats, _parts

    with conn.cursor() as cur:
        cur.execute(_parts([corpus]), {"as_of": T, "since": T - timedelta(hours=1)})
        names = [c.name for c in cur.description]
    conn.rollback()
    assert set(names) <= {f.name for f in fields(QueueStats)}
    assert len(names) == len(set(names))


def test_statistics_change_nothing_in_the_queues(conn, corpus):
    before = conn.execute("SELECT msg_id, read_ct, vt FROM pgmq.q_llm_requests ORDER BY 1").fetchall()
    collect_statistics(conn, as_of=T)
    after = conn.execute("SELECT msg_id, read_ct, vt FROM pgmq.q_llm_requests ORDER BY 1").fetchall()
    assert before == after


def test_statistics_run_in_a_read_only_transaction(conn, monkeypatch):
    from queue_assets.operations import statistics as mod

    seen = []
    real = mod.existing_queues

    def spy(c):
        seen.append(c.execute("SHOW transaction_read_only").fetchone()[0])
        return real(c)

    monkeypatch.setattr(mod, "existing_queues", spy)
    collect_statistics(conn, as_of=T)
    assert seen == ["on"]


def test_the_per_queue_statements_run_read_only(conn, monkeypatch):
    from psycopg import sql

    from queue_assets.operations import statistics as mod

    monkeypatch.setattr(mod, "_parts", lambda queues: sql.SQL("DELETE FROM pgmq.q_llm_requests RETURNING 1"))
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        collect_statistics(conn, as_of=T)


def test_a_queue_dropped_during_the_run_is_left_out(conn, monkeypatch):
    from queue_assets.operations import statistics as mod

    conn.execute("SELECT pgmq.create('inbox_leaving')")
    conn.commit()
    real = mod.existing_queues
    calls = []

    def listing_then_drop(c):
        names = real(c)
        if not calls:  # drop it right after the first listing, from another connection
            with psycopg.connect(c.info.dsn, autocommit=True) as other:
                other.execute("SELECT pgmq.drop_queue('inbox_leaving')")
        calls.append(1)
        return names

    monkeypatch.setattr(mod, "existing_queues", listing_then_drop)
    report = collect_statistics(conn, as_of=T)
    assert "inbox_leaving" not in report.by_queue()
    assert len(report.queues) == len(ALL_STATIC_QUEUES)


def test_history_gets_one_row_per_queue(conn, corpus):
    report = collect_statistics(conn, as_of=T)
    assert save_history(conn, report) == len(report.queues)
    row = conn.execute(
        "SELECT depth, visible, in_window, out_window, read_ct_3_plus FROM hub.queue_statistics"
        " WHERE queue = 'llm_requests' AND measured_at = %s",
        (T,),
    ).fetchone()
    assert row == (4, 2, 8, 6, 2)
    assert count(conn, "hub.queue_statistics") == len(report.queues)


def test_worst_queues_come_first(conn, corpus):
    put(conn, "pattern_messages", {"x": 1}, enqueued_at=s(3 * 3600))  # 3 h old: over the 15-minute limit
    report = collect_statistics(conn, as_of=T)
    worst = [q.queue for q in report.worst_first(Thresholds({}))]
    assert worst[:2] == ["pattern_messages", "llm_requests"]


def test_thresholds_resolve_exact_name_over_glob_over_kind(monkeypatch):
    t = Thresholds.load(
        '{"inbox_a*": {"max_depth": 5}, "inbox_ab": {"max_depth": 7}, "kind:inbox": {"max_depth": 3}}'
    )
    assert t.for_queue("inbox_ab").max_depth == 7
    assert t.for_queue("inbox_ax").max_depth == 5
    assert t.for_queue("inbox_zz").max_depth == 3
    assert t.for_queue("llm_requests").reply_timeout_s == 900.0


def test_run_config_thresholds_override_the_environment():
    t = Thresholds.load(
        '{"llm_requests": {"max_depth": 9}}',
        env_json=Settings.from_env(
            {"QUEUE_ASSETS_QUEUE_THRESHOLDS": '{"llm_requests": {"max_depth": 1, "severity": "ERROR"}}'}
        ).queue_thresholds,
    )
    assert (t.for_queue("llm_requests").max_depth, t.for_queue("llm_requests").severity) == (9, "ERROR")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('{"llm_requests": {"max_dept": 3}}', "unknown field 'max_dept'"),
        ('{"llm_requests": {"max_depth": -1}}', "max_depth = -1"),
        ('{"kind:inboxes": {}}', "'kind:inboxes' names no kind"),
        ('{"llm_requests": {"severity": "LOUD"}}', "severity = 'LOUD'"),
    ],
)
def test_bad_threshold_overrides_name_the_key_and_reason(text, fragment):
    with pytest.raises(ThresholdError, match=fragment.replace("(", r"\(")):
        Thresholds.load(text)


def _materialize(db_url: str, config: dict | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [queue_statistics],
        resources={"shared_queue": SharedQueueResource(db_url=db_url)},
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"queue_statistics": {"config": config or {}}}},
    )


def test_asset_reports_per_queue_counts_and_totals_as_metadata(conn, db_url):
    now = conn.execute("SELECT now()").fetchone()[0]
    conn.commit()
    for i in range(3):
        put(conn, "pattern_messages", {"i": i}, enqueued_at=now - timedelta(seconds=5))
    put(conn, "pattern_messages_dlq", {"bad": 1}, enqueued_at=now - timedelta(seconds=5))
    result = _materialize(db_url)
    md = result.asset_materializations_for_node("queue_statistics")[0].metadata
    assert md["depth.pattern_messages"].value == 3
    assert md["dlq_depth.pattern_messages"].value == 1
    assert md["total.depth"].value == 3
    assert md["total.dlq_messages"].value == 1
    assert md["total.queues"].value == len(ALL_STATIC_QUEUES)
    assert md["queues"].value.splitlines()[2].startswith("| `pattern_messages`")
    assert count(conn, "hub.queue_statistics") == len(ALL_STATIC_QUEUES)


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_checks_pass_on_an_idle_hub(db_url):
    checks = _checks(_materialize(db_url))
    assert {name: c.passed for name, c in checks.items()} == {
        CHECK_DEPTH: True,
        CHECK_DLQ: True,
        CHECK_UNANSWERED: True,
    }


def test_depth_over_threshold_warns(conn, db_url):
    now = conn.execute("SELECT now()").fetchone()[0]
    conn.commit()
    for i in range(3):
        put(conn, "job_requests", {"i": i}, enqueued_at=now)
    checks = _checks(_materialize(db_url, {"thresholds_json": '{"job_requests": {"max_depth": 2}}'}))
    c = checks[CHECK_DEPTH]
    assert (c.passed, c.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert c.metadata["breaches"].value == 1
    assert "`job_requests`: depth 3 > 2" in c.metadata["details"].value


def test_oldest_message_age_over_threshold_warns(conn, db_url):
    now = conn.execute("SELECT now()").fetchone()[0]
    conn.commit()
    put(conn, "pattern_messages", {"i": 1}, enqueued_at=now - timedelta(hours=1))
    c = _checks(_materialize(db_url))[CHECK_DEPTH]
    assert c.passed is False
    assert "`pattern_messages`: oldest message age" in c.metadata["details"].value


def test_a_non_empty_dlq_is_an_error(conn, db_url):
    now = conn.execute("SELECT now()").fetchone()[0]
    conn.commit()
    put(conn, "learned_patterns_dlq", {"bad": 1}, enqueued_at=now)
    c = _checks(_materialize(db_url))[CHECK_DLQ]
    assert (c.passed, c.severity) == (False, dg.AssetCheckSeverity.ERROR)
    assert c.metadata["dead_letters"].value == 1


def test_unanswered_requests_warn_and_answered_ones_do_not(conn, db_url):
    now = conn.execute("SELECT now()").fetchone()[0]
    conn.commit()
    old = now - timedelta(hours=1)  # older than the 15-minute LLM reply timeout
    put(conn, "llm_requests", {"request_id": "r-answered", "task": "x"}, enqueued_at=old, archived_at=old)
    put(
        conn,
        "llm_results",
        {"request_id": "r-answered", "result": "ok"},
        enqueued_at=old + timedelta(seconds=3),
    )
    put(conn, "llm_requests", {"request_id": "r-lost", "agent_id": "agent-7"}, enqueued_at=old)
    put(conn, "llm_requests", {"request_id": "r-recent"}, enqueued_at=now - timedelta(seconds=10))
    c = _checks(_materialize(db_url))[CHECK_UNANSWERED]
    assert (c.passed, c.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert c.metadata["unanswered.llm_requests"].value == 1
    assert c.metadata["unanswered"].value == 1
    assert "`r-lost`" in c.metadata["oldest"].value and "agent-7" in c.metadata["oldest"].value


def test_an_unanswered_request_naming_no_instance_is_listed_with_a_dash(conn, db_url):
    """Breaks when the check's sample goes back through pandas: a missing instance there is `<NA>`,
    whose truth value raises, so one anonymous overdue request failed the whole statistics check."""
    now = conn.execute("SELECT now()").fetchone()[0]
    conn.commit()
    put(conn, "llm_requests", {"request_id": "r-anon", "task": "x"}, enqueued_at=now - timedelta(hours=1))
    c = _checks(_materialize(db_url))[CHECK_UNANSWERED]
    assert c.metadata["unanswered.llm_requests"].value == 1
    assert "| `llm_requests` | `r-anon` | – |" in c.metadata["oldest"].value


def test_a_missing_request_queue_does_not_break_the_unanswered_check(conn, db_url):
    conn.execute("SELECT pgmq.drop_queue('job_results')")
    conn.commit()
    try:
        c = _checks(_materialize(db_url))[CHECK_UNANSWERED]
        assert c.passed and "unanswered.job_requests" not in c.metadata
    finally:
        conn.execute("SELECT pgmq.create('job_results')")
        conn.commit()
