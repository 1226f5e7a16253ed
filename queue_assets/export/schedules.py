"""The daily export job and its schedule: `0 1 * * *` UTC (seed 000's KnowledgeExportWorker).

The schedule asks for the partition named after its tick's UTC date, so the run at
2025-10-25 01:00 UTC exports cycle 2025-10-25 to `feature/learned-patterns-20251025`. Its run key
is the cycle, so a tick is never turned into two runs; a person re-runs a cycle by materializing
its partition again (which updates the same branch and PR).
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from ..retries import retry_policy
from .assets import aggregated_learning, learned_pattern_export

EXPORT_CRON = "0 1 * * *"
CYCLE_TAG = "queue_assets/export_cycle"

knowledge_export_job = dg.define_asset_job(
    name="knowledge_export_job",
    selection=dg.AssetSelection.assets(aggregated_learning, learned_pattern_export),
    description="KnowledgeExportWorker: combine learned artifacts, then export them to the cycle's branch and PR.",
    op_retry_policy=retry_policy("knowledge_export_job"),
)


def cycle_key(scheduled: datetime) -> str:
    """The cycle (partition key) of a tick: its date in UTC."""
    return scheduled.astimezone(UTC).date().isoformat()


@dg.schedule(
    name="knowledge_export_schedule",
    cron_schedule=EXPORT_CRON,
    execution_timezone="UTC",
    job=knowledge_export_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 01:00 UTC: export the day's cycle of learned patterns.",
)
def knowledge_export_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    key = cycle_key(context.scheduled_execution_time)
    return dg.RunRequest(run_key=f"learned-patterns-{key}", partition_key=key, tags={CYCLE_TAG: key})
