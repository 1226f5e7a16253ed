"""Helpers for the operations tests: messages with controlled timestamps, live or archived, and dead letters."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import psycopg
from psycopg import sql


def put(
    conn: psycopg.Connection,
    queue: str,
    message: dict,
    *,
    enqueued_at: datetime,
    read_ct: int = 0,
    archived_at: datetime | None = None,
    vt: datetime | None = None,
    headers: dict | None = None,
) -> int:
    """Send `message` with pgmq, then set its timestamps (and archive it when `archived_at` is given)."""
    msg_id = conn.execute(
        "SELECT * FROM pgmq.send(%s, %s::jsonb, %s::jsonb)",
        (queue, json.dumps(message), json.dumps(headers) if headers is not None else None),
    ).fetchone()[0]
    live = sql.Identifier("pgmq", "q_" + queue)
    conn.execute(
        sql.SQL("UPDATE {} SET enqueued_at = %s, read_ct = %s, vt = %s WHERE msg_id = %s").format(live),
        (enqueued_at, read_ct, vt or enqueued_at, msg_id),
    )
    if archived_at is not None:
        conn.execute("SELECT pgmq.archive(%s, %s::bigint)", (queue, msg_id))
        conn.execute(
            sql.SQL("UPDATE {} SET archived_at = %s WHERE msg_id = %s").format(
                sql.Identifier("pgmq", "a_" + queue)
            ),
            (archived_at, msg_id),
        )
    conn.commit()
    return msg_id


def dlq_headers(
    source: str,
    source_msg_id: int,
    *,
    kind: str = "invalid_contract",
    reason: str = "field `timestamp`: not a time",
    original: dict | None = None,
) -> dict:
    """Headers as the ingest writes them on a dead letter (`ingest.core._dlq_headers`)."""
    headers = dict(original or {})
    headers.update(
        {
            "x-dlq-reason": reason,
            "x-dlq-kind": kind,
            "x-dlq-source-queue": source,
            "x-dlq-source-msg-id": source_msg_id,
            "x-dlq-read-ct": 1,
            "x-dlq-enqueued-at": "2025-10-25T12:00:00+00:00",
            "x-dlq-failed-at": "2025-10-25T12:00:01+00:00",
        }
    )
    return headers


def ids(conn: psycopg.Connection, table: str) -> set[int]:
    schema, name = table.split(".")
    rows = conn.execute(sql.SQL("SELECT msg_id FROM {}").format(sql.Identifier(schema, name))).fetchall()
    conn.commit()
    return {r[0] for r in rows}


def days_ago(now: datetime, days: float) -> datetime:
    return now - timedelta(days=days)
