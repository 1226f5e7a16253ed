"""Aggregation on real PostgreSQL: a hand-computed fixture, late messages, disagreeing instances,
snapshots and rank history, the blocking checks, and a real Dagster run.

The fixture goes through the real ingest loop (pattern_detection messages -> hub.pattern_observations).
Every expected number below was computed by hand from the formula in docs/aggregation.md:
score = instances + 0.6 * confidence + 0.3 * observations / (observations + 10).
"""

from __future__ import annotations

import json

import dagster as dg
import pytest

from queue_assets.aggregation import core
from queue_assets.aggregation.assets import aggregated_patterns
from queue_assets.contracts import PATTERN_TYPES
from queue_assets.ingest.core import IngestConfig, ingest_queue
from queue_assets.resources import SharedQueueResource
from queue_assets_tests.helpers import count, send_many

CFG = IngestConfig(batch_size=100, visibility_timeout_s=30, max_attempts=3)


def message(instance: str, ts: str, *patterns: dict) -> str:
    return json.dumps(
        {
            "type": "pattern_detection",
            "instance_id": instance,
            "timestamp": f"2025-10-25T{ts}:00Z",
            "patterns": list(patterns),
        }
    )


def p(kind: str, name: str, confidence: float | None = None, indicators=(), language=None) -> dict:
    out = {"pattern_type": kind, "name": name, "indicators": list(indicators)}
    if confidence is not None:
        out["confidence"] = confidence
    if language:
        out["language"] = language
    return out


FIXTURE = [
    # framework/phoenix: A reports it three times (0.9, 0.8, 0.7 -> A's mean 0.8), B once (0.5).
    message("inst-a", "10:00", p("framework", "phoenix", 0.9, ["mix.exs"], "elixir")),
    message("inst-a", "11:00", p("framework", "phoenix", 0.8, ["mix.exs", "router.ex"], "elixir")),
    message("inst-a", "12:00", p("framework", "phoenix", 0.7, ["mix.exs"], "elixir")),
    message(
        "inst-b",
        "09:30",
        p("framework", "phoenix", 0.5, ["router.ex"], "elixir"),
        # code/retry from B without a confidence; the languages disagree across instances.
        p("code", "retry", None, ["backoff.ex"], "rust"),
        p("microservice", "llm-router"),
    ),
    message("inst-a", "08:00", p("code", "retry", 0.9, ["retry.ex"], "elixir")),
    message("inst-c", "13:00", p("code", "retry", 0.3, ["retry.ex", "backoff.ex"], "rust")),
    # technology/postgresql: one chatty instance, 50 observations at confidence 1.0.
    *[
        message("inst-c", "14:00", *[p("technology", "postgresql", 1.0, ["pg_hba.conf"])] * 10)
        for _ in range(5)
    ],
]


def store(conn, raws: list[str]) -> None:
    send_many(conn, "pattern_messages", raws)
    result = ingest_queue(conn, "pattern_messages", CFG)
    assert result.dead_lettered == 0


def by_key(conn) -> dict[tuple[str, str], core.RankedPattern]:
    return {(r.pattern_type, r.name): r for r in core.ranking(conn)}


def test_hand_computed_fixture_gives_exact_counts_confidence_and_scores(conn):
    store(conn, FIXTURE)
    result = core.aggregate(conn)
    assert (result.patterns, result.observations, result.instances) == (4, 58, 3)
    rows = by_key(conn)

    phoenix = rows[("framework", "phoenix")]
    assert (phoenix.instance_count, phoenix.observation_count) == (2, 4)
    # instance-balanced: mean(0.8, 0.5) = 0.65, not the raw mean 0.725 the chatty instance would give
    assert phoenix.confidence == pytest.approx(0.65, abs=1e-12)
    assert phoenix.score == pytest.approx(2 + 0.6 * 0.65 + 0.3 * 4 / 14, abs=1e-12)  # 2.4757142857
    assert phoenix.top_indicators == ["mix.exs", "router.ex"]  # listed 3 and 2 times
    assert phoenix.language == "elixir"
    assert (phoenix.first_seen.isoformat(), phoenix.last_seen.isoformat()) == (
        "2025-10-25T09:30:00+00:00",
        "2025-10-25T12:00:00+00:00",
    )

    retry = rows[("code", "retry")]
    assert (retry.instance_count, retry.observation_count) == (3, 3)
    assert retry.confidence == pytest.approx(0.6, abs=1e-12)  # B reported none: mean(0.9, 0.3)
    assert retry.score == pytest.approx(3 + 0.36 + 0.3 * 3 / 13, abs=1e-12)  # 3.4292307692
    assert retry.top_indicators == ["backoff.ex", "retry.ex"]  # 2 each: alphabetical
    assert retry.language == "rust"  # 2 observations against 1 for elixir

    postgresql = rows[("technology", "postgresql")]
    assert (postgresql.instance_count, postgresql.observation_count, postgresql.confidence) == (1, 50, 1.0)
    assert postgresql.score == pytest.approx(1 + 0.6 + 0.3 * 50 / 60, abs=1e-12)  # 1.85

    router = rows[("microservice", "llm-router")]
    assert (router.confidence, router.top_indicators, router.language) == (None, [], None)
    assert router.score == pytest.approx(1 + 0.3 / 11, abs=1e-12)  # 1.0272727

    assert [(r.rank, r.name) for r in core.ranking(conn)] == [
        (1, "retry"),
        (2, "phoenix"),
        (3, "postgresql"),
        (4, "llm-router"),
    ]


def test_the_sql_score_matches_the_documented_formula(conn):
    store(conn, FIXTURE)
    core.aggregate(conn)
    for r in core.ranking(conn):
        assert r.score == pytest.approx(
            core.score(r.instance_count, r.observation_count, r.confidence), abs=1e-12
        )


def test_a_chatty_instance_cannot_outrank_two_instances_that_agree(conn):
    store(
        conn,
        [
            message("inst-a", "10:00", p("code", "quiet", 0.0)),
            message("inst-b", "10:00", p("code", "quiet", 0.0)),
        ],
    )
    conn.execute(  # 10,000 observations of one pattern from one instance, all at confidence 1
        "INSERT INTO hub.pattern_observations (queue, msg_id, ordinal, instance_id, pattern_type, name,"
        " confidence, observed_at) SELECT 'bulk', g, 0, 'inst-c', 'code', 'loud', 1.0, now()"
        " FROM generate_series(1, 10000) g"
    )
    core.aggregate(conn)
    assert [r.name for r in core.ranking(conn)] == ["quiet", "loud"]


def test_a_late_message_counts_in_the_next_run(conn):
    store(conn, FIXTURE)
    first = core.aggregate(conn)
    # Stored after the first run, stamped hours before everything else: B also saw postgresql.
    store(conn, [message("inst-b", "08:00", p("technology", "postgresql", 0.4, ["pg_hba.conf"]))])
    second = core.aggregate(conn)
    assert (second.run_id, second.observations) == (first.run_id + 1, 59)
    postgresql = by_key(conn)[("technology", "postgresql")]
    assert (postgresql.instance_count, postgresql.observation_count) == (2, 51)
    assert postgresql.confidence == pytest.approx(0.7, abs=1e-12)  # mean(1.0, 0.4)
    assert postgresql.score == pytest.approx(2 + 0.42 + 0.3 * 51 / 61, abs=1e-12)  # 2.6708196721
    assert postgresql.first_seen.isoformat() == "2025-10-25T08:00:00+00:00"
    assert postgresql.rank == 2  # moved above phoenix (2.4757)


def test_every_run_keeps_a_snapshot_and_the_rank_history_shows_the_move(conn):
    store(conn, FIXTURE)
    first = core.aggregate(conn)
    store(conn, [message("inst-b", "08:00", p("technology", "postgresql", 0.4))])
    second = core.aggregate(conn)
    assert core.rank_history(conn, "technology", "postgresql") == [
        (first.run_id, 3, pytest.approx(1.85)),
        (second.run_id, 2, pytest.approx(2.670819672)),
    ]
    history = conn.execute(
        "SELECT rank, previous_rank, rank_change FROM hub.pattern_rank_history"
        " WHERE name = 'phoenix' ORDER BY run_id"
    ).fetchall()
    assert history == [(2, None, None), (3, 2, -1)]
    assert core.rank_changes(conn, second.run_id) == {"new": 0, "gone": 0, "moved_up": 1, "moved_down": 1}


def test_snapshots_older_than_the_retention_are_pruned(conn):
    store(conn, FIXTURE)
    old = core.aggregate(conn)
    conn.execute(
        "UPDATE hub.aggregation_runs SET started_at = started_at - interval '91 days' WHERE run_id = %s",
        (old.run_id,),
    )
    conn.commit()
    new = core.aggregate(conn, retention_days=90)
    assert new.snapshots_pruned == 1
    assert conn.execute("SELECT DISTINCT run_id FROM hub.aggregated_pattern_snapshots").fetchall() == [
        (new.run_id,)
    ]


def test_no_observations_gives_an_empty_ranking(conn):
    result = core.aggregate(conn)
    assert (result.patterns, result.observations, result.instances, result.max_stored_at) == (0, 0, 0, None)
    assert core.ranking(conn) == []
    assert core.check_keys(conn, PATTERN_TYPES) == [] and core.check_values(conn) == []


def test_top_indicators_keeps_only_the_most_listed(conn):
    store(conn, FIXTURE)
    core.aggregate(conn, top_indicators=1)
    assert by_key(conn)[("framework", "phoenix")].top_indicators == ["mix.exs"]


@pytest.mark.parametrize("bad", [{"top_indicators": 0}, {"work_mem": "1GB; DROP TABLE hub.instances"}])
def test_bad_parameters_are_refused_with_the_value(conn, bad):
    with pytest.raises(ValueError, match="top_indicators=0|work_mem '1GB; DROP"):
        core.aggregate(conn, **bad)


def test_the_value_check_names_each_bad_row(conn):
    store(conn, FIXTURE)
    core.aggregate(conn)
    assert core.check_values(conn) == []
    conn.execute("UPDATE hub.aggregated_patterns SET confidence = 1.5 WHERE name = 'phoenix'")
    conn.execute("UPDATE hub.aggregated_patterns SET score = 9 WHERE name = 'retry'")
    assert core.check_values(conn) == [
        "confidence outside [0, 1]: 1 patterns, e.g. framework/phoenix",
        "score outside [instance_count, instance_count + 0.9]: 1 patterns, e.g. code/retry",
    ]


def test_the_key_check_finds_rank_gaps_and_unknown_kinds(conn):
    store(conn, FIXTURE)
    core.aggregate(conn)
    assert core.check_keys(conn, PATTERN_TYPES) == []
    conn.execute(
        "UPDATE hub.aggregated_patterns SET rank = 7, pattern_type = 'gadget' WHERE name = 'llm-router'"
    )
    problems = core.check_keys(conn, PATTERN_TYPES)
    assert problems[0] == "unknown pattern_type: 'gadget'"
    assert problems[1] == "ranks are not exactly 1..4: 4 distinct, from 1 to 7"
    assert problems[2] == "the run's snapshot matches 3 of the 4 ranked patterns"


def test_a_dagster_run_materializes_the_ranking_and_passes_its_checks(conn, db_url):
    store(conn, FIXTURE)
    result = dg.materialize(
        [aggregated_patterns],
        resources={"shared_queue": SharedQueueResource(db_url=db_url)},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    (mat,) = result.asset_materializations_for_node("aggregated_patterns")
    assert mat.metadata["patterns"].value == 4
    assert mat.metadata["observations"].value == 58
    assert mat.metadata["new_patterns"].value == 4
    assert "| retry" in mat.metadata["top_patterns"].value
    checks = result.get_asset_check_evaluations()
    assert sorted((c.check_name, c.passed) for c in checks) == [
        ("aggregated_patterns_keys_are_unique_and_ranked", True),
        ("aggregated_patterns_values_are_in_range", True),
    ]


def test_the_aggregation_schedule_is_hourly_at_minute_zero_utc_and_running():
    from queue_assets.aggregation.schedules import pattern_aggregation_schedule

    s = pattern_aggregation_schedule
    assert (s.cron_schedule, s.execution_timezone, s.default_status) == (
        "0 * * * *",
        "UTC",
        dg.DefaultScheduleStatus.RUNNING,
    )
    assert s.job_name == "pattern_aggregation_job"


def test_concurrent_runs_are_serialised_and_the_ranking_comes_from_the_last(conn, db_url):
    import threading

    import psycopg

    store(conn, FIXTURE)
    results, errors = [], []

    def run():
        try:
            with psycopg.connect(db_url) as own:
                results.append(core.aggregate(own))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r.patterns for r in results) == [4, 4, 4]
    last = max(r.run_id for r in results)
    assert conn.execute("SELECT DISTINCT run_id FROM hub.aggregated_patterns").fetchall() == [(last,)]
    assert core.check_keys(conn, PATTERN_TYPES) == []


def test_a_ranking_that_fails_a_blocking_check_never_replaces_the_live_one(conn, db_url):
    """A previous good ranking is live; then an observation of an unknown pattern kind (written
    around the ingest) makes the next ranking fail the key check in a real Dagster run. The live
    ranking must still be the previous one, the check failed in the asset's own step, and the
    failed run is kept, marked not published, outside the rank history. Breaks when the ranking
    is written to hub.aggregated_patterns before (or regardless of) the checks, as it was when
    the checks ran as separate steps after the asset."""
    store(conn, FIXTURE)
    resources = {"shared_queue": SharedQueueResource(db_url=db_url)}
    good = dg.materialize([aggregated_patterns], resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert good.success
    live_before = conn.execute("SELECT * FROM hub.aggregated_patterns ORDER BY rank").fetchall()
    (good_run,) = {row[-1] for row in live_before}

    conn.execute(
        "INSERT INTO hub.pattern_observations (queue, msg_id, ordinal, instance_id, pattern_type, name,"
        " observed_at) VALUES ('pattern_messages', 999999, 0, 'inst-z', 'gadget', 'x', now())"
    )
    conn.commit()
    bad = dg.materialize(
        [aggregated_patterns],
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not bad.success
    checks = {c.check_name: (c.passed, c.description) for c in bad.get_asset_check_evaluations()}
    assert checks["aggregated_patterns_keys_are_unique_and_ranked"] == (
        False,
        "unknown pattern_type: 'gadget'",
    )
    assert checks["aggregated_patterns_values_are_in_range"][0] is True
    assert bad.asset_materializations_for_node("aggregated_patterns") == []
    assert conn.execute("SELECT * FROM hub.aggregated_patterns ORDER BY rank").fetchall() == live_before
    assert core.latest_run(conn)[0] == good_run
    runs = conn.execute(
        "SELECT run_id, published, check_problems FROM hub.aggregation_runs ORDER BY run_id"
    ).fetchall()
    assert [(published, problems) for _, published, problems in runs] == [
        (True, []),
        (False, ["unknown pattern_type: 'gadget'"]),
    ]
    bad_run = runs[-1][0]
    assert count(conn, "hub.aggregated_pattern_snapshots", f"run_id = {int(bad_run)}") == 5
    assert conn.execute(
        "SELECT count(*) FROM hub.pattern_rank_history WHERE run_id = %s", (bad_run,)
    ).fetchone() == (0,)

    conn.execute("DELETE FROM hub.pattern_observations WHERE pattern_type = 'gadget'")
    conn.commit()
    fixed = dg.materialize(
        [aggregated_patterns], resources=resources, instance=dg.DagsterInstance.ephemeral()
    )
    assert fixed.success
    (mat,) = fixed.asset_materializations_for_node("aggregated_patterns")
    assert mat.metadata["new_patterns"].value == 0  # compared with the last published ranking
    assert conn.execute("SELECT DISTINCT run_id FROM hub.aggregated_patterns").fetchall() == [(bad_run + 1,)]
