"""From validated messages to `hub.*` rows, written with COPY (the ledger already de-duplicated them)."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg.types.json import Jsonb

_PATTERN_FIELDS = {"pattern_type", "name", "confidence", "indicators", "language"}


def _copy(conn: psycopg.Connection, table: str, columns: tuple[str, ...], rows: Iterable[tuple]) -> None:
    rows = list(rows)
    if not rows:
        return
    stmt = f"COPY hub.{table} ({', '.join(columns)}) FROM STDIN"  # table/columns are constants here
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        for row in rows:
            copy.write_row(row)


def write_rows(conn: psycopg.Connection, queue: str, fresh: list) -> None:
    observations, analyses, artifacts, heartbeats = [], [], [], []
    seen: dict[str, list] = {}
    for d in fresh:
        m = d.model
        inst = d.instance_id
        entry = seen.setdefault(inst, [m.timestamp, m.timestamp, None, 0])
        entry[0] = min(entry[0], m.timestamp)
        entry[1] = max(entry[1], m.timestamp)
        if m.type == "pattern_detection":
            for i, p in enumerate(m.patterns):
                data = p.model_dump(mode="json")
                attrs = {k: v for k, v in data.items() if k not in _PATTERN_FIELDS and v is not None}
                observations.append(
                    (queue, d.msg_id, i, inst, p.pattern_type, p.name, p.confidence, p.language,
                     list(p.indicators or []), Jsonb(attrs), m.timestamp)
                )
        elif m.type == "code_analysis":
            analyses.append((queue, d.msg_id, inst, Jsonb(m.analysis), m.timestamp))
        elif m.type in ("learned_patterns", "learned_artifacts"):
            for i, a in enumerate(m.artifacts):
                usage = a.usage_count if getattr(a, "usage_count", None) is not None else m.usage_count
                rate = a.success_rate if getattr(a, "success_rate", None) is not None else m.success_rate
                artifacts.append(
                    (queue, d.msg_id, i, inst, a.artifact_id, a.artifact_type, a.name,
                     Jsonb(a.content), usage, rate, m.timestamp)
                )
        elif m.type == "heartbeat":
            heartbeats.append((queue, d.msg_id, inst, m.version, m.status, m.timestamp))
            entry[3] += 1
            if entry[2] is None or m.timestamp >= entry[2].timestamp:
                entry[2] = m
    _copy(conn, "pattern_observations",
          ("queue", "msg_id", "ordinal", "instance_id", "pattern_type", "name", "confidence", "language",
           "indicators", "attributes", "observed_at"), observations)
    _copy(conn, "code_analyses", ("queue", "msg_id", "instance_id", "analysis", "observed_at"), analyses)
    _copy(conn, "learned_artifacts",
          ("queue", "msg_id", "ordinal", "instance_id", "artifact_id", "artifact_type", "name", "content",
           "usage_count", "success_rate", "observed_at"), artifacts)
    _copy(conn, "heartbeats", ("queue", "msg_id", "instance_id", "version", "status", "observed_at"), heartbeats)
    if seen:
        upsert_instances(conn, seen)


def upsert_instances(conn: psycopg.Connection, seen: dict[str, list]) -> None:
    """Record every instance a stored message named; heartbeats also update version and status."""
    from ..names import inbox_queue_for

    ids = sorted(seen)  # a fixed order avoids deadlocks between concurrent consumers
    hb = [seen[i][2] for i in ids]
    conn.execute(
        "INSERT INTO hub.instances AS i (instance_id, inbox_queue, first_seen, last_seen, last_heartbeat,"
        " version, status, heartbeat_count)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[],"
        " %s::timestamptz[], %s::text[], %s::text[], %s::bigint[])"
        " ON CONFLICT (instance_id) DO UPDATE SET"
        "  first_seen = least(i.first_seen, excluded.first_seen),"
        "  last_seen = greatest(i.last_seen, excluded.last_seen),"
        "  last_heartbeat = CASE WHEN excluded.last_heartbeat IS NOT NULL"
        "     AND (i.last_heartbeat IS NULL OR excluded.last_heartbeat >= i.last_heartbeat)"
        "     THEN excluded.last_heartbeat ELSE i.last_heartbeat END,"
        "  version = CASE WHEN excluded.last_heartbeat >= coalesce(i.last_heartbeat, '-infinity')"
        "     THEN coalesce(excluded.version, i.version) ELSE i.version END,"
        "  status = CASE WHEN excluded.last_heartbeat >= coalesce(i.last_heartbeat, '-infinity')"
        "     THEN coalesce(excluded.status, i.status) ELSE i.status END,"
        "  heartbeat_count = i.heartbeat_count + excluded.heartbeat_count",
        (
            ids,
            [inbox_queue_for(i) for i in ids],
            [seen[i][0] for i in ids],
            [seen[i][1] for i in ids],
            [h.timestamp if h else None for h in hb],
            [getattr(h, "version", None) if h else None for h in hb],
            [getattr(h, "status", None) if h else None for h in hb],
            [seen[i][3] for i in ids],
        ),
    )
