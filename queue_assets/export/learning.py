"""`aggregated_learning` in SQL: hub.learned_artifacts combined per artifact, one snapshot per cycle.

The combination runs inside PostgreSQL (one INSERT ... SELECT), so Python never holds the reports;
the export then streams the selected artifacts through a server-side cursor. Also here: the
queries behind the blocking checks (rates in [0, 1], unique keys, non-empty, bounded growth).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import psycopg

from ..db import one_row
from .render import ArtifactRow, ExportTotals, artifact_file_name
from .settings import ExportSettings

# Deterministic numbers: sums in numeric (exact, so the result does not depend on the order the
# rows were added in) and the rate rounded, so an unchanged table gives byte-identical files.
_AGGREGATE_SQL = """
WITH per_pair AS (  -- first per (artifact, instance): hash aggregation, no sort of the reports
    SELECT artifact_id, instance_id,
           sum(usage_count)                                   AS usage,
           sum(usage_count::numeric * success_rate::numeric)  AS weighted,
           sum(success_rate::numeric)                         AS rate_sum,
           count(*)                                           AS reports,
           min(observed_at)                                   AS first_seen,
           max(observed_at)                                   AS last_seen
      FROM hub.learned_artifacts
     WHERE stored_at < %(cutoff)s
     GROUP BY artifact_id, instance_id
), per_artifact AS (
    SELECT artifact_id,
           sum(usage)::bigint                                 AS total_usage,
           sum(weighted)                                      AS weighted,
           sum(rate_sum) / sum(reports)                       AS mean_rate,
           sum(reports)::bigint                               AS report_count,
           count(*)::int                                      AS instance_count,
           array_agg(instance_id ORDER BY instance_id)        AS instances,
           min(first_seen)                                    AS first_seen,
           max(last_seen)                                     AS last_seen
      FROM per_pair
     GROUP BY artifact_id
), newest AS (  -- the newest report's key only; its wide columns are fetched by primary key below
    SELECT DISTINCT ON (artifact_id) artifact_id, queue, queue_created_at, msg_id, ordinal
      FROM hub.learned_artifacts
     WHERE stored_at < %(cutoff)s
     ORDER BY artifact_id, observed_at DESC, stored_at DESC, queue, queue_created_at DESC, msg_id DESC, ordinal
), rated AS (
    SELECT p.*, la.artifact_type, la.name, la.content,
           round(CASE WHEN p.total_usage > 0 THEN p.weighted / p.total_usage ELSE p.mean_rate END, 6)::float8
               AS success_rate
      FROM per_artifact p
      JOIN newest n USING (artifact_id)
      JOIN hub.learned_artifacts la
        ON (la.queue, la.queue_created_at, la.msg_id, la.ordinal) = (n.queue, n.queue_created_at, n.msg_id, n.ordinal)
)
INSERT INTO hub.aggregated_learning
    (cycle_date, artifact_id, artifact_type, name, content, total_usage, success_rate, report_count,
     instance_count, instances, first_seen, last_seen, selected)
SELECT %(cycle)s, artifact_id, artifact_type, name, content, total_usage, success_rate, report_count,
       instance_count, instances, first_seen, last_seen,
       (total_usage >= %(min_usage)s AND success_rate >= %(min_rate)s AND instance_count >= %(min_instances)s)
  FROM rated
"""

_SUMMARY_SQL = """
SELECT count(*),
       count(*) FILTER (WHERE selected),
       coalesce(sum(total_usage) FILTER (WHERE selected), 0)::bigint,
       coalesce(sum(report_count), 0)::bigint,
       (SELECT count(DISTINCT i) FROM hub.aggregated_learning a2, unnest(a2.instances) AS i
         WHERE a2.cycle_date = %(cycle)s AND a2.selected),
       (SELECT count(DISTINCT i) FROM hub.aggregated_learning a3, unnest(a3.instances) AS i
         WHERE a3.cycle_date = %(cycle)s)
  FROM hub.aggregated_learning WHERE cycle_date = %(cycle)s
"""

_ROW_COLUMNS = (
    "artifact_id, artifact_type, name, content, total_usage, success_rate, report_count, instance_count,"
    " instances, first_seen, last_seen"
)


@dataclass
class LearningSummary:
    """What one aggregation produced, for the asset's metadata."""

    cycle: date
    cutoff: datetime
    artifacts: int = 0
    selected: int = 0
    selected_usage: int = 0
    reports: int = 0
    selected_instances: int = 0
    instances: int = 0
    pruned_rows: int = 0
    top: list[ArtifactRow] = field(default_factory=list)


def aggregate_learning(
    conn: psycopg.Connection,
    cycle: date,
    cutoff: datetime,
    settings: ExportSettings,
    *,
    keep_days: int | None = None,
    top: int = 10,
) -> LearningSummary:
    """Replace cycle `cycle`'s snapshot with the reports stored before `cutoff`, in one transaction.

    With `keep_days`, snapshots of cycles older than that many days before `cycle` are deleted
    (hub.exports keeps each cycle's record).
    """
    if not conn.autocommit:
        raise ValueError(
            "aggregate_learning needs an autocommit connection (the snapshot commits on its own)"
        )
    out = LearningSummary(cycle=cycle, cutoff=cutoff)
    with conn.transaction():
        # Two runs of one cycle at once would interleave DELETE and INSERT; serialise them per cycle.
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('hub.aggregated_learning'), %s)", (cycle.toordinal(),)
        )
        conn.execute("DELETE FROM hub.aggregated_learning WHERE cycle_date = %s", (cycle,))
        conn.execute(
            _AGGREGATE_SQL,
            {
                "cycle": cycle,
                "cutoff": cutoff,
                "min_usage": settings.min_usage,
                "min_rate": settings.min_success_rate,
                "min_instances": settings.min_instances,
            },
        )
        if keep_days is not None:
            out.pruned_rows = conn.execute(
                "DELETE FROM hub.aggregated_learning WHERE cycle_date < %s",
                (cycle - timedelta(days=keep_days),),
            ).rowcount
        totals = conn.execute(_SUMMARY_SQL, {"cycle": cycle}).fetchone()
        assert totals is not None  # aggregates always return a row
        (
            out.artifacts,
            out.selected,
            out.selected_usage,
            out.reports,
            out.selected_instances,
            out.instances,
        ) = totals
    out.top = list(selected_artifacts(conn, cycle, limit=top))
    return out


def _row(r: tuple) -> ArtifactRow:
    return ArtifactRow(
        artifact_id=r[0],
        artifact_type=r[1],
        name=r[2],
        content=r[3],
        total_usage=int(r[4]),
        success_rate=float(r[5]),
        report_count=int(r[6]),
        instance_count=int(r[7]),
        instances=tuple(r[8]),
        first_seen=r[9],
        last_seen=r[10],
    )


def selected_artifacts(
    conn: psycopg.Connection, cycle: date, *, limit: int | None = None
) -> Iterator[ArtifactRow]:
    """The cycle's selected artifacts, most used first, streamed (server-side cursor, 500 at a time)."""
    query = (
        f"SELECT {_ROW_COLUMNS} FROM hub.aggregated_learning WHERE cycle_date = %s AND selected"
        " ORDER BY total_usage DESC, artifact_id"
    )
    if limit is not None:
        with conn.cursor() as cur:
            yield from (_row(r) for r in cur.execute(query + " LIMIT %s", (cycle, limit)).fetchall())
        return
    with conn.transaction(), conn.cursor(name=f"export_rows_{cycle:%Y%m%d}") as cur:
        cur.itersize = 500
        cur.execute(query, (cycle,))
        yield from (_row(r) for r in cur)


def export_totals(conn: psycopg.Connection, cycle: date) -> ExportTotals:
    row = one_row(
        conn.execute(
            "SELECT count(*), coalesce(sum(total_usage), 0)::bigint,"
            " (SELECT count(DISTINCT i) FROM hub.aggregated_learning a2, unnest(a2.instances) AS i"
            "   WHERE a2.cycle_date = %(c)s AND a2.selected)"
            " FROM hub.aggregated_learning WHERE cycle_date = %(c)s AND selected",
            {"c": cycle},
        ),
        f"the export totals of cycle {cycle}",
    )
    return ExportTotals(artifacts=row[0], total_usage=row[1], instances=row[2])


# --- check evaluations (plain results; the Dagster layer turns them into AssetCheckResults) ------


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def check_success_rates(conn: psycopg.Connection, cycle: date) -> CheckOutcome:
    """Every combined success rate is a number in [0, 1] (NaN counts as outside)."""
    row = conn.execute(
        "SELECT count(*), (array_agg(artifact_id || '=' || success_rate::text ORDER BY artifact_id))[1:5]"
        " FROM hub.aggregated_learning WHERE cycle_date = %s"
        " AND (success_rate < 0 OR success_rate > 1 OR success_rate = 'NaN'::float8)",
        (cycle,),
    ).fetchone()
    assert row is not None  # an aggregate always returns a row
    bad, examples = row
    if bad:
        return CheckOutcome(
            False,
            f"{bad} artifact(s) have a success rate outside [0, 1], e.g. " + ", ".join(examples or []),
            {"out_of_range": bad},
        )
    return CheckOutcome(True, "all success rates are in [0, 1]", {"out_of_range": 0})


def check_unique_keys(conn: psycopg.Connection, cycle: date) -> CheckOutcome:
    """No artifact id twice, and no two exported artifacts share a file name (ignoring case)."""
    dup_ids = conn.execute(
        "SELECT artifact_id FROM hub.aggregated_learning WHERE cycle_date = %s"
        " GROUP BY artifact_id HAVING count(*) > 1 ORDER BY artifact_id LIMIT 5",
        (cycle,),
    ).fetchall()
    seen: dict[str, str] = {}
    clashes: list[str] = []
    with conn.transaction(), conn.cursor(name=f"export_keys_{cycle:%Y%m%d}") as cur:
        cur.itersize = 5000
        cur.execute(
            "SELECT artifact_id FROM hub.aggregated_learning WHERE cycle_date = %s AND selected", (cycle,)
        )
        for (artifact_id,) in cur:
            name = artifact_file_name(artifact_id).lower()
            if name in seen:
                clashes.append(f"{seen[name]!r} and {artifact_id!r} -> {name}")
            else:
                seen[name] = artifact_id
    meta = {"duplicate_ids": len(dup_ids), "file_name_clashes": len(clashes)}
    if dup_ids or clashes:
        parts = []
        if dup_ids:
            parts.append("duplicate artifact ids: " + ", ".join(repr(r[0]) for r in dup_ids))
        if clashes:
            parts.append("file name clashes: " + "; ".join(clashes[:5]))
        return CheckOutcome(False, "; ".join(parts), meta)
    return CheckOutcome(True, f"{len(seen)} exported artifacts, each with its own id and file name", meta)


def check_not_empty(selected: int) -> CheckOutcome:
    if selected == 0:
        return CheckOutcome(
            False,
            "no artifact passed the thresholds: the export would be empty, so it is not pushed. "
            "Check that instances send learned_patterns, or lower QUEUE_ASSETS_EXPORT_MIN_*.",
            {"selected": 0},
        )
    return CheckOutcome(True, f"{selected} artifacts selected", {"selected": selected})


def previous_export(conn: psycopg.Connection, cycle: date) -> tuple[date, int] | None:
    """(cycle, artifact count) of the newest earlier cycle whose branch reached the remote."""
    row = conn.execute(
        "SELECT cycle_date, artifact_count FROM hub.exports WHERE cycle_date < %s"
        " AND status <> 'push_failed' ORDER BY cycle_date DESC LIMIT 1",
        (cycle,),
    ).fetchone()
    return (row[0], row[1]) if row else None


def check_growth(selected: int, previous: tuple[date, int] | None, max_factor: float) -> CheckOutcome:
    """The export is not far larger than the previous one (more than `max_factor` times)."""
    if previous is None or previous[1] == 0:
        return CheckOutcome(True, "no earlier export to compare with", {"selected": selected})
    prev_cycle, prev_count = previous
    factor = selected / prev_count
    meta = {"selected": selected, "previous": prev_count, "growth_factor": round(factor, 3)}
    if factor > max_factor:
        return CheckOutcome(
            False,
            f"{selected} artifacts is {factor:.1f}x the {prev_count} exported for {prev_cycle}, above the "
            f"limit of {max_factor:g}x. If the growth is real, re-run with config max_growth_factor "
            "raised (or set QUEUE_ASSETS_EXPORT_MAX_GROWTH).",
            meta,
        )
    return CheckOutcome(True, f"{factor:.2f}x the previous export ({prev_count} for {prev_cycle})", meta)
