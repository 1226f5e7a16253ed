"""The pattern authority's Dagster definitions: the catalogue asset, its refresh schedule, the queue."""

import dagster as dg

from .assets import PATTERN_DISCOVERY_SPEC, pattern_catalogue

pattern_catalogue_job = dg.define_asset_job(
    name="pattern_catalogue_job",
    selection=[pattern_catalogue],
    description="Refresh the pattern catalogue's ranks and report its counts (cheap: no scan of observations).",
)

pattern_catalogue_schedule = dg.ScheduleDefinition(
    name="pattern_catalogue_schedule",
    job=pattern_catalogue_job,
    cron_schedule="5,20,35,50 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 15 minutes, from minute 5 (after the hourly aggregation at minute 0), UTC.",
)


def build_defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[pattern_catalogue, PATTERN_DISCOVERY_SPEC],
        jobs=[pattern_catalogue_job],
        schedules=[pattern_catalogue_schedule],
    )
