"""The pattern authority (issue 11): canonical keys, the catalogue kept by ingest, the hub_api query
functions, their roles, discovery on a miss, the SDK and the CLI. Real PostgreSQL, real pgmq, real
login roles; nothing mocked."""

from __future__ import annotations

import json
import re
import threading
import unicodedata

import dagster as dg
import psycopg
import pytest

from queue_assets import bootstrap, cli
from queue_assets.aggregation.core import aggregate
from queue_assets.contracts import parse_ingest
from queue_assets.ingest.core import IngestConfig, ingest_queue
from queue_assets.patterns import canonical
from queue_assets.patterns.models import PatternInfo, PatternList, UnknownPattern, parse_query_result
from queue_assets.sdk import HubClient
from queue_assets_tests.conftest import _drop_db, _make_db
from queue_assets_tests.helpers import count, queue_depth, send_many
from queue_assets_tests.test_security import Producers, denied

PHOENIX_SPELLINGS = [
    "Phoenix",
    "phoenix",
    "phoenix-framework",
    "PHOENIX_Framework",
    "Phoenix Framework",
    "ｐｈｏｅｎｉｘ",
    " phoenix.framework ",
]

# Names instances send, and Unicode that stresses folding, normalisation and separators.
CORPUS = [
    *PHOENIX_SPELLINGS,
    "phoenixframework",
    "framework",
    "lib",
    "zlib",
    "react-lib",
    "React Library",
    "Node.js",
    "node_js",
    "ASP.NET Core",
    "asp/net//core",
    "C#",
    "C++",
    "---",
    "._-",
    "a--b__c..d//e",
    "Straße",
    "STRASSE",
    "ẞtraße",
    "ΣΊΣΥΦΟΣ",
    "σίσυφος",
    "ﬁber",
    "Ⅻ-tools",
    "İstanbul",
    "ǅemal",
    "Ǆ",
    "ŉ",
    "ΐ",
    "ﬃ",
    "µservice",
    "K-lib",
    "Å",
    "Å",
    "한국어 프레임워크",
    "日本語",
    "Ｇｏ－ｋｉｔ",
    "x\u00a0y",
    "x\u3000y",
    "café",
    "cafe\u0301",
    "ǰ-framework",
    "Ꭰ",
    "ꭰ",
    "🦀 rust",
    "a" * 200,
]


def _fold_table_names() -> list[str]:
    src, _, msrc, _ = canonical.fold_tables()
    return [f"X{c}-Lib" for c in src] + [f"{c}y" for c in msrc]


def _pattern_message(
    instance: str,
    names: list[str],
    *,
    kind: str = "framework",
    language: str | None = "elixir",
    confidence: float | None = 0.8,
    indicators=("mix.exs has :phoenix",),
    examples=(),
) -> str:
    return json.dumps(
        {
            "type": "pattern_detection",
            "instance_id": instance,
            "timestamp": "2025-10-25T12:00:00.000000Z",
            "patterns": [
                {
                    "pattern_type": kind,
                    "name": n,
                    "confidence": confidence,
                    "language": language,
                    "indicators": list(indicators),
                    "examples": list(examples),
                }
                for n in names
            ],
        }
    )


def _ingest(conn, messages: list[str]):
    send_many(conn, "pattern_messages", messages)
    conn.commit()
    return ingest_queue(conn, "pattern_messages", IngestConfig())


@pytest.fixture
def producers(db_url):
    p = Producers(db_url)
    yield p
    p.close()


def _query(conn, pattern_type, name) -> dict:
    return conn.execute("SELECT hub_api.query_pattern(%s, %s)", (pattern_type, name)).fetchone()[0]


# --- canonical keys (pure) -----------------------------------------------------------------------


def test_spellings_of_one_pattern_share_one_key():
    assert {canonical.canonical_name(canonical.check_name(n)) for n in PHOENIX_SPELLINGS} == {"phoenix"}


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("phoenixframework", "phoenixframework"),  # no separator before the suffix
        ("framework", "framework"),  # nothing would be left
        ("react-lib", "react"),
        ("React Library", "react"),
        ("zlib", "zlib"),
        ("Node.js", "node-js"),
        ("ASP.NET Core", "asp-net-core"),
        ("asp/net//core", "asp-net-core"),
        ("C#", "c#"),
        ("---", "---"),
        ("Straße", "strasse"),
        ("ΣΊΣΥΦΟΣ", "σίσυφοσ"),
        ("σίσυφος", "σίσυφοσ"),
        ("ﬁber", "fiber"),
        ("Ｇｏ－ｋｉｔ", "go-kit"),
        ("cafe\u0301", "café"),
    ],
)
def test_canonical_rules(name, key):
    assert canonical.canonical_name(canonical.check_name(name)) == key


def test_canonical_name_is_idempotent():
    for name in CORPUS + _fold_table_names():
        key = canonical.canonical_name(canonical.check_name(name))
        assert canonical.canonical_name(key) == key, (name, key)


@pytest.mark.parametrize(
    ("pattern_type", "name", "reason"),
    [
        ("fw", "phoenix", "pattern_type 'fw' is not a pattern kind"),
        ("framework", "", "name is empty"),
        ("framework", "   ", "name is empty"),
        ("framework", "x" * 10_240, "is 10240 characters long; at most 200"),
        ("framework", "bad\x07name", "contains U+0007 (a control character) at position 3"),
        ("framework", "\x01\x02\x03", "contains U+0001 (a control character)"),
        ("framework", "evil\u202ename", "U+202E (a bidirectional override/isolate character)"),
    ],
)
def test_bad_input_is_refused_in_python_with_the_reason(pattern_type, name, reason):
    with pytest.raises(canonical.PatternInputError, match=re.escape(reason)):
        canonical.pattern_key(pattern_type, name)


# --- SQL and Python agree --------------------------------------------------------------------------


def test_sql_and_python_canonicalisation_agree_on_a_unicode_corpus(conn):
    """hub.canonical_pattern_name (ingest and hub_api) and canonical.canonical_name give the same key
    for every corpus name and every character of the case-folding table. Breaks when the SQL folds
    with the server's locale (lower() without COLLATE "C", or no table) or a rule differs."""
    names = [canonical.check_name(n) for n in CORPUS] + _fold_table_names()
    rows = conn.execute(
        "SELECT n, hub.canonical_pattern_name(n) FROM unnest(%s::text[]) AS n", (names,)
    ).fetchall()
    mismatches = [
        (n, sql_key, canonical.canonical_name(n))
        for n, sql_key in rows
        if sql_key != canonical.canonical_name(n)
    ]
    assert len(rows) == len(names) > 1500
    assert mismatches == []


def test_sql_checks_name_like_python(conn):
    """hub.check_pattern_name strips exactly what str.strip strips (Unicode spaces included)."""
    for name in [" a ", "\u3000phoenix\u00a0", "\u2028x\u2029", "a b"]:
        assert conn.execute("SELECT hub.check_pattern_name(%s)", (name,)).fetchone()[
            0
        ] == canonical.check_name(name)


# --- the catalogue -------------------------------------------------------------------------------


def test_ingest_folds_spellings_into_one_catalogue_row(conn):
    """Breaks without the ingest hook (catalogue.observe_batch): hub.patterns stays empty."""
    messages = [
        _pattern_message(f"i-{k}", [name], confidence=0.5 + k / 20, examples=[f"ex-{k % 2}"])
        for k, name in enumerate(PHOENIX_SPELLINGS)
    ]
    messages.append(_pattern_message("i-0", ["Ecto"], language=None, indicators=("mix.exs has :ecto",)))
    assert _ingest(conn, messages).stored == len(messages)
    row = conn.execute(
        "SELECT display_name, instances, observations, languages, top_indicators, examples, status, version"
        " FROM hub.patterns WHERE pattern_type = 'framework' AND canonical_name = 'phoenix'"
    ).fetchone()
    assert row[1:] == (7, 7, ["elixir"], ["mix.exs has :phoenix"], ["ex-0", "ex-1"], "observed", 1)
    assert row[0] == min(n.strip() for n in PHOENIX_SPELLINGS)  # first seen; same time: first by name
    aliases = conn.execute(
        "SELECT name FROM hub.pattern_aliases WHERE canonical_name = 'phoenix' ORDER BY name"
    )
    assert [a for (a,) in aliases] == sorted(n.strip() for n in PHOENIX_SPELLINGS)
    assert count(conn, "hub.patterns") == 2


def test_catalogue_counts_each_message_once_and_versions_visible_changes(conn):
    """A re-sent message with the same idempotency key adds nothing; a new name, instance or
    language bumps the version, a repeat of known evidence does not. Breaks if the hook is called
    for duplicates too (observations doubles) or the version rule is dropped."""
    first = _pattern_message("i-1", ["phoenix"])
    send_many(conn, "pattern_messages", [first, first], headers=[{"idempotency_key": "k1"}] * 2)
    conn.commit()
    ingest_queue(conn, "pattern_messages", IngestConfig())

    def state():
        return conn.execute("SELECT observations, instances, version FROM hub.patterns").fetchone()

    assert state() == (1, 1, 1)
    _ingest(conn, [_pattern_message("i-1", ["phoenix"])])
    assert state() == (2, 1, 1)  # same evidence again: counters only
    _ingest(conn, [_pattern_message("i-1", ["Phoenix"])])
    assert state() == (3, 1, 2)  # a new name
    _ingest(conn, [_pattern_message("i-2", ["phoenix"], language="erlang")])
    assert state() == (4, 2, 3)  # a new instance and language


def test_the_prefetched_summary_counts_only_the_stored_messages(conn, db_url):
    """With the prefetch thread (as every ingest run uses it) the catalogue summary is built ahead
    from the batch's valid messages. Breaks if it is used when some of them were not stored: the
    re-sent message (same key) and the message taken by an earlier run would be counted again."""
    first = _pattern_message("i-1", ["phoenix"])
    send_many(conn, "pattern_messages", [first], headers=[{"idempotency_key": "k1"}])
    conn.commit()
    ingest_queue(conn, "pattern_messages", IngestConfig(), prefetch_url=db_url)
    again = [first, first, _pattern_message("i-2", ["Phoenix"]), _pattern_message("i-2", ["ecto"])]
    send_many(
        conn, "pattern_messages", again, headers=[{"idempotency_key": k} for k in ("k1", "k1", "k2", "k3")]
    )
    conn.commit()
    result = ingest_queue(conn, "pattern_messages", IngestConfig(), prefetch_url=db_url)
    assert (result.stored, result.duplicates) == (2, 2)
    rows = conn.execute(
        "SELECT canonical_name, observations, instances FROM hub.patterns ORDER BY 1"
    ).fetchall()
    assert rows == [("ecto", 1, 1), ("phoenix", 2, 2)]
    aliases = conn.execute("SELECT name, observations FROM hub.pattern_aliases ORDER BY 1").fetchall()
    assert aliases == [("Phoenix", 1), ("ecto", 1), ("phoenix", 1)]


def test_a_prepared_summary_of_other_deliveries_is_not_used(conn):
    """`observe_batch` trusts a prepared summary only for as many deliveries as it was built from."""
    from queue_assets.patterns import catalogue

    stale = catalogue.PreparedSummary(messages=2, json='{"names": [{"t": "framework", "n": "wrong"}]}')
    send_many(conn, "pattern_messages", [_pattern_message("i-1", ["phoenix"])])
    conn.commit()
    ingest_queue(conn, "pattern_messages", IngestConfig())
    delivery = type("D", (), {})()
    delivery.model = parse_ingest("pattern_messages", _pattern_message("i-1", ["ecto"]))
    delivery.instance_id = "i-1"
    assert catalogue.observe_batch(conn, [delivery], stale) is True
    conn.commit()
    assert count(conn, "hub.patterns", "canonical_name = 'ecto'") == 1
    assert count(conn, "hub.patterns", "canonical_name = 'wrong'") == 0


def test_catalogue_is_written_in_the_same_transaction_as_the_observations(conn):
    """If the catalogue refuses a row, the observation is not stored either: the message goes to
    the DLQ whole. Breaks if the catalogue were updated outside the store transaction."""
    conn.execute("ALTER TABLE hub.patterns ADD CONSTRAINT test_no_boom CHECK (canonical_name <> 'boom')")
    conn.commit()
    try:
        result = _ingest(conn, [_pattern_message("i-1", ["phoenix"]), _pattern_message("i-1", ["Boom"])])
    finally:
        conn.execute("ALTER TABLE hub.patterns DROP CONSTRAINT test_no_boom")
        conn.commit()
    assert (result.stored, result.dead_lettered) == (1, 1)
    assert count(conn, "hub.pattern_observations", "name = 'Boom'") == 0
    assert count(conn, "hub.pattern_aliases", "name = 'Boom'") == 0
    assert count(conn, "hub.pattern_aliases", "name = 'phoenix'") == 1


def test_catalogue_rank_agrees_with_the_hourly_ranking(conn):
    """One SQL join: every key's rank is the best rank of its names in hub.aggregated_patterns.
    Breaks without the refresh call in aggregation.core.aggregate (ranks stay NULL)."""
    msgs = [_pattern_message(f"i-{k}", ["Phoenix", "ecto"]) for k in range(3)]
    msgs += [_pattern_message("i-9", ["phoenix-framework", "Ecto", "Broadway"], kind="framework")]
    msgs += [_pattern_message(f"i-{k}", ["PostgreSQL"], kind="technology") for k in range(5)]
    _ingest(conn, msgs)
    aggregate(conn)
    disagreements = conn.execute("""
        SELECT p.pattern_type, p.canonical_name, p.rank, min(ap.rank)
        FROM hub.patterns p
        JOIN hub.pattern_aliases a USING (pattern_type, canonical_name)
        LEFT JOIN hub.aggregated_patterns ap ON ap.pattern_type = a.pattern_type AND ap.name = a.name
        GROUP BY 1, 2, 3
        HAVING p.rank IS DISTINCT FROM min(ap.rank)""").fetchall()
    assert disagreements == []
    ranked = conn.execute("SELECT canonical_name FROM hub.patterns ORDER BY rank").fetchall()
    assert [r for (r,) in ranked] == ["postgresql", "phoenix", "ecto", "broadway"]


def test_migration_maps_existing_observations_onto_keys(server_admin_url, monkeypatch):
    """A database with observations stored before sql/010: after `init`, every observation counts
    once under its key. Breaks without the backfill block of sql/010."""
    url = _make_db(server_admin_url, "qa_patmig")
    try:
        real = bootstrap.load_migrations
        monkeypatch.setattr(
            bootstrap, "load_migrations", lambda *a, **k: [m for m in real(*a, **k) if m[0] < "010"]
        )
        bootstrap.bootstrap(url)
        with psycopg.connect(url) as conn:
            # rows as the ingest of that time stored them (its code no longer exists: insert them)
            conn.execute(
                "INSERT INTO hub.pattern_observations (queue, msg_id, ordinal, instance_id, pattern_type, name,"
                " confidence, language, indicators, observed_at)"
                " SELECT 'pattern_messages', k, o, 'i-' || k % 3, 'framework', n, 0.9, 'elixir', '{mix.exs}',"
                " now() FROM generate_series(1, 30) k,"
                " unnest('{Phoenix,phoenix-framework,Ecto}'::text[]) WITH ORDINALITY AS x(n, o)"
            )
            conn.commit()
            assert count(conn, "hub.pattern_observations") == 90
        monkeypatch.setattr(bootstrap, "load_migrations", real)
        report = bootstrap.bootstrap(url)
        assert "applied migration 010_patterns" in report.actions
        with psycopg.connect(url) as conn:
            keys = conn.execute("SELECT canonical_name, instances, observations FROM hub.patterns ORDER BY 1")
            assert keys.fetchall() == [("ecto", 3, 30), ("phoenix", 3, 60)]
            unmapped = conn.execute(
                "SELECT count(*) FROM hub.pattern_observations o LEFT JOIN hub.pattern_aliases a"
                " USING (pattern_type, name) WHERE a.name IS NULL"
            ).fetchone()[0]
            assert unmapped == 0
            assert conn.execute("SELECT sum(observations) FROM hub.pattern_aliases").fetchone()[0] == 90
    finally:
        _drop_db(server_admin_url, url)


# --- hub_api -------------------------------------------------------------------------------------


def test_query_pattern_finds_a_pattern_by_any_alias(conn):
    _ingest(conn, [_pattern_message("i-1", ["Phoenix"]), _pattern_message("i-2", ["phoenix-framework"])])
    for asked in ["Phoenix", "phoenix-framework", "PHOENIX", "phoenix framework"]:
        doc = _query(conn, "framework", asked)
        assert (doc["status"], doc["name"], doc["instances"]) == ("observed", "phoenix", 2)
        assert sorted(doc["aliases"]) == ["Phoenix", "phoenix-framework"]
    listed = conn.execute(
        "SELECT hub_api.query_patterns('framework', 'ELIXIR', 2, 'observed', 10)"
    ).fetchone()[0]
    assert [p["name"] for p in listed["patterns"]] == ["phoenix"]
    assert count(conn, "hub.pattern_discovery_requests") == 0


API_KEYS = {
    "status", "pattern_type", "name", "display_name", "aliases", "instances", "observations", "confidence",
    "confidence_instances", "languages", "top_indicators", "examples", "first_seen", "last_seen", "rank",
    "version", "enrichment", "enrichment_error", "broadcast_provisional", "provenance",
    "approval", "reviewed_by", "review_reason", "reviewed_at",  # sql/014 (a person's decision)
}  # fmt: skip


def test_query_pattern_returns_the_whole_entry_however_the_name_is_spelled(conn):
    """The hit path builds the JSON column by column and skips the name check for plain ASCII names
    (sql/015): breaks if a column is missing or wrong, if a name that needs stripping or Unicode
    folding answers differently from its plain spelling, or if hits stop being counted."""
    _ingest(conn, [_pattern_message("i-1", ["Phoenix"]), _pattern_message("i-2", ["phoenix-framework"])])
    conn.execute(
        "UPDATE hub.patterns SET enrichment = '{\"summary\": \"web\"}', enrichment_provider = 'p',"
        " enrichment_model = 'm', enrichment_request_id = 'r-1', enriched_at = '2026-12-03T10:00:00Z'"
    )
    conn.commit()
    row = conn.execute(
        "SELECT status, display_name, instances, observations, confidence, confidence_instances, languages,"
        " top_indicators, examples, first_seen, last_seen, rank, version FROM hub.patterns"
    ).fetchone()
    docs = [
        _query(conn, "framework", n)
        for n in ["Phoenix", "  Phoenix ", " Phoenix\u00a0", "\uff30hoenix", "PHOENIX"]
    ]
    assert all(d == docs[0] for d in docs), docs
    doc = docs[0]
    assert set(doc) == API_KEYS
    assert (doc["pattern_type"], doc["name"], sorted(doc["aliases"])) == (
        "framework",
        "phoenix",
        ["Phoenix", "phoenix-framework"],
    )
    info = parse_query_result(doc)
    assert isinstance(info, PatternInfo)
    assert (
        info.status,
        info.display_name,
        info.instances,
        info.observations,
        info.confidence,
        info.confidence_instances,
        info.languages,
        info.top_indicators,
        info.examples,
        info.first_seen,
        info.last_seen,
        info.rank,
        info.version,
    ) == row
    assert info.enrichment == {"summary": "web"}
    assert info.provenance is not None and (info.provenance.provider, info.provenance.request_id) == (
        "p",
        "r-1",
    )
    assert (doc["enrichment_error"], doc["broadcast_provisional"]) == (None, False)
    miss = _query(conn, "framework", "  Quantum ")  # stripped like any other name before it is used
    assert (miss["status"], miss["asked_name"], miss["name"]) == ("unknown", "Quantum", "quantum")
    assert conn.execute("SELECT queries, misses FROM hub.pattern_queries_per_hour").fetchall() == [(6, 1)]


def test_instance_roles_execute_the_api_but_cannot_read_hub_tables(conn, producers):
    """Breaks if EXECUTE is not granted (security.ensure_producer_role / sql/011) or if the functions
    were SECURITY INVOKER (then they would need SELECT on hub.*)."""
    _ingest(conn, [_pattern_message("i-1", ["Phoenix"])])
    conn.commit()
    with producers.connect(producers.new()) as inst:
        assert _query(inst, "framework", "phoenix")["name"] == "phoenix"
        assert _query(inst, "code", "never-sent")["status"] == "unknown"
        assert inst.execute("SELECT hub_api.query_patterns()").fetchone()[0]["count"] == 1
        for statement in [
            "SELECT * FROM hub.patterns",
            "SELECT * FROM hub.pattern_aliases",
            "SELECT * FROM hub.pattern_discovery_requests",
            "SELECT hub.canonical_pattern_name('x')",
            "SELECT pgmq.send('pattern_discovery', '{}'::jsonb)",
        ]:
            denied(inst, statement)
    with psycopg.connect(producers.db_url) as c:
        fn_rights = c.execute(
            "SELECT p.prosecdef, p.proconfig, has_function_privilege('public', p.oid, 'EXECUTE')"
            " FROM pg_proc p WHERE p.pronamespace = 'hub_api'::regnamespace ORDER BY p.proname"
        ).fetchall()
    assert fn_rights == [(True, ["search_path=pg_catalog, pg_temp"], False)] * 2


def test_concurrent_misses_send_one_discovery_message(conn, producers):
    """50 instance connections ask for the same unknown name at once: one request row (50 askers),
    one message on pgmq.pattern_discovery, one request id for all. Breaks if the message is sent
    per caller or the request key lacks the (key, window) uniqueness."""
    instance = producers.new()
    callers = 50
    conns = [producers.connect(instance) for _ in range(callers)]
    barrier = threading.Barrier(callers)
    results: list = []
    errors: list = []

    def ask(c, i):
        try:
            barrier.wait(timeout=30)
            results.append(
                _query(c, "framework", "Quantum-Framework" if i % 2 else "quantum")["discovery_request_id"]
            )
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(c, i)) for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for c in conns:
        c.close()
    assert errors == []
    assert len(results) == callers and len(set(results)) == 1
    assert queue_depth(conn, "pattern_discovery") == 1
    msg = conn.execute("SELECT message FROM pgmq.q_pattern_discovery").fetchone()[0]
    assert (msg["type"], msg["canonical_name"], msg["request_id"]) == (
        "pattern_discovery",
        "quantum",
        results[0],
    )
    assert conn.execute("SELECT askers FROM hub.pattern_discovery_requests").fetchall() == [(callers,)]
    assert conn.execute("SELECT queries, misses FROM hub.pattern_queries_per_hour").fetchall() == [
        (callers, callers)
    ]


@pytest.mark.parametrize(
    ("pattern_type", "name", "reason"),
    [
        ("widget", "phoenix", "pattern_type 'widget' is not a pattern kind"),
        ("framework", "", "name is empty"),
        ("framework", "x" * 10_240, "is 10240 characters long; at most 200 are allowed"),
        ("framework", "\x01\x02\x03\x04", "contains U+0001 (a control character) at position 0"),
        (None, "phoenix", "pattern_type NULL is not a pattern kind"),
    ],
)
def test_bad_input_gets_a_clear_error_and_no_discovery(conn, pattern_type, name, reason):
    """Breaks if the checks run after the discovery insert, or not at all (a request would exist)."""
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        _query(conn, pattern_type, name)
    assert reason in info.value.diag.message_primary
    conn.rollback()
    assert count(conn, "hub.pattern_discovery_requests") == 0
    assert queue_depth(conn, "pattern_discovery") == 0


# --- SDK, CLI, status, Dagster --------------------------------------------------------------------


def test_sdk_returns_typed_results(conn, db_url):
    _ingest(conn, [_pattern_message("i-1", ["Phoenix"], examples=[{"file": "mix.exs"}])])
    conn.commit()
    with HubClient(db_url, "singularity-1") as hub:
        hit = hub.query_pattern("framework", "phoenix-framework")
        miss = hub.query_pattern("technology", "Never Heard")
        listed = hub.query_patterns("framework", language="elixir", limit=5)
        with pytest.raises(canonical.PatternInputError, match="name is empty"):
            hub.query_pattern("framework", " ")
    assert isinstance(hit, PatternInfo) and hit.known
    assert (hit.name, hit.aliases, hit.examples, hit.version) == (
        "phoenix",
        ["Phoenix"],
        [{"file": "mix.exs"}],
        1,
    )
    assert isinstance(miss, UnknownPattern) and not miss.known
    assert miss.name == "never-heard" and miss.discovery_request_id > 0
    assert isinstance(listed, PatternList) and [p.name for p in listed.patterns] == ["phoenix"]


def test_cli_prints_the_catalogue_and_one_pattern(conn, db_url, monkeypatch, capsys):
    monkeypatch.setenv("SHARED_QUEUE_DB_URL", db_url)
    _ingest(
        conn,
        [
            _pattern_message("i-1", ["Phoenix"]),
            _pattern_message("i-2", ["phoenix-framework"]),
            _pattern_message("i-1", ["Redis"], kind="technology", language=None),
        ],
    )
    conn.commit()
    assert cli.main(["patterns", "--type", "framework"]) == 0
    out = capsys.readouterr().out
    assert "PATTERNS: 2 in the catalogue (3 names sent), showing 1" in out and "phoenix" in out
    assert "redis" not in out
    assert cli.main(["pattern", "framework", "PHOENIX"]) == 0
    out = capsys.readouterr().out
    assert "framework/phoenix  status observed  version 1" in out
    assert "ALIASES: 2" in out and "phoenix-framework" in out and "EVIDENCE: 2 (instance, language)" in out
    assert cli.main(["pattern", "framework", "nothing-like-it"]) == 1
    assert "framework/nothing-like-it: unknown" in capsys.readouterr().out
    assert count(conn, "hub.pattern_discovery_requests") == 0  # people looking do not ask for discovery


def test_status_shows_pattern_queries_and_misses_per_hour(conn, db_url, monkeypatch, capsys):
    monkeypatch.setenv("SHARED_QUEUE_DB_URL", db_url)
    _ingest(conn, [_pattern_message("i-1", ["Phoenix"])])
    for name in ["phoenix", "Phoenix", "unknown-a", "unknown-b"]:
        _query(conn, "framework", name)
    conn.commit()
    assert cli.main(["status", "--no-dagster"]) == 0
    out = capsys.readouterr().out
    assert "PATTERN QUERIES (hub_api, per UTC hour): 4 queries, 2 misses" in out


def test_pattern_catalogue_asset_reports_counts_and_top_table(conn, db_url):
    from queue_assets.patterns.assets import PATTERN_DISCOVERY_SPEC, pattern_catalogue
    from queue_assets.resources import SharedQueueResource

    _ingest(conn, [_pattern_message("i-1", ["Phoenix", "Ecto"])])
    conn.commit()
    result = dg.materialize(
        [pattern_catalogue], resources={"shared_queue": SharedQueueResource(db_url=db_url)}
    )
    meta = result.asset_materializations_for_node("pattern_catalogue")[0].metadata
    assert meta["patterns"].value == 2 and meta["aliases"].value == 2
    assert "| phoenix |" in meta["top_patterns"].value
    assert PATTERN_DISCOVERY_SPEC.key == dg.AssetKey(["pgmq", "pattern_discovery"])


def test_unicode_names_survive_the_round_trip(conn):
    name = unicodedata.normalize("NFC", "Ｐｈｏｅｎｉｘ-Ｆｒａｍｅｗｏｒｋ")
    _ingest(conn, [_pattern_message("i-1", [name])])
    assert _query(conn, "framework", "phoenix")["aliases"] == [name]
