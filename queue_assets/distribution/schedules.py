"""When distribution runs (UTC, DESIGN.md's table).

- PatternSyncWorker, "hourly, after aggregation": no clock of its own. `pattern_distribution`
  carries an automation condition (eager on `aggregated_patterns`, gated on its blocking checks);
  the sensor below evaluates it, so it runs right after each hourly aggregation that passed, and
  never after one that failed. `pattern_sync_job` is there for manual runs.
- TemplateDistributionWorker, every 4 hours: `0 */4 * * *` (seed 000's text; its crontab line
  says `0 * * * *`, see the README).
"""

from __future__ import annotations

import dagster as dg

from ..retries import retry_policy
from .assets import pattern_distribution, template_updates

pattern_sync_job = dg.define_asset_job(
    name="pattern_sync_job",
    selection=[pattern_distribution],
    description="PatternSyncWorker: commit the ranking to templates_data (if changed) and fan it out.",
)

template_distribution_job = dg.define_asset_job(
    name="template_distribution_job",
    selection=[template_updates],
    description="TemplateDistributionWorker: announce templates changed since the last distributed commit.",
    op_retry_policy=retry_policy("template_distribution_job"),
)

template_distribution_schedule = dg.ScheduleDefinition(
    name="template_distribution_schedule",
    job=template_distribution_job,
    cron_schedule="0 */4 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 4 hours at minute 0, UTC (seed 000: TemplateDistributionWorker, every 4 hours).",
)

pattern_sync_sensor = dg.AutomationConditionSensorDefinition(
    name="pattern_sync_after_aggregation",
    target=[pattern_distribution],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Runs pattern_distribution after each aggregated_patterns materialization whose blocking "
    "checks passed (PatternSyncWorker: hourly, after aggregation).",
)
