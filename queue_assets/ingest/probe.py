"""A cheap probe of a queue for sensors: never reads (leases) a message, never scans the table."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..names import validate_queue_name

VISIBLE_CAP = 1000


@dataclass(frozen=True)
class Probe:
    newest_msg_id: int | None
    visible: int
    """Visible messages, counted up to VISIBLE_CAP (an index range scan on vt, never the whole queue)."""


def probe_queue(conn: psycopg.Connection, queue: str) -> Probe:
    table = sql.Identifier("pgmq", "q_" + validate_queue_name(queue))
    row = conn.execute(
        sql.SQL(
            "SELECT (SELECT max(msg_id) FROM {t}),"
            " (SELECT count(*) FROM (SELECT 1 FROM {t} WHERE vt <= clock_timestamp() LIMIT {cap}) s)"
        ).format(t=table, cap=sql.Literal(VISIBLE_CAP))
    ).fetchone()
    return Probe(newest_msg_id=row[0], visible=row[1])
