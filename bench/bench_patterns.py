"""The pattern authority: query latency through hub_api vs a plain indexed SELECT, and ingest with the
catalogue maintained vs without it.

    .venv/bin/python bench/bench_patterns.py [--patterns 100000] [--aliases-per-pattern 10]
        [--queries 3000] [--clients 50] [--per-client 100] [--messages 20000] [--rounds 3] [--ingest-compare catalogue|entry|prepared] [--server URL]

1. Ingest: the same payloads as bench_ingest.py, rounds alternating with the catalogue hook on and
   off (`catalogue.observe_batch` and the prefetch thread's `prepare_batch`, which builds its summary
   ahead, replaced by no-ops in this process), in ABBA order (the tables grow every round), medians
   of each and the median of the pairs' ratios. With
   `--ingest-compare entry` the catalogue is on in every round and the rounds alternate the triggers
   that keep the stored answer `hub.patterns.entry` (sql/016) on and off: what keeping it costs ingest;
   with `--ingest-compare prepared`, the prefetch thread's summary (off: the store summarises).
2. A catalogue of `--patterns` keys and patterns x aliases-per-pattern names, loaded in bulk.
3. Single client, interleaved per query so load on the shared machine hits all three alike:
   a plain indexed `SELECT` on hub.patterns (as the owner: instances may not read hub.*),
   `SELECT hub_api.query_pattern(type, alias)` as an instance login role (raw SQL, as Elixir
   would call it), and `HubClient.query_pattern` (the SDK, same role). Hits by alias.
   Then the same two lookups (plain, API) timed inside the server, interleaved in one DO loop:
   the work per call without the round trip and the client's scheduling; beside them, on a key of
   its own, the plain SELECT of every column but the stored answer `entry` (sql/016), i.e. the row
   as it was before that column widened `SELECT *`.
4. `--clients` threads, each on its own instance-role connection, querying at once.
`--queries 0` runs the ingest comparison only; `--rounds 0` the queries only.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fresh_database, parse_args  # noqa: E402
from queue_assets import security  # noqa: E402
from queue_assets.ingest import core as ingest_core  # noqa: E402
from queue_assets.ingest.core import IngestConfig, ingest_queue  # noqa: E402
from queue_assets.patterns import catalogue  # noqa: E402
from queue_assets.sdk import HubClient  # noqa: E402
from queue_assets_tests.helpers import pattern_message, send_many  # noqa: E402

KINDS = ("framework", "technology", "microservice", "code")
PASSWORD = "bench-patterns-pw"
PLAIN_SQL = "SELECT * FROM hub.patterns WHERE pattern_type = %s AND canonical_name = %s"
API_SQL = "SELECT hub_api.query_pattern(%s, %s)"


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def pct(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100)
    return (
        f"p50 {statistics.median(values) * 1000:.3f} ms, p95 {q[94] * 1000:.3f} ms, p99 {q[98] * 1000:.3f} ms"
    )


ENTRY_TRIGGERS = (
    ("hub.patterns", "patterns_keep_entry"),
    ("hub.pattern_aliases", "pattern_aliases_keep_entries_ins"),
    ("hub.pattern_aliases", "pattern_aliases_keep_entries_upd"),
    ("hub.pattern_aliases", "pattern_aliases_keep_entries_del"),
)


def set_entry_triggers(conn: psycopg.Connection, on: bool) -> None:
    """Switch the triggers that keep hub.patterns.entry (sql/016) on or off (a bench database only).
    Off, the column may be NULL (rows inserted meanwhile have none); on, those get theirs first."""
    for table, trigger in ENTRY_TRIGGERS:
        conn.execute(f"ALTER TABLE {table} {'ENABLE' if on else 'DISABLE'} TRIGGER {trigger}")
    if on:
        conn.execute("UPDATE hub.patterns SET entry = NULL WHERE entry IS NULL")
    conn.execute(f"ALTER TABLE hub.patterns ALTER COLUMN entry {'SET' if on else 'DROP'} NOT NULL")
    conn.commit()


def bench_ingest(url: str, messages: int, rounds: int, compare: str = "catalogue") -> None:
    """Rounds alternating `with` and `without`: the catalogue hook (compare="catalogue"), or, with the
    catalogue on in both, the triggers that keep the stored answer (compare="entry") or the summary
    the prefetch thread builds ahead (compare="prepared": without it the store summarises)."""
    payloads = [pattern_message(f"singularity-{i % 8}", i) for i in range(messages)]
    real, real_prepare = catalogue.observe_batch, ingest_core.prepare_batch
    what = {
        "catalogue": "catalogue",
        "entry": "stored answer (entry triggers)",
        "prepared": "summary built ahead",
    }[compare]
    rates: dict[str, list[float]] = {f"with {what}": [], "without": []}
    with psycopg.connect(url) as conn:
        for r in range(rounds * 2):
            # ABBA: the tables grow every round and each round is a little slower than the one before,
            # so "with" goes first in even pairs and second in odd ones (a fixed order would favour it)
            on = (r % 2 == 0) == ((r // 2) % 2 == 0)
            label = f"with {what}" if on else "without"
            if compare == "entry":
                set_entry_triggers(conn, on)
            elif compare == "prepared":
                ingest_core.prepare_batch = real_prepare if on else (lambda *args: None)
            else:
                catalogue.observe_batch = real if on else (lambda *args: False)
                ingest_core.prepare_batch = real_prepare if on else (lambda *args: None)
            send_many(conn, "pattern_messages", payloads)
            conn.commit()
            t = time.perf_counter()
            res = ingest_queue(conn, "pattern_messages", IngestConfig(), prefetch_url=url)
            rates[label].append(res.read / (time.perf_counter() - t))
    catalogue.observe_batch, ingest_core.prepare_batch = real, real_prepare
    if compare == "entry":
        with psycopg.connect(url) as conn:
            set_entry_triggers(conn, True)
    on, off = statistics.median(rates[f"with {what}"]), statistics.median(rates["without"])
    # each pair ran back to back, on tables of about the same size
    pairs = statistics.median(a / b for a, b in zip(rates[f"with {what}"], rates["without"], strict=True))
    for label, values in rates.items():
        print(
            f"ingest {label}: median {statistics.median(values):,.0f} msg/s "
            f"(rounds: {', '.join(f'{v:,.0f}' for v in values)})"
        )
    print(
        f"ingest with/without {what}: {on / off:.2f} (medians); median of the pairs' ratios {pairs:.2f}"
        f" (load average 1/5/15 min: {load()})"
    )


def load_catalogue(conn: psycopg.Connection, patterns: int, per_pattern: int) -> float:
    t = time.perf_counter()
    conn.execute("SET LOCAL synchronous_commit = off")
    conn.execute(
        "INSERT INTO hub.patterns (pattern_type, canonical_name, display_name, instances, observations,"
        " confidence, languages, top_indicators, first_seen, last_seen, rank)"
        " SELECT (ARRAY['framework','technology','microservice','code'])[1 + i %% 4], 'pattern-' || i,"
        " 'Pattern ' || i, 1 + i %% 50, 10 + i %% 1000, 0.5 + (i %% 50) / 100.0, '{elixir,rust}',"
        " '{mix.exs,Cargo.toml}', now() - interval '30 days', now(), i"
        " FROM generate_series(1, %s) i",
        (patterns,),
    )
    conn.execute(
        "INSERT INTO hub.pattern_aliases (pattern_type, name, canonical_name, observations, first_seen, last_seen)"
        " SELECT (ARRAY['framework','technology','microservice','code'])[1 + i %% 4],"
        " CASE WHEN j = 0 THEN 'pattern-' || i ELSE 'Pattern_' || i || '.v' || j END, 'pattern-' || i,"
        " 1 + j, now() - interval '30 days', now()"
        " FROM generate_series(1, %s) i, generate_series(0, %s) j",
        (patterns, per_pattern - 1),
    )
    conn.commit()
    conn.execute("ANALYZE hub.patterns")
    conn.execute("ANALYZE hub.pattern_aliases")
    conn.commit()
    return time.perf_counter() - t


def alias_of(i: int, j: int) -> tuple[str, str]:
    return KINDS[i % 4], (f"pattern-{i}" if j == 0 else f"Pattern_{i}.v{j}")


def single_client(url: str, role_url: str, patterns: int, per_pattern: int, queries: int) -> None:
    rng = random.Random(11)
    plain_t, raw_t, sdk_t = [], [], []
    with (
        psycopg.connect(url, autocommit=True) as owner,
        psycopg.connect(role_url, autocommit=True) as inst,
        HubClient(role_url, "bench-patterns") as hub,
    ):
        for _ in range(200):  # warm-up: caches, prepared statements, the pool
            i, j = rng.randint(1, patterns), rng.randrange(per_pattern)
            owner.execute(PLAIN_SQL, (KINDS[i % 4], f"pattern-{i}")).fetchall()
            inst.execute(API_SQL, alias_of(i, j)).fetchone()
            hub.query_pattern(*alias_of(i, j))
        for _ in range(queries):
            i, j = rng.randint(1, patterns), rng.randrange(per_pattern)
            t = time.perf_counter()
            owner.execute(PLAIN_SQL, (KINDS[i % 4], f"pattern-{i}")).fetchall()
            plain_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            doc = inst.execute(API_SQL, alias_of(i, j)).fetchone()[0]
            raw_t.append(time.perf_counter() - t)
            assert doc["name"] == f"pattern-{i}", doc
            t = time.perf_counter()
            hit = hub.query_pattern(*alias_of(i, j))
            sdk_t.append(time.perf_counter() - t)
            assert hit.known
    print(f"single client, {queries} queries each, by alias:")
    print(f"  plain indexed SELECT (owner):        {pct(plain_t)}")
    print(f"  hub_api.query_pattern raw SQL (role): {pct(raw_t)}")
    print(f"  HubClient.query_pattern SDK (role):   {pct(sdk_t)}")
    q = lambda v: statistics.quantiles(v, n=100)[94]  # noqa: E731
    print(
        f"  p95 ratio raw/plain {q(raw_t) / q(plain_t):.2f}, SDK/plain {q(sdk_t) / q(plain_t):.2f}; "
        f"p50 ratio raw/plain {statistics.median(raw_t) / statistics.median(plain_t):.2f}"
    )


SERVER_SIDE_SQL = """
DO $$
DECLARE
    kinds CONSTANT text[] := ARRAY['framework', 'technology', 'microservice', 'code'];
    i int; j int; ty text; t0 timestamptz; t1 timestamptz; t2 timestamptz; ta timestamptz; tb timestamptz; r record; d jsonb;
BEGIN
    FOR k IN 1 .. {n} + 200 LOOP
        i := 1 + floor(random() * {patterns})::int;  -- its own key: no lookup warms another's rows
        ty := kinds[1 + i % 4];
        ta := clock_timestamp();
        SELECT {narrow} INTO r FROM hub.patterns WHERE pattern_type = ty AND canonical_name = 'pattern-' || i;
        tb := clock_timestamp();
        i := 1 + floor(random() * {patterns})::int;
        j := floor(random() * {per_pattern})::int;
        ty := kinds[1 + i % 4];
        t0 := clock_timestamp();
        SELECT * INTO r FROM hub.patterns WHERE pattern_type = ty AND canonical_name = 'pattern-' || i;
        t1 := clock_timestamp();
        d := hub_api.query_pattern(ty, CASE WHEN j = 0 THEN 'pattern-' || i ELSE 'Pattern_' || i || '.v' || j END);
        t2 := clock_timestamp();
        IF k > 200 THEN
            INSERT INTO pg_temp.bench_times VALUES (extract(epoch FROM t1 - t0), extract(epoch FROM t2 - t1),
                                                    extract(epoch FROM tb - ta));
        END IF;
    END LOOP;
END
$$"""


def server_side(url: str, patterns: int, per_pattern: int, queries: int) -> None:
    """The same lookups timed inside the server (a DO loop, interleaved): the work per call without the
    client round trip and the client's scheduling, which dominate on a loaded machine."""
    with psycopg.connect(url, autocommit=True) as c:
        # the plain SELECT also without the stored answer (hub.patterns.entry, sql/016): the row as it was
        columns = [
            name
            for (name,) in c.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'hub'"
                " AND table_name = 'patterns' AND column_name <> 'entry' ORDER BY ordinal_position"
            ).fetchall()
        ]
        c.execute("CREATE TEMP TABLE bench_times (plain float8, api float8, narrow float8)")
        c.execute(
            sql.SQL(SERVER_SIDE_SQL).format(
                n=sql.Literal(queries),
                patterns=sql.Literal(patterns),
                per_pattern=sql.Literal(per_pattern),
                narrow=sql.SQL(", ").join(map(sql.Identifier, columns)),
            )
        )
        rows = c.execute("SELECT plain, api, narrow FROM pg_temp.bench_times").fetchall()
    plain, api, narrow = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    print(f"server side, {len(rows)} lookups each (owner, inside one DO block):")
    print(f"  plain indexed SELECT *:             {pct(plain)}")
    print(f"  plain SELECT without entry (own key): {pct(narrow)}")
    print(f"  hub_api.query_pattern:              {pct(api)}")
    q = lambda v: statistics.quantiles(v, n=100)[94]  # noqa: E731
    for label, base in (("SELECT *", plain), ("SELECT without entry", narrow)):
        print(
            f"  vs {label}: p50 ratio {statistics.median(api) / statistics.median(base):.2f},"
            f" p95 ratio {q(api) / q(base):.2f}"
        )


def concurrent(
    url: str, role_url: str, patterns: int, per_pattern: int, clients: int, per_client: int, *, plain: bool
) -> None:
    barrier = threading.Barrier(clients)
    times: list[float] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        mine = []
        with psycopg.connect(url if plain else role_url, autocommit=True) as c:
            barrier.wait()
            for _ in range(per_client):
                i, j = rng.randint(1, patterns), rng.randrange(per_pattern)
                t = time.perf_counter()
                if plain:
                    c.execute(PLAIN_SQL, (KINDS[i % 4], f"pattern-{i}")).fetchall()
                else:
                    c.execute(API_SQL, alias_of(i, j)).fetchone()
                mine.append(time.perf_counter() - t)
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=client, args=(s,)) for s in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    label = "plain SELECT (owner)" if plain else "hub_api.query_pattern (role)"
    print(f"  {clients} clients x {per_client}, {label}: {pct(times)}, {len(times) / wall:,.0f} queries/s")


def main() -> None:
    args = parse_args(
        __doc__,
        patterns=(int, 100_000, "catalogue keys"),
        aliases_per_pattern=(int, 10, "names per key (100,000 x 10 = 1,000,000 aliases)"),
        queries=(int, 3000, "single-client queries per method"),
        clients=(int, 50, "concurrent clients"),
        per_client=(int, 100, "queries per client"),
        messages=(int, 20_000, "messages per ingest round"),
        rounds=(int, 3, "ingest rounds each"),
        ingest_compare=(str, "catalogue", "what the ingest rounds switch off: catalogue, entry or prepared"),
    )
    if args.ingest_compare not in ("catalogue", "entry", "prepared"):
        raise SystemExit(f"--ingest-compare {args.ingest_compare!r}: expected catalogue, entry or prepared")
    url, label, drop = fresh_database(args.server)
    instance = f"bench-{os.getpid()}"
    try:
        print(f"server: {label}")
        if args.rounds:
            bench_ingest(url, args.messages, args.rounds, args.ingest_compare)
        if not args.queries:
            return
        with psycopg.connect(url) as conn:
            conn.execute(
                "TRUNCATE hub.patterns, hub.pattern_aliases, hub.pattern_sightings, hub.pattern_indicators,"
                " hub.enrichment_requests, hub.pattern_approvals"
            )
            conn.commit()
            security.ensure_producer_role(conn)
            security.grant_instance(conn, instance, password=PASSWORD)
            conn.commit()
            loaded = load_catalogue(conn, args.patterns, args.aliases_per_pattern)
            n_p, n_a = conn.execute(
                "SELECT (SELECT count(*) FROM hub.patterns), (SELECT count(*) FROM hub.pattern_aliases)"
            ).fetchone()
        print(f"catalogue: {n_p:,} patterns, {n_a:,} aliases (loaded in {loaded:.1f} s)")
        role_url = psycopg.conninfo.make_conninfo(
            url, user=security.instance_role_for(instance), password=PASSWORD
        )
        single_client(url, role_url, args.patterns, args.aliases_per_pattern, args.queries)
        server_side(url, args.patterns, args.aliases_per_pattern, args.queries)
        print("concurrent:")
        for plain in (True, False):
            concurrent(
                url,
                role_url,
                args.patterns,
                args.aliases_per_pattern,
                args.clients,
                args.per_client,
                plain=plain,
            )
    finally:
        with psycopg.connect(url) as conn:
            security.drop_instance_role(conn, instance)
        drop()


if __name__ == "__main__":
    main()
