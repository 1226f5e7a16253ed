"""The aggregation domain's Dagster definitions."""

from __future__ import annotations

import dagster as dg

from .assets import aggregated_patterns
from .schedules import pattern_aggregation_job, pattern_aggregation_schedule


def build_defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[aggregated_patterns],
        jobs=[pattern_aggregation_job],
        schedules=[pattern_aggregation_schedule],
    )
