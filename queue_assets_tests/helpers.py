"""Small helpers shared by tests: send raw messages, count rows."""

from __future__ import annotations

import json
import random
import socket

import psycopg
from psycopg import sql


def send_raw(conn: psycopg.Connection, queue: str, raw: str, headers: dict | None = None) -> int:
    row = conn.execute(
        "SELECT * FROM pgmq.send(%s, %s::jsonb, %s::jsonb)",
        (queue, raw, json.dumps(headers) if headers is not None else None),
    ).fetchone()
    conn.commit()
    return row[0]


def send_many(
    conn: psycopg.Connection, queue: str, raws: list[str], headers: list[dict | None] | None = None
) -> None:
    hdrs = [json.dumps(h) if h is not None else None for h in (headers or [None] * len(raws))]
    for i in range(0, len(raws), 1000):
        conn.execute(
            "SELECT pgmq.send_batch(%s, %s::jsonb[], %s::jsonb[])",
            (queue, raws[i : i + 1000], hdrs[i : i + 1000]),
        )
    conn.commit()


def count(conn: psycopg.Connection, table: str, where: str = "TRUE") -> int:
    schema, name = table.split(".")
    n = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE ").format(sql.Identifier(schema, name)) + sql.SQL(where)
    ).fetchone()[0]
    conn.commit()
    return n


def queue_depth(conn: psycopg.Connection, queue: str) -> int:
    return count(conn, f"pgmq.q_{queue}")


def dlq_messages(conn: psycopg.Connection, queue: str) -> list[tuple[dict, dict]]:
    rows = conn.execute(
        sql.SQL("SELECT message, headers FROM pgmq.{} ORDER BY msg_id").format(
            sql.Identifier(f"q_{queue}_dlq")
        )
    ).fetchall()
    conn.commit()
    return rows


def pattern_message(instance: str, n: int, patterns: int = 2) -> str:
    return json.dumps(
        {
            "type": "pattern_detection",
            "instance_id": instance,
            "timestamp": "2025-10-25T12:00:00.000000Z",
            "patterns": [
                {
                    "pattern_type": "framework",
                    "name": f"fw-{(n + i) % 7}",
                    "confidence": 0.9,
                    "indicators": ["mix.exs"],
                    "seq": n,
                }
                for i in range(patterns)
            ],
        }
    )


def free_port(ports: range) -> int:
    """A loopback port in `ports` nothing listens on (random order, so parallel runs rarely collide)."""
    candidates = list(ports)
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}")
