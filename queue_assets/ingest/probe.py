"""A cheap probe of a queue for sensors: never reads (leases) a message, never scans the table."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..db import one_row
from ..names import validate_queue_name

VISIBLE_CAP = 1000


@dataclass(frozen=True)
class Probe:
    newest_msg_id: int | None
    visible: int
    """Visible messages, counted up to VISIBLE_CAP (an index range scan on vt, never the whole queue)."""
    sent: int = 0
    """Messages ever sent to the queue (its msg_id sequence): tells the sensor whether any arrived since its
    last tick, even when a running run already stored them (visible is then 0)."""


def probe_queue(conn: psycopg.Connection, queue: str) -> Probe:
    table = sql.Identifier("pgmq", "q_" + validate_queue_name(queue))
    row = one_row(
        conn.execute(
            sql.SQL(
                "SELECT (SELECT max(msg_id) FROM {t}),"
                " (SELECT count(*) FROM (SELECT 1 FROM {t} WHERE vt <= clock_timestamp() LIMIT {cap}) s),"
                " pg_sequence_last_value(pg_get_serial_sequence({name}, 'msg_id')::regclass)"
            ).format(t=table, cap=sql.Literal(VISIBLE_CAP), name=sql.Literal(table.as_string(conn)))
        ),
        f"the probe of queue {queue!r}",
    )
    return Probe(newest_msg_id=row[0], visible=row[1], sent=row[2] or 0)
