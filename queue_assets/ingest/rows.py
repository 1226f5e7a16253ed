"""From validated messages to `hub.*` rows (the ledger already de-duplicated the messages).

Rows are built in Python from the validated, normalised models (one source of truth for what a
message means) and shipped as ONE JSON document per table per batch; PostgreSQL expands it with
`jsonb_to_recordset`. That is one round trip per table and no per-value adaptation in Python,
which is what makes ingest keep pace with a raw pgmq read/archive loop.
"""

from __future__ import annotations

import psycopg

from ..names import inbox_queue_for

_PATTERN_FIELDS = frozenset({"pattern_type", "name", "confidence", "indicators", "language"})

# table -> column definitions for json_to_recordset (constants, never user input); the order of this
# dict is the order of build_rows' output. The queue and its incarnation are the same for every row of
# a batch: the statement adds them (parameters), the rows do not repeat them.
TABLES = {
    "pattern_observations": "msg_id bigint, ordinal int, instance_id text, pattern_type text,"
    " name text, confidence float8, language text, indicators text[], attributes jsonb, observed_at timestamptz",
    "code_analyses": "msg_id bigint, instance_id text, analysis jsonb, observed_at timestamptz",
    "learned_artifacts": "msg_id bigint, ordinal int, instance_id text, artifact_id text,"
    " artifact_type text, name text, content jsonb, usage_count bigint, success_rate float8,"
    " observed_at timestamptz",
    "heartbeats": "msg_id bigint, instance_id text, version text, status text, observed_at timestamptz",
}


def _pattern_attributes(p) -> dict:
    extra = p.model_extra
    if not p.examples:
        return extra if extra is not None else {}  # not copied: only serialised
    attrs = dict(extra or {})
    attrs["examples"] = p.examples
    return attrs


def build_rows(valid: list) -> dict[str, list[dict]]:
    """The hub rows of every valid delivery, by table, without the queue columns (the statement adds
    them). Datetimes stay datetimes: orjson writes them (RFC 3339) faster than isoformat()."""
    out: dict[str, list[dict]] = {t: [] for t in TABLES}
    observations, analyses, artifacts, heartbeats = (out[t] for t in TABLES)
    for d in valid:
        m = d.model
        msg_id, inst, ts, kind = d.msg_id, d.instance_id, m.timestamp, m.type
        if kind == "pattern_detection":
            observations.extend(
                {
                    "msg_id": msg_id,
                    "ordinal": i,
                    "instance_id": inst,
                    "pattern_type": p.pattern_type,
                    "name": p.name,
                    "confidence": p.confidence,
                    "language": p.language,
                    "indicators": p.indicators,
                    "attributes": _pattern_attributes(p),
                    "observed_at": ts,
                }
                for i, p in enumerate(m.patterns)
            )
        elif kind == "code_analysis":
            analyses.append(
                {"msg_id": msg_id, "instance_id": inst, "analysis": m.analysis, "observed_at": ts}
            )
        elif kind in ("learned_patterns", "learned_artifacts"):
            for i, a in enumerate(m.artifacts):
                artifacts.append(
                    {
                        "msg_id": msg_id,
                        "ordinal": i,
                        "instance_id": inst,
                        "artifact_id": a.artifact_id,
                        "artifact_type": a.artifact_type,
                        "name": a.name,
                        "content": a.content,
                        "usage_count": a.usage_count if a.usage_count is not None else m.usage_count,
                        "success_rate": a.success_rate if a.success_rate is not None else m.success_rate,
                        "observed_at": ts,
                    }
                )
        elif kind == "heartbeat":
            heartbeats.append(
                {
                    "msg_id": msg_id,
                    "instance_id": inst,
                    "version": m.version,
                    "status": m.status,
                    "observed_at": ts,
                }
            )
    return out


def instance_summary(fresh: list) -> dict[str, list]:
    """instance -> [first ts, last ts, latest heartbeat model, heartbeat count] over stored messages."""
    seen: dict[str, list] = {}
    for d in fresh:
        m = d.model
        ts = m.timestamp
        entry = seen.get(d.instance_id)
        if entry is None:
            entry = seen[d.instance_id] = [ts, ts, None, 0]
        elif ts < entry[0]:
            entry[0] = ts
        elif ts > entry[1]:
            entry[1] = ts
        if m.type == "heartbeat":
            entry[3] += 1
            if entry[2] is None or ts >= entry[2].timestamp:
                entry[2] = m
    return seen


def upsert_instances(conn: psycopg.Connection, seen: dict[str, list]) -> None:
    """Record every instance a stored message named; heartbeats also update version and status."""
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
