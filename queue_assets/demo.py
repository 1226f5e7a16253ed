"""The demo's lineage driver: in `queue-assets dev`, run the hourly and daily jobs every few minutes.

The real schedules are hourly (aggregation, statistics), every 4 hours (templates) and daily at
01:00 UTC (export), so a person trying the demo would wait a day to see the lineage. With
`QUEUE_ASSETS_DEMO=1` (set by `queue-assets dev`; `Settings.demo`), this sensor starts RUNNING and, once the ingest
assets have materialized, requests those jobs every `DEMO_INTERVAL_S`. Everywhere else it is
STOPPED by default and does nothing unless someone turns it on in the UI.
"""

from datetime import UTC, datetime

import dagster as dg

from .aggregation.schedules import pattern_aggregation_job
from .distribution.schedules import template_distribution_job
from .export.schedules import knowledge_export_job
from .operations.schedules import statistics_job

DEMO_INTERVAL_S = 120
INGEST_ASSETS = ("pattern_messages", "learned_patterns", "instance_heartbeats")


def demo_lineage_sensor(enabled: bool) -> dg.SensorDefinition:
    """The sensor; RUNNING by default when `enabled` (`Settings.demo`), else STOPPED."""
    return dg.SensorDefinition(
        name="demo_lineage_sensor",
        evaluation_fn=_request_demo_runs,
        jobs=[pattern_aggregation_job, template_distribution_job, knowledge_export_job, statistics_job],
        minimum_interval_seconds=DEMO_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING if enabled else dg.DefaultSensorStatus.STOPPED,
        description=(
            "Demo only (on in `queue-assets dev`): runs aggregation (then pattern distribution via its "
            f"sensor), template distribution, statistics and today's export every {DEMO_INTERVAL_S} s "
            "instead of waiting for their hourly/daily schedules."
        ),
    )


def _request_demo_runs(context: dg.SensorEvaluationContext):
    missing = [
        a for a in INGEST_ASSETS if context.instance.get_latest_materialization_event(dg.AssetKey(a)) is None
    ]
    if missing:
        return dg.SkipReason(f"waiting for the first ingest of: {', '.join(missing)}")
    now = datetime.now(UTC)
    tick = now.strftime("%Y%m%dT%H%M%S")
    return [
        dg.RunRequest(run_key=f"demo-aggregation-{tick}", job_name=pattern_aggregation_job.name),
        dg.RunRequest(run_key=f"demo-templates-{tick}", job_name=template_distribution_job.name),
        dg.RunRequest(run_key=f"demo-statistics-{tick}", job_name=statistics_job.name),
        dg.RunRequest(
            run_key=f"demo-export-{tick}",
            job_name=knowledge_export_job.name,
            partition_key=now.strftime("%Y-%m-%d"),
        ),
    ]
