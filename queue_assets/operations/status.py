"""`queue-assets status`: one terminal page on the hub's health, for people without the UI open.

Queues (worst first, from `statistics.collect_statistics`), instances (last heartbeat, stale?),
dead-letter queues (messages by error kind) and, when a Dagster instance is reachable
(`DAGSTER_HOME`, else the project's own, which `queue-assets dev` uses), each asset's last materialization. A part that cannot be read says why instead
of failing the whole page.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from .dlq import DlqFilter, count_dead_letters
from .statistics import StatisticsReport, collect_statistics, format_seconds
from .thresholds import Thresholds


@dataclass(frozen=True)
class InstanceRow:
    instance_id: str
    inbox_queue: str
    last_heartbeat: datetime | None
    last_seen: datetime
    version: str | None
    status: str | None
    age_s: float | None
    stale: bool


@dataclass(frozen=True)
class MaterializationRow:
    asset: str
    at: datetime | None
    run_id: str | None


@dataclass
class StatusReport:
    now: datetime
    stats: StatisticsReport
    instances: list[InstanceRow]
    dead_letters: dict[str, dict[str, int]]
    materializations: list[MaterializationRow] = field(default_factory=list)
    dagster_note: str = ""
    pattern_queries: list[tuple] = field(default_factory=list)  # (hour, queries, misses), newest first
    enrichment: dict | None = None  # patterns.summaries.enrichment_summary (None before sql/013)
    approvals: dict | None = None  # patterns.summaries.approval_summary (None before sql/014)


def read_instances(conn: psycopg.Connection, *, stale_after_s: int) -> list[InstanceRow]:
    rows = conn.execute(
        "SELECT instance_id, inbox_queue, last_heartbeat, last_seen, version, status,"
        " extract(epoch FROM now() - last_heartbeat)::float8 FROM hub.instances ORDER BY instance_id"
    ).fetchall()
    conn.commit()
    return [
        InstanceRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], stale=r[6] is None or r[6] > stale_after_s)
        for r in rows
    ]


def dagster_storage_url(home: str, fallback_env: Mapping[str, str] | None = None) -> str | None:
    """The Postgres URL of the Dagster instance at `home`, when its dagster.yaml names one directly
    (`storage: postgres: postgres_url:` as text or `{env: VAR}`, as the project's does); else None.
    `fallback_env` gives a variable's value when the environment lacks it."""
    import yaml

    try:
        config = yaml.safe_load((Path(home) / "dagster.yaml").read_text()) or {}
        url = config["storage"]["postgres"]["postgres_url"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    if isinstance(url, dict) and set(url) == {"env"}:
        url = os.environ.get(str(url["env"])) or (fallback_env or {}).get(str(url["env"]))
    if not isinstance(url, str) or not url.strip():
        return None
    return re.sub(r"^postgres(?:ql)?\+\w+://", "postgresql://", url.strip())


# Per asset key, its newest ASSET_MATERIALIZATION event (Dagster's index on asset_key, event type, id).
_LAST_MATERIALIZATIONS = """
SELECT k.asset_key, e.timestamp, e.run_id
FROM asset_keys k
LEFT JOIN LATERAL (
    SELECT timestamp, run_id FROM event_logs
    WHERE asset_key = k.asset_key AND dagster_event_type = 'ASSET_MATERIALIZATION'
    ORDER BY id DESC LIMIT 1
) e ON true
WHERE k.wipe_timestamp IS NULL
"""


def _materializations_from_storage(url: str) -> list[MaterializationRow]:
    """Read the last materializations straight from Dagster's Postgres event log, read-only.

    Why not `dg.DagsterInstance`: importing Dagster takes 1-2 s, and `queue-assets status` must
    start in under 0.5 s. The two tables and columns read here are the event log Dagster has kept
    since 1.0; if they change, the query fails and `read_materializations` falls back to the API.
    """
    with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = on")
        rows = conn.execute(_LAST_MATERIALIZATIONS).fetchall()
    out = [
        MaterializationRow("/".join(json.loads(key)), at.replace(tzinfo=UTC) if at else None, run_id)
        for key, at, run_id in rows
    ]
    return sorted(out, key=lambda r: r.asset)


def read_materializations(
    project_home: Path | None = None, dagster_url: str | None = None
) -> tuple[list[MaterializationRow], str]:
    """Last materialization of every asset in the Dagster instance at DAGSTER_HOME, or why there are none.

    With DAGSTER_HOME unset, the project's Dagster home `project_home` (the one `queue-assets dev`
    makes) is read when it exists, with `dagster_url` (the embedded server's `dagster` database) for
    DAGSTER_PG_URL when that is unset too: `status` beside `make demo` needs no settings.
    """
    home = os.environ.get("DAGSTER_HOME")
    from_env = bool(home)
    if home:
        where = f"DAGSTER_HOME={home}"
    elif project_home is not None and (project_home / "dagster.yaml").exists():
        home, where = str(project_home), f"{project_home} (queue-assets dev's; DAGSTER_HOME is not set)"
    else:
        return (
            [],
            "DAGSTER_HOME is not set: last materializations are not shown (set it to the hub's Dagster home)",
        )
    url = dagster_storage_url(home, {"DAGSTER_PG_URL": dagster_url} if dagster_url else None)
    if url:
        try:
            return _materializations_from_storage(url), f"Dagster instance at {where}"
        except psycopg.OperationalError as exc:
            return [], _unreadable(where, exc)
        except psycopg.Error as exc:
            if not from_env:
                return [], _unreadable(where, exc)
            # not the event log this query knows: ask Dagster itself, below
    elif not from_env:
        return [], _unreadable(where, ValueError("its dagster.yaml names no Postgres storage URL"))
    try:
        import dagster as dg

        instance = dg.DagsterInstance.get()
        try:
            out = []
            for key in sorted(instance.get_asset_keys(), key=lambda k: k.to_user_string()):
                event = instance.get_latest_materialization_event(key)
                out.append(
                    MaterializationRow(
                        key.to_user_string(),
                        datetime.fromtimestamp(event.timestamp, UTC) if event else None,
                        event.run_id if event else None,
                    )
                )
        finally:
            instance.dispose()
    except Exception as exc:  # noqa: BLE001 - the page shows why, whatever the cause
        return [], _unreadable(where, exc)
    return out, f"Dagster instance at {where}"


def _unreadable(where: str, exc: BaseException) -> str:
    from ..redact import redact

    reason = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return f"the Dagster instance at {where} could not be read: {reason[:300]}"


def gather(
    conn: psycopg.Connection,
    *,
    stale_after_s: int,
    include_dagster: bool = True,
    project_home: Path | None = None,
    dagster_url: str | None = None,
) -> StatusReport:
    stats = collect_statistics(conn)
    try:
        instances = read_instances(conn, stale_after_s=stale_after_s)
    except psycopg.errors.UndefinedTable:
        conn.rollback()
        instances = []
    dead = count_dead_letters(conn, DlqFilter())
    mats, note = (
        read_materializations(project_home, dagster_url) if include_dagster else ([], "not requested")
    )
    return StatusReport(
        stats.measured_at,
        stats,
        instances,
        dead,
        mats,
        note,
        _pattern_queries(conn),
        _enrichment(conn),
        _approvals(conn),
    )


def _approvals(conn: psycopg.Connection) -> dict | None:
    from ..patterns.summaries import approval_summary as summary

    try:
        return summary(conn)
    except psycopg.errors.UndefinedTable:  # a database from before sql/014
        conn.rollback()
        return None


def _enrichment(conn: psycopg.Connection) -> dict | None:
    from ..patterns.summaries import enrichment_summary as summary

    try:
        return summary(conn)
    except psycopg.errors.UndefinedTable:  # a database from before sql/013
        conn.rollback()
        return None


def _pattern_queries(conn: psycopg.Connection) -> list[tuple]:
    from ..patterns.summaries import query_counts

    try:
        return query_counts(conn)
    except psycopg.errors.UndefinedTable:  # a database from before sql/011
        conn.rollback()
        return []


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return out


def render(report: StatusReport, thresholds: Thresholds, *, max_queues: int = 20) -> str:
    """The status page as plain text."""
    s = report.stats
    totals = s.totals()
    breaches = s.breaches(thresholds)
    flagged = {b.queue for b in breaches}
    lines = [
        f"queue_assets status at {report.now:%Y-%m-%d %H:%M:%S}Z",
        "",
        f"QUEUES: {totals['queues']} queues, {totals['depth']} messages waiting, "
        f"{totals['dlq_messages']} dead letters, {len(breaches)} alerts",
    ]
    rows = []
    worst = s.worst_first(thresholds)
    for q in worst[:max_queues]:
        rows.append(
            [
                ("! " if q.queue in flagged else "  ") + q.queue,
                q.kind,
                str(q.depth),
                str(q.visible),
                format_seconds(q.oldest_age_s),
                str(q.in_window),
                str(q.out_window),
                format_seconds(q.latency_p95_s),
                str(q.redelivered),
                "-" if q.dlq_depth is None else str(q.dlq_depth),
            ]
        )
    lines += _table(
        ["  queue", "kind", "depth", "visible", "oldest", "in/h", "out/h", "p95", "redeliv", "DLQ"], rows
    )
    if len(worst) > max_queues:
        lines.append(f"  ... {len(worst) - max_queues} more queues, all quiet or less bad")
    for b in breaches[:20]:
        lines.append(f"  {b.severity}: {b.describe().replace('`', '')}")

    stale = [i for i in report.instances if i.stale]
    lines += ["", f"INSTANCES: {len(report.instances)} known, {len(stale)} stale"]
    if report.instances:
        lines += _table(
            ["instance", "last heartbeat", "age", "status", "version", "stale"],
            [
                [
                    i.instance_id,
                    f"{i.last_heartbeat:%Y-%m-%d %H:%M:%S}Z" if i.last_heartbeat else "never",
                    format_seconds(i.age_s),
                    i.status or "-",
                    i.version or "-",
                    "STALE" if i.stale else "ok",
                ]
                for i in report.instances
            ],
        )

    dead_total = sum(sum(k.values()) for k in report.dead_letters.values())
    lines += ["", f"DEAD LETTERS: {dead_total} in {len(report.dead_letters)} dead-letter queues"]
    for dlq, kinds in report.dead_letters.items():
        detail = ", ".join(f"{k} {n}" for k, n in kinds.items()) or "empty"
        lines.append(f"  {dlq}: {sum(kinds.values())} ({detail})")
    if dead_total:
        lines.append("  inspect: queue-assets dlq list; replay: queue-assets dlq redrive --queue <queue>")

    lines += [
        "",
        "PATTERN QUERIES (hub_api, per UTC hour): "
        + (
            f"{sum(q for _, q, _ in report.pattern_queries)} queries, "
            f"{sum(m for _, _, m in report.pattern_queries)} misses"
            if report.pattern_queries
            else "none yet"
        ),
    ]
    if report.pattern_queries:
        lines += _table(
            ["hour", "queries", "misses"],
            [[f"{h.astimezone(UTC):%Y-%m-%d %H}:00Z", str(q), str(m)] for h, q, m in report.pattern_queries],
        )

    e = report.enrichment
    if e is not None:
        req, pat = e["requests"], e["patterns"]
        lines += [
            "",
            "ENRICHMENT (LLM): "
            + ", ".join(f"{n} {s}" for s, n in pat.items())
            + " patterns; requests "
            + (", ".join(f"{n} {s}" for s, n in req.items()) or "none yet")
            + f"; {e['sent_this_hour']} sent this hour",
        ]
        for ptype, key, reason in e["failed"]:
            lines.append(f"  enrichment_failed {ptype}/{key}: {reason}")
    a = report.approvals
    if a is not None and any(a.values()):
        lines.append(
            "APPROVAL (a person, QUEUE_ASSETS_PATTERN_APPROVAL): "
            + ", ".join(f"{n} {s}" for s, n in a.items())
        )
    lines += ["", f"LAST MATERIALIZATIONS: {report.dagster_note}"]
    if report.materializations:
        lines += _table(
            ["asset", "last materialized", "age", "run"],
            [
                [
                    m.asset,
                    f"{m.at:%Y-%m-%d %H:%M:%S}Z" if m.at else "never",
                    format_seconds((report.now - m.at).total_seconds()) if m.at else "-",
                    (m.run_id or "-")[:8],
                ]
                for m in report.materializations
            ],
        )
    return "\n".join(lines)
