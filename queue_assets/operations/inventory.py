"""Which queues exist in the database (pgmq.meta) and what kind each is.

Names read from pgmq.meta were accepted by pgmq itself and are only ever composed with
`psycopg.sql.Identifier`; names typed by people go through `names.validate_queue_name` first.
"""

from __future__ import annotations

import psycopg

from ..names import DLQ_SUFFIX, INBOX_PREFIX
from ..queues import HUB_QUEUES, PATTERN_QUEUES, REQUEST_REPLY_QUEUES

KINDS = ("request_reply", "hub", "inbox", "dlq", "other")


def queue_kind(queue: str) -> str:
    """`request_reply`, `hub`, `inbox`, `dlq` or `other`."""
    if queue.endswith(DLQ_SUFFIX):
        return "dlq"
    if queue in REQUEST_REPLY_QUEUES:
        return "request_reply"
    if queue in HUB_QUEUES or queue in PATTERN_QUEUES:
        return "hub"
    if queue.startswith(INBOX_PREFIX):
        return "inbox"
    return "other"


def existing_queues(conn: psycopg.Connection) -> list[str]:
    """Every queue pgmq knows, sorted by kind then name (static queues first, then inboxes, then DLQs)."""
    names = [r[0] for r in conn.execute("SELECT queue_name FROM pgmq.meta").fetchall()]
    order = {k: i for i, k in enumerate(("hub", "request_reply", "other", "inbox", "dlq"))}
    return sorted(names, key=lambda q: (order[queue_kind(q)], q))


def dead_letter_queues(conn: psycopg.Connection) -> list[str]:
    return [q for q in existing_queues(conn) if queue_kind(q) == "dlq"]


def source_of(dlq: str) -> str:
    """The queue a dead-letter queue belongs to (`pattern_messages_dlq` -> `pattern_messages`)."""
    return dlq.removesuffix(DLQ_SUFFIX)
