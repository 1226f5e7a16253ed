"""The catalogue's SQL calls (no Dagster): ingest's hook, the rank refresh, reads for people.

The maintenance itself is SQL (`hub.catalogue_observe`, `hub.catalogue_refresh_ranks`, sql/010):
ingest calls it once per batch in the transaction that stores the observations, and the
aggregation after it replaced the hourly ranking.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import orjson
import psycopg

from . import canonical

MAX_EXAMPLES = 5
MAX_EXAMPLE_CHARS = 1000


def summarise(fresh: list) -> dict | None:
    """The batch summary `hub.catalogue_observe` takes (sql/010 documents it), from the stored
    deliveries: per name, per (name, instance, language), per (name, indicator), and the first
    distinct examples. None when the batch holds no pattern."""
    names: dict = {}
    sightings: dict = {}
    indicators: Counter = Counter()
    examples: dict = {}
    for d in fresh:
        m = d.model
        if m.type != "pattern_detection":
            continue
        ts = m.timestamp
        for p in m.patterns:
            key = (p.pattern_type, p.name)
            _widen(names, key, ts, None)
            _widen(sightings, (*key, d.instance_id, p.language or ""), ts, p.confidence)
            for indicator in p.indicators:
                indicators[(*key, indicator)] += 1
            if p.examples:
                kept = examples.setdefault(key, {})
                for e in p.examples:
                    text = orjson.dumps(e).decode()
                    if len(kept) < MAX_EXAMPLES and len(text) <= MAX_EXAMPLE_CHARS and text not in kept:
                        kept[text] = e
    if not names:
        return None
    return {
        "names": [{"t": t, "n": n, "c": v[0], "f": v[1], "l": v[2]} for (t, n), v in names.items()],
        "sightings": [
            {"t": t, "n": n, "i": i, "g": g, "c": v[0], "f": v[1], "l": v[2], "s": v[3], "k": v[4]}
            for (t, n, i, g), v in sightings.items()
        ],
        "indicators": [{"t": t, "n": n, "x": x, "c": c} for (t, n, x), c in indicators.items()],
        "examples": [{"t": t, "n": n, "e": e} for (t, n), kept in examples.items() for e in kept.values()],
    }


def _widen(acc: dict, key: tuple, ts, confidence) -> None:
    """[count, first, last, confidence sum, confidences] of `key`, widened by one observation."""
    v = acc.get(key)
    if v is None:
        v = acc[key] = [0, ts, ts, None, 0]
    v[0] += 1
    if ts < v[1]:
        v[1] = ts
    if ts > v[2]:
        v[2] = ts
    if confidence is not None:
        v[3] = (v[3] or 0.0) + confidence
        v[4] += 1


@dataclass(frozen=True)
class PreparedSummary:
    """The batch summary's JSON, built ahead (ingest's prefetch thread, while the previous batch is
    stored) from the batch's `messages` valid deliveries. It stands for the stored ones only when all
    of them were stored (no duplicates): `observe_batch` checks that by count."""

    messages: int
    json: str | None
    """None: the batch holds no pattern."""


def prepare(valid: list) -> PreparedSummary:
    """Summarise a batch's valid deliveries ahead of storing them (see PreparedSummary)."""
    summary = summarise(valid)
    return PreparedSummary(len(valid), None if summary is None else orjson.dumps(summary).decode())


def observe_batch(conn: psycopg.Connection, fresh: list, prepared: PreparedSummary | None = None) -> bool:
    """Fold the stored pattern_detection messages of a batch into the catalogue (one call).

    `prepared`, when it was built from exactly these deliveries (the batch's valid ones, all of them
    stored), saves summarising them here. Returns whether the batch held any pattern: only then does
    the session's scratch table `qa_catalogue_names` (which `enrichment.send_for_new_keys` reads)
    hold this batch's names. A batch of code_analysis messages leaves it as it was: absent in a new
    session, or the previous batch's names."""
    if prepared is None or prepared.messages != len(fresh):
        prepared = prepare(fresh)
    if prepared.json is None:
        return False
    conn.execute("SELECT hub.catalogue_observe(%s::jsonb)", (prepared.json,))
    return True


def refresh_ranks(conn: psycopg.Connection) -> int:
    """Copy the current hourly ranking into `hub.patterns.rank`; returns the rows changed."""
    return _row(conn, "SELECT hub.catalogue_refresh_ranks()")[0]


@dataclass(frozen=True)
class CatalogueCounts:
    patterns: int
    aliases: int
    observed: int
    ranked: int
    instances_max: int
    discovery_requests_24h: int
    by_type: dict[str, int]


def _row(conn: psycopg.Connection, statement: str) -> tuple:
    row = conn.execute(statement).fetchone()
    assert row is not None  # aggregates always return a row
    return row


def counts(conn: psycopg.Connection) -> CatalogueCounts:
    patterns, observed, ranked, inst_max = _row(
        conn,
        "SELECT count(*), count(*) FILTER (WHERE status = 'observed'), count(rank), coalesce(max(instances), 0)"
        " FROM hub.patterns",
    )
    (aliases,) = _row(conn, "SELECT count(*) FROM hub.pattern_aliases")
    (requests,) = _row(
        conn,
        "SELECT count(*) FROM hub.pattern_discovery_requests WHERE asked_at > now() - interval '24 hours'",
    )
    by_type: dict[str, int] = dict(
        conn.execute("SELECT pattern_type, count(*) FROM hub.patterns GROUP BY 1 ORDER BY 1").fetchall()
    )
    return CatalogueCounts(patterns, aliases, observed, ranked, inst_max, requests, by_type)


# The columns `top` returns, in the order the CLI and the asset's table show them.
LIST_COLUMNS = (
    "rank",
    "pattern_type",
    "canonical_name",
    "status",
    "instances",
    "observations",
    "confidence",
    "languages",
    "version",
)


def top(
    conn: psycopg.Connection,
    *,
    pattern_type: str | None = None,
    language: str | None = None,
    status: str | None = None,
    limit: int = 20,
) -> list[dict]:
    """Catalogue rows by rank (unranked last), filtered like hub_api.query_patterns."""
    if pattern_type is not None:
        canonical.check_pattern_type(pattern_type)
    if status is not None and status not in canonical.STATUSES:
        raise canonical.PatternInputError(
            f"status {status!r} is not a pattern status; expected one of: {', '.join(canonical.STATUSES)}"
        )
    rows = conn.execute(
        "SELECT " + ", ".join(LIST_COLUMNS) + " FROM hub.patterns p"
        " WHERE (%(t)s::text IS NULL OR pattern_type = %(t)s)"
        " AND (%(s)s::text IS NULL OR status = %(s)s)"
        " AND (%(l)s::text IS NULL OR EXISTS (SELECT 1 FROM unnest(p.languages) x WHERE lower(x) = lower(%(l)s)))"
        " ORDER BY rank NULLS LAST, instances DESC, observations DESC, pattern_type, canonical_name LIMIT %(n)s",
        {"t": pattern_type, "s": status, "l": language, "n": limit},
    ).fetchall()
    return [dict(zip(LIST_COLUMNS, r, strict=True)) for r in rows]


def describe(conn: psycopg.Connection, pattern_type: str, name: str) -> dict | None:
    """One pattern with all its aliases and its evidence per instance, or None when unknown.

    Reads as the hub (not through hub_api), so looking something up here neither counts as an
    instance's query nor asks for a discovery.
    """
    pattern_type = canonical.check_pattern_type(pattern_type)
    name = canonical.check_name(name)
    row = conn.execute(
        "SELECT to_jsonb(p) - 'entry' FROM hub.patterns p WHERE p.pattern_type = %(t)s AND p.canonical_name ="
        " coalesce((SELECT canonical_name FROM hub.pattern_aliases WHERE pattern_type = %(t)s AND name = %(n)s),"
        " hub.canonical_pattern_name(%(n)s))",
        {"t": pattern_type, "n": name},
    ).fetchone()
    if row is None:
        return None
    info = row[0]
    key = (pattern_type, info["canonical_name"])
    info["aliases"] = conn.execute(
        "SELECT name, observations, first_seen, last_seen FROM hub.pattern_aliases"
        " WHERE pattern_type = %s AND canonical_name = %s ORDER BY observations DESC, name",
        key,
    ).fetchall()
    info["sightings"] = conn.execute(
        "SELECT instance_id, nullif(language, ''), observations, confidence_sum / nullif(confidence_n, 0),"
        " last_seen FROM hub.pattern_sightings WHERE pattern_type = %s AND canonical_name = %s"
        " ORDER BY observations DESC, instance_id, language",
        key,
    ).fetchall()
    return info
