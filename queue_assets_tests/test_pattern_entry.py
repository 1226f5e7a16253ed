"""The stored answer of hub_api.query_pattern (sql/016): `hub.patterns.entry` must equal the JSON
computed afresh from the catalogue after every kind of change: ingest of a new key, of a new name
for an existing key and of counters only, a direct alias change, the enrichment request and reply, an approval, a rank
refresh; and the API must return that JSON (in the caller's time zone too). The fresh JSON is
sql/015's expression, copied here, so the check does not trust sql/016's own builder. PostgreSQL,
pgmq, ingest, enrichment and approval are real."""

from __future__ import annotations

import psycopg

from queue_assets import bootstrap
from queue_assets.aggregation.core import aggregate
from queue_assets.patterns.enrichment import run_enrichment
from queue_assets_tests.conftest import _drop_db, _make_db
from queue_assets_tests.helpers import count
from queue_assets_tests.test_approval import approval_required, bridge, ingest_replies, ingest_responses  # noqa: F401
from queue_assets_tests.test_enrichment import CFG, router
from queue_assets_tests.test_fanout import heartbeat
from queue_assets_tests.test_patterns import _ingest, _pattern_message, _query

# sql/015's hit document, built from the row and the aliases as they are now.
FRESH = """
SELECT p.pattern_type, p.canonical_name, p.entry, jsonb_build_object(
    'status', p.status, 'pattern_type', p.pattern_type, 'name', p.canonical_name,
    'display_name', p.display_name,
    'aliases', to_jsonb(ARRAY(SELECT a.name FROM hub.pattern_aliases a
                              WHERE a.pattern_type = p.pattern_type AND a.canonical_name = p.canonical_name
                              ORDER BY a.observations DESC, a.name LIMIT 20)),
    'instances', p.instances, 'observations', p.observations, 'confidence', p.confidence,
    'confidence_instances', p.confidence_instances, 'languages', p.languages,
    'top_indicators', p.top_indicators, 'examples', p.examples,
    'first_seen', p.first_seen, 'last_seen', p.last_seen, 'rank', p.rank, 'version', p.version,
    'enrichment', p.enrichment, 'enrichment_error', p.enrichment_error,
    'broadcast_provisional', p.broadcast_provisional,
    'approval', p.approval, 'reviewed_by', p.reviewed_by, 'review_reason', p.review_reason,
    'reviewed_at', p.reviewed_at,
    'provenance', CASE WHEN p.enriched_at IS NULL THEN NULL ELSE jsonb_build_object(
        'provider', p.enrichment_provider, 'model', p.enrichment_model,
        'request_id', p.enrichment_request_id, 'enriched_at', p.enriched_at) END)
FROM hub.patterns p ORDER BY 1, 2
"""


def stale(conn, *, commit: bool = True) -> list[tuple]:
    """Keys whose stored entry is not the fresh JSON (rendered in UTC, as stored), or whose API
    answer is not the fresh JSON in the session's own time zone."""
    zone = conn.execute("SELECT current_setting('TimeZone')").fetchone()[0]
    conn.execute("SET LOCAL TimeZone = 'UTC'")
    bad = [(t, n, "stored") for t, n, stored, fresh in conn.execute(FRESH).fetchall() if stored != fresh]
    conn.execute("SELECT set_config('TimeZone', %s, true)", (zone,))
    for t, n, _, fresh in conn.execute(FRESH).fetchall():
        if _query(conn, t, n) != fresh:
            bad.append((t, n, "query_pattern"))
    if commit:
        conn.commit()
    return bad


def assert_fresh(conn) -> None:
    assert count(conn, "hub.patterns") > 0
    assert stale(conn) == []


def test_the_stored_answer_follows_every_kind_of_change(conn, db_url, approval_required):  # noqa: F811
    """Breaks if a path that changes what query_pattern shows leaves `entry` behind: the alias
    trigger (direct alias changes and a reordering, checked with it switched off below), the row
    trigger (enrichment, approval, rank), or the time-zone re-rendering of the timestamps."""
    heartbeat(conn, "singularity-0")
    _ingest(conn, [_pattern_message("singularity-0", ["Phoenix", "Ecto"])])
    assert_fresh(conn)

    # a new name for an existing key, from another instance: aliases, instances, version change
    before = _query(conn, "framework", "phoenix")
    _ingest(conn, [_pattern_message("singularity-1", ["phoenix-framework"]) for _ in range(3)])
    after = _query(conn, "framework", "Phoenix")
    assert after["aliases"] == ["phoenix-framework", "Phoenix"] and after["instances"] == 2
    assert after["version"] == before["version"] + 1
    assert_fresh(conn)

    # only the per-batch counters move (the trigger patches them instead of rebuilding)
    _ingest(conn, [_pattern_message("singularity-0", ["Phoenix"], confidence=0.2) for _ in range(2)])
    counted = _query(conn, "framework", "phoenix")
    assert counted["version"] == after["version"] and counted["observations"] == after["observations"] + 2
    assert counted["confidence"] != after["confidence"] and counted["last_seen"] >= after["last_seen"]
    assert_fresh(conn)

    # aliases changed directly (an operator's fix-up): reordered, added, removed
    conn.execute("UPDATE hub.pattern_aliases SET observations = 100 WHERE name = 'Phoenix'")
    conn.commit()
    assert _query(conn, "framework", "phoenix")["aliases"] == ["Phoenix", "phoenix-framework"]
    assert_fresh(conn)
    conn.execute(
        "INSERT INTO hub.pattern_aliases (pattern_type, name, canonical_name, observations, first_seen, last_seen)"
        " VALUES ('framework', 'PHOENIX', 'phoenix', 1000, now(), now())"
    )
    conn.commit()
    assert_fresh(conn)
    conn.execute("DELETE FROM hub.pattern_aliases WHERE name = 'PHOENIX'")
    conn.commit()
    assert_fresh(conn)

    # the check can fail: with the alias trigger off, a reordering leaves the stored entry behind
    conn.execute("ALTER TABLE hub.pattern_aliases DISABLE TRIGGER pattern_aliases_keep_entries_upd")
    conn.execute("UPDATE hub.pattern_aliases SET observations = 1 WHERE name = 'Phoenix'")
    assert ("framework", "phoenix", "stored") in stale(conn, commit=False)
    conn.rollback()
    assert_fresh(conn)

    # the enrichment: requested (status enriching), the reply (enriched, provenance), held for a person
    run_enrichment(conn, CFG)
    assert _query(conn, "framework", "phoenix")["status"] == "enriching"
    assert_fresh(conn)
    router(conn)
    assert ingest_replies(conn).stored == 2
    held = _query(conn, "framework", "phoenix")
    assert (held["status"], held["approval"], held["enrichment"]) == ("enriched", "pending", None)
    assert held["provenance"]["provider"] == "queue"
    assert_fresh(conn)

    # the approval (and the rejection of the other key)
    bridge(
        conn,
        lambda req: {"approved": req["task"]["name"] == "phoenix", "reviewer": "alice", "reason": "checked"},
    )
    assert ingest_responses(conn).stored == 2
    approved = _query(conn, "framework", "phoenix")
    assert (approved["status"], approved["reviewed_by"]) == ("approved", "alice")
    assert approved["enrichment"] is not None and approved["reviewed_at"] is not None
    assert _query(conn, "framework", "ecto")["status"] == "rejected"
    assert_fresh(conn)

    # the hourly ranking's refresh
    assert _query(conn, "framework", "phoenix")["rank"] is None
    aggregate(conn)
    assert _query(conn, "framework", "phoenix")["rank"] == 1
    assert_fresh(conn)

    # a caller in another time zone gets its own rendering of the timestamps, as sql/015 gave it
    conn.execute("SET TimeZone = 'Asia/Kolkata'")
    doc = _query(conn, "framework", "phoenix")
    assert doc["first_seen"].endswith("+05:30") and doc["provenance"]["enriched_at"].endswith("+05:30")
    assert doc["reviewed_at"].endswith("+05:30")
    assert stale(conn, commit=False) == []
    conn.rollback()
    assert_fresh(conn)


def test_migration_backfills_the_answer_of_existing_patterns(server_admin_url, monkeypatch):
    """A catalogue filled before sql/016: after `init`, every row has its entry and the API returns
    sql/015's JSON. Breaks without the backfill (entry NOT NULL fails) or with a wrong one."""
    url = _make_db(server_admin_url, "qa_entrymig")
    try:
        real = bootstrap.load_migrations
        monkeypatch.setattr(
            bootstrap, "load_migrations", lambda *a, **k: [m for m in real(*a, **k) if m[0] < "016"]
        )
        bootstrap.bootstrap(url)
        with psycopg.connect(url) as conn:
            conn.execute(
                "SELECT hub.catalogue_observe(jsonb_build_object('names', jsonb_build_array("
                " jsonb_build_object('t', 'framework', 'n', 'Phoenix', 'c', 3, 'f', now(), 'l', now()),"
                " jsonb_build_object('t', 'framework', 'n', 'phoenix-framework', 'c', 5, 'f', now(), 'l', now()),"
                " jsonb_build_object('t', 'technology', 'n', 'PostgreSQL', 'c', 1, 'f', now(), 'l', now())),"
                " 'sightings', jsonb_build_array("
                " jsonb_build_object('t', 'framework', 'n', 'Phoenix', 'i', 'a', 'g', 'elixir', 'c', 3, 's', 2.7,"
                "  'k', 3, 'f', now(), 'l', now()),"
                " jsonb_build_object('t', 'framework', 'n', 'phoenix-framework', 'i', 'b', 'g', '', 'c', 5,"
                "  's', null, 'k', 0, 'f', now(), 'l', now()),"
                " jsonb_build_object('t', 'technology', 'n', 'PostgreSQL', 'i', 'a', 'g', '', 'c', 1, 's', 1,"
                "  'k', 1, 'f', now(), 'l', now())),"
                " 'indicators', '[]'::jsonb, 'examples', '[]'::jsonb))"
            )
            conn.commit()
        monkeypatch.setattr(bootstrap, "load_migrations", real)
        report = bootstrap.bootstrap(url)
        assert "applied migration 016_pattern_stored_answer" in report.actions
        with psycopg.connect(url) as conn:
            assert count(conn, "hub.patterns", "entry IS NULL") == 0
            assert stale(conn) == []
            assert _query(conn, "framework", "Phoenix")["aliases"] == ["phoenix-framework", "Phoenix"]
    finally:
        _drop_db(server_admin_url, url)
