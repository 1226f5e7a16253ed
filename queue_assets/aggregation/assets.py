"""The `aggregated_patterns` asset (PatternAggregationJob): the fleet's pattern ranking, hourly.

Thin: it calls `core.aggregate` (all the work happens in PostgreSQL, where the ranking is built
aside, checked, and published only when its blocking checks pass) and reports counts plus the top
10 as a markdown table (pandas is used for that table only, and imported there: loading the code
location, which every run launch does, should not pay its 1.5 s), and the checks' results. A ranking
that failed a check is not a materialization: the previous one is still live; the failed blocking
check fails the step.
"""

# No `from __future__ import annotations`: Dagster resolves the run config class from the
# function's annotation at definition time.
from datetime import timedelta

import dagster as dg

from ..resources import SharedQueueResource
from . import core
from .checks import AGGREGATION_CHECK_SPECS, check_results

AGGREGATION_GROUP = "aggregation"
HOURLY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=2), warn_window=timedelta(minutes=75)
)
TOP_SHOWN = 10


class AggregationConfig(dg.Config):
    top_indicators: int = core.DEFAULT_TOP_INDICATORS
    """How many of a pattern's most listed indicators to keep."""
    work_mem: str = core.DEFAULT_WORK_MEM
    """PostgreSQL work_mem for this run's aggregates (server memory, not the run's)."""


def top_table(top: list[core.RankedPattern], before: dict[tuple[str, str], int]) -> str:
    """The top rows as markdown, with each pattern's move since the previous run."""
    if not top:
        return "_no patterns observed yet_"
    import pandas as pd

    def move(p: core.RankedPattern) -> str:
        old = before.get((p.pattern_type, p.name))
        if old is None:
            return "new"
        return "=" if old == p.rank else (f"+{old - p.rank}" if old > p.rank else f"-{p.rank - old}")

    df = pd.DataFrame(
        {
            "rank": [p.rank for p in top],
            "move": [move(p) for p in top],
            "kind": [p.pattern_type for p in top],
            "name": [p.name.replace("|", "\\|") for p in top],
            "instances": [p.instance_count for p in top],
            "observations": [p.observation_count for p in top],
            "confidence": [None if p.confidence is None else round(p.confidence, 3) for p in top],
            "score": [round(p.score, 4) for p in top],
            "top indicators": [", ".join(p.top_indicators[:3]).replace("|", "\\|")[:80] for p in top],
        }
    )
    return df.to_markdown(index=False)


@dg.asset(
    name="aggregated_patterns",
    deps=[dg.AssetKey("pattern_messages")],
    group_name=AGGREGATION_GROUP,
    kinds={"postgres", "python"},
    freshness_policy=HOURLY_FRESHNESS,
    check_specs=AGGREGATION_CHECK_SPECS,
    output_required=False,
    description=(
        "The fleet's pattern ranking: hub.pattern_observations aggregated in PostgreSQL per "
        "(pattern_type, name) — distinct instances, observations, instance-balanced confidence, "
        "first/last seen, most listed indicators — ranked so that instance agreement dominates "
        "(docs/aggregation.md). Built aside and checked; replaces hub.aggregated_patterns only when "
        "its blocking checks pass, and keeps a snapshot per run in hub.aggregated_pattern_snapshots "
        "(rank history of the published rankings: view hub.pattern_rank_history)."
    ),
    metadata={"table": "hub.aggregated_patterns", "snapshots": "hub.aggregated_pattern_snapshots"},
)
def aggregated_patterns(
    context: dg.AssetExecutionContext, config: AggregationConfig, shared_queue: SharedQueueResource
):
    try:
        core.check_parameters(config.top_indicators, config.work_mem)
    except ValueError as exc:
        raise dg.Failure(f"bad aggregated_patterns config: {exc}", allow_retries=False) from None
    with shared_queue.connection() as conn:
        result = core.aggregate(
            conn,
            top_indicators=config.top_indicators,
            retention_days=shared_queue.settings.retention_days,
            work_mem=config.work_mem,
            dagster_run_id=context.run.run_id,
        )
        if not result.published:
            live = core.latest_run(conn)
            conn.commit()
            context.log.error(
                f"aggregation run {result.run_id}: its ranking failed a blocking check and was not published; "
                f"hub.aggregated_patterns still holds run {live[0] if live else 'none'}'s ranking"
            )
            yield from check_results(result)
            return
        top = core.ranking(conn, limit=TOP_SHOWN)
        before = core.previous_ranks(conn, result.run_id, [(p.pattern_type, p.name) for p in top])
        changes = core.rank_changes(conn, result.run_id)
        conn.commit()
    context.log.info(
        f"aggregation run {result.run_id}: {result.patterns} patterns from {result.observations} observations "
        f"of {result.instances} instances in {result.elapsed_s:.2f}s"
    )
    yield dg.MaterializeResult(
        metadata={
            "aggregation_run_id": dg.MetadataValue.int(result.run_id),
            "patterns": dg.MetadataValue.int(result.patterns),
            "observations": dg.MetadataValue.int(result.observations),
            "instances": dg.MetadataValue.int(result.instances),
            "new_patterns": dg.MetadataValue.int(changes["new"]),
            "gone_patterns": dg.MetadataValue.int(changes["gone"]),
            "moved_up": dg.MetadataValue.int(changes["moved_up"]),
            "moved_down": dg.MetadataValue.int(changes["moved_down"]),
            "elapsed_seconds": dg.MetadataValue.float(round(result.elapsed_s, 3)),
            "newest_observation_stored_at": dg.MetadataValue.text(
                result.max_stored_at.isoformat() if result.max_stored_at else "none"
            ),
            "snapshots_pruned": dg.MetadataValue.int(result.snapshots_pruned),
            "top_patterns": dg.MetadataValue.md(top_table(top, before)),
        },
        check_results=check_results(result),
    )
