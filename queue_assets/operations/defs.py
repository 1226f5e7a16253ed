"""The operations domain's Dagster definitions: bootstrap, queue statistics + checks, retention,
dead-letter redrive."""

from __future__ import annotations

import dagster as dg

from .assets import queue_statistics
from .bootstrap_job import bootstrap_job
from .jobs import dlq_redrive_job, retention_job, retention_schedule
from .schedules import statistics_job, statistics_schedule


def build_defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[queue_statistics],
        jobs=[statistics_job, retention_job, dlq_redrive_job, bootstrap_job],
        schedules=[statistics_schedule, retention_schedule],
    )
