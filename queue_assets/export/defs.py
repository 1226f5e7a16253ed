"""The export domain's Dagster definitions (resources are registered in `queue_assets.definitions`)."""

from __future__ import annotations

import dagster as dg

from .assets import aggregated_learning, learned_pattern_export
from .schedules import knowledge_export_job, knowledge_export_schedule
from .settings import ExportSettings


def build_defs() -> dg.Definitions:
    # Validated at load: a bad QUEUE_ASSETS_EXPORT_* value fails the code location with its name,
    # not the 01:00 run. GitHub settings are checked when a run starts (they hold the token).
    ExportSettings.from_env()
    return dg.Definitions(
        assets=[aggregated_learning, learned_pattern_export],
        jobs=[knowledge_export_job],
        schedules=[knowledge_export_schedule],
    )
