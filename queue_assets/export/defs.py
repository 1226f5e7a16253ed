"""The export domain's Dagster definitions and its settings resource (`export_settings`).

The Git resources it uses (`templates_repo`, `github`) are shared with distribution and registered
in `queue_assets.definitions` (`git.resources.git_resources`)."""

from __future__ import annotations

import dagster as dg

from .assets import aggregated_learning, learned_pattern_export
from .resources import ExportSettingsResource
from .schedules import knowledge_export_job, knowledge_export_schedule
from .settings import ExportSettings


def build_defs(settings: ExportSettings) -> dg.Definitions:
    return dg.Definitions(
        assets=[aggregated_learning, learned_pattern_export],
        jobs=[knowledge_export_job],
        schedules=[knowledge_export_schedule],
        resources={"export_settings": ExportSettingsResource.from_settings(settings)},
    )
