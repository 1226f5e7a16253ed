"""What `queue-assets status` reads about the pattern authority: plain SQL on psycopg alone.

Kept apart from `catalogue`, `enrichment` and `approval`, which import the pydantic contracts: the
CLI's `status` should not pay ~0.3 s to build models it never uses (issue 13, start-up time).
"""

from __future__ import annotations

from typing import Any

import psycopg

ENRICHMENT_STATUSES = ("enriching", "enriched", "approved", "rejected", "enrichment_failed")
"""The statuses the ENRICHMENT line counts: an approved or rejected pattern was enriched first."""
APPROVAL_STATUSES = ("pending", "approved", "rejected")


def query_counts(conn: psycopg.Connection, *, hours: int = 6) -> list[tuple]:
    """(hour, queries, misses) of the hub_api functions over the last `hours` UTC hours, newest first
    (view hub.pattern_queries_per_hour, sql/011)."""
    return conn.execute(
        "SELECT hour, queries, misses FROM hub.pattern_queries_per_hour"
        " WHERE hour > now() - make_interval(hours => %s) ORDER BY hour DESC",
        (hours,),
    ).fetchall()


def enrichment_summary(conn: psycopg.Connection, failed_shown: int = 5) -> dict[str, Any]:
    """Patterns by enrichment state, requests by status, the hour's spend, and the latest patterns
    that failed for good with their reason."""
    patterns: dict[str, int] = dict(
        conn.execute(
            "SELECT status, count(*) FROM hub.patterns WHERE status = ANY(%s) GROUP BY status",
            (list(ENRICHMENT_STATUSES),),
        ).fetchall()
    )
    requests: dict[str, int] = dict(
        conn.execute(
            "SELECT status, count(*) FROM hub.enrichment_requests GROUP BY status ORDER BY status"
        ).fetchall()
    )
    spent = conn.execute(
        "SELECT sent FROM hub.enrichment_budget WHERE hour = date_trunc('hour', now(), 'UTC')"
    ).fetchone()
    failed = conn.execute(
        "SELECT pattern_type, canonical_name, enrichment_error FROM hub.patterns WHERE status = 'enrichment_failed'"
        " ORDER BY updated_at DESC LIMIT %s",
        (failed_shown,),
    ).fetchall()
    conn.commit()
    return {
        "patterns": {s: patterns.get(s, 0) for s in ENRICHMENT_STATUSES},
        "requests": requests,
        "sent_this_hour": spent[0] if spent else 0,
        "failed": [(t, k, (r or "")[:200]) for t, k, r in failed],
    }


def approval_summary(conn: psycopg.Connection) -> dict[str, int]:
    """Approvals by status."""
    rows: dict[str, int] = dict(
        conn.execute("SELECT status, count(*) FROM hub.pattern_approvals GROUP BY status").fetchall()
    )
    conn.commit()
    return {s: rows.get(s, 0) for s in APPROVAL_STATUSES}
