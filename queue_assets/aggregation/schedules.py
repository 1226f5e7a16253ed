"""PatternAggregationJob: `aggregated_patterns` (its checks run in its step) at `0 * * * *`, UTC (seed 000)."""

from __future__ import annotations

import dagster as dg

from ..retries import retry_policy
from .assets import aggregated_patterns

pattern_aggregation_job = dg.define_asset_job(
    name="pattern_aggregation_job",
    selection=[aggregated_patterns],
    description="PatternAggregationJob: rank the fleet's patterns (with the blocking checks).",
    op_retry_policy=retry_policy("pattern_aggregation_job"),
)

pattern_aggregation_schedule = dg.ScheduleDefinition(
    name="pattern_aggregation_schedule",
    job=pattern_aggregation_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly at minute 0, UTC (seed 000: PatternAggregationJob `0 * * * *`).",
)
