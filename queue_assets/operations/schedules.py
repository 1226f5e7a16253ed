"""The operations domain's scheduled job: queue statistics (seed 000's StatisticsJob), hourly."""

import dagster as dg

from ..retries import retry_policy

statistics_job = dg.define_asset_job(
    "queue_statistics_job",
    selection=[dg.AssetKey("queue_statistics")],
    description="Measure every queue (StatisticsJob) and evaluate the queue alerts.",
    op_retry_policy=retry_policy("queue_statistics_job"),
)

statistics_schedule = dg.ScheduleDefinition(
    name="queue_statistics_schedule",
    job=statistics_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly at minute 0 UTC (seed 000: StatisticsJob `0 * * * *`).",
)
