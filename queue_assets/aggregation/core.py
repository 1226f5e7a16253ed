"""Pattern aggregation and ranking, pushed down into PostgreSQL (no Dagster here).

One run recomputes the whole ranking from `hub.pattern_observations`, so a message stored late
(after the previous run read the table) simply counts in the next run. Two passes over the table
do all the heavy work in the server: one groups per (pattern_type, name, instance_id, language),
the other counts indicators; the ranking is then computed from those small intermediate tables.
Only the top rows a caller asks for ever reach Python, so its memory stays flat as the table
grows. Measured cost: docs/benchmarks.md.

Definitions (see docs/aggregation.md):

- `instance_count`: distinct instances that reported the pattern;
- `observation_count`: observations of it (one per pattern per stored message);
- `confidence`: mean over the reporting instances of each instance's mean reported confidence
  (observations without a confidence are ignored; NULL when nobody reported one), so an instance
  that reports a pattern 1,000 times weighs as much as one that reports it once;
- `first_seen` / `last_seen`: earliest / latest producer timestamp (`observed_at`);
- `language`: the most observed non-null language (ties: alphabetical);
- `top_indicators`: the `top_indicators` indicators listed most often (ties: alphabetical);
- `score = instance_count + W_CONFIDENCE * coalesce(confidence, 0)
           + W_VOLUME * observation_count / (observation_count + VOLUME_HALF)`:
  the two tie-break terms add at most W_CONFIDENCE + W_VOLUME = 0.9 < 1, so a pattern reported by
  more instances always ranks above one reported by fewer, however chatty a single instance is;
- `rank`: 1..n by score, then observation_count, then pattern_type and name (no ties).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from ..contracts import PATTERN_TYPES
from ..db import one_row
from ..patterns import catalogue

W_CONFIDENCE = 0.6
W_VOLUME = 0.3
VOLUME_HALF = 10.0
DEFAULT_TOP_INDICATORS = 5
DEFAULT_WORK_MEM = "256MB"
# Serialises aggregation runs (two at once would both replace the ranking).
_AGGREGATION_LOCK_KEY = 0x5141_4147  # "QAAG"

# Two passes over the observations, each into a temporary table: CREATE TABLE AS may use a
# parallel plan (the indicator pass does), while INSERT ... SELECT and CTEs never do in
# PostgreSQL <= 17. Everything after these two statements works on the small per-instance rows.
_PER_LANGUAGE_SQL = """
CREATE TEMPORARY TABLE qa_per_language ON COMMIT DROP AS
SELECT pattern_type, name, instance_id, language,
       count(*) AS observations,
       sum(confidence) AS confidence_sum,
       count(confidence) AS confidence_n,
       min(observed_at) AS first_seen,
       max(observed_at) AS last_seen
FROM hub.pattern_observations
GROUP BY pattern_type, name, instance_id, language
"""

_INDICATORS_SQL = """
CREATE TEMPORARY TABLE qa_indicators ON COMMIT DROP AS
SELECT o.pattern_type, o.name, i.indicator, count(*) AS listed
FROM hub.pattern_observations o
CROSS JOIN LATERAL unnest(o.indicators) AS i(indicator)
GROUP BY o.pattern_type, o.name, i.indicator
"""

# max(stored_at) comes from its index, in the run's snapshot.
_TOTALS_SQL = """
SELECT (SELECT count(*) FROM (SELECT instance_id FROM qa_per_language GROUP BY instance_id) i)::integer,
       coalesce(sum(observations), 0)::bigint,
       (SELECT max(stored_at) FROM hub.pattern_observations)
FROM qa_per_language
"""

_REPLACE_RANKING_SQL = """
WITH per_instance AS (
    SELECT pattern_type, name, instance_id,
           sum(observations) AS observations,
           sum(confidence_sum) / nullif(sum(confidence_n), 0) AS confidence,
           min(first_seen) AS first_seen,
           max(last_seen) AS last_seen
    FROM qa_per_language
    GROUP BY pattern_type, name, instance_id
),
per_pattern AS (
    SELECT pattern_type, name,
           count(*)::integer AS instance_count,
           sum(observations)::bigint AS observation_count,
           avg(confidence) AS confidence,
           count(confidence)::integer AS confidence_instances,
           min(first_seen) AS first_seen,
           max(last_seen) AS last_seen
    FROM per_instance
    GROUP BY pattern_type, name
),
languages AS (
    SELECT DISTINCT ON (pattern_type, name) pattern_type, name, language
    FROM (SELECT pattern_type, name, language, sum(observations) AS n
          FROM qa_per_language WHERE language IS NOT NULL
          GROUP BY pattern_type, name, language) l
    ORDER BY pattern_type, name, n DESC, language
),
indicators AS (
    SELECT pattern_type, name, array_agg(indicator ORDER BY listed DESC, indicator) AS top_indicators
    FROM (SELECT pattern_type, name, indicator, listed,
                 row_number() OVER (PARTITION BY pattern_type, name ORDER BY listed DESC, indicator) AS pos
          FROM qa_indicators) ranked
    WHERE pos <= %(top_indicators)s
    GROUP BY pattern_type, name
),
scored AS (
    SELECT p.*,
           p.instance_count
             + %(w_confidence)s * coalesce(p.confidence, 0)
             + %(w_volume)s * p.observation_count / (p.observation_count + %(volume_half)s) AS score
    FROM per_pattern p
)
INSERT INTO qa_staged_ranking
    (pattern_type, name, rank, score, instance_count, observation_count, confidence,
     confidence_instances, language, first_seen, last_seen, top_indicators, run_id)
SELECT s.pattern_type, s.name,
       row_number() OVER (ORDER BY s.score DESC, s.observation_count DESC, s.pattern_type, s.name),
       s.score, s.instance_count, s.observation_count, s.confidence, s.confidence_instances,
       l.language, s.first_seen, s.last_seen, coalesce(i.top_indicators, '{}'), %(run_id)s
FROM scored s
LEFT JOIN languages l USING (pattern_type, name)
LEFT JOIN indicators i USING (pattern_type, name)
"""

# The run's ranking is built aside, checked there, and only then swapped into the live table.
_STAGE_SQL = """
CREATE TEMPORARY TABLE qa_staged_ranking (LIKE hub.aggregated_patterns INCLUDING DEFAULTS) ON COMMIT DROP
"""
STAGED = "qa_staged_ranking"
LIVE = "hub.aggregated_patterns"

_SNAPSHOT_SQL = """
INSERT INTO hub.aggregated_pattern_snapshots
    (run_id, snapshot_at, pattern_type, name, rank, score, instance_count, observation_count, confidence)
SELECT run_id, %(snapshot_at)s, pattern_type, name, rank, score, instance_count, observation_count, confidence
FROM qa_staged_ranking
"""

_SWAP_SQL = (
    "DELETE FROM hub.aggregated_patterns",
    "INSERT INTO hub.aggregated_patterns SELECT * FROM qa_staged_ranking",
)


@dataclass(frozen=True)
class AggregationResult:
    run_id: int
    started_at: datetime
    patterns: int
    observations: int
    instances: int
    max_stored_at: datetime | None
    snapshots_pruned: int
    elapsed_s: float
    key_problems: list[str] = field(default_factory=list)
    value_problems: list[str] = field(default_factory=list)
    published: bool = True
    """False: a blocking check failed on the staged ranking; the previous ranking stays live."""


@dataclass(frozen=True)
class RankedPattern:
    rank: int
    pattern_type: str
    name: str
    score: float
    instance_count: int
    observation_count: int
    confidence: float | None
    language: str | None
    first_seen: datetime
    last_seen: datetime
    top_indicators: list[str] = field(default_factory=list)
    run_id: int | None = None
    """The aggregation run the row comes from."""


RANKED_COLUMNS = (
    "rank",
    "pattern_type",
    "name",
    "score",
    "instance_count",
    "observation_count",
    "confidence",
    "language",
    "first_seen",
    "last_seen",
    "top_indicators",
    "run_id",
)
_RANKING_SQL = "SELECT " + ", ".join(RANKED_COLUMNS) + " FROM hub.aggregated_patterns ORDER BY rank LIMIT %s"


def score(instance_count: int, observation_count: int, confidence: float | None) -> float:
    """The ranking score, as the SQL computes it (for tests and docs)."""
    return (
        instance_count
        + W_CONFIDENCE * (confidence or 0.0)
        + W_VOLUME * observation_count / (observation_count + VOLUME_HALF)
    )


def _check_work_mem(value: str) -> str:
    import re

    if not re.fullmatch(r"[1-9][0-9]{0,6}(kB|MB|GB)", value):
        raise ValueError(f"work_mem {value!r} is not a PostgreSQL memory size such as '256MB'")
    return value


def check_parameters(top_indicators: int, work_mem: str) -> None:
    """ValueError naming the value, for a run's parameters that can never work."""
    if not 1 <= top_indicators <= 100:
        raise ValueError(f"top_indicators={top_indicators}: must be between 1 and 100")
    _check_work_mem(work_mem)


def aggregate(
    conn: psycopg.Connection,
    *,
    top_indicators: int = DEFAULT_TOP_INDICATORS,
    retention_days: int | None = 90,
    work_mem: str = DEFAULT_WORK_MEM,
    dagster_run_id: str | None = None,
) -> AggregationResult:
    """Recompute the ranking from all observations, check it, and only if it passes replace
    `hub.aggregated_patterns` with it; snapshot it either way.

    The ranking is built in a staging table, the blocking checks (`check_keys`, `check_values`)
    run on it, and the swap into the live table happens in the same transaction only when both
    find nothing: readers see the previous ranking until it commits, and a ranking that fails a
    check never becomes live (`published=False`; the run and its snapshot are kept, marked not
    published, for diagnosis). Runs are serialised. Snapshots of runs older than `retention_days`
    are pruned (None keeps them all), never the run the live ranking comes from.
    """
    check_parameters(top_indicators, work_mem)
    started = time.perf_counter()
    # On a connection of its own, the run reads one REPEATABLE READ snapshot, so both passes and the
    # totals see exactly the same rows. Its snapshot must start after the previous run committed,
    # so the lock that serialises runs is taken first, at session level. Inside a caller's open
    # transaction the run joins it (as a savepoint) and locks for that transaction.
    own = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    if own:
        conn.execute("SELECT pg_advisory_lock(%s)", (_AGGREGATION_LOCK_KEY,))
        conn.commit()
    try:
        with conn.transaction():
            if own:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            else:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_AGGREGATION_LOCK_KEY,))
            result = _aggregate(conn, top_indicators, retention_days, work_mem, dagster_run_id, started)
        # The catalogue's rank follows the new ranking; its own READ COMMITTED transaction, because
        # ingest updates hub.patterns concurrently (REPEATABLE READ would fail on those rows).
        with conn.transaction():
            catalogue.refresh_ranks(conn)
    finally:
        if own:
            # A connection that died took its lock with it.
            with contextlib.suppress(psycopg.OperationalError):
                conn.execute("SELECT pg_advisory_unlock(%s)", (_AGGREGATION_LOCK_KEY,))
                conn.commit()
    return result


def _aggregate(
    conn: psycopg.Connection,
    top_indicators: int,
    retention_days: int | None,
    work_mem: str,
    dagster_run_id: str | None,
    started: float,
) -> AggregationResult:
    # Server-side memory for the hash aggregates, for this transaction only.
    conn.execute("SELECT set_config('work_mem', %s, true)", (work_mem,))
    run_id, started_at = one_row(
        conn.execute(
            "INSERT INTO hub.aggregation_runs (dagster_run_id, published) VALUES (%s, false)"
            " RETURNING run_id, started_at",
            (dagster_run_id,),
        ),
        "the new aggregation run",
    )
    conn.execute(_PER_LANGUAGE_SQL)
    conn.execute(_INDICATORS_SQL)
    instances, observations, max_stored_at = one_row(conn.execute(_TOTALS_SQL), "the ranking totals")
    conn.execute(_STAGE_SQL)
    patterns = conn.execute(
        _REPLACE_RANKING_SQL,
        {
            "run_id": run_id,
            "top_indicators": top_indicators,
            "w_confidence": W_CONFIDENCE,
            "w_volume": W_VOLUME,
            "volume_half": VOLUME_HALF,
        },
    ).rowcount
    conn.execute(_SNAPSHOT_SQL, {"snapshot_at": started_at})
    key_problems = check_keys(conn, PATTERN_TYPES, table=STAGED)
    value_problems = check_values(conn, table=STAGED)
    published = not key_problems and not value_problems
    if published:
        for statement in _SWAP_SQL:
            conn.execute(statement)
    pruned = 0
    if retention_days is not None:
        pruned = conn.execute(
            "DELETE FROM hub.aggregation_runs WHERE started_at < %s - make_interval(days => %s)"
            " AND run_id <> %s AND run_id NOT IN (SELECT run_id FROM hub.aggregated_patterns)",
            (started_at, retention_days, run_id),
        ).rowcount
    conn.execute(
        "UPDATE hub.aggregation_runs SET finished_at = clock_timestamp(), observations = %s,"
        " patterns = %s, instances = %s, max_stored_at = %s, published = %s, check_problems = %s"
        " WHERE run_id = %s",
        (observations, patterns, instances, max_stored_at, published, key_problems + value_problems, run_id),
    )
    return AggregationResult(
        run_id=run_id,
        started_at=started_at,
        patterns=patterns,
        observations=observations,
        instances=instances,
        max_stored_at=max_stored_at,
        snapshots_pruned=pruned,
        elapsed_s=time.perf_counter() - started,
        key_problems=key_problems,
        value_problems=value_problems,
        published=published,
    )


def ranking(conn: psycopg.Connection, *, limit: int | None = None) -> list[RankedPattern]:
    """The current ranking, best first (all of it, or the top `limit`)."""
    rows = conn.execute(
        _RANKING_SQL,
        (limit,),
    ).fetchall()
    return [RankedPattern(*row) for row in rows]


def latest_run(conn: psycopg.Connection) -> tuple[int, datetime] | None:
    """(run_id, started_at) of the run the current ranking comes from, or None before any run."""
    return conn.execute(
        "SELECT r.run_id, r.started_at FROM hub.aggregation_runs r"
        " WHERE r.run_id = (SELECT max(run_id) FROM hub.aggregation_runs WHERE finished_at IS NOT NULL"
        " AND published)"
    ).fetchone()


def rank_history(conn: psycopg.Connection, pattern_type: str, name: str) -> list[tuple[int, int, float]]:
    """(run_id, rank, score) of one pattern across the kept published snapshots, oldest first."""
    return conn.execute(
        "SELECT s.run_id, s.rank, s.score FROM hub.aggregated_pattern_snapshots s"
        " JOIN hub.aggregation_runs r USING (run_id)"
        " WHERE r.published AND s.pattern_type = %s AND s.name = %s ORDER BY s.run_id",
        (pattern_type, name),
    ).fetchall()


def rank_changes(conn: psycopg.Connection, run_id: int) -> dict[str, int]:
    """How the ranking of `run_id` differs from the previous published snapshot: patterns that are
    new, gone, moved up or down."""
    row = one_row(
        conn.execute(
            """
        WITH prev AS (SELECT max(run_id) AS run_id FROM hub.aggregation_runs WHERE run_id < %(r)s AND published),
        cur AS (SELECT pattern_type, name, rank FROM hub.aggregated_pattern_snapshots WHERE run_id = %(r)s),
        old AS (SELECT s.pattern_type, s.name, s.rank FROM hub.aggregated_pattern_snapshots s, prev
                WHERE s.run_id = prev.run_id)
        SELECT count(*) FILTER (WHERE old.rank IS NULL),
               count(*) FILTER (WHERE cur.rank IS NULL),
               count(*) FILTER (WHERE cur.rank < old.rank),
               count(*) FILTER (WHERE cur.rank > old.rank)
        FROM cur FULL JOIN old USING (pattern_type, name)
        """,
            {"r": run_id},
        ),
        "the rank changes",
    )
    return dict(zip(("new", "gone", "moved_up", "moved_down"), row, strict=True))


def previous_ranks(
    conn: psycopg.Connection, run_id: int, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """Rank of each (pattern_type, name) in the published snapshot before `run_id` (absent: it was not
    ranked)."""
    if not keys:
        return {}
    rows = conn.execute(
        "SELECT s.pattern_type, s.name, s.rank FROM hub.aggregated_pattern_snapshots s"
        " JOIN unnest(%s::text[], %s::text[]) AS k(pattern_type, name) USING (pattern_type, name)"
        " WHERE s.run_id = (SELECT max(run_id) FROM hub.aggregation_runs WHERE run_id < %s AND published)",
        ([k[0] for k in keys], [k[1] for k in keys], run_id),
    ).fetchall()
    return {(t, n): r for t, n, r in rows}


# --- validation (what the blocking asset checks run) ----------------------------------------------

_MAX_EXAMPLES = 5


def _table(name: str) -> sql.Identifier:
    if name not in (LIVE, STAGED):
        raise ValueError(f"table {name!r}: the checks run on {LIVE!r} or {STAGED!r} only")
    return sql.Identifier(*name.split("."))


def check_keys(conn: psycopg.Connection, pattern_types: tuple[str, ...], *, table: str = LIVE) -> list[str]:
    """Problems with the ranking's identity: duplicate (pattern_type, name), unknown pattern kinds,
    ranks that are not exactly 1..n, a snapshot that does not match the ranking. Empty: all good.
    `table`: the live ranking, or the staged one inside `aggregate`'s transaction."""
    t = _table(table)
    problems = []
    dups = conn.execute(
        sql.SQL(
            "SELECT pattern_type, name, count(*) FROM {}"
            " GROUP BY 1, 2 HAVING count(*) > 1 ORDER BY 3 DESC, 1, 2 LIMIT %s"
        ).format(t),
        (_MAX_EXAMPLES,),
    ).fetchall()
    if dups:
        problems.append("duplicate (pattern_type, name): " + ", ".join(f"{t}/{n} x{c}" for t, n, c in dups))
    kinds = conn.execute(
        sql.SQL(
            "SELECT DISTINCT pattern_type FROM {} WHERE pattern_type <> ALL(%s) ORDER BY 1 LIMIT %s"
        ).format(t),
        (list(pattern_types), _MAX_EXAMPLES),
    ).fetchall()
    if kinds:
        problems.append("unknown pattern_type: " + ", ".join(repr(k) for (k,) in kinds))
    n, distinct_ranks, lo, hi, runs = one_row(
        conn.execute(
            sql.SQL(
                "SELECT count(*), count(DISTINCT rank), min(rank), max(rank), count(DISTINCT run_id) FROM {}"
            ).format(t)
        ),
        "the ranking's rank summary",
    )
    if n and (distinct_ranks != n or lo != 1 or hi != n):
        problems.append(f"ranks are not exactly 1..{n}: {distinct_ranks} distinct, from {lo} to {hi}")
    if runs > 1:
        problems.append(f"the ranking mixes rows of {runs} aggregation runs")
    if n:
        (snap,) = one_row(
            conn.execute(
                sql.SQL(
                    "SELECT count(*) FROM hub.aggregated_pattern_snapshots s JOIN {} p"
                    " USING (run_id, pattern_type, name, rank)"
                ).format(t)
            ),
            "the snapshot match count",
        )
        if snap != n:
            problems.append(f"the run's snapshot matches {snap} of the {n} ranked patterns")
    return problems


def check_values(conn: psycopg.Connection, *, table: str = LIVE) -> list[str]:
    """Problems with the ranking's numbers: confidence outside [0, 1], a score outside
    [instance_count, instance_count + 0.9], counts that cannot be, first_seen after last_seen."""
    rules = {
        "confidence outside [0, 1]": "confidence IS NOT NULL AND NOT (confidence BETWEEN 0 AND 1)",
        f"score outside [instance_count, instance_count + {W_CONFIDENCE + W_VOLUME:g}]": "NOT (score >= instance_count AND score <= instance_count + %(max_tiebreak)s)"
        " OR score = 'NaN'::float8",
        "instance_count < 1": "instance_count < 1",
        "observation_count < instance_count": "observation_count < instance_count",
        "confidence_instances outside [0, instance_count]": "confidence_instances < 0 OR confidence_instances > instance_count",
        "first_seen after last_seen": "first_seen > last_seen",
    }
    problems = []
    for label, where in rules.items():
        rows = conn.execute(
            sql.SQL(
                "SELECT pattern_type, name, count(*) OVER () FROM {} WHERE {} ORDER BY rank LIMIT %(limit)s"
            ).format(_table(table), sql.SQL(where)),  # the rules are constants above
            {"max_tiebreak": W_CONFIDENCE + W_VOLUME + 1e-9, "limit": _MAX_EXAMPLES},
        ).fetchall()
        if rows:
            examples = ", ".join(f"{t}/{n}" for t, n, _ in rows)
            problems.append(f"{label}: {rows[0][2]} patterns, e.g. {examples}")
    return problems
