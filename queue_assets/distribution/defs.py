"""The distribution domain's Dagster definitions (the Git resources are registered in
`queue_assets.definitions` by the export domain: `templates_repo`, `github`)."""

from __future__ import annotations

import dagster as dg

from .assets import DISTRIBUTION_ASSETS, DISTRIBUTION_SPECS
from .schedules import (
    pattern_sync_job,
    pattern_sync_sensor,
    template_distribution_job,
    template_distribution_schedule,
)


def build_defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[*DISTRIBUTION_ASSETS, *DISTRIBUTION_SPECS],
        jobs=[pattern_sync_job, template_distribution_job],
        schedules=[template_distribution_schedule],
        sensors=[pattern_sync_sensor],
    )
