"""The export's settings as a Dagster resource, so the UI shows the thresholds a cycle runs with.

`export.defs` builds it from `ExportSettings.from_env()` when the code location loads (a bad
`QUEUE_ASSETS_EXPORT_*` value fails the load, naming the variable); the assets read it, not the
environment. Nothing here is a secret.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from .settings import ExportSettings

_DEFAULTS = ExportSettings()


class ExportSettingsResource(dg.ConfigurableResource):
    """The learned-pattern export's thresholds and base branch (`QUEUE_ASSETS_EXPORT_*`)."""

    min_usage: int = Field(default=_DEFAULTS.min_usage, description="QUEUE_ASSETS_EXPORT_MIN_USAGE")
    min_success_rate: float = Field(
        default=_DEFAULTS.min_success_rate, description="QUEUE_ASSETS_EXPORT_MIN_SUCCESS_RATE"
    )
    min_instances: int = Field(
        default=_DEFAULTS.min_instances, description="QUEUE_ASSETS_EXPORT_MIN_INSTANCES"
    )
    max_growth_factor: float = Field(
        default=_DEFAULTS.max_growth_factor, description="QUEUE_ASSETS_EXPORT_MAX_GROWTH"
    )
    base_branch: str = Field(default=_DEFAULTS.base_branch, description="QUEUE_ASSETS_EXPORT_BASE_BRANCH")

    @classmethod
    def from_settings(cls, settings: ExportSettings) -> ExportSettingsResource:
        return cls(
            min_usage=settings.min_usage,
            min_success_rate=settings.min_success_rate,
            min_instances=settings.min_instances,
            max_growth_factor=settings.max_growth_factor,
            base_branch=settings.base_branch,
        )

    def settings(self) -> ExportSettings:
        return ExportSettings(
            min_usage=self.min_usage,
            min_success_rate=self.min_success_rate,
            min_instances=self.min_instances,
            max_growth_factor=self.max_growth_factor,
            base_branch=self.base_branch,
        )
